// The status panel: polls GET /api/status once a second (every 5 s while the tab is
// hidden), shows the server's figures and one card per model with Load and Unload, and
// feeds the memory chart.

import { json } from "./api.js";
import { formatBytes } from "./chart.js";

const VISIBLE_MS = 1000;
const HIDDEN_MS = 5000;
const LOADING_MS = 250;

function formatSeconds(seconds) {
  const s = Math.max(0, Math.ceil(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}:${String(s % 60).padStart(2, "0")}`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}

function formatUptime(seconds) {
  if (seconds < 60) return `${Math.floor(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  return `${Math.floor(seconds / 86400)} d ${Math.floor((seconds % 86400) / 3600)} h`;
}

/** What the idle countdown says for a model's status. */
export function unloadText(model) {
  if (model.state === "busy") return "in use";
  if (model.state === "loading") return "loading";
  if (model.state === "unloading") return "unloading";
  if (model.state !== "loaded") return "–";
  if (model.unload_in_seconds == null) return "–";
  if (model.unload_in_seconds < 0) return "stays loaded";
  return `in ${formatSeconds(model.unload_in_seconds)}`;
}

/** Speculative decoding: the share of drafted tokens the model confirmed, and how many. */
export function draftText(model) {
  const drafted = model.draft_tokens || 0;
  if (!drafted) return "–";
  return `${Math.round((100 * (model.draft_accepted || 0)) / drafted)}% of ${drafted}`;
}

function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

export class StatusPanel {
  /**
   * @param {object} elements {serverLine, figures, cards, error}
   * @param {MemoryChart} chart
   * @param {() => string} keepAlive the keep-alive the Load button asks for ("" = default)
   */
  constructor(elements, chart, keepAlive) {
    this.el = elements;
    this.chart = chart;
    this.keepAlive = keepAlive;
    this.last = null;
    this.cards = new Map(); // model name -> {li, fields, load, unload}
    this.timer = null;
    this.inFlight = null;
    this.again = null;
    this.listeners = [];
    document.addEventListener("visibilitychange", () => this.schedule());
  }

  /** Call `listener(status)` after every successful poll. */
  onUpdate(listener) {
    this.listeners.push(listener);
  }

  start() {
    this.refresh();
  }

  schedule() {
    clearTimeout(this.timer);
    // A model loading: poll faster, so its progress bar moves.
    const loading = this.last?.models?.some((m) => m.state === "loading");
    const wait = document.hidden ? HIDDEN_MS : loading ? LOADING_MS : VISIBLE_MS;
    this.timer = setTimeout(() => this.refresh(), wait);
  }

  /** Poll now. One poll at a time: a call during a poll gets one more poll right after it
   * (shared by every such call), so an action's effect is always shown. */
  refresh() {
    if (this.inFlight) {
      this.again ??= this.inFlight.then(() => {
        this.again = null;
        return this.refresh();
      });
      return this.again;
    }
    clearTimeout(this.timer);
    this.inFlight = this.#poll().finally(() => {
      this.inFlight = null;
      this.schedule();
    });
    return this.inFlight;
  }

  async #poll() {
    try {
      const status = await json("/api/status");
      this.last = status;
      this.el.error.hidden = true;
      this.#render(status);
      this.chart.add(status);
      for (const listener of this.listeners) listener(status);
    } catch (error) {
      this.el.serverLine.textContent = "server unreachable";
      this.el.serverLine.dataset.state = "down";
      this.el.error.textContent = `Status: ${error.message}`;
      this.el.error.hidden = false;
    }
  }

  #render(status) {
    const line = this.el.serverLine;
    line.dataset.state = "up";
    line.textContent = `v${status.version} · up ${formatUptime(status.uptime_seconds)}`;
    const figures = [
      ["Requests running", `${status.running}`, "running"],
      ["Sequences", `${status.sequences} of ${status.concurrency}`, "sequences"],
      ["Queued", `${status.queued} of ${status.max_queue}`, "queued"],
      ["Resident memory", formatBytes(status.rss_bytes), "rss"],
    ];
    this.el.figures.replaceChildren(
      ...figures.flatMap(([term, value, key]) => {
        const dt = element("dt", "", term);
        const dd = element("dd", "", value);
        dd.dataset.field = key;
        return [dt, dd];
      }),
    );
    const seen = new Set();
    for (const model of status.models) {
      seen.add(model.name);
      this.#renderCard(model);
    }
    for (const [name, card] of this.cards) {
      if (!seen.has(name)) {
        card.li.remove();
        this.cards.delete(name);
      }
    }
  }

  #card(model) {
    let card = this.cards.get(model.name);
    if (card) return card;
    const li = element("li", "card");
    li.dataset.model = model.name;
    const head = element("div", "card-head");
    const name = element("span", "model-name", model.name);
    const state = element("span", "state");
    state.dataset.field = "state";
    head.append(name, state);
    const aliases = element("p", "muted aliases");
    const dl = element("dl", "figures");
    const fields = { state, aliases };
    for (const [key, term] of [
      ["memory", "Memory"],
      ["unload", "Idle unload"],
      ["slots", "Slots busy"],
      ["queue", "Queue"],
      ["tps", "Last tok/s"],
      ["disk", "On disk"],
      ["drafts", "Drafts accepted"],
    ]) {
      const dd = element("dd");
      dd.dataset.field = key;
      dl.append(element("dt", "", term), dd);
      fields[key] = dd;
    }
    // llama.cpp's load progress, while the model loads
    const progress = element("progress", "load-progress");
    progress.max = 1;
    progress.hidden = true;
    progress.dataset.field = "progress";
    fields.progress = progress;
    const error = element("p", "error small");
    error.hidden = true;
    fields.error = error;
    const buttons = element("div", "card-buttons");
    const load = element("button", "", "Load");
    load.type = "button";
    load.setAttribute("aria-label", `Load ${model.name}`);
    const unload = element("button", "", "Unload");
    unload.type = "button";
    unload.setAttribute("aria-label", `Unload ${model.name}`);
    load.addEventListener("click", () => this.#act(model.name, "load"));
    unload.addEventListener("click", () => this.#act(model.name, "unload"));
    buttons.append(load, unload);
    li.append(head, aliases, progress, dl, buttons, error);
    this.el.cards.append(li);
    card = { li, fields, load, unload, pending: false };
    this.cards.set(model.name, card);
    return card;
  }

  #renderCard(model) {
    const card = this.#card(model);
    const f = card.fields;
    card.li.dataset.state = model.state;
    const share = model.state === "loading" ? model.load_progress : null;
    f.state.textContent = share == null ? model.state : `loading ${Math.round(share * 100)}%`;
    f.progress.hidden = share == null;
    if (share != null) {
      f.progress.value = share;
      f.progress.setAttribute("aria-label", `Loading ${model.name}: ${Math.round(share * 100)}%`);
    }
    f.aliases.textContent = model.aliases.length ? `aliases: ${model.aliases.join(", ")}` : "";
    f.aliases.hidden = !model.aliases.length;
    f.memory.textContent = model.memory_bytes ? formatBytes(model.memory_bytes) : "–";
    f.unload.textContent = unloadText(model);
    f.slots.textContent = model.slots == null ? "–" : `${model.running_sequences} of ${model.slots}`;
    f.queue.textContent = String(model.queued);
    f.tps.textContent = model.last_tokens_per_second == null ? "–" : model.last_tokens_per_second.toFixed(1);
    // prompt prefixes saved at the last unload, restored by the next load
    const disk = model.cached_prompts ?? 0;
    f.disk.textContent = disk ? `${disk} prompt${disk === 1 ? "" : "s"}` : "–";
    f.drafts.textContent = draftText(model);
    if (model.last_error && !card.actionError) {
      const at = model.failed_at ? new Date(model.failed_at).toLocaleTimeString() : null;
      f.error.textContent = at ? `failed at ${at}: ${model.last_error}` : model.last_error;
      f.error.hidden = false;
    } else if (!card.actionError) {
      f.error.hidden = true;
    }
    const loaded = ["loaded", "busy"].includes(model.state);
    card.load.disabled = card.pending || loaded || model.state === "loading";
    card.unload.disabled = card.pending || ["unloaded", "failed"].includes(model.state);
  }

  async #act(name, action) {
    const card = this.cards.get(name);
    card.pending = true;
    card.actionError = null;
    card.load.disabled = card.unload.disabled = true;
    card.fields.error.hidden = true;
    if (action === "load") card.fields.state.textContent = "loading";
    const path = `/api/models/${encodeURIComponent(name)}/${action}`;
    const keepAlive = this.keepAlive();
    const query = action === "load" && keepAlive ? `?keep_alive=${encodeURIComponent(keepAlive)}` : "";
    try {
      await json(path + query, { method: "POST" });
    } catch (error) {
      card.actionError = error.message;
      card.fields.error.textContent = `${action}: ${error.message}`;
      card.fields.error.hidden = false;
    } finally {
      card.pending = false;
      await this.refresh();
    }
  }
}
