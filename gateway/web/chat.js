// The Chat view: streams an answer from /v1/chat/completions into the page, renders it as Markdown,
// and shows tokens/s and cached prompt tokens per answer.
import { call, errorText, lines, status } from "./api.js";
import { render } from "./markdown.js";

let history = [];
let controller = null;

function bubble(role, text = "") {
  const el = document.createElement("div");
  el.className = `message ${role}`;
  el.dataset.role = role;
  const content = document.createElement("div");
  content.className = "content";
  content.textContent = text;
  el.append(content);
  document.getElementById("chat-log").append(el);
  return el;
}

function request(model) {
  const value = (id) => document.getElementById(id).value.trim();
  const system = value("chat-system");
  const body = {
    model,
    stream: true,
    stream_options: { include_usage: true },
    messages: [...(system ? [{ role: "system", content: system }] : []), ...history],
  };
  if (value("chat-temperature")) body.temperature = Number(value("chat-temperature"));
  if (value("chat-max-tokens")) body.max_tokens = Number(value("chat-max-tokens"));
  return body;
}

async function send(text) {
  const model = document.getElementById("chat-model").value;
  if (!model) { status("Pick a model first (pull one in Models)", true); return; }
  history.push({ role: "user", content: text });
  bubble("user", text);
  const answer = bubble("assistant");
  const content = answer.querySelector(".content");
  const stats = document.createElement("div");
  stats.className = "stats";
  answer.append(stats);
  controller = new AbortController();
  toggle(true);
  const started = performance.now();
  let first = null;
  let full = "";
  let usage = null;
  try {
    const reply = await call("/v1/chat/completions", { method: "POST", body: request(model), signal: controller.signal });
    if (!reply.ok) throw new Error(await errorText(reply));
    for await (const line of lines(reply)) {
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message || "the stream failed");
      if (chunk.usage) usage = chunk.usage;
      const delta = chunk.choices?.[0]?.delta?.content || "";
      if (delta) {
        first ??= performance.now();
        full += delta;
        render(content, full);
      }
    }
    history.push({ role: "assistant", content: full });
    const seconds = first === null ? 0 : (performance.now() - first) / 1000;
    const parts = [`first token ${((first ?? performance.now()) - started).toFixed(0)} ms`];
    if (usage) {
      if (seconds > 0) parts.push(`${(usage.completion_tokens / seconds).toFixed(1)} tokens/s`);
      parts.push(`${usage.completion_tokens} tokens`);
      parts.push(`${usage.prompt_tokens_details?.cached_tokens ?? 0} of ${usage.prompt_tokens} prompt tokens cached`);
    }
    stats.textContent = parts.join(" · ");
  } catch (error) {
    history.pop();
    stats.textContent = error.name === "AbortError" ? "stopped" : error.message;
    stats.classList.add("bad");
  } finally {
    controller = null;
    toggle(false);
  }
}

function toggle(busy) {
  document.getElementById("chat-send").disabled = busy;
  document.getElementById("chat-stop").disabled = !busy;
}

export function installChat() {
  const input = document.getElementById("chat-input");
  const form = document.getElementById("chat-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || controller) return;
    input.value = "";
    send(text);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
  });
  document.getElementById("chat-stop").addEventListener("click", () => controller?.abort());
  document.getElementById("chat-clear").addEventListener("click", () => {
    history = [];
    document.getElementById("chat-log").replaceChildren();
  });
}
