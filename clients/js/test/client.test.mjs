// The SDK against a real agentwire server (built from this repository).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";

import { AgentwireClient, AgentwireError } from "../dist/agentwire.js";
import { startServer, startProxy, sign, publish, get, until, assertWholeRun } from "./helpers.mjs";

let srv;
before(async () => { srv = await startServer(); });
after(async () => { await srv?.stop(); });

let userN = 0;
/** A fresh user per test, so tests do not see each other's events. */
const newUser = () => `js-user-${process.pid}-${++userN}`;

function client(opts) {
  const c = new AgentwireClient({ url: srv.url, WebSocket, ...opts });
  const states = [];
  c.onStateChange((s) => states.push(s));
  return { c, states };
}

/** Collects the events of a run until its terminal event. */
function collectRun(c, runId) {
  const events = [];
  const done = new Promise((resolve) => {
    c.onRun(runId, (ev) => {
      events.push(ev);
      if (ev.type === "agent_completed" || ev.type === "agent_error") resolve(events);
    });
  });
  return { events, done };
}

test("golden path: ticket auth, calculator, 84", async () => {
  const user = newUser();
  const { c, states } = client({ getToken: () => sign(user) });
  await c.connect();
  assert.equal(c.state, "connected");
  assert.equal(c.connection.user_id, user);
  assert.deepEqual(states.map((s) => s.state), ["connecting", "connected"]);

  const ack = await c.sendMessage("what is 12*(3+4)?");
  assert.ok(ack.thread_id && ack.run_id && ack.message_id, JSON.stringify(ack));
  const { done } = collectRun(c, ack.run_id);
  const events = await done;
  assertWholeRun(events);
  const exec = events.find((e) => e.type === "tool_executing");
  assert.equal(exec.data.tool, "calculator");
  assert.equal(exec.data.args.expression, "12*(3+4)");
  const res = events.find((e) => e.type === "tool_completed");
  assert.equal(res.data.result, 84);
  assert.equal(res.data.tool_call_id, exec.data.tool_call_id);
  assert.match(events.at(-1).data.final_response, /84/);
  const echo = events.find((e) => e.type === "user_message");
  assert.equal(echo.data.client_message_id, ack.client_message_id);
  c.close();
  assert.equal(c.state, "closed");
});

test("subprotocol auth and handlers by type", async () => {
  const user = newUser();
  const { c } = client({ getToken: () => sign(user), auth: "subprotocol" });
  const deltas = [];
  c.on("agent_message_delta", (e) => deltas.push(e.data.delta));
  const completed = new Promise((r) => c.on("agent_completed", r));
  await c.connect();
  await c.sendMessage("hello there");
  const fin = await completed;
  assert.equal(deltas.join(""), fin.data.final_response);
  c.close();
});

test("dedupe: a replay of events already handled reaches no handler", async () => {
  const user = newUser();
  for (let i = 1; i <= 3; i++) await publish(srv.url, user, "build.finished", { n: i });
  const { c } = client({ getToken: () => sign(user), since: 0 });
  const seen = [];
  c.on("*", (e) => seen.push(e.seq));
  await c.connect();
  await until(() => seen.length === 3, 5000, "replay of 3 events");
  assert.ok(c.requestReplay(0));
  const pong = await c.ping(); // answered after the replay the resume caused
  assert.equal(pong.type, "pong");
  await publish(srv.url, user, "build.finished", { n: 4 });
  await until(() => seen.length >= 4, 5000, "the live event");
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(seen, [1, 2, 3, 4]);
  assert.equal(c.position.since, 4);
  c.close();
});

test("reconnect after the socket drops mid-run: resumed, nothing lost or repeated", async () => {
  const user = newUser();
  const proxy = await startProxy(srv.url);
  try {
    const c = new AgentwireClient({ url: proxy.url, WebSocket, getToken: () => sign(user), initialDelayMs: 200 });
    const states = [];
    c.onStateChange((s) => states.push(s.state));
    await c.connect();
    const ack = await c.sendMessage("slow: what is 6*7?");
    const { events, done } = collectRun(c, ack.run_id);
    await until(() => events.some((e) => e.type === "agent_thinking"), 5000, "thinking");
    proxy.cut();
    const all = await done;
    assert.ok(states.includes("reconnecting"), `states ${states}`);
    assert.equal(c.state, "resumed");
    assertWholeRun(all);
    assert.match(all.at(-1).data.final_response, /42/);
    c.close();
  } finally {
    await proxy.close();
  }
});

test("resync_required: onResync is called and the client continues from head", async () => {
  const user = newUser();
  await publish(srv.url, user, "note.added", { n: 1 });
  const { c } = client({ getToken: () => sign(user), since: 5, epoch: "not-the-epoch" });
  const resync = new Promise((r) => c.onResync(r));
  await c.connect();
  const f = await resync;
  assert.equal(f.type, "resync_required");
  assert.equal(f.head_seq, 1);
  assert.ok(f.reason);
  assert.deepEqual(c.position, { since: 1, epoch: f.epoch });
  const next = new Promise((r) => c.on("note.added", r));
  await publish(srv.url, user, "note.added", { n: 2 });
  assert.equal((await next).seq, 2);
  c.close();
});

test("sendMessage: ack, error frame rejection, timeout, idempotent resend after reconnect", async () => {
  const user = newUser();
  const { c } = client({ getToken: () => sign(user) });
  await c.connect();

  await assert.rejects(c.sendMessage("hi", { threadId: "no-such-thread" }), (err) => {
    assert.ok(err instanceof AgentwireError);
    assert.equal(err.code, "not_found");
    return true;
  });
  await assert.rejects(c.sendMessage(""), (err) => err instanceof AgentwireError && err.code === "invalid_message");

  // The same client_message_id twice: one run, the first ack.
  const a1 = await c.sendMessage("first", { clientMessageId: "cm-1" });
  const a2 = await c.sendMessage("first", { clientMessageId: "cm-1" });
  assert.equal(a2.run_id, a1.run_id);
  assert.equal(a2.thread_id, a1.thread_id);
  c.close();

  // The ack is lost with the connection: the resend on the new connection
  // gets the first ack, and the thread has one user message.
  const proxy = await startProxy(srv.url);
  try {
    const c2 = new AgentwireClient({ url: proxy.url, WebSocket, getToken: () => sign(user), initialDelayMs: 100 });
    await c2.connect();
    const echoes = [];
    c2.on("user_message", (e) => echoes.push(e));
    proxy.freezeDown();
    const p = c2.sendMessage("only once please", { threadId: a1.thread_id });
    await new Promise((r) => setTimeout(r, 300)); // the server has it; the ack is held
    proxy.cut();
    const ack = await p;
    assert.equal(ack.thread_id, a1.thread_id);
    await until(() => echoes.length >= 1, 5000, "the echo, replayed");
    const { messages } = await get(srv.url, sign(user), `/api/v1/threads/${a1.thread_id}/messages`);
    assert.equal(messages.filter((m) => m.role === "user" && m.content === "only once please").length, 1);
    assert.equal(echoes.length, 1);

    // No answer at all: timeout.
    proxy.freezeDown();
    await assert.rejects(c2.sendMessage("lost", { timeoutMs: 300 }), (err) => err.code === "timeout");
    c2.close();
  } finally {
    await proxy.close();
  }
});

test("close 4001: the refresh hook gives a fresh token and the client resumes", async () => {
  const user = newUser();
  const reasons = [];
  const { c, states } = client({
    getToken: () => sign(user, 2),
    refreshToken: (reason) => { reasons.push(reason); return sign(user, 3600); },
    refreshBeforeExpMs: 0,
  });
  await c.connect();
  await until(() => c.state === "resumed", 10000, "resumed after 4001");
  assert.deepEqual(reasons, ["expired"]);
  assert.ok(states.some((s) => s.state === "reconnecting" && s.code === 4001), JSON.stringify(states));
  const ack = await c.sendMessage("still here?");
  assert.ok(ack.run_id);
  c.close();
});

test("refresh before exp: a new token and a resumed connection, no 4001", async () => {
  const user = newUser();
  const reasons = [];
  const { c, states } = client({
    getToken: () => sign(user, 4),
    refreshToken: (reason) => { reasons.push(reason); return sign(user, 3600); },
    refreshBeforeExpMs: 2500,
    auth: "subprotocol",
  });
  await c.connect();
  await until(() => c.state === "resumed", 10000, "resumed after refresh");
  assert.deepEqual(reasons, ["expiring"]);
  await new Promise((r) => setTimeout(r, 3000)); // past the first token's exp
  assert.equal(c.state, "resumed");
  assert.ok(!states.some((s) => s.code === 4001 && s.reason !== "token refresh"), JSON.stringify(states));
  c.close();
});

test("backoff: exponential ceiling with full jitter, capped", async () => {
  // Nothing listens on the proxy's port once it is closed.
  const proxy = await startProxy(srv.url);
  await proxy.close();
  const c = new AgentwireClient({
    url: proxy.url, WebSocket, getToken: () => sign("nobody"),
    initialDelayMs: 10, maxDelayMs: 80, random: () => 0.999,
  });
  const delays = [];
  c.onStateChange((s) => { if (s.state === "reconnecting") delays.push(s.delayMs); });
  c.connect().catch(() => {});
  await until(() => delays.length >= 6, 10000, "six attempts");
  c.close();
  assert.deepEqual(delays.slice(0, 6), [9, 19, 39, 79, 79, 79]);
});
