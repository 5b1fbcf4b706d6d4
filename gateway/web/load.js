// The Load view: live charts of output tokens/s, TTFT and inter-token latency percentiles, queue depth
// and KV-cache use, from two successive scrapes of /metrics.
import { call } from "./api.js";
import { Chart } from "./charts.js";
import { buckets, highest, parse, quantile, replica, total } from "./metrics.js";

const POINTS = 150; // five minutes at one scrape every two seconds
let charts = null;
let previous = null;

function build() {
  const parent = document.getElementById("charts");
  return {
    tokens: new Chart(parent, "Output tokens/s", "tok/s", ["rate"], POINTS),
    ttft: new Chart(parent, "Time to first token", "s", ["p50", "p95"], POINTS),
    itl: new Chart(parent, "Inter-token latency", "s", ["p50", "p99"], POINTS),
    queue: new Chart(parent, "Queue depth", "", ["waiting", "running"], POINTS),
    kv: new Chart(parent, "KV-cache use", "%", ["used"], POINTS),
  };
}

export async function sampleLoad() {
  charts ||= build();
  const reply = await call("/metrics");
  if (!reply.ok) return;
  const samples = parse(await reply.text());
  const now = {
    at: performance.now() / 1000,
    tokens: total(samples, "modelrunner_output_tokens", "_total"),
    ttft: buckets(samples, "modelrunner_time_to_first_token"),
    itl: buckets(samples, "modelrunner_inter_token_latency"),
  };
  const queued = replica(samples, "modelrunner_queue_depth");
  const running = replica(samples, "modelrunner_active_sequences");
  const kv = highest(samples, "modelrunner_kv_cache_usage"); // the fullest model's cache
  // The first scrape has nothing to take a rate from, but its latencies are what was observed so far.
  const before = previous || { at: now.at, tokens: null, ttft: [], itl: [] };
  const seconds = Math.max(1e-3, now.at - before.at);
  const rate = now.tokens === null || before.tokens === null ? null : Math.max(0, now.tokens - before.tokens) / seconds;
  charts.tokens.push([rate]);
  charts.ttft.push([quantile(before.ttft, now.ttft, 0.5), quantile(before.ttft, now.ttft, 0.95)]);
  charts.itl.push([quantile(before.itl, now.itl, 0.5), quantile(before.itl, now.itl, 0.99)]);
  charts.queue.push([queued, running]);
  charts.kv.push([kv]);
  previous = now;
}
