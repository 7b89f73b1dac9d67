// The agentwire chat page. Plain ES modules, no framework: the SDK
// (/static/agentwire.js, built from clients/js) keeps the socket up, resumes
// and dedupes; this file turns threads, history and live events into DOM.
// Every text from the server goes through textContent, never innerHTML;
// answers are Markdown, drawn by markdown.js, which builds nodes the same way.
import { AgentwireClient, tokenExpiry } from "/static/agentwire.js";
import { renderMarkdown } from "/static/markdown.js";

const $ = (id) => document.getElementById(id);
// The session is kept in localStorage, which every tab of the origin
// shares: one login serves them all, a refreshed token reaches them all,
// and a logout in one (the key removed) logs every tab out (the storage
// event). The stream position is kept per tab and user in sessionStorage
// (a tab's own, kept across its reloads), so a reload resumes from the last
// event this tab handled instead of starting at the head; a position shared
// by tabs would let one tab skip what another had seen but it had not.
const TOKEN_KEY = "agentwire.token";
const posKey = (user) => `agentwire.position.${user}`;

const app = {
  config: { dev: false },
  token: null,
  user: "",
  client: null,
  threads: [],
  current: null, // thread id, or null for a new conversation
  loading: false, // history of the current thread in flight
  live: new Map(), // thread id → stream events received on this page
  runs: new Map(), // run id → RunView of the current thread
  running: new Map(), // thread id → ids of its runs this page saw start and not end
};

// ---------------------------------------------------------------- helpers

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c) e.append(c);
  return e;
}

function fmtMs(ms) {
  if (ms < 1) return "<1 ms";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

function short(v, max = 200) {
  const s = typeof v === "string" ? v : JSON.stringify(v);
  return s.length > max ? s.slice(0, max - 1) + "…" : s;
}

// fullValue is a tool's arguments or result in full, pretty-printed and
// folded, when the one-line form (short) does not show all of it; else
// nothing.
function fullValue(label, v) {
  if (v === undefined || v === null) return [];
  const flat = typeof v === "string" ? v : JSON.stringify(v);
  const nested = typeof v === "object" && Object.values(v).some((x) => x !== null && typeof x === "object");
  if (flat.length <= 60 && !nested && !flat.includes("\n")) return [];
  let pretty = typeof v === "string" ? v : JSON.stringify(v, null, 2);
  if (pretty.length > 20000) pretty = pretty.slice(0, 19999) + "…";
  const pre = el("pre", { tabindex: "0" }, el("code", { text: pretty }));
  return [el("details", { class: "tool-io" }, el("summary", { text: label }), pre)];
}

function subject(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4))).sub || "";
  } catch {
    return "";
  }
}

async function api(path, opts = {}) {
  const headers = { ...(opts.headers || {}) };
  if (app.token) headers.Authorization = "Bearer " + app.token;
  if (opts.body) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { ...opts, headers });
  let body = null;
  try {
    body = await res.json();
  } catch {
    /* not JSON */
  }
  if (!res.ok) {
    const err = new Error(body?.error?.message || `${path}: HTTP ${res.status}`);
    err.status = res.status;
    throw err;
  }
  return body;
}

function showError(where, err) {
  $(where).textContent = err ? String(err.message || err) : "";
}

// ---------------------------------------------------------------- login

async function init() {
  try {
    app.config = await api("/api/v1/config");
  } catch {
    app.config = { dev: false };
  }
  const saved = localStorage.getItem(TOKEN_KEY);
  const exp = saved ? tokenExpiry(saved) : undefined;
  if (saved && (exp === undefined || exp > Date.now() + 5000)) {
    start(saved);
  } else {
    showLogin();
  }
}

function showLogin(message) {
  $("app").hidden = true;
  $("logout").hidden = true;
  $("threads-toggle").hidden = true;
  $("who").hidden = true;
  $("login").hidden = false;
  $("dev-login").hidden = !app.config.dev;
  $("token-login").hidden = app.config.dev;
  showError("login-error", message);
  (app.config.dev ? $("dev-user") : $("token-input")).focus();
}

async function devLogin(user) {
  const res = await fetch("/auth/dev-login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user_id: user }),
  });
  const body = await res.json().catch(() => null);
  if (!res.ok) throw new Error(body?.error?.message || `dev login: HTTP ${res.status}`);
  return body.token;
}

$("dev-login").addEventListener("submit", async (e) => {
  e.preventDefault();
  try {
    start(await devLogin($("dev-user").value.trim()));
  } catch (err) {
    showError("login-error", err);
  }
});

$("token-login").addEventListener("submit", (e) => {
  e.preventDefault();
  const tok = $("token-input").value.trim();
  const exp = tokenExpiry(tok);
  if (!subject(tok) || (exp !== undefined && exp <= Date.now())) {
    showError("login-error", "That is not a valid, unexpired JWT.");
    return;
  }
  start(tok);
});

$("logout").addEventListener("click", () => {
  localStorage.removeItem(TOKEN_KEY); // the other tabs follow (storage event)
  stop();
  showLogin();
});

// stop ends this tab's session: socket, timers and what it drew.
function stop() {
  savePosition();
  app.client?.close();
  app.client = null;
  app.token = null;
  app.user = "";
  app.live.clear();
  app.running.clear();
  clearTimeout(refreshTimer);
  renderConn({ state: "idle" });
}

// Another tab logged in, refreshed the token or logged out.
window.addEventListener("storage", (e) => {
  if (e.key !== TOKEN_KEY && e.key !== null) return;
  const tok = localStorage.getItem(TOKEN_KEY);
  if (!tok) {
    if (app.token) {
      stop();
      showLogin("You logged out in another tab.");
    }
    return;
  }
  if (tok === app.token) return;
  if (app.token && subject(tok) === app.user) {
    app.token = tok; // the same session, renewed elsewhere: the socket keeps going
    scheduleRefresh();
    return;
  }
  start(tok);
});

// savePosition keeps the last seq this tab handled for its user (at most
// every 500 ms, and when the page goes away).
let posTimer;
function savePosition() {
  clearTimeout(posTimer);
  posTimer = undefined;
  const pos = app.client?.position;
  if (!app.user || !pos || pos.epoch === undefined) return;
  sessionStorage.setItem(posKey(app.user), JSON.stringify({ since: pos.since, epoch: pos.epoch }));
}
function savePositionSoon() {
  if (!posTimer) posTimer = setTimeout(savePosition, 500);
}
function loadPosition(user) {
  try {
    const p = JSON.parse(sessionStorage.getItem(posKey(user)) || "null");
    return p && Number.isSafeInteger(p.since) && typeof p.epoch === "string" ? p : null;
  } catch {
    return null;
  }
}
window.addEventListener("pagehide", savePosition);

// A dev token is renewed a minute before it expires (whichever tab does it
// first; the others take it from the storage event).
let refreshTimer;
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  const exp = tokenExpiry(app.token);
  if (!app.config.dev || exp === undefined) return;
  refreshTimer = setTimeout(() => {
    refreshToken().catch(() => {});
  }, Math.max(5000, exp - Date.now() - 60000));
}

async function refreshToken() {
  // A dev token is renewed by logging in again; a pasted token cannot be.
  if (app.config.dev && app.user) {
    const latest = localStorage.getItem(TOKEN_KEY);
    const exp = latest ? tokenExpiry(latest) : undefined;
    if (latest && latest !== app.token && subject(latest) === app.user && exp !== undefined && exp > Date.now() + 60000) {
      app.token = latest; // another tab renewed it already
    } else {
      app.token = await devLogin(app.user);
      localStorage.setItem(TOKEN_KEY, app.token);
    }
    scheduleRefresh();
    return app.token;
  }
  showLogin("Your token expired: paste a new one.");
  throw new Error("token expired");
}

// ---------------------------------------------------------------- session

async function start(token) {
  if (app.client) stop();
  app.token = token;
  app.user = subject(token);
  if (localStorage.getItem(TOKEN_KEY) !== token) localStorage.setItem(TOKEN_KEY, token);
  scheduleRefresh();
  $("login").hidden = true;
  $("app").hidden = false;
  $("who").hidden = false;
  $("who").textContent = app.user;
  $("logout").hidden = false;
  $("threads-toggle").hidden = false;
  showError("login-error");

  app.client?.close();
  const pos = loadPosition(app.user);
  const client = new AgentwireClient({ getToken: () => app.token, refreshToken, ...(pos ? { since: pos.since, epoch: pos.epoch } : {}) });
  app.client = client;
  client.onStateChange(renderConn);
  client.on("*", onEvent);
  client.onResync(() => {
    // What was missed is gone from the stream: the store has it.
    app.live.clear();
    loadThreads();
    openThread(app.current, false);
  });
  client.connect().catch((err) => showError("chat-error", err));

  await loadThreads();
  const fromHash = decodeURIComponent(location.hash.slice(1));
  openThread(app.threads.some((t) => t.id === fromHash) ? fromHash : null, false);
  $("composer-input").focus();
}

const connText = {
  idle: "Not connected",
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  resumed: "Resumed",
  closed: "Disconnected",
};

function renderConn(s) {
  const c = $("conn");
  c.dataset.state = s.state;
  let text = connText[s.state] || s.state;
  if (s.state === "reconnecting" && s.delayMs > 1500) text += ` (in ${Math.round(s.delayMs / 1000)} s)`;
  if (s.state === "closed" && s.code && s.code !== 1000) text += ` (${s.code})`;
  c.textContent = text;
}

// Every item of a paged list endpoint: its pages follow `next` until there
// is none. A 429 (too many lists in flight for this user) waits the second
// the server asks for and retries; stillWanted() false stops with null.
async function apiAll(path, key, stillWanted = () => true) {
  const items = [];
  let after = null;
  for (;;) {
    const url = after ? `${path}&after=${encodeURIComponent(after)}` : path;
    let page;
    try {
      page = await api(url);
    } catch (err) {
      if (err.status !== 429) throw err;
      await new Promise((r) => setTimeout(r, 1000));
      if (!stillWanted()) return null;
      continue;
    }
    if (!stillWanted()) return null;
    items.push(...page[key]);
    if (!page.next) return items;
    after = page.next;
  }
}

// ---------------------------------------------------------------- threads

// A read of the list may answer from before a rename or delete this page
// made while it was under way, and reads may answer out of order: such an
// answer would put the old list back. So only the latest read is shown, and a
// read that a rename or delete of this page overlapped is made again.
let threadsChanged = 0; // renames and deletes of this page that have answered
let threadsLoads = 0; // reads started
let threadsLatest = Promise.resolve(); // the latest read

function loadThreads() {
  threadsLatest = readThreads(++threadsLoads, threadsChanged);
  return threadsLatest;
}

async function readThreads(load, changed) {
  let threads = null;
  try {
    threads = await apiAll("/api/v1/threads?limit=1000", "threads");
  } catch (err) {
    if (err.status === 401) return showLogin("Please sign in again.");
    showError("chat-error", err);
  }
  if (load !== threadsLoads) return threadsLatest; // a later read shows the list
  if (changed !== threadsChanged) return loadThreads();
  if (threads) app.threads = threads;
  renderThreads();
}

// At most one reload of the list per 300 ms, however many events ask for it.
let threadsTimer;
function loadThreadsSoon() {
  if (threadsTimer) return;
  threadsTimer = setTimeout(() => {
    threadsTimer = undefined;
    loadThreads();
  }, 300);
}

function renderThreads() {
  const cur = app.threads.find((t) => t.id === app.current);
  if (cur) $("chat-title").textContent = cur.title || "Conversation";
  const list = $("thread-list");
  list.replaceChildren();
  if (app.threads.length === 0) {
    list.append(el("li", { class: "empty", text: "No conversations yet." }));
  }
  for (const t of app.threads) {
    const busy = app.running.get(t.id)?.size > 0;
    const b = el("button", { type: "button", class: "thread", "data-thread-id": t.id },
      el("span", { class: "thread-title", text: t.title || "Untitled" }),
      el("span", { class: "thread-meta" },
        busy ? el("span", { class: "badge running", text: "running" }) : null,
        el("time", { datetime: t.updated_at, text: new Date(t.updated_at).toLocaleString() })));
    if (t.id === app.current) b.setAttribute("aria-current", "true");
    b.addEventListener("click", () => openThread(t.id, true));
    list.append(el("li", {}, b));
  }
}

$("new-thread").addEventListener("click", () => openThread(null, true));

// ---------------------------------------------------------------- rename and delete

function closeRename() {
  $("rename-form").hidden = true;
  $("chat-title").hidden = false;
  $("thread-actions").hidden = !app.current;
}

$("rename-thread").addEventListener("click", () => {
  $("delete-confirm").hidden = true;
  $("rename-input").value = $("chat-title").textContent;
  $("chat-title").hidden = true;
  $("thread-actions").hidden = true;
  $("rename-form").hidden = false;
  $("rename-input").select();
});

$("rename-cancel").addEventListener("click", () => {
  closeRename();
  $("rename-thread").focus();
});

$("rename-input").addEventListener("keydown", (e) => {
  if (e.key === "Escape") {
    e.stopPropagation();
    closeRename();
    $("rename-thread").focus();
  }
});

$("rename-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const id = app.current;
  const title = $("rename-input").value.trim();
  if (!id || !title) return;
  showError("chat-error");
  try {
    let t;
    try {
      t = await api(`/api/v1/threads/${encodeURIComponent(id)}`, { method: "PATCH", body: JSON.stringify({ title }) });
    } finally {
      threadsChanged++;
    }
    const known = app.threads.find((x) => x.id === id);
    if (known) known.title = t.title;
    if (app.current === id) {
      $("chat-title").textContent = t.title;
      closeRename();
      $("rename-thread").focus();
    }
    renderThreads();
    tabs?.postMessage({ user: app.user, threads: "changed" });
  } catch (err) {
    showError("chat-error", err);
  }
});

$("delete-thread").addEventListener("click", () => {
  $("delete-confirm").hidden = false;
  $("delete-no").focus();
});

$("delete-no").addEventListener("click", () => {
  $("delete-confirm").hidden = true;
  $("delete-thread").focus();
});

$("delete-yes").addEventListener("click", async () => {
  const id = app.current;
  $("delete-confirm").hidden = true;
  if (!id) return;
  showError("chat-error");
  try {
    try {
      await api(`/api/v1/threads/${encodeURIComponent(id)}`, { method: "DELETE" });
    } finally {
      threadsChanged++;
    }
  } catch (err) {
    showError("chat-error", err.status === 409 ? "A run of this conversation is still going: stop it, then delete." : err);
    $("delete-thread").focus();
    return;
  }
  app.live.delete(id);
  app.threads = app.threads.filter((t) => t.id !== id);
  tabs?.postMessage({ user: app.user, threads: "changed" });
  if (app.current === id) openThread(null, true);
  else renderThreads();
});

// The other tabs of this browser hear of a rename or a delete at once (a
// deleted thread they have open closes); the stream carries no such event.
const tabs = "BroadcastChannel" in window ? new BroadcastChannel("agentwire") : null;
tabs?.addEventListener("message", async (e) => {
  if (e.data?.user !== app.user || e.data?.threads !== "changed" || !app.token) return;
  await loadThreads();
  if (app.current && !app.threads.some((t) => t.id === app.current)) openThread(null, false);
});

async function openThread(id, focus) {
  app.current = id;
  app.runs.clear();
  setDrawer(false);
  closeRename();
  $("delete-confirm").hidden = true;
  $("thread-actions").hidden = !id;
  following = true;
  $("new-below").hidden = true;
  const box = $("messages");
  box.replaceChildren();
  showError("chat-error");
  history.replaceState(null, "", id ? "#" + encodeURIComponent(id) : location.pathname);
  const t = app.threads.find((x) => x.id === id);
  $("chat-title").textContent = id ? t?.title || "Conversation" : "New conversation";
  renderThreads();
  if (focus) $("composer-input").focus();
  if (!id) {
    box.append(examples());
    return;
  }

  app.loading = true;
  box.setAttribute("aria-busy", "true");
  try {
    const messages = await apiAll(`/api/v1/threads/${encodeURIComponent(id)}/messages?limit=1000`, "messages",
      () => app.current === id);
    if (messages === null || app.current !== id) return;
    // Runs this page saw start are drawn from their events, timeline included.
    const seen = new Set((app.live.get(id) || []).filter((ev) => ev.type === "agent_started").map((ev) => ev.run_id));
    // A run whose transcript came with its message is drawn from its
    // stored events, the same timeline as live, failed and stopped runs
    // (and their partial answers) included.
    const stored = new Set();
    const answered = new Set(messages.filter((m) => m.role === "assistant").map((m) => m.run_id));
    for (const m of messages) {
      if (m.role === "user") {
        addUserMessage(m.id, m.content);
        if (m.run && m.run.events?.length && !seen.has(m.run.id)) {
          stored.add(m.run.id);
          const v = runView(m.run.id);
          for (const ev of m.run.events) v.apply(ev);
        }
      } else if (m.run_id && stored.has(m.run_id)) runView(m.run_id).storedAnswer(m.content);
      else if (m.run_id && seen.has(m.run_id)) runView(m.run_id);
      else if (m.run_id) runView(m.run_id).fromHistory(m.content);
      else addUserMessage(m.id, m.content, "assistant");
    }
    // A run that waits for an answer, started before this page: its
    // question comes from the retained events, so every tab can answer.
    const open = messages.filter((m) => m.role === "user" && m.run_id && !answered.has(m.run_id) && !seen.has(m.run_id));
    for (const m of open.slice(-3)) {
      const run = await api(`/api/v1/runs/${encodeURIComponent(m.run_id)}`);
      if (app.current !== id) return;
      // A run under way (a reload in the middle of it, another tab's run):
      // its steps so far come from the stream, the rest live.
      if (run.status === "waiting_for_input" || run.status === "running") await replayRun(m.run_id, () => app.current === id);
    }
  } catch (err) {
    if (app.current === id) showError("chat-error", err);
  } finally {
    if (app.current === id) {
      app.loading = false;
      box.removeAttribute("aria-busy");
      for (const ev of app.live.get(id) || []) applyEvent(ev);
      scrollDown();
    }
  }
}

// examples is what an empty conversation offers to try: each of the demo
// agent's behaviours, sent with one click.
const EXAMPLES = [
  ["what is 12*(3+4)?", "a tool call"],
  ["slow: what is 6*7?", "a slow run you can stop"],
  ["fail on purpose", "a failing run"],
  ["approve: what is 2+2?", "asks for your approval"],
];

function examples() {
  const list = el("ul", { class: "example-list" });
  for (const [prompt, what] of EXAMPLES) {
    const b = el("button", { type: "button", class: "example" }, el("span", { class: "example-prompt", text: prompt }), el("span", { class: "example-what", text: what }));
    b.addEventListener("click", () => {
      $("composer-input").value = prompt;
      $("composer").requestSubmit();
    });
    list.append(el("li", {}, b));
  }
  return el("div", { class: "examples" }, el("p", { class: "examples-title", text: "Try one of these, or ask anything:" }), list);
}

// ---------------------------------------------------------------- events

// replayRun draws a run this page did not see start from the events the
// stream still holds (at most 10 pages of them).
async function replayRun(runId, stillWanted) {
  let since = 0;
  for (let page = 0; page < 10; page++) {
    const res = await api(`/api/v1/events?since=${since}&limit=1000`);
    if (!stillWanted()) return;
    // The user's message is drawn from the thread's history already.
    for (const ev of res.events || []) if (ev.run_id === runId && ev.type !== "user_message") runView(runId).apply(ev);
    if (res.next === undefined || res.next === null) return;
    since = res.next;
  }
}

function onEvent(ev) {
  if (!ev.thread_id) return;
  let list = app.live.get(ev.thread_id);
  if (!list) app.live.set(ev.thread_id, (list = []));
  list.push(ev);
  trackRunning(ev);
  savePositionSoon();
  if (!app.threads.some((t) => t.id === ev.thread_id) || ev.type === "user_message") loadThreadsSoon();
  if (ev.thread_id === app.current && !app.loading) {
    applyEvent(ev);
    scrollDown();
  }
}

// trackRunning keeps the thread list's "running" badges: a run is running
// from its agent_started to its agent_completed or agent_error.
function trackRunning(ev) {
  if (!ev.run_id) return;
  let set = app.running.get(ev.thread_id);
  const before = set?.size > 0;
  if (ev.type === "agent_started") {
    if (!set) app.running.set(ev.thread_id, (set = new Set()));
    set.add(ev.run_id);
  } else if (ev.type === "agent_completed" || ev.type === "agent_error") {
    set?.delete(ev.run_id);
  } else return;
  if (before !== set?.size > 0) renderThreads();
}

function applyEvent(ev) {
  if (ev.type === "user_message") {
    addUserMessage(ev.data.message_id, ev.data.content);
    return;
  }
  if (ev.run_id) runView(ev.run_id).apply(ev);
}

function addUserMessage(id, content, role = "user") {
  const box = $("messages");
  if (box.querySelector(`[data-message-id="${CSS.escape(id)}"]`)) return;
  box.append(el("article", { class: `msg ${role}`, "data-message-id": id, "aria-label": role === "user" ? "You" : "Agent" },
    el("p", { class: "who-label", text: role === "user" ? "You" : "Agent" }),
    el("p", { class: "body", text: content })));
}

// The message pane follows new content while the reader is at its bottom;
// once they scroll up it stays put and a "new messages" pill offers the way
// back down.
let following = true;
let autoTop = 0; // scrollTop where the page last scrolled the pane itself

function atBottom(box) {
  return box.scrollHeight - box.scrollTop - box.clientHeight < 48;
}

function scrollDown(force = false) {
  const box = $("messages");
  // The reader scrolled up and its scroll event is not handled yet.
  if (!force && following && box.scrollTop < autoTop - 2 && !atBottom(box)) following = false;
  if (force || following) {
    box.scrollTop = box.scrollHeight;
    autoTop = box.scrollTop;
    following = true;
    $("new-below").hidden = true;
  } else if (!atBottom(box)) {
    $("new-below").hidden = false;
  }
}

$("messages").addEventListener("scroll", () => {
  const box = $("messages");
  following = atBottom(box);
  if (following) {
    autoTop = box.scrollTop;
    $("new-below").hidden = true;
  }
}, { passive: true });

$("new-below").addEventListener("click", () => {
  scrollDown(true);
  $("composer-input").focus();
});

// Content that grows without an event of its own (a prompt, fonts, a
// textarea resize) keeps the pane at its bottom while following.
new ResizeObserver(() => {
  if (following) scrollDown();
}).observe($("messages"));

// ---------------------------------------------------------------- drawer

function setDrawer(open) {
  $("app").classList.toggle("drawer-open", open);
  $("scrim").hidden = !open;
  $("threads-toggle").setAttribute("aria-expanded", String(open));
  if (open) $("new-thread").focus();
}

$("threads-toggle").addEventListener("click", () => setDrawer(!$("app").classList.contains("drawer-open")));
$("scrim").addEventListener("click", () => setDrawer(false));
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && $("app").classList.contains("drawer-open")) {
    setDrawer(false);
    $("threads-toggle").focus();
  }
});

// A run of the current thread: a header with status and time, a timeline of
// steps (one line per event, tool results folded into their call's line),
// and the answer, which screen readers announce once it is complete.
class RunView {
  constructor(runId) {
    this.runId = runId;
    this.seqs = new Set();
    this.maxSeq = 0;
    this.tools = new Map();
    this.prompts = new Map(); // request_id → the open question's controls
    this.answer = "";
    this.done = false;
    this.historic = false;
    this.startedAt = undefined;

    this.status = el("span", { class: "status", text: "running" });
    this.clock = el("span", { class: "clock", text: "" });
    this.summary = el("span", { class: "summary-text", text: "Working…" });
    this.stopBtn = el("button", { type: "button", class: "stop", text: "Stop", "aria-label": "Stop this run" });
    this.stopBtn.addEventListener("click", () => this.stop());
    this.timeline = el("ol", { class: "timeline", "aria-label": "Steps" });
    this.answerEl = el("div", { class: "answer", "aria-live": "polite", "aria-busy": "true", "aria-label": "Answer" });
    // The steps fold away once the run ends; their one-line summary
    // ("3 steps · calculator · total 457 ms") stays.
    this.steps = el("details", { class: "steps", open: true },
      el("summary", {}, this.summary, this.clock), this.timeline);
    this.marker = el("p", { class: "partial", hidden: true });
    this.root = el("article", { class: "run running", "data-run-id": runId, "aria-label": "Agent run" },
      el("header", { class: "run-head" }, el("span", { class: "who-label", text: "Agent" }), this.status, this.stopBtn),
      this.steps, this.answerEl, this.marker);
    $("messages").append(this.root);
  }

  fromHistory(content) {
    if (this.seqs.size > 0) return;
    this.historic = true;
    this.finish("completed", "");
    this.setAnswer(content, true);
    this.steps.hidden = true;
  }

  // The stored answer of a run drawn from its transcript: whole, where the
  // transcript may have cut it.
  storedAnswer(content) {
    this.setAnswer(content, true);
  }

  // setAnswer draws the answer as Markdown: at once when it is whole, at
  // most once a frame while it streams (each frame draws all of it so far,
  // so a half-written table or code block settles as it completes).
  setAnswer(text, now) {
    this.answer = text;
    if (now) {
      if (this.frame) cancelAnimationFrame(this.frame);
      this.frame = undefined;
      this.answerEl.replaceChildren(renderMarkdown(this.answer));
      scrollDown();
      return;
    }
    if (this.frame) return;
    // A hidden tab runs no animation frames: it draws each delta.
    if (document.visibilityState !== "visible") return this.setAnswer(text, true);
    this.frame = requestAnimationFrame(() => {
      this.frame = undefined;
      this.answerEl.replaceChildren(renderMarkdown(this.answer));
      scrollDown();
    });
  }

  line(ev, cls, text) {
    const li = el("li", { class: `ev ${cls}`, "data-seq": ev.seq, "data-type": ev.type });
    const t = Date.parse(ev.ts);
    if (this.startedAt === undefined) this.startedAt = t;
    li.append(el("span", { class: "at", text: `+${fmtMs(Math.max(0, t - this.startedAt))}` }), el("span", { class: "what", text }));
    this.timeline.append(li);
    this.summarize();
    return li;
  }

  // summarize writes the steps' one-line summary: how many steps (lines
  // between the start and the end) and which tools.
  summarize() {
    const lines = [...this.timeline.children];
    const n = lines.filter((li) => !["agent_started", "agent_completed", "agent_error"].includes(li.dataset.type)).length;
    const tools = [...new Set(lines.map((li) => li.querySelector(".tool-name")?.dataset.tool).filter(Boolean))];
    const parts = [`${n} step${n === 1 ? "" : "s"}`, ...tools];
    this.summary.textContent = parts.join(" · ") + (this.clock.textContent ? " · " : "");
  }

  apply(ev) {
    if (this.historic || this.seqs.has(ev.seq)) return;
    // A stored transcript folds deltas into one, numbered as its last: a
    // delta at or before an event already drawn is in the answer already,
    // and a run drawn to its end takes no second end.
    if (ev.type === "agent_message_delta" && ev.seq <= this.maxSeq) return;
    if (this.done && (ev.type === "agent_completed" || ev.type === "agent_error")) return;
    this.seqs.add(ev.seq);
    this.maxSeq = Math.max(this.maxSeq, ev.seq || 0);
    const d = ev.data || {};
    switch (ev.type) {
      case "agent_started":
        this.startedAt = Date.parse(ev.ts);
        this.localStart = performance.now();
        this.line(ev, "started", `Started${d.agent ? ` (${d.agent})` : ""}`);
        tick();
        break;
      case "agent_thinking":
        this.line(ev, "thinking", `Thinking: ${d.text}`);
        break;
      case "tool_executing": {
        const li = this.line(ev, "tool running", "");
        const what = li.querySelector(".what");
        what.replaceChildren(
          el("span", { class: "tool-name", "data-tool": d.tool, text: `Tool ${d.tool}` }),
          el("code", { class: "tool-args", text: short(d.args ?? {}) }),
          el("span", { class: "tool-result", text: "running…" }));
        li.append(...fullValue("Arguments", d.args));
        this.tools.set(d.tool_call_id, li);
        this.summarize();
        break;
      }
      case "tool_completed": {
        let li = this.tools.get(d.tool_call_id);
        if (!li) {
          li = this.line(ev, "tool", "");
          li.querySelector(".what").append(el("span", { class: "tool-name", "data-tool": d.tool, text: `Tool ${d.tool}` }), el("code", { class: "tool-args" }), el("span", { class: "tool-result" }));
        }
        li.classList.remove("running");
        li.classList.add(d.ok ? "ok" : "failed");
        li.dataset.completedSeq = ev.seq;
        li.querySelector(".tool-result").textContent =
          `${d.ok ? "→ " + short(d.result) : "failed: " + (d.error || short(d.result))} · ${fmtMs(d.duration_ms ?? 0)}`;
        li.append(...fullValue("Result", d.result));
        break;
      }
      case "tool_progress": {
        const li = this.tools.get(d.tool_call_id);
        if (!li || !li.classList.contains("running")) break; // the call is over: its result stays
        const of = d.total ? `${d.progress}/${d.total}` : `${d.progress}`;
        li.querySelector(".tool-result").textContent = `running… ${of}${d.message ? ` ${d.message}` : ""}`;
        break;
      }
      case "input_required":
        this.ask(ev, d);
        break;
      case "input_received": {
        const said = d.approved !== undefined ? (d.approved ? "approved" : "denied") : d.text !== undefined ? `“${d.text}”` : d.choice;
        this.line(ev, "answered", `Answered: ${said}`);
        this.closePrompt(d.request_id);
        break;
      }
      case "agent_message_delta":
        if (this.done) break;
        this.setAnswer(this.answer + (d.delta ?? ""), false);
        break;
      case "agent_completed":
        this.setAnswer(d.final_response ?? this.answer, true);
        this.line(ev, "completed", `Completed${d.usage ? ` · ${d.usage.input_tokens} + ${d.usage.output_tokens} tokens` : ""}`);
        this.finish("completed", fmtMs(d.duration_ms ?? 0));
        break;
      case "agent_error":
        // A stop says so once: "Stopped: cancelled", not its message again.
        this.line(ev, "error", d.code === "cancelled" ? "Stopped: cancelled" : `Error: ${d.code}${d.message ? ` (${d.message})` : ""}`);
        this.finish(d.code === "cancelled" ? "cancelled" : "failed", fmtMs(d.duration_ms ?? 0));
        break;
      default:
        this.line(ev, "other", `${ev.type}: ${short(d)}`);
    }
  }

  // ask shows the run's question with its controls (Approve/Deny, a text
  // box, or one button per option) until an answer arrives from any tab.
  ask(ev, d) {
    const li = this.line(ev, "asks", `Asks: ${d.prompt}`);
    if (this.done) return;
    this.steps.open = true;
    const form = el("form", { class: "prompt", "aria-label": "Answer the agent" });
    const send = async (answer) => {
      for (const c of form.elements) c.disabled = true;
      try {
        await app.client.answerInput(this.runId, d.request_id, answer);
      } catch (err) {
        if (err.code === "conflict") return this.closePrompt(d.request_id); // another tab answered first
        for (const c of form.elements) c.disabled = false;
        showError("chat-error", err);
      }
    };
    const button = (text, answer, cls = "") => {
      const b = el("button", { type: "button", class: cls, text });
      b.addEventListener("click", () => send(answer));
      return b;
    };
    if (d.kind === "approval") {
      form.append(button("Approve", { approved: true }, "approve"), button("Deny", { approved: false }, "deny"));
    } else if (d.kind === "choice") {
      for (const o of d.options || []) form.append(button(o, { choice: o }, "choice"));
    } else {
      const input = el("input", { type: "text", class: "prompt-text", "aria-label": d.prompt });
      form.append(input, el("button", { type: "submit", text: "Send" }));
      form.addEventListener("submit", (e) => {
        e.preventDefault();
        send({ text: input.value });
      });
    }
    li.append(form);
    this.prompts.set(d.request_id, form);
    this.status.textContent = "waiting for input";
    form.querySelector("button, input")?.focus();
  }

  closePrompt(requestId) {
    const form = this.prompts.get(requestId);
    if (!form) return;
    this.prompts.delete(requestId);
    if (form.contains(document.activeElement)) $("composer-input").focus();
    form.remove();
    if (!this.done) this.status.textContent = "running";
  }

  finish(status, total) {
    if (this.frame) this.setAnswer(this.answer, true);
    for (const id of [...this.prompts.keys()]) this.closePrompt(id);
    this.done = true;
    this.root.classList.remove("running");
    this.root.classList.add(status);
    this.status.textContent = status;
    this.clock.textContent = total ? `total ${total}` : "";
    this.summarize();
    this.steps.open = false;
    if (status !== "completed" && this.answer) {
      // A partial answer says that it is one.
      this.marker.textContent = status === "cancelled" ? "Stopped: the answer above is incomplete." : "Failed: the answer above is incomplete.";
      this.marker.hidden = false;
    }
    this.answerEl.setAttribute("aria-busy", "false");
    if (this.stopBtn.contains(document.activeElement)) $("composer-input").focus();
    this.stopBtn.remove();
  }

  async stop() {
    this.stopBtn.disabled = true;
    try {
      await app.client.stop(this.runId);
    } catch (err) {
      this.stopBtn.disabled = false;
      showError("chat-error", err);
    }
  }
}

function runView(runId) {
  let v = app.runs.get(runId);
  if (!v) app.runs.set(runId, (v = new RunView(runId)));
  return v;
}

// One timer updates the elapsed time of every running run.
let ticker;
function tick() {
  if (ticker) return;
  ticker = setInterval(() => {
    let any = false;
    for (const v of app.runs.values()) {
      if (v.done || v.localStart === undefined) continue;
      any = true;
      v.clock.textContent = fmtMs(performance.now() - v.localStart);
      if (!v.summary.textContent.endsWith(" · ")) v.summarize();
    }
    if (!any) {
      clearInterval(ticker);
      ticker = undefined;
    }
  }, 100);
}

// ---------------------------------------------------------------- composer

$("composer").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = $("composer-input");
  const content = input.value.trim();
  if (!content || !app.client) return;
  input.value = "";
  showError("chat-error");
  scrollDown(true); // the writer wants to see the answer
  try {
    const ack = await app.client.sendMessage(content, { threadId: app.current ?? undefined });
    if (app.current === null) await openThread(ack.thread_id, false);
    loadThreadsSoon();
  } catch (err) {
    input.value = content;
    showError("chat-error", err);
  }
});

$("composer-input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $("composer").requestSubmit();
  }
});

init();
