// A small Markdown renderer for agent answers that is safe by construction:
// it builds DOM nodes and sets only textContent and a checked href, never
// innerHTML, so raw HTML in an answer (`<img src=x onerror=…>`, `<script>`)
// is shown as the text it is and nothing in an answer can run. That is why
// the page needs no sanitiser (and no third-party code to vendor and keep up
// to date): there is no HTML parsing step to sanitise. It covers what agents
// write: paragraphs, headings, lists (nested by indentation), block quotes,
// fenced code (with a copy button), GitHub tables, rules, and inline code,
// emphasis, strike-through, links and bare URLs. Links open in a new tab with
// rel="noopener noreferrer"; only http:, https: and mailto: URLs become links.
// It is pure and fast enough to re-render a streaming answer on each frame;
// an unclosed code fence renders as code up to the end, so streaming code
// does not flicker between paragraph and code.

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}> ?/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_SEP = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;

function el(tag, cls) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  return e;
}

// renderMarkdown returns a fragment of DOM nodes for src.
export function renderMarkdown(src) {
  const frag = document.createDocumentFragment();
  blocks(String(src ?? "").replace(/\r\n?/g, "\n").split("\n"), frag, 0);
  return frag;
}

function indentOf(line) {
  return line.match(/^\s*/)[0].replace(/\t/g, "    ").length;
}

function startsBlock(line, next) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line) ||
    (line.includes("|") && next !== undefined && TABLE_SEP.test(next) && next.includes("-"));
}

function blocks(lines, parent, depth) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i++;
      continue;
    }
    let m;
    if ((m = line.match(FENCE))) {
      const fence = m[1];
      const code = [];
      i++;
      while (i < lines.length && !(lines[i].trim().startsWith(fence[0].repeat(fence.length)) && !lines[i].trim().slice(fence.length).trim())) {
        code.push(lines[i]);
        i++;
      }
      i++; // the closing fence, if any
      parent.append(codeBlock(code.join("\n"), m[2]));
      continue;
    }
    if ((m = line.match(HEADING))) {
      const h = el(`h${Math.min(6, m[1].length + 2)}`);
      inline(m[2], h);
      parent.append(h);
      i++;
      continue;
    }
    if (RULE.test(line)) {
      parent.append(el("hr"));
      i++;
      continue;
    }
    if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && lines[i].trim() && QUOTE.test(lines[i])) inner.push(lines[i++].replace(QUOTE, ""));
      const q = el("blockquote");
      if (depth < 8) blocks(inner, q, depth + 1);
      else inline(inner.join("\n"), q);
      parent.append(q);
      continue;
    }
    if (ITEM.test(line)) {
      i = list(lines, i, parent, depth);
      continue;
    }
    if (line.includes("|") && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1]) && lines[i + 1].includes("-")) {
      i = table(lines, i, parent);
      continue;
    }
    const para = [line];
    i++;
    while (i < lines.length && lines[i].trim() && !startsBlock(lines[i], lines[i + 1])) para.push(lines[i++]);
    const p = el("p");
    inline(para.map((l) => l.trim()).join("\n"), p);
    parent.append(p);
  }
}

// list renders the list starting at lines[i] and returns the index after it.
function list(lines, i, parent, depth) {
  const first = lines[i].match(ITEM);
  const base = indentOf(first[1]);
  const ordered = /\d/.test(first[2]);
  const ol = el(ordered ? "ol" : "ul");
  if (ordered && parseInt(first[2], 10) !== 1) ol.start = parseInt(first[2], 10);
  while (i < lines.length) {
    const m = lines[i].match(ITEM);
    if (!m || indentOf(m[1]) !== base || /\d/.test(m[2]) !== ordered) break;
    const body = [m[3]];
    i++;
    // The item's own lines: deeper indented ones, lazy continuations and
    // blank lines followed by deeper indented ones.
    while (i < lines.length) {
      const l = lines[i];
      if (!l.trim()) {
        if (i + 1 < lines.length && lines[i + 1].trim() && indentOf(lines[i + 1]) > base) {
          body.push("");
          i++;
          continue;
        }
        break;
      }
      const im = l.match(ITEM);
      if (im && indentOf(im[1]) <= base) break;
      if (!im && indentOf(l) <= base && startsBlock(l, lines[i + 1])) break;
      body.push(indentOf(l) > base ? l.replace(/^\s+/, (s) => s.slice(Math.min(s.length, base + 2))) : l.trim());
      i++;
    }
    const li = el("li");
    if (depth < 8 && body.length > 1) {
      blocks(body, li, depth + 1);
      // A tight item's single paragraph reads as its text.
      if (li.childElementCount && li.firstElementChild.tagName === "P" && !body.includes("")) li.firstElementChild.replaceWith(...li.firstElementChild.childNodes);
    } else {
      inline(body.join("\n"), li);
    }
    ol.append(li);
    while (i < lines.length && !lines[i].trim() && i + 1 < lines.length) {
      const n = lines[i + 1].match(ITEM);
      if (n && indentOf(n[1]) === base) i++;
      else break;
    }
  }
  parent.append(ol);
  return i;
}

function cells(row) {
  let s = row.trim();
  if (s.startsWith("|")) s = s.slice(1);
  if (s.endsWith("|") && !s.endsWith("\\|")) s = s.slice(0, -1);
  return s.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|"));
}

function table(lines, i, parent) {
  const head = cells(lines[i]);
  const align = cells(lines[i + 1]).map((c) => (c.startsWith(":") && c.endsWith(":") ? "center" : c.endsWith(":") ? "right" : c.startsWith(":") ? "left" : ""));
  const t = el("table");
  const thead = el("thead");
  const tr = el("tr");
  head.forEach((c, k) => {
    const th = el("th");
    th.scope = "col";
    if (align[k]) th.style.textAlign = align[k];
    inline(c, th);
    tr.append(th);
  });
  thead.append(tr);
  t.append(thead);
  const tbody = el("tbody");
  i += 2;
  while (i < lines.length && lines[i].trim() && lines[i].includes("|")) {
    const r = el("tr");
    const cs = cells(lines[i]);
    for (let k = 0; k < head.length; k++) {
      const td = el("td");
      if (align[k]) td.style.textAlign = align[k];
      inline(cs[k] ?? "", td);
      r.append(td);
    }
    tbody.append(r);
    i++;
  }
  t.append(tbody);
  // A wide table scrolls sideways on its own, reachable by keyboard.
  const wrap = el("div", "table-wrap");
  wrap.tabIndex = 0;
  wrap.setAttribute("role", "region");
  wrap.setAttribute("aria-label", "Table");
  wrap.append(t);
  parent.append(wrap);
  return i;
}

function codeBlock(text, lang) {
  const wrap = el("div", "code-block");
  const bar = el("div", "code-bar");
  const label = el("span", "code-lang");
  label.textContent = lang || "code";
  const copy = el("button", "copy");
  copy.type = "button";
  copy.setAttribute("aria-label", `Copy ${lang || "code"}`);
  copy.addEventListener("click", () => copyText(text, copy));
  bar.append(label, copy);
  const pre = el("pre");
  pre.tabIndex = 0;
  const code = el("code");
  if (lang) code.dataset.lang = lang;
  code.textContent = text;
  pre.append(code);
  wrap.append(bar, pre);
  return wrap;
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Without the async clipboard (an insecure origin): a hidden textarea.
    const ta = document.createElement("textarea");
    ta.value = text;
    ta.setAttribute("readonly", "");
    ta.style.position = "fixed";
    ta.style.opacity = "0";
    document.body.append(ta);
    ta.select();
    document.execCommand("copy");
    ta.remove();
    button.focus();
  }
  const label = button.getAttribute("aria-label");
  button.dataset.copied = "true";
  button.setAttribute("aria-label", "Copied");
  setTimeout(() => {
    delete button.dataset.copied;
    button.setAttribute("aria-label", label);
  }, 1500);
}

// safeHref returns the absolute URL of href if it is http(s) or mailto,
// else null: javascript:, data:, vbscript: and the rest never become links.
export function safeHref(href) {
  try {
    const u = new URL(href, location.href);
    return ["http:", "https:", "mailto:"].includes(u.protocol) ? u.href : null;
  } catch {
    return null;
  }
}

const INLINE = new RegExp(
  [
    /\\([!-/:-@[-`{-~])/.source, // 1: a backslash escape
    /(`+)([^`]|[^`][\s\S]*?[^`])\2(?!`)/.source, // 2, 3: a code span
    /(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^\s<>()]*(?:\([^\s()]*\)[^\s<>()]*)*)>?(?:\s+(?:"[^"]*"|'[^']*'))?\s*\)/.source, // 4, 5, 6: a link or image
    /(\*\*|__)(?=\S)([\s\S]*?\S)\7/.source, // 7, 8: strong
    /(\*|_)(?=[^\s*_])([\s\S]*?[^\s\\])\9/.source, // 9, 10: emphasis
    /~~(?=\S)([\s\S]*?\S)~~/.source, // 11: strike-through
    /(https?:\/\/[^\s<>"]*[^\s<>".,:;'!?)\]])/.source, // 12: a bare URL
    /(\n)/.source, // 13: a line break
  ].join("|"),
  "g",
);

function link(href, parent, label) {
  const url = safeHref(href);
  if (!url) {
    // Not a safe link: its text only, so nothing can be clicked.
    const s = el("span", "unsafe-link");
    s.title = "link removed";
    label(s);
    parent.append(s);
    return;
  }
  const a = el("a");
  a.href = url;
  a.target = "_blank";
  a.rel = "noopener noreferrer nofollow";
  label(a);
  parent.append(a);
}

function inline(text, parent, depth = 0) {
  let last = 0;
  INLINE.lastIndex = 0;
  const matches = [...text.matchAll(INLINE)];
  for (const m of matches) {
    if (m.index < last) continue;
    const before = text[m.index - 1] ?? " ";
    const after = text[m.index + m[0].length] ?? " ";
    // _ emphasis only between non-word characters: snake_case stays.
    if ((m[7] === "__" || m[9] === "_") && (/\w/.test(before) || /\w/.test(after))) continue;
    if (depth > 6 && !m[1] && !m[2] && !m[13]) continue;
    parent.append(text.slice(last, m.index));
    last = m.index + m[0].length;
    if (m[1] !== undefined) parent.append(m[1]);
    else if (m[2] !== undefined) {
      const c = el("code");
      c.textContent = m[3].length > 2 && m[3].startsWith(" ") && m[3].endsWith(" ") ? m[3].slice(1, -1) : m[3];
      parent.append(c);
    } else if (m[5] !== undefined) {
      // An image is never loaded (it could track the reader): a link to it.
      link(m[6], parent, (a) => (m[4] ? a.append(`image: ${m[5] || m[6]}`) : inline(m[5], a, depth + 1)));
    } else if (m[7] !== undefined) {
      const s = el("strong");
      inline(m[8], s, depth + 1);
      parent.append(s);
    } else if (m[9] !== undefined) {
      const s = el("em");
      inline(m[10], s, depth + 1);
      parent.append(s);
    } else if (m[11] !== undefined) {
      const s = el("del");
      inline(m[11], s, depth + 1);
      parent.append(s);
    } else if (m[12] !== undefined) {
      link(m[12], parent, (a) => a.append(m[12]));
    } else if (m[13] !== undefined) {
      parent.append(el("br"));
    }
  }
  parent.append(text.slice(last));
}
