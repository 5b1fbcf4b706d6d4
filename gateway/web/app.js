// The page's views, switched by the URL's hash; the visible one refreshes itself every two seconds.
import { familiar, installKeyForm, json, status } from "./api.js";
import { installChat } from "./chat.js";
import { sampleLoad } from "./load.js";
import { installModels, refreshModels } from "./models.js";
import { refreshRequests } from "./requests.js";
import { installRunning, refreshRunning } from "./running.js";

const REFRESH_MS = 2000;
const refreshers = { models: refreshModels, running: refreshRunning, requests: refreshRequests, load: sampleLoad };

function current() {
  const name = location.hash.slice(1);
  return name in refreshers || name === "chat" ? name : "models";
}

async function fillModelPickers() {
  const models = await json("/models");
  const names = models.flatMap((m) => (m.tags || []).map(familiar));
  for (const id of ["chat-model", "configure-model", "requests-model"]) {
    const select = document.getElementById(id);
    const keep = select.value;
    const fixed = id === "requests-model" ? [...select.options].slice(0, 1) : [];
    select.replaceChildren(...fixed);
    for (const name of names) select.append(new Option(name, name));
    if ([...select.options].some((o) => o.value === keep)) select.value = keep;
  }
}

async function show() {
  const view = current();
  for (const section of document.querySelectorAll("section[data-view]")) section.hidden = section.dataset.view !== view;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  await tick();
}

let tickFailed = false; // a refresh error is cleared by the next refresh that works; action messages stay

async function tick() {
  const view = current();
  try {
    if (view === "chat" || view === "running" || view === "requests") await fillModelPickers();
    await refreshers[view]?.();
    if (tickFailed) status("");
    tickFailed = false;
  } catch (error) {
    status(error.message, true);
    tickFailed = true;
  }
}

installKeyForm();
installModels();
installRunning();
installChat();
document.getElementById("requests-model").addEventListener("change", () => refreshRequests());
window.addEventListener("hashchange", show);
show();
setInterval(() => { if (current() !== "chat") tick(); }, REFRESH_MS);
// The load charts keep sampling in the background, so they have history when opened.
setInterval(() => { if (current() !== "load") sampleLoad().catch(() => {}); }, REFRESH_MS);
