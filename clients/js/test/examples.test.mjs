// The README's examples (examples/*.mjs) run against the real server.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { startServer, apiKey } from "./helpers.mjs";

const pkg = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

let srv;
before(async () => { srv = await startServer(); });
after(async () => { await srv?.stop(); });

const run = (file, ...args) => execFileSync(process.execPath, [path.join("examples", file), ...args],
  { cwd: pkg, encoding: "utf8", timeout: 30000, env: { ...process.env, AGENTWIRE_URL: srv.url, AGENTWIRE_API_KEY: apiKey } });

test("examples: chat, history, publish", () => {
  const chat = run("chat.mjs", "what is 12*(3+4)?");
  assert.match(chat, /^\[calculator\] \{"expression":"12\*\(3\+4\)"\}\n\[calculator\] → 84\n/);
  assert.match(chat, /84[^]*\(done in \d+ ms\)\n$/);

  const history = run("history.mjs");
  assert.match(history, /^# what is 12\*\(3\+4\)\? \(\S+\)\nuser: what is 12\*\(3\+4\)\?\n  run \S+: agent_started → .*tool_completed → .*agent_completed\nassistant: .*84/);

  assert.match(run("publish.mjs", "alice"), /^published as seq \d+ of epoch \S+\n$/);
});
