// The memory chart: the server's resident memory (a line) over each loaded model's share
// (stacked areas), for the last ten minutes, drawn on a <canvas>. The history lives in
// this page only (it starts empty on each visit).

export const WINDOW_MS = 10 * 60 * 1000;
const MIB = 1024 * 1024;

export function formatBytes(bytes) {
  if (bytes == null) return "–";
  if (bytes >= 1024 * MIB) return `${(bytes / 1024 / MIB).toFixed(2)} GiB`;
  if (bytes >= 10 * MIB) return `${Math.round(bytes / MIB)} MiB`;
  return `${(bytes / MIB).toFixed(1)} MiB`;
}

/** A round upper bound for the y axis. */
function niceCeiling(value) {
  if (value <= 0) return MIB;
  const exponent = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * exponent >= value) return step * exponent;
  }
  return 10 * exponent;
}

export class MemoryChart {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {HTMLElement} legend a list element for the series' names and current values
   */
  constructor(canvas, legend) {
    this.canvas = canvas;
    this.legend = legend;
    /** [{t (ms since epoch), rss (bytes or null), models: {name: bytes}}], oldest first. */
    this.points = [];
    this.names = []; // every model ever seen, in a stable order (stable colours)
    new ResizeObserver(() => this.draw()).observe(canvas);
    matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => this.draw());
  }

  /** Add one sample from an /api/status body. */
  add(status, t = Date.now()) {
    const models = {};
    for (const model of status.models) {
      if (!this.names.includes(model.name)) this.names.push(model.name);
      models[model.name] = model.memory_bytes ?? 0;
    }
    this.points.push({ t, rss: status.rss_bytes ?? null, models });
    while (this.points.length && this.points[0].t < t - WINDOW_MS) this.points.shift();
    this.draw();
    this.#updateLegend();
  }

  #colors() {
    const style = getComputedStyle(this.canvas);
    const value = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
    return {
      text: value("--muted", "#666"),
      grid: value("--border", "#ccc"),
      rss: value("--rss", "#444"),
      series: [0, 1, 2, 3, 4, 5].map((i) => value(`--series-${i}`, "#48c")),
    };
  }

  color(name) {
    const series = this.#colors().series;
    return series[this.names.indexOf(name) % series.length];
  }

  #updateLegend() {
    const last = this.points.at(-1);
    if (!last) return;
    const items = [["rss", "server process (resident)", last.rss, this.#colors().rss]];
    for (const name of this.names) items.push([name, name, last.models[name] ?? 0, this.color(name)]);
    this.legend.replaceChildren(
      ...items.map(([key, label, bytes, color]) => {
        const li = document.createElement("li");
        li.dataset.series = key;
        const swatch = document.createElement("span");
        swatch.className = key === "rss" ? "swatch line" : "swatch";
        swatch.style.backgroundColor = color;
        const name = document.createElement("span");
        name.textContent = label;
        const figure = document.createElement("span");
        figure.className = "figure";
        figure.textContent = formatBytes(bytes);
        li.append(swatch, name, figure);
        return li;
      }),
    );
    const models = Object.values(last.models).reduce((a, b) => a + b, 0);
    this.canvas.setAttribute(
      "aria-label",
      `memory chart: server resident ${formatBytes(last.rss)}, models ${formatBytes(models)}`,
    );
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const colors = this.#colors();
    const left = 4;
    const right = width - 4;
    const top = 14;
    const bottom = height - 16;
    const now = this.points.at(-1)?.t ?? Date.now();
    const x = (t) => right - ((now - t) / WINDOW_MS) * (right - left);

    let peak = 0;
    for (const p of this.points) {
      const sum = Object.values(p.models).reduce((a, b) => a + b, 0);
      peak = Math.max(peak, sum, p.rss ?? 0);
    }
    const ceiling = niceCeiling(peak * 1.1);
    const y = (bytes) => bottom - (bytes / ceiling) * (bottom - top);

    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = colors.text;
    ctx.strokeStyle = colors.grid;
    ctx.lineWidth = 1;
    for (const fraction of [0, 0.5, 1]) {
      const gy = Math.round(y(ceiling * fraction)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, gy);
      ctx.lineTo(right, gy);
      ctx.stroke();
    }
    ctx.textBaseline = "bottom";
    ctx.textAlign = "left";
    ctx.fillText(formatBytes(ceiling), left, top - 1);
    ctx.textBaseline = "top";
    ctx.fillText("−10 min", left, bottom + 3);
    ctx.textAlign = "right";
    ctx.fillText("now", right, bottom + 3);

    if (!this.points.length) return;
    // Stacked model areas, first model at the bottom.
    const base = this.points.map(() => 0);
    for (const name of this.names) {
      const tops = this.points.map((p, i) => base[i] + (p.models[name] ?? 0));
      if (tops.some((v, i) => v !== base[i])) {
        ctx.beginPath();
        this.points.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(tops[i])) : ctx.moveTo(x(p.t), y(tops[i]))));
        for (let i = this.points.length - 1; i >= 0; i--) ctx.lineTo(x(this.points[i].t), y(base[i]));
        ctx.closePath();
        ctx.globalAlpha = 0.55;
        ctx.fillStyle = this.color(name);
        ctx.fill();
        ctx.globalAlpha = 1;
      }
      tops.forEach((v, i) => (base[i] = v));
    }
    // The process's resident memory, with gaps where it was unknown.
    ctx.strokeStyle = colors.rss;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    let drawing = false;
    for (const p of this.points) {
      if (p.rss == null) {
        drawing = false;
        continue;
      }
      if (drawing) ctx.lineTo(x(p.t), y(p.rss));
      else ctx.moveTo(x(p.t), y(p.rss));
      drawing = true;
    }
    ctx.stroke();
  }
}
