// Conversations, kept in this browser's localStorage (nothing is stored on the server).
//
// A conversation: {id, title, model, system, updated, messages: [{role, content, stats?,
// model?, error?, stopped?}]}. The list is saved whole under one key; the open one's id
// under another.

const LIST_KEY = "hoshikage.conversations";
const CURRENT_KEY = "hoshikage.currentConversation";
const TITLE_LENGTH = 60;

function newId() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
}

export class Conversations {
  constructor(storage = localStorage) {
    this.storage = storage;
    this.list = this.#read();
    this.currentId = storage.getItem(CURRENT_KEY);
    /** Set when the browser refused to save (quota): shown to the user. */
    this.saveError = null;
  }

  #read() {
    try {
      const list = JSON.parse(this.storage.getItem(LIST_KEY) ?? "[]");
      return Array.isArray(list) ? list.filter((c) => c && Array.isArray(c.messages)) : [];
    } catch {
      return [];
    }
  }

  /** Newest first. */
  sorted() {
    return [...this.list].sort((a, b) => b.updated - a.updated);
  }

  get current() {
    return this.list.find((c) => c.id === this.currentId) ?? null;
  }

  create(model = "", system = "") {
    const conversation = { id: newId(), title: "New chat", model, system, updated: Date.now(), messages: [] };
    this.list.push(conversation);
    this.select(conversation.id);
    return conversation;
  }

  select(id) {
    this.currentId = id;
    this.storage.setItem(CURRENT_KEY, id);
  }

  remove(id) {
    this.list = this.list.filter((c) => c.id !== id);
    if (this.currentId === id) {
      this.currentId = null;
      this.storage.removeItem(CURRENT_KEY);
    }
    this.save();
  }

  /** Title a conversation after its first user message. */
  retitle(conversation) {
    const first = conversation.messages.find((m) => m.role === "user");
    if (first) {
      const text = first.content.replace(/\s+/g, " ").trim();
      conversation.title = text.length > TITLE_LENGTH ? `${text.slice(0, TITLE_LENGTH - 1)}…` : text || "New chat";
    }
  }

  touch(conversation) {
    conversation.updated = Date.now();
    this.retitle(conversation);
    this.save();
  }

  save() {
    try {
      this.storage.setItem(LIST_KEY, JSON.stringify(this.list));
      this.saveError = null;
    } catch (error) {
      this.saveError = `This browser refused to save the conversations (${error.name}); delete some to make room.`;
    }
  }
}
