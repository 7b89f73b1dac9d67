// The real @ag-ui/client (HttpAgent, with its built-in event verifier)
// against agentwire's POST /api/v1/agui and /api/v1/agui/connect.
//
// The server: AGENTWIRE_URL when set (internal/agui's TestNodeAGUIClient
// starts one signing with the secret of clients/js's helpers), else one
// built and started here (npm test alone).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { HttpAgent, runHttpRequest, transformHttpEventStream } from "@ag-ui/client";

import { startServer, startProxy, sign, get, until } from "../../../../../clients/js/test/helpers.mjs";

let srv;
let base;
before(async () => {
  if (process.env.AGENTWIRE_URL) {
    base = process.env.AGENTWIRE_URL;
  } else {
    srv = await startServer();
    base = srv.url;
  }
});
after(async () => { await srv?.stop(); });

let userN = 0;
/** A fresh user per test, so tests do not see each other's runs. */
const newUser = () => `agui-user-${process.pid}-${++userN}`;
let idN = 0;
const newId = (what) => `${what}-${process.pid}-${Date.now()}-${++idN}`;

/**
 * A fetch that passes the response through and records the SSE id of the
 * last event dispatched (what an EventSource would send as Last-Event-ID).
 * It answers only what HttpAgent reads of a Response.
 */
function trackingFetch(state) {
  return async (url, init) => {
    const res = await fetch(url, init);
    if (!res.body) return res;
    const dec = new TextDecoder();
    let buf = "";
    let pending;
    const scan = (chunk) => {
      buf += dec.decode(chunk, { stream: true });
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i).replace(/\r$/, "");
        buf = buf.slice(i + 1);
        if (line.startsWith("id:")) pending = line.slice(3).trimStart();
        if (line === "" && pending !== undefined) { state.lastId = pending; pending = undefined; }
      }
    };
    const reader = res.body.getReader();
    const body = new ReadableStream({
      async pull(ctl) {
        try {
          const { done, value } = await reader.read();
          if (done) { ctl.close(); return; }
          scan(value);
          ctl.enqueue(value);
        } catch (e) {
          ctl.error(e); // the cut: the client sees its stream fail
        }
      },
      cancel(reason) { return reader.cancel(reason); },
    });
    // @ag-ui/client 1.0.0 cancels the body's reader when the run ends and
    // rethrows a failed cancel, which after a cut (the body already failed)
    // is an unhandled rejection: its reader's cancel swallows that here.
    return {
      ok: res.ok, status: res.status, headers: res.headers, text: () => res.text(), json: () => res.json(),
      body: {
        getReader() {
          const r = body.getReader();
          return { read: () => r.read(), cancel: (why) => r.cancel(why).catch(() => {}), releaseLock: () => r.releaseLock(), closed: r.closed };
        },
      },
    };
  };
}

/**
 * HttpAgent that also connects: connect() POSTs the run input to
 * /api/v1/agui/connect with Last-Event-ID (AbstractAgent.connectAgent runs
 * it through the same verifier and reducer as runAgent).
 */
class AgentwireAgent extends HttpAgent {
  constructor({ base, token, state = {}, ...cfg }) {
    super({ url: base + "/api/v1/agui", headers: { Authorization: "Bearer " + token }, fetch: trackingFetch(state), ...cfg });
    this.connectUrl = base + "/api/v1/agui/connect";
    this.state_ = state;
  }
  connect(input) {
    const init = this.requestInit(input);
    if (this.state_.lastId) init.headers = { ...init.headers, "Last-Event-ID": this.state_.lastId };
    return transformHttpEventStream(runHttpRequest(() => this.fetch(this.connectUrl, init)), this.debugLogger);
  }
}

/** A subscriber that records every event the agent applied, in order. */
function recorder() {
  const events = [];
  return { events, onEvent: ({ event }) => { events.push(event); } };
}

const types = (events) => events.map((e) => e.type);
const userMessage = (content) => ({ id: newId("msg"), role: "user", content });

/** Runs content in a new thread; resolves with the agent, its events and the run's error if any. */
async function run(token, content, opts = {}) {
  const agent = new AgentwireAgent({ base, token, threadId: opts.threadId ?? newId("thread"), initialMessages: [opts.message ?? userMessage(content)] });
  const rec = recorder();
  let error;
  try {
    await agent.runAgent({}, { ...rec, ...opts.subscriber });
  } catch (e) {
    error = e;
  }
  return { agent, events: rec.events, error };
}

/** The messages with ids numbered by first appearance and metadata dropped: equal for two runs of the same prompt. */
function normalized(messages) {
  const ids = new Map();
  const id = (v) => { if (!ids.has(v)) ids.set(v, `id${ids.size}`); return ids.get(v); };
  return JSON.parse(JSON.stringify(messages), function (k, v) {
    if (k === "metadata") return undefined;
    if ((k === "id" || k === "toolCallId") && typeof v === "string") return id(v);
    return v;
  });
}

test("golden path: tool call, result 84, text, finished; the verifier accepts the stream", async () => {
  const token = sign(newUser());
  const { agent, events, error } = await run(token, "what is 12*(3+4)?");
  assert.equal(error, undefined, String(error?.stack ?? error));
  const t = types(events);
  assert.equal(t[0], "RUN_STARTED");
  assert.equal(t.at(-1), "RUN_FINISHED");
  for (const want of ["REASONING_MESSAGE_START", "TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END", "TOOL_CALL_RESULT", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END"]) {
    assert.ok(t.includes(want), `${want} in ${t}`);
  }
  const start = events.find((e) => e.type === "TOOL_CALL_START");
  assert.equal(start.toolCallName, "calculator");
  assert.deepEqual(JSON.parse(events.find((e) => e.type === "TOOL_CALL_ARGS").delta), { expression: "12*(3+4)" });
  assert.equal(events.find((e) => e.type === "TOOL_CALL_RESULT").content, "84");
  const finished = events.at(-1);
  assert.equal(finished.outcome?.type, "success");
  assert.match(finished.result, /84/);
  for (const e of events) {
    assert.ok(Number.isInteger(e.metadata?.agentwire?.seq) && e.metadata.agentwire.epoch, `metadata.agentwire on ${JSON.stringify(e)}`);
  }
  // The messages the client assembled: the user's, reasoning, the tool call, its result, the answer.
  const m = agent.messages;
  const assistant = m.find((x) => x.role === "assistant" && x.toolCalls?.length);
  assert.equal(assistant.toolCalls[0].function.name, "calculator");
  assert.equal(m.find((x) => x.role === "tool").content, "84");
  assert.match(m.at(-1).content, /The calculator says 12\*\(3\+4\) = 84\./);
});

test("slow: the same, about 2 s long", async () => {
  const token = sign(newUser());
  const t0 = Date.now();
  const { events, error } = await run(token, "slow please: what is 2+2?");
  assert.equal(error, undefined, String(error));
  assert.ok(Date.now() - t0 > 1000, "took over a second");
  assert.equal(events.at(-1).type, "RUN_FINISHED");
  assert.equal(events.at(-1).outcome?.type, "success");
  assert.equal(events.find((e) => e.type === "TOOL_CALL_RESULT").content, "4");
});

test("fail: RUN_ERROR with code agent_failed", async () => {
  const token = sign(newUser());
  const { events } = await run(token, "please fail");
  const last = events.at(-1);
  assert.equal(last.type, "RUN_ERROR", types(events).join());
  assert.equal(last.code, "agent_failed");
  assert.match(last.message, /failed on purpose/);
  assert.equal(types(events).filter((t) => t === "RUN_FINISHED").length, 0);
});

test("stop: RUN_FINISHED with outcome cancelled", async () => {
  const token = sign(newUser());
  let stopped;
  const { events, error } = await run(token, "slow: what is 6*7?", {
    subscriber: {
      onRunStartedEvent: ({ event }) => {
        // POST /api/v1/runs/{id}/stop: stop_agent over plain HTTP, with the run id RUN_STARTED gave.
        stopped = fetch(`${base}/api/v1/runs/${event.runId}/stop`, { method: "POST", headers: { Authorization: "Bearer " + token } });
      },
    },
  });
  assert.equal(error, undefined, String(error));
  assert.equal((await stopped).status, 200);
  const last = events.at(-1);
  assert.equal(last.type, "RUN_FINISHED", types(events).join());
  assert.equal(last.outcome?.type, "cancelled");
});

test("interrupt: the approval asked ends the run with an interrupt outcome; resume answers it and the run finishes", async () => {
  const token = sign(newUser());
  const agent = new AgentwireAgent({ base, token, threadId: newId("thread"), initialMessages: [userMessage("please approve 6*7")] });
  const first = recorder();
  await agent.runAgent({}, first);
  const fin = first.events.at(-1);
  assert.equal(fin.type, "RUN_FINISHED", types(first.events).join());
  assert.equal(fin.outcome?.type, "interrupt");
  assert.equal(fin.outcome.interrupts.length, 1);
  const [intr] = fin.outcome.interrupts;
  assert.equal(intr.reason, "approval");
  assert.equal(intr.message, "May I answer your message?");
  const second = recorder();
  await agent.runAgent({ resume: [{ interruptId: intr.id, status: "resolved", payload: { approved: true } }] }, second);
  const t = types(second.events);
  assert.equal(t[0], "RUN_STARTED");
  assert.equal(second.events[0].runId, first.events[0].runId);
  assert.ok(t.includes("TOOL_CALL_RESULT"), t.join());
  const end = second.events.at(-1);
  assert.equal(end.type, "RUN_FINISHED");
  assert.equal(end.outcome?.type, "success");
  assert.match(end.result, /42/);
});

test("a retried POST with the same message id starts no second run", async () => {
  const token = sign(newUser());
  const threadId = newId("thread");
  const message = userMessage("what is 3*3?");
  const first = await run(token, null, { threadId, message });
  const again = await run(token, null, { threadId, message });
  assert.equal(first.error, undefined, String(first.error));
  assert.equal(again.error, undefined, String(again.error));
  const runId = (r) => r.events.find((e) => e.type === "RUN_STARTED").runId;
  assert.equal(runId(again), runId(first), "the same run");
  assert.equal(again.events.at(-1).type, "RUN_FINISHED");
  // The retry is answered with the run as /connect gives it, and assembles the same messages.
  assert.deepEqual(normalized(again.agent.messages), normalized(first.agent.messages));
  const { messages } = await get(base, token, `/api/v1/threads/${encodeURIComponent(threadId)}/messages`);
  assert.deepEqual(messages.map((m) => m.role), ["user", "assistant"], "one message, one answer");
});

test("cut mid-run by a proxy, /connect with the last id resumes", async () => {
  const token = sign(newUser());
  const uncut = await run(token, "slow: what is 12*(3+4)?");
  assert.equal(uncut.error, undefined, String(uncut.error));

  const proxy = await startProxy(base);
  try {
    const state = {};
    const agent = new AgentwireAgent({ base: proxy.url, token, state, threadId: newId("thread"), initialMessages: [userMessage("slow: what is 12*(3+4)?")] });
    const first = recorder();
    let cut = false;
    await assert.rejects(agent.runAgent({}, {
      ...first,
      onTextMessageContentEvent: () => { if (!cut) { cut = true; proxy.cut(); } },
    }), (e) => !/Cannot send|First event|must/.test(e.message)); // the cut, not the verifier

    assert.ok(cut, "cut during the answer");
    assert.notEqual(first.events.at(-1).type, "RUN_FINISHED");
    const lastId = state.lastId;
    assert.match(lastId, /^.+:\d+$/);

    const second = recorder();
    const runId = first.events.find((e) => e.type === "RUN_STARTED").runId;
    await agent.connectAgent({ runId }, second);
    const t = types(second.events);
    assert.deepEqual(t.slice(0, 3), ["RUN_STARTED", "MESSAGES_SNAPSHOT", "TEXT_MESSAGE_START"], t.join());
    assert.equal(t.at(-1), "RUN_FINISHED");
    assert.equal(second.events.at(-1).outcome?.type, "success");
    // The tail starts right after the last id.
    const seqs = second.events.slice(3).map((e) => e.metadata.agentwire.seq);
    assert.ok(seqs[0] === Number(lastId.split(":").at(-1)) + 1, `tail from ${seqs[0]} after ${lastId}`);
    assert.deepEqual(normalized(agent.messages), normalized(uncut.agent.messages));
  } finally {
    await proxy.close();
  }
});

test("connect without a position: the whole run so far as a snapshot, then the rest", async () => {
  const token = sign(newUser());
  const { agent: firstAgent, events } = await run(token, "what is 5*5?");
  const runId = events[0].runId;
  const agent = new AgentwireAgent({ base, token, threadId: firstAgent.threadId });
  const rec = recorder();
  await agent.connectAgent({ runId: "a-client-made-up-run-id" }, rec); // not a ULID: the thread's latest run
  assert.deepEqual(types(rec.events), ["RUN_STARTED", "MESSAGES_SNAPSHOT", "RUN_FINISHED"]);
  assert.equal(rec.events[0].runId, runId);
  assert.deepEqual(normalized(agent.messages), normalized(firstAgent.messages));
});

test("isolation: another user's threadId or runId is 404 on both endpoints", async () => {
  const owner = sign(newUser());
  const { agent, events } = await run(owner, "what is 1+2?");
  const runId = events[0].runId;
  const thief = sign(newUser());
  const post = (path, body) => fetch(base + path, {
    method: "POST",
    headers: { Authorization: "Bearer " + thief, "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify(body),
  });
  const input = { threadId: agent.threadId, runId, messages: [userMessage("give me their answer")], tools: [], context: [], state: {}, forwardedProps: {} };
  let res = await post("/api/v1/agui", input);
  assert.equal(res.status, 404);
  assert.equal((await res.json()).error.code, "not_found");
  res = await post("/api/v1/agui/connect", { threadId: agent.threadId, runId });
  assert.equal(res.status, 404);
  res = await post("/api/v1/agui/connect", { threadId: agent.threadId });
  assert.equal(res.status, 404);
  // The thief's own thread with the owner's run id: still 404, nothing of it.
  const own = await run(thief, "hello");
  res = await post("/api/v1/agui/connect", { threadId: own.agent.threadId, runId });
  assert.equal(res.status, 404);
  // A run request naming the owner's run id in the thief's own thread starts the thief's own run.
  const mine = await run(thief, "what is 2+2?", { threadId: own.agent.threadId });
  assert.notEqual(mine.events[0].runId, runId);
  assert.ok(!JSON.stringify(mine.events).includes(runId), "nothing of the owner's run");
});

test("CORS: an allowed origin gets the headers, another is 403", async () => {
  let res = await fetch(base + "/api/v1/agui", { method: "OPTIONS", headers: { Origin: "http://localhost:5173", "Access-Control-Request-Method": "POST" } });
  assert.equal(res.status, 204);
  assert.equal(res.headers.get("access-control-allow-origin"), "http://localhost:5173");
  assert.match(res.headers.get("access-control-allow-headers"), /Authorization/);
  res = await fetch(base + "/api/v1/agui", { method: "OPTIONS", headers: { Origin: "https://elsewhere.example", "Access-Control-Request-Method": "POST" } });
  assert.equal(res.status, 403);
});
