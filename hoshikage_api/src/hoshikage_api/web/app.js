// The page: wires the chat, the conversation list, the status panel and the memory chart,
// and asks for the API key when the server wants one.
//
// window.hoshikage exposes the page's live state read-only, for tests and for a curious
// user in the console: {memory: the chart's points, status: the last /api/status,
// models: the /v1/models list}.

import { json, onKeyNeeded } from "./api.js";
import { MemoryChart } from "./chart.js";
import { Chat } from "./chat.js";
import { Conversations } from "./conversations.js";
import { GetModel } from "./getmodel.js";
import { StatusPanel } from "./status.js";

const SETTINGS_KEY = "hoshikage.settings";
const $ = (id) => document.getElementById(id);

/** Ask for the API key with the dialog; resolves when the user submits one. */
function keyDialog(reason) {
  const dialog = $("key-dialog");
  const form = $("key-form");
  const input = $("key-input");
  const error = $("key-error");
  error.textContent = reason;
  error.hidden = !reason;
  input.value = "";
  return new Promise((resolve) => {
    const submit = (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      form.removeEventListener("submit", submit);
      dialog.close();
      resolve(key);
    };
    form.addEventListener("submit", submit);
    // Escape would close the dialog with nothing to retry: keep it open until a key is given.
    dialog.addEventListener("cancel", (event) => event.preventDefault(), { once: true });
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
}

/** The page-wide settings (temperature, max tokens, keep-alive, Markdown), kept in localStorage. */
function bindSettings(fields) {
  let saved = {};
  try {
    saved = JSON.parse(localStorage.getItem(SETTINGS_KEY) ?? "{}") ?? {};
  } catch {
    saved = {};
  }
  for (const [name, input] of Object.entries(fields)) {
    if (name in saved) {
      if (input.type === "checkbox") input.checked = Boolean(saved[name]);
      else input.value = String(saved[name]);
    }
    input.addEventListener("change", () => {
      const values = {};
      for (const [n, i] of Object.entries(fields)) values[n] = i.type === "checkbox" ? i.checked : i.value;
      localStorage.setItem(SETTINGS_KEY, JSON.stringify(values));
    });
  }
}

/** Fill the model picker from /v1/models; aliases are marked with the model they name. */
async function loadModels(select) {
  const list = await json("/v1/models");
  const models = list.data;
  select.replaceChildren(
    ...models.map((m) => {
      const option = document.createElement("option");
      option.value = m.id;
      option.textContent = m.alias_of ? `${m.id} (alias of ${m.alias_of})` : m.id;
      if (m.alias_of) option.dataset.aliasOf = m.alias_of;
      return option;
    }),
  );
  const preferred = models.find((m) => m.id === "default") ?? models.find((m) => !m.alias_of) ?? models[0];
  if (preferred) select.value = preferred.id;
  return models;
}

function renderConversationList(conversations, chat) {
  const list = $("conversation-list");
  list.replaceChildren(
    ...conversations.sorted().map((conversation) => {
      const li = document.createElement("li");
      li.dataset.id = conversation.id;
      const open = document.createElement("button");
      open.type = "button";
      open.className = "open";
      open.textContent = conversation.title;
      if (conversation.id === conversations.currentId) open.setAttribute("aria-current", "true");
      open.addEventListener("click", () => {
        if (conversation.id === conversations.currentId) return;
        chat.stop();
        conversations.select(conversation.id);
        chat.show();
        renderConversationList(conversations, chat);
      });
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "delete";
      remove.textContent = "×";
      remove.title = "Delete";
      remove.setAttribute("aria-label", `Delete conversation: ${conversation.title}`);
      remove.addEventListener("click", () => {
        if (conversation.id === conversations.currentId) chat.stop();
        conversations.remove(conversation.id);
        chat.show();
        renderConversationList(conversations, chat);
      });
      li.append(open, remove);
      return li;
    }),
  );
}

async function main() {
  onKeyNeeded(keyDialog);
  const fields = {
    temperature: $("temperature"),
    maxTokens: $("max-tokens"),
    keepAlive: $("keep-alive"),
    markdown: $("markdown"),
  };
  bindSettings(fields);

  const chart = new MemoryChart($("memory-chart"), $("memory-legend"));
  const panel = new StatusPanel(
    { serverLine: $("server-line"), figures: $("server-figures"), cards: $("model-cards"), error: $("status-error") },
    chart,
    () => fields.keepAlive.value.trim(),
  );
  const conversations = new Conversations();
  const debug = { memory: chart.points, status: null, models: [] };
  Object.defineProperty(window, "hoshikage", { value: debug, writable: false });
  panel.onUpdate((status) => {
    debug.status = status;
  });

  const chat = new Chat(
    {
      messages: $("messages"), form: $("composer"), prompt: $("prompt"), send: $("send"), stop: $("stop"),
      error: $("chat-error"), model: $("model"), system: $("system"), ...fields,
    },
    conversations,
    {
      onListChanged: () => renderConversationList(conversations, chat),
      onAnswerDone: () => panel.refresh(), // the panel shows the answer's effect at once
    },
  );
  $("settings").addEventListener("submit", (event) => event.preventDefault());
  $("new-chat").addEventListener("click", () => {
    chat.stop();
    const current = conversations.current;
    if (current && !current.messages.length) {
      $("prompt").focus(); // already a new chat
      return;
    }
    conversations.create($("model").value, "");
    conversations.save();
    chat.show();
    renderConversationList(conversations, chat);
    $("prompt").focus();
  });

  // The model list; if the server could not be reached, again after the next good poll.
  let listing = null;
  const listModels = () => {
    listing ??= loadModels($("model"))
      .then((models) => {
        debug.models = models;
        chat.showError(null);
        chat.show();
      })
      .catch((error) => {
        chat.showError(`Could not list the models: ${error.message}`);
        listing = null;
      });
    return listing;
  };
  panel.onUpdate(() => {
    if (!debug.models.length) listModels();
  });
  new GetModel(
    {
      form: $("get-form"), input: $("get-ref"), plan: $("get-plan"), pull: $("get-pull"),
      cancel: $("get-cancel"), verdict: $("get-verdict"), progress: $("get-progress"),
      result: $("get-result"), error: $("get-error"),
    },
    async (model) => {
      // Served now: list it, pick it, and show its card.
      debug.models = await loadModels($("model"));
      $("model").value = model;
      $("model").dispatchEvent(new Event("change"));
      panel.refresh();
    },
  );
  panel.start();
  await listModels();
  chat.show();
  renderConversationList(conversations, chat);
  document.body.dataset.ready = "true";
}

main();
