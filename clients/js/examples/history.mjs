// The user's threads and their messages over REST, page by page, and the
// steps of a run (its transcript). No socket needed.
//   node examples/history.mjs
import { AgentwireClient, devLogin } from "@agentwire/client";

const url = process.env.AGENTWIRE_URL ?? "http://127.0.0.1:8080";
const client = new AgentwireClient({ url, getToken: async () => (await devLogin("alice", { url })).token });

for await (const thread of client.threads()) {
  console.log(`# ${thread.title} (${thread.id})`);
  for await (const m of client.messages(thread.id, { limit: 50 })) {
    console.log(`${m.role}: ${m.content}`);
    if (m.role === "user" && m.run_id) {
      const steps = await client.runTranscript(m.run_id);
      console.log(`  run ${m.run_id}: ${steps.map((e) => e.type).join(" → ")}`);
    }
  }
}
