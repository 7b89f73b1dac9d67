// Test helpers: a real agentwire server built from this repository, a TCP
// proxy the tests can cut or freeze, and HS256 tokens signed with the
// server's secret.
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const secret = "js-test-secret-0123456789abcdef-0123456789";
export const apiKey = "js-test-api-key";

let built;

/** Builds ./cmd/agentwire once per test process (AGENTWIRE_BIN overrides). */
function binary() {
  if (process.env.AGENTWIRE_BIN) return process.env.AGENTWIRE_BIN;
  if (!built) {
    const dir = mkdtempSync(path.join(os.tmpdir(), "agentwire-js-bin-"));
    built = path.join(dir, "agentwire");
    execFileSync("go", ["build", "-o", built, "./cmd/agentwire"], { cwd: repoRoot, stdio: "inherit" });
    process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
  }
  return built;
}

/**
 * Starts `agentwire serve --dev` on a free port with a fresh data dir and
 * resolves with { url, stop() } once it printed "listening on http://…".
 */
export async function startServer(extraArgs = []) {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), "agentwire-js-data-"));
  const args = ["serve", "--dev", "--addr", "127.0.0.1:0", "--data-dir", dataDir,
    "--jwt-secret", secret, "--api-keys", apiKey, "--log-level", "warn", ...extraArgs];
  const proc = spawn(binary(), args, { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env } });
  let stderr = "";
  proc.stderr.on("data", (b) => { stderr += b; });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("server did not start in 30 s\n" + stderr)), 30000);
    const rl = readline.createInterface({ input: proc.stdout });
    rl.on("line", (line) => {
      const m = /^listening on (http:\/\/\S+)/.exec(line);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    proc.on("exit", (code) => { clearTimeout(timer); reject(new Error(`server exited with ${code}\n${stderr}`)); });
  });
  return {
    url,
    stderr: () => stderr,
    async stop() {
      if (proc.exitCode === null) {
        const exited = new Promise((r) => proc.once("exit", r));
        proc.kill("SIGTERM");
        await exited;
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

const b64url = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

/** An HS256 JWT for user, valid ttlSeconds, signed with the test server's secret. */
export function sign(user, ttlSeconds = 3600) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url({ alg: "HS256", typ: "JWT" });
  const body = b64url({ sub: user, iat: now, exp: now + ttlSeconds });
  const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

/** POST /api/v1/publish with the test API key. */
export async function publish(url, user, type, data) {
  const res = await fetch(url + "/api/v1/publish", {
    method: "POST",
    headers: { Authorization: "Bearer " + apiKey, "Content-Type": "application/json" },
    body: JSON.stringify({ user_id: user, type, data }),
  });
  if (!res.ok) throw new Error(`publish: ${res.status} ${await res.text()}`);
  return res.json();
}

/** GET a user endpoint. */
export async function get(url, token, p) {
  const res = await fetch(url + p, { headers: { Authorization: "Bearer " + token } });
  if (!res.ok) throw new Error(`GET ${p}: ${res.status}`);
  return res.json();
}

/**
 * A TCP proxy in front of target (http://host:port). cut() destroys every
 * open connection (the client sees 1006); freezeDown() stops forwarding
 * server-to-client bytes on open connections, so frames the server sent are
 * lost with the next cut.
 */
export async function startProxy(target) {
  const u = new URL(target);
  const pairs = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(u.port), u.hostname);
    const pair = { client, upstream, frozenDown: false };
    pairs.add(pair);
    client.on("data", (b) => upstream.write(b));
    upstream.on("data", (b) => { if (!pair.frozenDown) client.write(b); });
    const end = () => { client.destroy(); upstream.destroy(); pairs.delete(pair); };
    client.on("close", end); upstream.on("close", end);
    client.on("error", end); upstream.on("error", end);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    get connections() { return pairs.size; },
    cut() { for (const p of [...pairs]) { p.client.destroy(); p.upstream.destroy(); } pairs.clear(); },
    freezeDown() { for (const p of pairs) p.frozenDown = true; },
    close() { this.cut(); return new Promise((r) => server.close(r)); },
  };
}

/** Resolves when pred() is true, polling every 10 ms; rejects after ms. */
export async function until(pred, ms = 10000, what = "condition") {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Every event of a run once, in order, its deltas adding up to the answer. */
export function assertWholeRun(events, terminal = "agent_completed") {
  const types = events.map((e) => e.type);
  assert.equal(types.filter((t) => t === "agent_started").length, 1, `one agent_started in ${types}`);
  assert.equal(types.at(-1), terminal, `ends with ${terminal}: ${types}`);
  assert.equal(types.filter((t) => t === "agent_completed" || t === "agent_error").length, 1, `one terminal event in ${types}`);
  for (let i = 1; i < events.length; i++) {
    assert.ok(events[i].seq > events[i - 1].seq, `seq strictly increasing: ${events.map((e) => e.seq)}`);
  }
  if (terminal === "agent_completed") {
    const answer = events.filter((e) => e.type === "agent_message_delta").map((e) => e.data.delta).join("");
    assert.equal(answer, events.at(-1).data.final_response, "the deltas add up to the final response, once");
  }
}
