// dist/ is committed (the page embeds it): it must be what src/ builds to.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const pkg = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

test("dist is up to date with src (run npm run build)", () => {
  const out = mkdtempSync(path.join(os.tmpdir(), "agentwire-dist-"));
  try {
    execFileSync(process.execPath, [path.join(pkg, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.json", "--outDir", out],
      { cwd: pkg, stdio: "inherit" });
    for (const f of ["agentwire.js", "agentwire.d.ts"]) {
      assert.equal(readFileSync(path.join(pkg, "dist", f), "utf8"), readFileSync(path.join(out, f), "utf8"),
        `dist/${f} differs from a fresh build of src/: run npm run build`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
