// A small AG-UI agent server for aguiagent's Go tests, written with the real
// @ag-ui/encoder and checked against the real @ag-ui/core schemas: every
// event it sends is validated by EventSchema first, so the Go side is tested
// against what a conforming AG-UI server sends.
//
// POST any path with a RunAgentInput. The last user message picks the
// scenario by keyword: text, reasoning, tool, state, echo, error, cut, drop,
// slow. It prints "listening <port>" once it accepts connections, and for
// each run "request <runId>" when the request arrives and "closed <runId>"
// when the client closed the connection before the answer ended.
import http from "node:http";
import { EventType } from "@ag-ui/core";
import { EventSchema } from "@ag-ui/core/schemas";
import { EventEncoder } from "@ag-ui/encoder";

const T = EventType;

function scenario(input) {
  const { threadId, runId } = input;
  const users = (input.messages || []).filter((m) => m.role === "user");
  const text = users.length ? String(users[users.length - 1].content) : "";
  const started = { type: T.RUN_STARTED, threadId, runId };
  const finished = { type: T.RUN_FINISHED, threadId, runId };
  const say = (id, ...parts) => [
    { type: T.TEXT_MESSAGE_START, messageId: id, role: "assistant" },
    ...parts.map((delta) => ({ type: T.TEXT_MESSAGE_CONTENT, messageId: id, delta })),
    { type: T.TEXT_MESSAGE_END, messageId: id },
  ];
  const word = (w) => new RegExp(`\\b${w}\\b`).test(text);
  if (word("text")) {
    return { events: [started, ...say("m1", "Hello", ", ", "world."), finished] };
  }
  if (word("reasoning")) {
    return {
      events: [
        started,
        { type: T.REASONING_START, messageId: "r1" },
        { type: T.REASONING_MESSAGE_START, messageId: "r1", role: "reasoning" },
        { type: T.REASONING_MESSAGE_CONTENT, messageId: "r1", delta: "Let me " },
        { type: T.REASONING_MESSAGE_CONTENT, messageId: "r1", delta: "think." },
        { type: T.REASONING_MESSAGE_END, messageId: "r1" },
        { type: T.REASONING_END, messageId: "r1" },
        { type: T.REASONING_MESSAGE_CHUNK, messageId: "r2", delta: "Still " },
        { type: T.REASONING_MESSAGE_CHUNK, delta: "thinking." },
        { type: T.TEXT_MESSAGE_CHUNK, messageId: "m1", role: "assistant", delta: "Done." },
        finished,
      ],
    };
  }
  if (word("tool")) {
    return {
      events: [
        started,
        { type: T.TOOL_CALL_START, toolCallId: "call-1", toolCallName: "calculator", parentMessageId: "m1" },
        { type: T.TOOL_CALL_ARGS, toolCallId: "call-1", delta: '{"expre' },
        { type: T.TOOL_CALL_ARGS, toolCallId: "call-1", delta: 'ssion":"12*' },
        { type: T.TOOL_CALL_ARGS, toolCallId: "call-1", delta: '(3+4)"}' },
        { type: T.TOOL_CALL_END, toolCallId: "call-1" },
        { type: T.TOOL_CALL_RESULT, messageId: "t1", toolCallId: "call-1", content: "84", role: "tool" },
        { type: T.TOOL_CALL_CHUNK, toolCallId: "call-2", toolCallName: "current_time", delta: '{"zone":' },
        { type: T.TOOL_CALL_CHUNK, delta: '"UTC"}' },
        { type: T.TOOL_CALL_RESULT, messageId: "t2", toolCallId: "call-2", content: "noon" },
        ...say("m2", "12*(3+4) = 84"),
        finished,
      ],
    };
  }
  if (word("state")) {
    return {
      events: [
        started,
        { type: T.STEP_STARTED, stepName: "plan" },
        { type: T.STATE_SNAPSHOT, snapshot: { count: 1, items: ["a"] } },
        { type: T.STATE_DELTA, delta: [{ op: "replace", path: "/count", value: 2 }] },
        { type: T.ACTIVITY_SNAPSHOT, messageId: "a1", activityType: "PLAN", content: { steps: ["x"] } },
        { type: T.ACTIVITY_DELTA, messageId: "a1", activityType: "PLAN", patch: [{ op: "add", path: "/steps/-", value: "y" }] },
        { type: T.CUSTOM, name: "confetti", value: { colour: "gold" } },
        { type: T.RAW, event: { provider: "event" }, source: "langgraph" },
        { type: T.STEP_FINISHED, stepName: "plan" },
        finished,
      ],
    };
  }
  if (word("echo")) {
    return { events: [started, { type: T.CUSTOM, name: "input", value: input }, finished] };
  }
  if (word("error")) {
    return { events: [started, ...say("m1", "partial"), { type: T.RUN_ERROR, message: "upstream exploded", code: "BOOM" }] };
  }
  if (word("cut")) {
    return { events: [started, { type: T.TEXT_MESSAGE_START, messageId: "m1", role: "assistant" }, { type: T.TEXT_MESSAGE_CONTENT, messageId: "m1", delta: "half" }], end: "end" };
  }
  if (word("drop")) {
    return { events: [started, { type: T.TEXT_MESSAGE_START, messageId: "m1", role: "assistant" }, { type: T.TEXT_MESSAGE_CONTENT, messageId: "m1", delta: "half" }], end: "destroy" };
  }
  if (word("slow")) {
    return { events: [started, { type: T.TEXT_MESSAGE_START, messageId: "m1", role: "assistant" }], end: "slow" };
  }
  return { events: [started, ...say("m1", `unknown scenario: ${text}`), finished] };
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    let input;
    try {
      input = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch (err) {
      res.writeHead(400, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ error: `bad RunAgentInput: ${err.message}` }));
      return;
    }
    console.log(`request ${input.runId}`);
    const encoder = new EventEncoder({ accept: req.headers.accept });
    res.writeHead(200, { "Content-Type": encoder.getContentType(), "Cache-Control": "no-cache" });
    let done = false;
    res.on("close", () => {
      if (!done) console.log(`closed ${input.runId}`);
    });
    const send = (event) => res.write(encoder.encode(EventSchema.parse(event)));
    const { events, end } = scenario(input);
    events.forEach(send);
    switch (end) {
      case "destroy":
        // Cut the connection once what was sent is on its way: no chunked
        // terminator, so the client sees the stream break mid-body.
        done = true;
        res.write(": bye\n\n", () => res.socket.destroy());
        return;
      case "slow": {
        let n = 0;
        const timer = setInterval(() => {
          if (res.writableEnded || res.destroyed) return clearInterval(timer);
          send({ type: T.TEXT_MESSAGE_CONTENT, messageId: "m1", delta: `tick ${n++} ` });
        }, 20);
        res.on("close", () => clearInterval(timer));
        return;
      }
    }
    done = true;
    res.end();
  });
});

server.listen(0, "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));
