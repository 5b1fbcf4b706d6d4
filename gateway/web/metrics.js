// Reads the Prometheus text the stack serves at /metrics (the same numbers Grafana gets) and turns two
// scrapes into rates and latency percentiles.

export function parse(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = line.match(/^([a-zA-Z_:][\w:]*)(\{.*\})?\s+(\S+)/);
    if (!match) continue;
    const value = Number(match[3]);
    if (Number.isFinite(value)) samples.push({ name: match[1], labels: match[2] || "", value });
  }
  return samples;
}

function matching(samples, prefix, suffix) {
  return samples.filter((s) => s.name.startsWith(prefix) && s.name.endsWith(suffix));
}

export function total(samples, prefix, suffix = "") {
  const found = matching(samples, prefix, suffix);
  return found.length ? found.reduce((sum, s) => sum + s.value, 0) : null;
}

// A gauge's series for the whole Runner (no model label, or model=""), written beside the per-model ones.
export function replica(samples, prefix) {
  const found = matching(samples, prefix, "").filter((s) => !/model="[^"]/.test(s.labels));
  return found.length ? found.reduce((sum, s) => sum + s.value, 0) : null;
}

export function highest(samples, prefix) {
  const found = matching(samples, prefix, "");
  return found.length ? Math.max(...found.map((s) => s.value)) : null;
}

// Cumulative bucket counts by upper bound, summed over every label set but `le`.
export function buckets(samples, prefix) {
  const byBound = new Map();
  for (const s of matching(samples, prefix, "_bucket")) {
    const le = s.labels.match(/le="([^"]+)"/);
    if (!le) continue;
    const bound = le[1] === "+Inf" ? Infinity : Number(le[1]);
    byBound.set(bound, (byBound.get(bound) || 0) + s.value);
  }
  return [...byBound.entries()].sort((a, b) => a[0] - b[0]);
}

// The q-quantile of the observations between two scrapes, interpolated inside its bucket; null
// when nothing was observed.
export function quantile(before, after, q) {
  const start = new Map(before);
  const counts = after.map(([bound, count]) => [bound, count - (start.get(bound) || 0)]);
  const all = counts.length ? counts[counts.length - 1][1] : 0;
  if (all <= 0) return null;
  const rank = q * all;
  let lower = 0;
  let below = 0;
  for (const [bound, count] of counts) {
    if (count >= rank) {
      if (!Number.isFinite(bound)) return lower;
      const inside = count - below;
      return inside > 0 ? lower + ((bound - lower) * (rank - below)) / inside : bound;
    }
    lower = Number.isFinite(bound) ? bound : lower;
    below = count;
  }
  return lower;
}
