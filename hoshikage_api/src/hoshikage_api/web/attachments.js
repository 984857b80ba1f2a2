// Images attached to the next message: the Attach button (a file picker), pasting an image
// into the message box, or dropping image files on the composer. Each is read as a data:
// URL and shown as a thumbnail with a remove button until the message is sent; the chat then
// sends them as OpenAI image_url parts and shows them in the conversation.

/** The formats the server decodes (kernel/media.py's FORMATS). */
export const IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp"];

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
    /** @type {{name: string, url: string}[]} */
    this.items = [];
    el.input.accept = IMAGE_TYPES.join(",");
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
      if (!IMAGE_TYPES.includes(file.type)) {
        this.showError(`${file.name || "That file"} is not a PNG, JPEG, WebP, GIF or BMP image.`);
        continue;
      }
      try {
        this.items.push({ name: file.name || "pasted image", url: await readAsDataUrl(file) });
      } catch (error) {
        this.showError(`Could not read ${file.name}: ${error?.message ?? error}`);
      }
    }
    this.render();
  }

  /** The attached images' data: URLs, and the list emptied. */
  take() {
    const urls = this.items.map((item) => item.url);
    this.items = [];
    this.render();
    return urls;
  }

  render() {
    this.el.list.hidden = this.items.length === 0;
    this.el.list.replaceChildren(
      ...this.items.map((item, index) => {
        const li = document.createElement("li");
        const img = document.createElement("img");
        img.src = item.url;
        img.alt = item.name;
        const remove = document.createElement("button");
        remove.type = "button";
        remove.className = "remove";
        remove.textContent = "×";
        remove.setAttribute("aria-label", `Remove ${item.name}`);
        remove.addEventListener("click", () => {
          this.items.splice(index, 1);
          this.render();
        });
        li.append(img, remove);
        return li;
      }),
    );
  }
}
