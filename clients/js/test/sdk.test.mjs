// The SDK's product surface against a real agentwire server: run handles
// (events, done, stop) through a proxy the test cuts, REST helpers,
// devLogin, publish, and finding a WebSocket without options.WebSocket.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { AgentwireClient, AgentwireError, RunHandle, devLogin, publish, publishBatch } from "../dist/agentwire.js";
import { startServer, startProxy, sign, apiKey, until, assertWholeRun } from "./helpers.mjs";

let srv;
before(async () => { srv = await startServer(); });
after(async () => { await srv?.stop(); });

let userN = 0;
const newUser = () => `js-sdk-${process.pid}-${++userN}`;

/** No options.WebSocket: the client finds one itself (Node 22's, or the ws dev dependency on Node 20). */
const client = (user, opts = {}) => new AgentwireClient({ url: srv.url, getToken: () => sign(user), ...opts });

async function collect(iterable) {
  const out = [];
  for await (const ev of iterable) out.push(ev);
  return out;
}

test("run handle: events and done survive a cut mid-run, each event once", async () => {
  const user = newUser();
  const proxy = await startProxy(srv.url);
  let c;
  try {
    c = new AgentwireClient({ url: proxy.url, getToken: () => sign(user), initialDelayMs: 200 });
    const states = [];
    c.onStateChange((s) => states.push(s.state));
    await c.connect();
    const run = await c.sendMessage("slow: what is 6*7?");
    assert.ok(run instanceof RunHandle);
    assert.ok(run.run_id && run.thread_id && run.message_id && run.client_message_id, JSON.stringify(run));

    const seen = [];
    const iterated = (async () => {
      for await (const ev of run.events) {
        seen.push(ev);
        if (ev.type === "agent_thinking" && proxy.connections > 0 && !states.includes("reconnecting")) proxy.cut();
      }
      return seen;
    })();
    const terminal = await run.done;
    const events = await iterated;
    assert.ok(states.includes("reconnecting") && states.at(-1) === "resumed", `states ${states}`);
    assertWholeRun(events);
    assert.equal(terminal, events.at(-1));
    assert.match(terminal.data.final_response, /42/);
    // A second iteration gives the same events and ends.
    assert.deepEqual((await collect(run.events)).map((e) => e.seq), events.map((e) => e.seq));
    assert.deepEqual(Object.keys(JSON.parse(JSON.stringify(run))).sort(),
      ["client_message_id", "message_id", "ref", "run_id", "thread_id", "type"]);
  } finally {
    c?.close();
    await proxy.close();
  }
});

test("run handle: stop() ends the run with agent_error cancelled", async () => {
  const user = newUser();
  const c = client(user);
  await c.connect();
  const run = await c.sendMessage("slow: what is 2+2?");
  const started = new Promise((r) => c.onRun(run.run_id, (ev) => ev.type === "agent_started" && r()));
  await started;
  const ack = await run.stop();
  assert.equal(ack.run_id, run.run_id);
  const terminal = await run.done;
  assert.equal(terminal.type, "agent_error");
  assert.equal(terminal.data.code, "cancelled");
  assertWholeRun(await collect(run.events), "agent_error");
  c.close();
});

test("client.run(): a handle on a run that ended before it, from the transcript", async () => {
  const user = newUser();
  const a = client(user);
  await a.connect();
  const first = await a.sendMessage("what is 12*(3+4)?");
  const fin = await first.done;
  a.close();

  const b = client(user); // never connected: REST only
  const late = b.run(first.run_id, first.thread_id);
  const terminal = await late.done;
  assert.equal(terminal.type, "agent_completed");
  assert.equal(terminal.data.final_response, fin.data.final_response);
  const types = (await collect(late.events)).map((e) => e.type);
  assert.ok(types.includes("tool_completed") && types.at(-1) === "agent_completed", `${types}`);
});

test("REST helpers: threads, messages and run transcripts with paging; errors carry code and status", async () => {
  const user = newUser();
  const c = client(user);
  await c.connect();
  const r1 = await c.sendMessage("what is 1+1?");
  await r1.done;
  const r2 = await c.sendMessage("what is 2+3?", { threadId: r1.thread_id });
  await r2.done;
  const r3 = await c.sendMessage("hello there"); // a second thread
  await r3.done;
  c.close();

  const page = await c.listThreads({ limit: 1 });
  assert.equal(page.threads.length, 1);
  assert.equal(page.threads[0].id, r3.thread_id, "most recently updated first");
  assert.equal(page.has_more, true);
  const all = [];
  for await (const t of c.threads({ limit: 1 })) all.push(t.id);
  assert.deepEqual(all, [r3.thread_id, r1.thread_id]);

  const m = await c.listMessages(r1.thread_id, { limit: 2 });
  assert.deepEqual(m.messages.map((x) => x.role), ["user", "assistant"]);
  assert.equal(m.messages[0].content, "what is 1+1?");
  assert.equal(m.messages[0].run.id, r1.run_id);
  assert.equal(m.has_more, true);
  const rest = await c.listMessages(r1.thread_id, { after: m.next });
  assert.deepEqual(rest.messages.map((x) => x.content).slice(0, 1), ["what is 2+3?"]);
  assert.equal(rest.has_more, false);
  assert.equal(rest.next, null);
  const before = await c.listMessages(r1.thread_id, { before: rest.messages[0].id, limit: 1 });
  assert.equal(before.messages[0].id, m.messages[1].id);
  const msgs = [];
  for await (const x of c.messages(r1.thread_id, { limit: 1 })) msgs.push(x.id);
  assert.deepEqual(msgs, [...m.messages, ...rest.messages].map((x) => x.id));

  const run = await c.getRun(r2.run_id);
  assert.equal(run.status, "completed");
  assert.equal(run.thread_id, r1.thread_id);
  const transcript = await c.runTranscript(r2.run_id, { limit: 1 });
  assert.equal(transcript[0].type, "agent_started");
  assert.equal(transcript.at(-1).type, "agent_completed");
  assert.equal(transcript.at(-1).data.final_response, (await r2.done).data.final_response);
  const first = await c.listRunEvents(r2.run_id, { limit: 1 });
  assert.equal(first.events.length, 1);
  assert.equal(first.has_more, true);
  assert.equal(typeof first.next, "string");

  await assert.rejects(c.getRun("no-such-run"), (err) => {
    assert.ok(err instanceof AgentwireError);
    assert.equal(err.status, 404);
    assert.equal(err.code, "not_found");
    return true;
  });
  await assert.rejects(c.listThreads({ limit: 0 }), (err) => err.status === 400 && err.code === "invalid_request");
});

test("REST: a 401 calls refreshToken once and retries", async () => {
  const user = newUser();
  const reasons = [];
  const c = new AgentwireClient({ url: srv.url, getToken: () => "not-a-jwt", refreshToken: (r) => { reasons.push(r); return sign(user); } });
  const page = await c.listThreads();
  assert.deepEqual(page.threads, []);
  assert.deepEqual(reasons, ["unauthorized"]);
});

test("renameThread and deleteThread send PATCH {title} and DELETE to /api/v1/threads/{id}", async () => {
  // Checked against a recording fetch: the endpoints are documented but not on every server.
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url, method: init.method, body: init.body, auth: init.headers.Authorization, ctype: init.headers["Content-Type"] });
    if (init.method === "DELETE") return { ok: true, status: 204, json: async () => { throw new Error("no body"); } };
    return { ok: true, status: 200, json: async () => ({ id: "t/1", title: "New name", created_at: "x", updated_at: "y" }) };
  };
  const c = new AgentwireClient({ url: "http://example.test/", getToken: () => "tok", fetch });
  const t = await c.renameThread("t/1", "New name");
  assert.equal(t.title, "New name");
  assert.equal(await c.deleteThread("t/1"), undefined);
  assert.deepEqual(calls, [
    { url: "http://example.test/api/v1/threads/t%2F1", method: "PATCH", body: '{"title":"New name"}', auth: "Bearer tok", ctype: "application/json" },
    { url: "http://example.test/api/v1/threads/t%2F1", method: "DELETE", body: undefined, auth: "Bearer tok", ctype: undefined },
  ]);
  // An error body becomes an AgentwireError.
  const denied = new AgentwireClient({ url: "http://example.test", getToken: () => "tok",
    fetch: async () => ({ ok: false, status: 404, json: async () => ({ error: { code: "not_found", message: "no such thread" } }) }) });
  await assert.rejects(denied.deleteThread("x"), (err) => err.code === "not_found" && err.status === 404 && err.message === "no such thread");
});

test("devLogin and publish", async () => {
  const user = newUser();
  const { token, expires_at } = await devLogin(user, { url: srv.url });
  assert.ok(token.split(".").length === 3 && Date.parse(expires_at) > Date.now());
  const c = new AgentwireClient({ url: srv.url, getToken: () => token });
  const got = [];
  c.on("build.finished", (e) => got.push(e));
  await c.connect();
  assert.equal(c.connection.user_id, user);

  const res = await publish({ user_id: user, type: "build.finished", data: { ok: true }, idempotency_key: "k1" }, { url: srv.url, apiKey });
  assert.equal(typeof res.seq, "number");
  const again = await publish({ user_id: user, type: "build.finished", data: { ok: true }, idempotency_key: "k1" }, { url: srv.url, apiKey });
  assert.deepEqual(again, res, "the same idempotency key appends nothing");
  await until(() => got.length === 1, 5000, "the published event");
  assert.deepEqual(got[0].data, { ok: true });
  assert.equal(got[0].seq, res.seq);

  const batch = await publishBatch([
    { user_id: user, type: "build.finished", data: { n: 2 } },
    { user_id: user, type: "build.finished", data: { n: 3 } },
  ], { url: srv.url, apiKey });
  assert.deepEqual(batch.map((r) => r.seq), [res.seq + 1, res.seq + 2]);
  await until(() => got.length === 3, 5000, "the batch's events");
  assert.deepEqual(got.map((e) => e.seq), [res.seq, res.seq + 1, res.seq + 2]);
  const refused = await publishBatch([{ user_id: user, type: "build.finished" }, { user_id: user, type: "Bad" }], { url: srv.url, apiKey });
  assert.deepEqual(refused.map((r) => r.error && r.error.code), ["batch_aborted", "invalid_request"]);
  await assert.rejects(publishBatch([], { url: srv.url, apiKey }), (err) => err.status === 413 && err.code === "too_large");
  await assert.rejects(publish({ user_id: user, type: "x" }, { url: srv.url, apiKey: "wrong" }), (err) => err.status === 401 && err.code === "unauthorized");
  await assert.rejects(devLogin("bad user!", { url: srv.url }), (err) => err.status === 400 && err.code === "invalid_request");
  c.close();
});

test("run handle: events lost to retention are filled from the transcript after resync_required", async () => {
  const small = await startServer(["--retention-events", "3"]);
  const proxy = await startProxy(small.url);
  const user = newUser();
  let c;
  try {
    c = new AgentwireClient({ url: proxy.url, getToken: () => sign(user), initialDelayMs: 50 });
    const resynced = new Promise((r) => c.onResync(r));
    await c.connect();
    const run = await c.sendMessage("slow: what is 6*7?");
    // From its first event on, nothing more reaches the client.
    let terminalSeen = false;
    c.onRun(run.run_id, (ev) => { proxy.freezeDown(); terminalSeen ||= ev.type === "agent_completed"; });
    const direct = new AgentwireClient({ url: small.url, getToken: () => sign(user) }); // REST not through the frozen proxy
    const deadline = Date.now() + 20000;
    while ((await direct.getRun(run.run_id)).status === "running") {
      assert.ok(Date.now() < deadline, "the run did not end in 20 s");
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(terminalSeen, false, "the terminal event must not have reached the client before the cut");
    proxy.cut(); // the resume position is now older than what the stream keeps
    await resynced;
    const terminal = await run.done;
    assert.match(terminal.data.final_response, /42/);
    const events = await collect(run.events);
    const types = events.map((e) => e.type);
    assert.equal(types.filter((t) => t === "agent_started").length, 1, `${types}`);
    assert.ok(types.includes("tool_completed"), `${types}`);
    assert.equal(types.at(-1), "agent_completed");
    const answer = events.filter((e) => e.type === "agent_message_delta").map((e) => e.data.delta).join("");
    assert.equal(answer, terminal.data.final_response);
  } finally {
    c?.close();
    await proxy.close();
    await small.stop();
  }
});

test("renameThread and deleteThread against the real server: owner only, cascading", async () => {
  const user = newUser();
  const c = client(user);
  await c.connect();
  const run = await c.sendMessage("what is 2+2?");
  await run.done;
  const renamed = await c.renameThread(run.thread_id, "Sums");
  assert.equal(renamed.title, "Sums");
  const listed = await c.listThreads();
  assert.equal(listed.threads.find((t) => t.id === run.thread_id)?.title, "Sums");

  const other = client(newUser()); // REST only: another user's thread is not found
  await assert.rejects(other.renameThread(run.thread_id, "Mine"), (err) => err instanceof AgentwireError && err.status === 404);
  await assert.rejects(other.deleteThread(run.thread_id), (err) => err.status === 404);

  assert.equal(await c.deleteThread(run.thread_id), undefined);
  assert.equal((await c.listThreads()).threads.some((t) => t.id === run.thread_id), false);
  await assert.rejects(c.getRun(run.run_id), (err) => err.status === 404);
  c.close();
});
