// Calls to the server: JSON requests, the API key, and server-sent events.
//
// Every call goes to the page's own origin (the CSP allows nothing else). URLs are relative
// to the page, so the page also works behind a proxy that serves the server under a prefix.
// With an API key on the server, the first 401 asks for the key (once, whoever asked
// first), keeps it in sessionStorage and retries.

const KEY_STORAGE = "hoshikage.apiKey";

/** The server's root, from the page's address (/ui/ → /). */
const ROOT = new URL("../", document.baseURI);

export function apiUrl(path) {
  return new URL(path.replace(/^\//, ""), ROOT);
}

/** An error response of the API, with its message and code. */
export class ApiError extends Error {
  constructor(status, message, code = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

let askForKey = null; // (reason: string) => Promise<string>
let pendingKey = null; // one prompt at a time, shared by every caller that got a 401

/** Install the function that asks the user for the key (it resolves with the key). */
export function onKeyNeeded(ask) {
  askForKey = ask;
}

export function storedKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

function keyAfter401(refused) {
  if (!askForKey) return Promise.reject(new ApiError(401, "The server needs an API key."));
  if (!pendingKey) {
    const reason = refused ? "The server refused that key. Try again." : "";
    pendingKey = askForKey(reason).then((key) => {
      sessionStorage.setItem(KEY_STORAGE, key);
      return key;
    }).finally(() => {
      pendingKey = null;
    });
  }
  return pendingKey;
}

/**
 * fetch() one API path with the key; on 401 ask for the key and try again.
 * Returns the Response (any status but 401).
 */
export async function call(path, { method = "GET", body, signal } = {}) {
  for (;;) {
    const sent = storedKey();
    const headers = {};
    if (sent) headers.Authorization = `Bearer ${sent}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(apiUrl(path), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
    });
    if (response.status !== 401) return response;
    await response.body?.cancel();
    // Another caller may have stored a new key while this one was in flight.
    if (storedKey() !== sent) continue;
    await keyAfter401(sent !== null);
  }
}

/** The error an API response carries, as an ApiError (OpenAI's body, or plain text). */
export async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  let code = null;
  try {
    const body = await response.json();
    const error = body.error ?? body;
    if (typeof error.message === "string") message = error.message;
    if (typeof error.code === "string") code = error.code;
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, message, code);
}

/** GET or POST a path and return its JSON body; an error response throws ApiError. */
export async function json(path, options) {
  const response = await call(path, options);
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

/**
 * The events of a text/event-stream response, as batches: each batch holds the `data`
 * payloads parsed from one network read, so a caller can render once per read.
 * Yields arrays of strings (the raw data, "[DONE]" included).
 */
export async function* eventBatches(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      const batch = [];
      for (;;) {
        const end = buffer.search(/\r?\n\r?\n/);
        if (end < 0) break;
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
        const data = block
          .split(/\r?\n/)
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""));
        if (data.length) batch.push(data.join("\n"));
      }
      if (batch.length) yield batch;
    }
  } finally {
    reader.releaseLock();
  }
}
