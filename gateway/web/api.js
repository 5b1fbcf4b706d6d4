// Calls to the stack's own REST API. The API key, when the stack asks for one, lives in this tab's
// sessionStorage only; a 401 shows the key form and the call is retried once the key is given.
const KEY = "modelrunner.apiKey";
let keyWaiters = [];

export function status(text, isError = false) {
  const el = document.getElementById("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

function askForKey() {
  const form = document.getElementById("key-form");
  form.hidden = false;
  document.getElementById("key-input").focus();
  return new Promise((resolve) => keyWaiters.push(resolve));
}

export function installKeyForm() {
  const form = document.getElementById("key-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, document.getElementById("key-input").value);
    form.hidden = true;
    const waiters = keyWaiters;
    keyWaiters = [];
    waiters.forEach((resolve) => resolve());
  });
}

export async function call(path, { method = "GET", body, signal } = {}) {
  for (;;) {
    const headers = {};
    const key = sessionStorage.getItem(KEY);
    if (key) headers.Authorization = `Bearer ${key}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const reply = await fetch(path, {
      method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (reply.status !== 401) return reply;
    sessionStorage.removeItem(KEY);
    await askForKey();
  }
}

export async function errorText(reply) {
  const text = await reply.text();
  try {
    const data = JSON.parse(text);
    return data?.error?.message || data?.error || data?.message || text;
  } catch {
    return text || `${reply.status} ${reply.statusText}`;
  }
}

export async function json(path, options) {
  const reply = await call(path, options);
  if (!reply.ok) throw new Error(await errorText(reply));
  return reply.json();
}

// Yields each line of a streamed answer body as it arrives (JSON lines and SSE alike).
export async function* lines(reply) {
  const reader = reply.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      if (line) yield line;
    }
  }
  if (buffer.trim()) yield buffer.trim();
}

export function bytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KB", "MB", "GB", "TB"];
  const i = Math.min(units.length - 1, Math.floor(Math.log(n) / Math.log(1000)));
  return `${(n / 1000 ** i).toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.append(td);
  return td;
}

export function button(label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.addEventListener("click", onClick);
  return b;
}

// The short name a user types ("ai/smollm2:latest" for "docker.io/ai/smollm2:latest").
export function familiar(tag) {
  return tag.replace(/^(docker\.io|index\.docker\.io)\//, "");
}
