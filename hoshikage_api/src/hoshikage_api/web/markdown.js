// A safe subset of Markdown, built with DOM calls: every piece of text becomes a text
// node (textContent), never HTML. Supported: fenced code blocks (``` or ~~~, also while
// still open during streaming), bullet and numbered lists, headings, paragraphs, inline
// `code` and **bold**. Anything else stays as the literal text the model wrote.

const FENCE = /^\s{0,3}(```+|~~~+)\s*([\w+#.-]*)\s*$/;
const BULLET = /^\s{0,3}[-*+]\s+(.*)$/;
const NUMBERED = /^\s{0,3}(\d{1,9})[.)]\s+(.*)$/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const INLINE = /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)|\*\*(?=\S)([\s\S]*?\S)\*\*/g;

/** Append `text` to `parent`, with inline `code` and **bold** as elements. */
function appendInline(parent, text) {
  let last = 0;
  for (const match of text.matchAll(INLINE)) {
    if (match.index > last) parent.append(text.slice(last, match.index));
    const element = document.createElement(match[2] !== undefined ? "code" : "strong");
    element.textContent = match[2] !== undefined ? match[2] : match[3];
    parent.append(element);
    last = match.index + match[0].length;
  }
  if (last < text.length) parent.append(text.slice(last));
}

function paragraph(lines) {
  const p = document.createElement("p");
  lines.forEach((line, i) => {
    if (i) p.append(document.createElement("br"));
    appendInline(p, line);
  });
  return p;
}

/** Parse `text` into a DocumentFragment of the supported blocks. */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  const lines = text.split(/\r?\n/);
  let para = [];
  let list = null; // {element, ordered}
  const flushPara = () => {
    if (para.length) fragment.append(paragraph(para));
    para = [];
  };
  const endList = () => {
    list = null;
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = FENCE.exec(line);
    if (fence) {
      flushPara();
      endList();
      const marker = fence[1];
      const body = [];
      i++;
      while (i < lines.length && !(lines[i].trim().startsWith(marker[0].repeat(marker.length)) &&
                                   lines[i].trim().replace(/[`~]/g, "") === "")) {
        body.push(lines[i]);
        i++;
      }
      const pre = document.createElement("pre");
      const code = document.createElement("code");
      if (fence[2]) code.dataset.lang = fence[2];
      code.textContent = body.join("\n");
      pre.append(code);
      fragment.append(pre);
      continue;
    }
    const bullet = BULLET.exec(line);
    const numbered = bullet ? null : NUMBERED.exec(line);
    if (bullet || numbered) {
      flushPara();
      const ordered = Boolean(numbered);
      if (!list || list.ordered !== ordered) {
        const element = document.createElement(ordered ? "ol" : "ul");
        if (ordered && numbered[1] !== "1") element.start = Number(numbered[1]);
        fragment.append(element);
        list = { element, ordered };
      }
      const item = document.createElement("li");
      appendInline(item, ordered ? numbered[2] : bullet[1]);
      list.element.append(item);
      continue;
    }
    if (list && line.trim() && /^\s{2,}/.test(line)) {
      // an indented continuation line of the last item
      const item = list.element.lastElementChild;
      item.append(document.createElement("br"));
      appendInline(item, line.trim());
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      flushPara();
      endList();
      const h = document.createElement("p");
      h.className = `md-heading md-h${heading[1].length}`;
      appendInline(h, heading[2]);
      fragment.append(h);
      continue;
    }
    if (!line.trim()) {
      flushPara();
      endList();
      continue;
    }
    endList();
    para.push(line);
  }
  flushPara();
  return fragment;
}

/** Show `text` in `element`: as the Markdown subset, or as plain text. */
export function renderInto(element, text, markdown) {
  if (markdown) {
    element.replaceChildren(renderMarkdown(text));
    element.classList.remove("plain");
  } else {
    element.textContent = text;
    element.classList.add("plain");
  }
}
