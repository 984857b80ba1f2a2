// The chat: sends the conversation to /v1/chat/completions with stream: true, shows the
// answer as it arrives, and Stop aborts the request (the server then cancels the
// generation and frees its slot at once). Every text is rendered as text (markdown.js).

import { call, errorOf, eventBatches } from "./api.js";
import { Attachments, fileChip } from "./attachments.js";
import { renderInto } from "./markdown.js";

/** Time to first token, decode speed and token count of a finished (or stopped) answer. */
export function statsText(stats) {
  const parts = [];
  if (stats.ttft != null) parts.push(`TTFT ${stats.ttft.toFixed(2)} s`);
  if (stats.tps != null) parts.push(`${stats.tps.toFixed(1)} tok/s`);
  parts.push(`${stats.tokens} token${stats.tokens === 1 ? "" : "s"}`);
  const finish = { stop: "finished", length: "hit max tokens", stopped: "stopped" }[stats.finish] ?? stats.finish;
  if (finish) parts.push(finish);
  return parts.join(" · ");
}

export class Chat {
  /**
   * @param {object} el {messages, form, prompt, send, stop, error, model, system,
   *   temperature, maxTokens, keepAlive, markdown, attach, attachInput, attachments}
   * @param {Conversations} conversations
   * @param {object} hooks {onListChanged(), onAnswerDone()}
   */
  constructor(el, conversations, hooks) {
    this.el = el;
    this.conversations = conversations;
    this.hooks = hooks;
    this.controller = null;
    this.attachments = new Attachments(
      { button: el.attach, input: el.attachInput, list: el.attachments, prompt: el.prompt, composer: el.form },
      (message) => this.showError(message),
    );

    el.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    });
    el.prompt.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.send();
      } else if (event.key === "Escape" && this.controller) {
        this.stop();
      }
    });
    el.stop.addEventListener("click", () => this.stop());
    el.markdown.addEventListener("change", () => this.show());
    el.system.addEventListener("change", () => {
      const conversation = this.conversations.current;
      if (conversation) {
        conversation.system = el.system.value;
        this.conversations.save();
      }
    });
    el.model.addEventListener("change", () => {
      const conversation = this.conversations.current;
      if (conversation) {
        conversation.model = el.model.value;
        this.conversations.save();
      }
    });
  }

  get busy() {
    return this.controller !== null;
  }

  stop() {
    this.controller?.abort();
  }

  showError(message) {
    this.el.error.textContent = message ?? "";
    this.el.error.hidden = !message;
  }

  /** Show the current conversation's messages and settings. */
  show() {
    const conversation = this.conversations.current;
    this.el.messages.replaceChildren();
    if (!conversation) return;
    this.el.system.value = conversation.system ?? "";
    if (conversation.model && [...this.el.model.options].some((o) => o.value === conversation.model)) {
      this.el.model.value = conversation.model;
    }
    for (const message of conversation.messages) this.#append(message);
    this.#scroll();
  }

  #append(message) {
    const li = document.createElement("li");
    li.className = `message ${message.role}`;
    li.dataset.role = message.role;
    const who = document.createElement("p");
    who.className = "who";
    who.textContent = message.role === "user" ? "You" : message.model || "Assistant";
    // The model's reasoning, apart from its answer: a collapsed "Thinking" block above it.
    const thinking = document.createElement("details");
    thinking.className = "thinking";
    thinking.hidden = true;
    const summary = document.createElement("summary");
    const reasoning = document.createElement("div");
    reasoning.className = "reasoning muted";
    thinking.append(summary, reasoning);
    const body = document.createElement("div");
    body.className = "content";
    const stats = document.createElement("p");
    stats.className = "stats muted";
    li.append(who, thinking);
    if (message.images?.length) {
      const images = document.createElement("div");
      images.className = "images";
      images.append(
        ...message.images.map((url, k) => {
          const img = document.createElement("img");
          img.src = url;
          img.alt = `image ${k + 1}`;
          return img;
        }),
      );
      li.append(images);
    }
    if (message.files?.length) {
      const files = document.createElement("div");
      files.className = "files";
      files.append(...message.files.map((file) => fileChip(file.name)));
      li.append(files);
    }
    li.append(body, stats);
    this.el.messages.append(li);
    const view = { li, body, stats, thinking, summary, reasoning };
    this.#fill(view, message);
    return view;
  }

  #fill(view, message) {
    // A user's text is always plain text; the model's may be the Markdown subset.
    renderInto(view.body, message.content, message.role === "assistant" && this.el.markdown.checked);
    this.#fillThinking(view, message);
    view.stats.textContent = message.stats ? statsText(message.stats) : "";
    view.stats.hidden = !message.stats;
    view.li.classList.toggle("stopped", Boolean(message.stopped));
    if (message.error) {
      let error = view.li.querySelector(".error");
      if (!error) {
        error = document.createElement("p");
        error.className = "error";
        error.setAttribute("role", "alert");
        view.li.append(error);
      }
      error.textContent = message.error;
    }
  }

  #fillThinking(view, message) {
    view.thinking.hidden = !message.reasoning;
    if (!message.reasoning) return;
    view.reasoning.textContent = message.reasoning; // plain text, never HTML
    const seconds = message.thinkingSeconds;
    view.summary.textContent = seconds == null ? "Thinking…" : `Thought for ${seconds.toFixed(1)} s`;
  }

  #scroll() {
    const list = this.el.messages;
    list.scrollTop = list.scrollHeight;
  }

  #setBusy(busy) {
    this.el.send.disabled = busy;
    this.el.stop.disabled = !busy;
    this.el.messages.setAttribute("aria-busy", String(busy));
  }

  /** The request body for the conversation so far. */
  #body(conversation) {
    const messages = [];
    const system = this.el.system.value.trim();
    if (system) messages.push({ role: "system", content: system });
    for (const m of conversation.messages) {
      if (m.error && !m.content) continue; // a failed turn sends nothing
      if (m.images?.length || m.files?.length) {
        const parts = [];
        for (const file of m.files ?? []) {
          parts.push({ type: "file", file: { filename: file.name, file_data: file.url } });
        }
        parts.push({ type: "text", text: m.content });
        for (const url of m.images ?? []) parts.push({ type: "image_url", image_url: { url } });
        messages.push({ role: m.role, content: parts });
      } else {
        messages.push({ role: m.role, content: m.content });
      }
    }
    const body = {
      model: this.el.model.value,
      messages,
      stream: true,
      stream_options: { include_usage: true },
      truncate: true, // a chat longer than the context goes on without its oldest turns
    };
    const temperature = this.el.temperature.value.trim();
    if (temperature !== "") body.temperature = Number(temperature);
    const maxTokens = this.el.maxTokens.value.trim();
    if (maxTokens !== "") body.max_tokens = Number(maxTokens);
    const keepAlive = this.el.keepAlive.value.trim();
    if (keepAlive !== "") body.keep_alive = /^-?\d+(\.\d+)?$/.test(keepAlive) ? Number(keepAlive) : keepAlive;
    return body;
  }

  async send() {
    const text = this.el.prompt.value;
    if (this.busy || (!text.trim() && !this.attachments.items.length)) return;
    if (!this.el.model.value) {
      this.showError("Pick a model first.");
      return;
    }
    this.showError(null);
    let conversation = this.conversations.current;
    if (!conversation) {
      conversation = this.conversations.create(this.el.model.value, this.el.system.value);
    }
    conversation.model = this.el.model.value;
    conversation.system = this.el.system.value;
    const { images, files } = this.attachments.take();
    const message = { role: "user", content: text };
    if (images.length) message.images = images;
    if (files.length) message.files = files;
    conversation.messages.push(message);
    this.el.prompt.value = "";
    this.#append(conversation.messages.at(-1));
    const body = this.#body(conversation);
    const answer = { role: "assistant", content: "", reasoning: "", model: body.model };
    conversation.messages.push(answer);
    this.conversations.touch(conversation);
    this.hooks.onListChanged();
    const view = this.#append(answer);
    view.li.classList.add("streaming");
    this.#scroll();

    const controller = new AbortController();
    this.controller = controller;
    this.#setBusy(true);
    const started = performance.now();
    let first = null;
    let tokens = 0;
    let usageTokens = null;
    let finish = null;
    let thoughtFrom = null;
    const thoughtUntil = () => {
      if (thoughtFrom !== null && answer.thinkingSeconds == null) {
        answer.thinkingSeconds = (performance.now() - thoughtFrom) / 1000;
      }
    };
    try {
      const response = await call("/v1/chat/completions", { method: "POST", body, signal: controller.signal });
      if (!response.ok) throw await errorOf(response);
      stream: for await (const batch of eventBatches(response)) {
        for (const data of batch) {
          if (data === "[DONE]") break stream;
          const event = JSON.parse(data);
          if (event.error) throw new Error(event.error.message || "The server ended the answer with an error.");
          if (event.usage) usageTokens = event.usage.completion_tokens;
          const choice = event.choices?.[0];
          if (!choice) continue;
          const thought = choice.delta?.reasoning_content;
          if (thought) {
            if (first === null) first = performance.now();
            if (thoughtFrom === null) thoughtFrom = started;
            answer.reasoning += thought;
            tokens += 1;
          }
          const delta = choice.delta?.content;
          if (delta || choice.delta?.tool_calls) thoughtUntil();
          if (delta) {
            if (first === null) first = performance.now();
            answer.content += delta;
            tokens += 1;
          }
          if (choice.finish_reason) finish = choice.finish_reason;
        }
        renderInto(view.body, answer.content, this.el.markdown.checked);
        this.#fillThinking(view, answer);
        this.#scroll();
      }
    } catch (error) {
      if (error.name === "AbortError") {
        answer.stopped = true;
        finish = "stopped";
      } else {
        answer.error = error.message;
      }
    } finally {
      thoughtUntil();
      const ended = performance.now();
      const count = usageTokens ?? tokens;
      answer.stats = {
        ttft: first === null ? null : (first - started) / 1000,
        tps: first !== null && count > 1 && ended > first ? (count - 1) / ((ended - first) / 1000) : null,
        tokens: count,
        finish,
      };
      this.controller = null;
      this.#setBusy(false);
      view.li.classList.remove("streaming");
      this.#fill(view, answer);
      this.conversations.touch(conversation);
      if (this.conversations.saveError) this.showError(this.conversations.saveError);
      this.hooks.onListChanged();
      this.hooks.onAnswerDone();
      this.#scroll();
      this.el.prompt.focus();
    }
  }
}
