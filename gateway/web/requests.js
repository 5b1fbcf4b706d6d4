// The Requests view: the request recorder's last requests per model, each opening to its request,
// answer, timings and token counts.
import { familiar, json } from "./api.js";

function pretty(value) {
  if (typeof value !== "string") return JSON.stringify(value, null, 2);
  try { return JSON.stringify(JSON.parse(value), null, 2); } catch { return value; }
}

function entryOf(record) {
  const details = document.createElement("details");
  details.className = "request";
  const summary = document.createElement("summary");
  const when = record.started_at ? new Date(record.started_at * 1000).toLocaleTimeString() : "";
  const usage = record.usage || {};
  const parts = [
    when, `${record.method} ${record.path}`, familiar(record.model || ""), record.status ? String(record.status) : record.state,
    record.duration_ms !== null ? `${record.duration_ms.toFixed(0)} ms` : "",
    usage.prompt_tokens !== null ? `${usage.prompt_tokens} → ${usage.completion_tokens ?? 0} tokens` : "",
  ];
  summary.textContent = parts.filter(Boolean).join(" · ");
  if (record.status >= 400 || (record.state && !["completed", "in_progress"].includes(record.state))) summary.classList.add("bad");
  const timings = { state: record.state, ttfb_ms: record.ttfb_ms, duration_ms: record.duration_ms, usage };
  const body = document.createElement("div");
  for (const [label, value] of [["Request", record.request?.body], ["Answer", record.response?.body], ["Timings and tokens", timings]]) {
    if (value === undefined || value === null) continue;
    const h = document.createElement("h4");
    h.textContent = label;
    const pre = document.createElement("pre");
    pre.textContent = pretty(value);
    body.append(h, pre);
  }
  details.append(summary, body);
  return details;
}

export async function refreshRequests() {
  const model = document.getElementById("requests-model").value;
  const data = await json(`/engines/requests${model ? `?model=${encodeURIComponent(model)}` : ""}`);
  const records = Array.isArray(data) ? data : data.requests || [];
  const list = document.getElementById("requests-list");
  const open = new Set([...list.querySelectorAll("details[open]")].map((d) => d.dataset.id));
  list.replaceChildren();
  records.sort((a, b) => (b.started_at || 0) - (a.started_at || 0));
  for (const record of records) {
    const entry = entryOf(record);
    entry.dataset.id = record.id;
    entry.open = open.has(entry.dataset.id);
    list.append(entry);
  }
  if (!records.length) list.textContent = "No requests recorded yet.";
}
