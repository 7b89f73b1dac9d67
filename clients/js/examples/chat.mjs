// A conversation: log in (dev server), send a message, print the answer as it
// streams, then the run's outcome. Run against `agentwire serve --dev`:
//   node examples/chat.mjs "what is 12*(3+4)?"
// (Node 20: add --experimental-websocket, or `npm i ws`.)
import { AgentwireClient, devLogin } from "@agentwire/client";

const url = process.env.AGENTWIRE_URL ?? "http://127.0.0.1:8080";
const client = new AgentwireClient({
  url,
  getToken: async () => (await devLogin("alice", { url })).token,
});
await client.connect();

const run = await client.sendMessage(process.argv[2] ?? "what is 12*(3+4)?");
for await (const ev of run.events) {
  if (ev.type === "tool_executing") console.log(`[${ev.data.tool}] ${JSON.stringify(ev.data.args)}`);
  if (ev.type === "tool_completed") console.log(`[${ev.data.tool}] → ${JSON.stringify(ev.data.result)}`);
  if (ev.type === "agent_message_delta") process.stdout.write(ev.data.delta);
}
const end = await run.done; // agent_completed, or agent_error (cancelled, timeout, …)
console.log(end.type === "agent_completed" ? `\n(done in ${end.data.duration_ms} ms)` : `\n(${end.data.code}: ${end.data.message})`);
client.close();
