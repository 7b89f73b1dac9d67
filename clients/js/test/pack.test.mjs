// The package as a user gets it: npm pack, install the tarball in a fresh
// directory (no ws there), import it by name, type-check against it, and
// run a conversation against the real test server.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { startServer } from "./helpers.mjs";

const pkg = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

let srv;
before(async () => { srv = await startServer(); });
after(async () => { await srv?.stop(); });

test("npm pack: installs in a fresh directory, imports by name, type-checks, talks to the server", async () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), "agentwire-pack-"));
  try {
    const npm = (args, cwd) => execFileSync("npm", args, { cwd, encoding: "utf8", env: { ...process.env, npm_config_cache: path.join(tmp, "cache") } });
    const [packed] = JSON.parse(npm(["pack", "--json", "--pack-destination", tmp], pkg));
    assert.deepEqual(packed.files.map((f) => f.path).sort(),
      ["README.md", "dist/agentwire.d.ts", "dist/agentwire.js", "package.json"]);

    const app = path.join(tmp, "app");
    mkdirSync(app);
    writeFileSync(path.join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
    npm(["install", "--offline", "--no-audit", "--no-fund", path.join(tmp, packed.filename)], app);
    assert.deepEqual(readdirSync(path.join(app, "node_modules")).filter((d) => !d.startsWith(".")), ["@agentwire"], "no runtime dependencies");

    // Types resolve through the package's exports.
    writeFileSync(path.join(app, "check.ts"), `
import { AgentwireClient, devLogin, publish, type RunHandle, type TerminalEvent, type Thread } from "@agentwire/client";
const c = new AgentwireClient({ url: "http://x", getToken: async () => (await devLogin("u", { url: "http://x" })).token });
const run: RunHandle = await c.sendMessage("hi");
const end: TerminalEvent = await run.done;
const t: Thread | undefined = (await c.listThreads({ limit: 1 })).threads[0];
await publish({ user_id: "u", type: "x.y" }, { url: "http://x", apiKey: "k" });
export { end, t };
`);
    writeFileSync(path.join(app, "tsconfig.json"), JSON.stringify({
      compilerOptions: { noEmit: true, strict: true, target: "ES2022", module: "nodenext", moduleResolution: "nodenext",
        skipLibCheck: true, types: [], lib: ["ES2022", "DOM"] },
      files: ["check.ts"],
    }));
    execFileSync(process.execPath, [path.join(pkg, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.json"], { cwd: app, stdio: "inherit" });

    // A conversation with the installed package. Node 20 has its WebSocket behind a flag; 22 has it on.
    writeFileSync(path.join(app, "main.mjs"), `
import { AgentwireClient, devLogin } from "@agentwire/client";
const url = process.argv[2];
const client = new AgentwireClient({ url, getToken: async () => (await devLogin("packed-user", { url })).token });
await client.connect();
const run = await client.sendMessage("what is 12*(3+4)?");
const types = [];
for await (const ev of run.events) types.push(ev.type);
const done = await run.done;
const threads = await client.listThreads();
client.close();
console.log(JSON.stringify({ types, answer: done.data.final_response, threads: threads.threads.length }));
`);
    const major = Number(process.versions.node.split(".")[0]);
    const flags = major < 22 ? ["--experimental-websocket"] : [];
    const out = JSON.parse(execFileSync(process.execPath, [...flags, "main.mjs", srv.url], { cwd: app, encoding: "utf8", timeout: 30000 }));
    assert.match(out.answer, /84/);
    assert.equal(out.types.at(-1), "agent_completed");
    assert.ok(out.types.includes("tool_completed"), `${out.types}`);
    assert.equal(out.threads, 1);

    if (major < 22) {
      // Node 20 with neither the flag nor ws: connect() says what to do, and does not retry forever.
      writeFileSync(path.join(app, "nows.mjs"), `
import { AgentwireClient } from "@agentwire/client";
const c = new AgentwireClient({ url: process.argv[2], getToken: () => "t" });
try { await c.connect(); console.log("connected"); } catch (err) { console.log(err.code + ": " + err.message + " / " + c.state); }
`);
      const msg = execFileSync(process.execPath, ["nows.mjs", srv.url], { cwd: app, encoding: "utf8", timeout: 30000 }).trim();
      assert.match(msg, /^closed: .*no WebSocket: use Node ≥ 22, install ws, or pass options.WebSocket \/ closed$/);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
