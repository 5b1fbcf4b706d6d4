// Small line charts drawn as SVG: one chart a metric, one line a series, the newest value in the title.
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#1f6feb", "#d4622b", "#2da44e"];

export class Chart {
  constructor(parent, title, unit, seriesNames, capacity) {
    this.unit = unit;
    this.seriesNames = seriesNames;
    this.capacity = capacity;
    this.points = seriesNames.map(() => []);
    this.box = document.createElement("figure");
    this.box.className = "chart";
    this.box.dataset.metric = title;
    const heading = document.createElement("h3");
    heading.textContent = title;
    this.now = document.createElement("span");
    this.now.className = "now";
    heading.append(" ", this.now);
    this.svg = document.createElementNS(SVG, "svg");
    this.svg.setAttribute("viewBox", "0 0 300 100");
    this.svg.setAttribute("preserveAspectRatio", "none");
    this.svg.setAttribute("role", "img");
    this.svg.setAttribute("aria-label", title);
    this.box.append(heading, this.svg);
    parent.append(this.box);
  }

  push(values) {
    values.forEach((v, i) => {
      this.points[i].push(v);
      if (this.points[i].length > this.capacity) this.points[i].shift();
    });
    this.draw(values);
  }

  draw(latest) {
    const all = this.points.flat().filter((v) => v !== null);
    const max = Math.max(1e-9, ...all);
    this.svg.replaceChildren();
    this.points.forEach((series, i) => {
      const coords = [];
      const step = 300 / Math.max(1, this.capacity - 1); // the newest point at the right edge
      series.forEach((v, x) => {
        if (v !== null) coords.push(`${300 - (series.length - 1 - x) * step},${100 - (v / max) * 95}`);
      });
      if (!coords.length) return;
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("points", coords.join(" "));
      line.setAttribute("stroke", COLORS[i % COLORS.length]);
      line.dataset.points = String(coords.length);
      this.svg.append(line);
    });
    const text = latest.map((v, i) => `${this.seriesNames[i]} ${v === null ? "–" : format(v, this.unit)}`);
    this.now.textContent = `${text.join(" · ")} (max ${format(max, this.unit)})`;
  }
}

function format(v, unit) {
  if (unit === "s") return v < 1 ? `${(v * 1000).toFixed(0)} ms` : `${v.toFixed(2)} s`;
  if (unit === "%") return `${(v * 100).toFixed(0)}%`;
  return `${v.toFixed(v < 10 ? 1 : 0)}${unit ? ` ${unit}` : ""}`;
}
