// Images and documents attached to the next message: the Attach button (a file picker),
// pasting an image into the message box, or dropping files on the composer. Each is read as a
// data: URL and shown until the message is sent (an image as a thumbnail, a document as its
// name), with a remove button; the chat then sends images as OpenAI image_url parts and
// documents (PDFs and text files, whose text the server reads for any model) as file parts,
// and shows them in the conversation.

/** The formats the server decodes (kernel/media.py's FORMATS). */
export const IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp"];
/** Documents the server reads (kernel/documents.py), by type and, without one, by name. */
export const DOCUMENT_TYPES = ["application/pdf", "text/plain", "text/markdown", "text/csv", "application/json"];
export const DOCUMENT_NAMES = [".pdf", ".txt", ".md", ".csv", ".json"];

/** "image", "document", or null for a file the server would not read. */
export function kindOf(file) {
  if (IMAGE_TYPES.includes(file.type)) return "image";
  if (DOCUMENT_TYPES.includes(file.type) || file.type.startsWith("text/")) return "document";
  const name = (file.name || "").toLowerCase();
  if (!file.type && DOCUMENT_NAMES.some((end) => name.endsWith(end))) return "document";
  return null;
}

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

export class Attachments {
  /**
   * @param {object} el {button, input, list, prompt, composer}
   * @param {(message: string|null) => void} showError
   */
  constructor(el, showError) {
    this.el = el;
    this.showError = showError;
    /** @type {{name: string, url: string, kind: string}[]} */
    this.items = [];
    el.input.accept = [...IMAGE_TYPES, ...DOCUMENT_TYPES, ...DOCUMENT_NAMES].join(",");
    el.button.addEventListener("click", () => el.input.click());
    el.input.addEventListener("change", () => {
      this.addFiles([...el.input.files]);
      el.input.value = "";
    });
    el.prompt.addEventListener("paste", (event) => {
      const files = [...(event.clipboardData?.files ?? [])].filter((f) => f.type.startsWith("image/"));
      if (files.length) {
        event.preventDefault();
        this.addFiles(files);
      }
    });
    el.composer.addEventListener("dragover", (event) => {
      if ([...(event.dataTransfer?.items ?? [])].some((i) => i.kind === "file")) {
        event.preventDefault();
        el.composer.classList.add("dropping");
      }
    });
    el.composer.addEventListener("dragleave", () => el.composer.classList.remove("dropping"));
    el.composer.addEventListener("drop", (event) => {
      el.composer.classList.remove("dropping");
      const files = [...(event.dataTransfer?.files ?? [])];
      if (files.length) {
        event.preventDefault();
        this.addFiles(files);
      }
    });
  }

  async addFiles(files) {
    for (const file of files) {
      const kind = kindOf(file);
      if (!kind) {
        this.showError(
          `${file.name || "That file"} is neither an image (PNG, JPEG, WebP, GIF, BMP) nor a document (PDF, text).`,
        );
        continue;
      }
      try {
        const name = file.name || (kind === "image" ? "pasted image" : "document");
        this.items.push({ name, url: await readAsDataUrl(file), kind });
      } catch (error) {
        this.showError(`Could not read ${file.name}: ${error?.message ?? error}`);
      }
    }
    this.render();
  }

  /** The attached images' data: URLs and documents' {name, url}, and the list emptied. */
  take() {
    const images = this.items.filter((item) => item.kind === "image").map((item) => item.url);
    const files = this.items.filter((item) => item.kind === "document").map(({ name, url }) => ({ name, url }));
    this.items = [];
    this.render();
    return { images, files };
  }

  render() {
    this.el.list.hidden = this.items.length === 0;
    this.el.list.replaceChildren(
      ...this.items.map((item, index) => {
        const li = document.createElement("li");
        const shown = item.kind === "image" ? document.createElement("img") : fileChip(item.name);
        if (item.kind === "image") {
          shown.src = item.url;
          shown.alt = item.name;
        }
        const remove = document.createElement("button");
        remove.type = "button";
        remove.className = "remove";
        remove.textContent = "×";
        remove.setAttribute("aria-label", `Remove ${item.name}`);
        remove.addEventListener("click", () => {
          this.items.splice(index, 1);
          this.render();
        });
        li.append(shown, remove);
        return li;
      }),
    );
  }
}

/** A document shown by its name (in the attachments and in the conversation). */
export function fileChip(name) {
  const chip = document.createElement("span");
  chip.className = "file-chip";
  chip.textContent = name;
  chip.title = name;
  return chip;
}
