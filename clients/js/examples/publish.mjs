// Server side: push an event to a user's stream with an API key (never ship
// the key to a browser). Every connection of the user gets it.
//   AGENTWIRE_API_KEY=... node examples/publish.mjs alice
import { publish } from "@agentwire/client";

const url = process.env.AGENTWIRE_URL ?? "http://127.0.0.1:8080";
const apiKey = process.env.AGENTWIRE_API_KEY ?? "dev-key";
const { seq, epoch } = await publish(
  { user_id: process.argv[2] ?? "alice", type: "build.finished", data: { ok: true }, idempotency_key: "build-42" },
  { url, apiKey },
);
console.log(`published as seq ${seq} of epoch ${epoch}`);
