// A small Markdown renderer for chat answers: the text is escaped first, so nothing the model writes
// becomes markup; then fenced and inline code, headings, lists, emphasis and paragraphs are built as
// DOM nodes. Code blocks keep their text exactly.

function inline(parent, text) {
  const pattern = /(`[^`\n]+`|\*\*[^*\n]+\*\*|\*[^*\n]+\*)/g;
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    parent.append(text.slice(last, match.index));
    const token = match[0];
    let el;
    if (token.startsWith("`")) { el = document.createElement("code"); el.textContent = token.slice(1, -1); }
    else if (token.startsWith("**")) { el = document.createElement("strong"); el.textContent = token.slice(2, -2); }
    else { el = document.createElement("em"); el.textContent = token.slice(1, -1); }
    parent.append(el);
    last = match.index + token.length;
  }
  parent.append(text.slice(last));
}

export function render(target, source) {
  target.replaceChildren();
  const lines = source.split("\n");
  let list = null;
  let paragraph = [];
  const flush = () => {
    if (paragraph.length) {
      const p = document.createElement("p");
      inline(p, paragraph.join(" "));
      target.append(p);
      paragraph = [];
    }
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = line.match(/^```\s*([\w+-]*)/);
    if (fence) {
      flush(); list = null;
      const code = [];
      for (i++; i < lines.length && !lines[i].startsWith("```"); i++) code.push(lines[i]);
      const pre = document.createElement("pre");
      const el = document.createElement("code");
      if (fence[1]) el.dataset.lang = fence[1];
      el.textContent = code.join("\n");
      pre.append(el);
      target.append(pre);
      continue;
    }
    const heading = line.match(/^(#{1,4})\s+(.*)/);
    const item = line.match(/^\s*(?:[-*+]|\d+[.)])\s+(.*)/);
    if (heading) {
      flush(); list = null;
      const h = document.createElement(`h${Math.min(6, heading[1].length + 2)}`);
      inline(h, heading[2]);
      target.append(h);
    } else if (item) {
      flush();
      if (!list) { list = document.createElement(/^\s*\d/.test(line) ? "ol" : "ul"); target.append(list); }
      const li = document.createElement("li");
      inline(li, item[1]);
      list.append(li);
    } else if (!line.trim()) {
      flush(); list = null;
    } else {
      list = null;
      paragraph.push(line);
    }
  }
  flush();
}
