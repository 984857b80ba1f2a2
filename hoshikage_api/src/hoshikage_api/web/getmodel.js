// The "get a model" box: a reference (hf.co/org/repo:Q4_K_M, org/repo, qwen3:8b), its fit
// verdict from POST /api/models/plan before any download, then POST /api/models/pull with
// one progress bar per file. When the pull says done, the model is served: the page lists it.

import { call, errorOf, eventBatches, json } from "./api.js";
import { formatBytes } from "./chart.js";

const PLAN_DELAY_MS = 700;

function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

const VERDICT = {
  yes: "fits",
  "smaller context": "fits with a smaller context",
  no: "does not fit",
};

export class GetModel {
  /**
   * @param {object} el {form, input, plan, pull, cancel, verdict, progress, result, error}
   * @param {(model: string) => Promise<void>} onPulled called with the served name
   */
  constructor(el, onPulled) {
    this.el = el;
    this.onPulled = onPulled;
    this.timer = null;
    this.planned = null; // the reference the verdict is for
    this.pulling = null; // AbortController of the running pull
    el.input.addEventListener("input", () => {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.plan(), PLAN_DELAY_MS);
    });
    el.plan.addEventListener("click", () => this.plan());
    el.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.pull();
    });
    el.cancel.addEventListener("click", () => this.cancel());
  }

  reference() {
    return this.el.input.value.trim();
  }

  showError(message) {
    this.el.error.hidden = !message;
    this.el.error.textContent = message ?? "";
  }

  /** Ask the server whether the reference's quants fit, and show its verdict. */
  async plan() {
    clearTimeout(this.timer);
    const reference = this.reference();
    if (!reference || reference === this.planned) return;
    this.planned = reference;
    this.showError(null);
    this.el.verdict.replaceChildren(element("p", "muted", "Reading the model's header…"));
    try {
      const plan = await json("/api/models/plan", { method: "POST", body: { model: reference } });
      if (this.reference() !== reference) return; // typed on meanwhile
      this.renderPlan(plan);
    } catch (error) {
      if (this.reference() !== reference) return;
      this.planned = null;
      this.el.verdict.replaceChildren();
      this.showError(error.message);
    }
  }

  renderPlan(plan) {
    const rows = plan.quants.map((q) => {
      const li = element("li", "verdict");
      li.dataset.fits = q.fits;
      li.dataset.tag = q.tag;
      const head = element("div", "verdict-head");
      head.append(element("strong", null, q.tag), element("span", "fit", VERDICT[q.fits] ?? q.fits));
      const facts = [
        `${formatBytes(q.weights_bytes)} weights`,
        `${(q.kv_bytes_per_token / 1024).toFixed(1)} KiB KV per token`,
        `largest context ${q.context_max}`,
      ];
      if (q.gpu_layers != null) facts.push(`${q.gpu_layers} GPU layers`);
      li.append(head, element("small", "muted", facts.join(" · ")));
      return li;
    });
    const list = element("ul", "verdicts");
    list.append(...rows);
    const note = plan.suggestion
      ? `Largest that fits: ${plan.suggestion}`
      : "None fits at the configured context.";
    this.el.verdict.replaceChildren(list, element("p", "suggestion", note));
  }

  /** Pull the reference, one progress bar per file, until the server serves it. */
  async pull() {
    const reference = this.reference();
    if (!reference || this.pulling) return;
    this.showError(null);
    this.el.result.textContent = "";
    this.el.progress.replaceChildren();
    this.pulling = new AbortController();
    this.el.pull.disabled = true;
    this.el.cancel.hidden = false;
    const bars = new Map();
    try {
      const response = await call("/api/models/pull", {
        method: "POST",
        body: { model: reference },
        signal: this.pulling.signal,
      });
      if (!response.ok) throw await errorOf(response);
      for await (const batch of eventBatches(response)) {
        for (const raw of batch) {
          const data = JSON.parse(raw);
          if (data.error) throw new Error(data.error.message);
          if (data.model) {
            this.el.result.textContent = `Served as ${data.model}`;
            await this.onPulled(data.model);
          } else if (data.digest) {
            this.bar(bars, data);
          } else {
            this.el.result.textContent = data.status;
          }
        }
      }
    } catch (error) {
      if (error.name !== "AbortError") this.showError(error.message);
    } finally {
      this.pulling = null;
      this.el.pull.disabled = false;
      this.el.cancel.hidden = true;
    }
  }

  bar(bars, step) {
    let row = bars.get(step.digest);
    if (!row) {
      const li = element("li", "download");
      li.dataset.digest = step.digest;
      const label = element("span", "file", step.file ?? step.status);
      const progress = element("progress");
      progress.setAttribute("aria-label", `download of ${step.file ?? step.digest}`);
      const figures = element("small", "muted");
      li.append(label, progress, figures);
      this.el.progress.append(li);
      row = { li, progress, figures };
      bars.set(step.digest, row);
    }
    if (step.total) {
      row.progress.max = step.total;
      row.progress.value = step.completed ?? 0;
      row.figures.textContent = `${formatBytes(step.completed ?? 0)} of ${formatBytes(step.total)}`;
      row.li.dataset.done = String(step.completed === step.total);
    }
  }

  /** Stop the pull: the server cancels it (its partial file stays, to resume). */
  async cancel() {
    const reference = this.reference();
    this.pulling?.abort();
    try {
      await call(`/api/models/pull?model=${encodeURIComponent(reference)}`, { method: "DELETE" });
    } catch {
      // the disconnect alone cancels it when no one else follows it
    }
    this.el.result.textContent = "Cancelled";
  }
}
