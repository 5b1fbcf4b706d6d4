// The Models view: the store's models, pull with a live progress bar, inspect, tag, delete.
import { bytes, button, call, cell, errorText, familiar, json, lines, status } from "./api.js";

export async function refreshModels() {
  const models = await json("/models");
  const body = document.querySelector("#models-table tbody");
  body.replaceChildren();
  for (const model of models) {
    const name = familiar(model.tags?.[0] || model.id);
    const row = document.createElement("tr");
    row.dataset.model = name;
    cell(row, (model.tags || [model.id]).map(familiar).join(", "));
    cell(row, bytes(model.size));
    cell(row, model.config?.quantization || "");
    cell(row, model.config?.parameters || "");
    cell(row, model.config?.context_size ? String(model.config.context_size) : "");
    const actions = cell(row, "");
    actions.className = "actions";
    actions.append(
      button("Inspect", () => inspect(name)),
      button("Tag", () => tag(name)),
      button("Delete", () => remove(name)),
    );
    body.append(row);
  }
  return models;
}

async function inspect(name) {
  const pre = document.getElementById("model-inspect");
  pre.textContent = JSON.stringify(await json(`/models/${name}`), null, 2);
  pre.hidden = false;
}

async function tag(name) {
  const target = prompt(`New tag for ${name} (repository:tag)`, `${name.split(":")[0]}:copy`);
  if (!target) return;
  const colon = target.lastIndexOf(":");
  const [repo, tagName] = colon > target.lastIndexOf("/") ? [target.slice(0, colon), target.slice(colon + 1)] : [target, "latest"];
  const query = new URLSearchParams({ repo, tag: tagName });
  const reply = await call(`/models/${name}/tag?${query}`, { method: "POST" });
  status(reply.ok ? `Tagged ${name} as ${repo}:${tagName}` : await errorText(reply), !reply.ok);
  await refreshModels();
}

async function remove(name) {
  if (!confirm(`Delete ${name}?`)) return;
  const reply = await call(`/models/${name}`, { method: "DELETE" });
  status(reply.ok ? `Deleted ${name}` : await errorText(reply), !reply.ok);
  await refreshModels();
}

async function pull(name) {
  const box = document.getElementById("pull-progress");
  const bar = document.getElementById("pull-bar");
  const text = document.getElementById("pull-text");
  box.hidden = false;
  bar.value = 0;
  text.textContent = `Pulling ${name}…`;
  const reply = await call("/models/create", { method: "POST", body: { from: name } });
  if (!reply.ok) {
    text.textContent = await errorText(reply);
    text.classList.add("bad");
    return;
  }
  text.classList.remove("bad");
  for await (const line of lines(reply)) {
    const event = JSON.parse(line);
    if (event.type === "error") {
      text.textContent = event.message;
      text.classList.add("bad");
      return;
    }
    if (event.total) {
      bar.max = event.total;
      bar.value = event.current || 0;
      text.textContent = `${bytes(event.current || 0)} of ${bytes(event.total)}`;
    }
    if (event.type === "success") {
      bar.value = bar.max;
      text.textContent = event.message || `Pulled ${name}`;
    }
  }
  await refreshModels();
}

export function installModels() {
  document.getElementById("pull-form").addEventListener("submit", (event) => {
    event.preventDefault();
    pull(document.getElementById("pull-name").value.trim()).catch((e) => status(e.message, true));
  });
}
