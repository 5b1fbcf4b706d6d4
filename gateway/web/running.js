// The Running view: `ps` as a table that updates itself, unload, and per-model settings.
import { bytes, button, call, cell, errorText, familiar, json, status } from "./api.js";

function countdown(expiresAt) {
  if (!expiresAt) return "never";
  const left = Math.max(0, Math.round(expiresAt - Date.now() / 1000));
  return left >= 60 ? `${Math.floor(left / 60)}m ${left % 60}s` : `${left}s`;
}

export async function refreshRunning() {
  const runners = await json("/engines/ps");
  const body = document.querySelector("#running-table tbody");
  body.replaceChildren();
  for (const r of runners) {
    const name = familiar(r.model_name);
    const row = document.createElement("tr");
    row.dataset.model = name;
    cell(row, r.loading ? `${name} (loading)` : name);
    cell(row, `${r.slots_busy || 0}/${r.slots || 0}`).dataset.field = "slots";
    cell(row, String(r.queued || 0)).dataset.field = "queued";
    cell(row, bytes(r.memory_bytes));
    cell(row, r.context_size ? String(r.context_size) : "");
    cell(row, r.in_use ? "in use" : countdown(r.expires_at));
    const actions = cell(row, "");
    actions.className = "actions";
    actions.append(button("Unload", () => unload(r.model_name)));
    body.append(row);
  }
  return runners;
}

async function unload(model) {
  const reply = await call("/engines/unload", { method: "POST", body: { models: [model] } });
  status(reply.ok ? `Unloaded ${familiar(model)}` : await errorText(reply), !reply.ok);
  await refreshRunning();
}

export function installRunning() {
  document.getElementById("configure-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = (id) => document.getElementById(id).value.trim();
    const settings = { model: value("configure-model") };
    if (value("configure-context")) settings["context-size"] = Number(value("configure-context"));
    if (value("configure-keep-alive")) settings.keep_alive = value("configure-keep-alive");
    if (value("configure-parallel")) settings.parallel = Number(value("configure-parallel"));
    const reply = await call("/engines/_configure", { method: "POST", body: settings });
    status(reply.ok ? `Saved the settings of ${settings.model}` : await errorText(reply), !reply.ok);
  });
}
