/**
 * `deno compile` builds a working cw: the binary starts its own node (with
 * the PTY worker inside) and runs a session. It needs the denort runtime, so
 * it runs only where DENORT_BIN is set or dl.deno.land answers, and says so
 * plainly when skipped.
 */
import assert from "node:assert/strict";
import { compileTarget } from "../scripts/compile.ts";
import { CwHome } from "./helpers.ts";

const HOST = Deno.build.target;

async function denortAvailable(): Promise<string | null> {
  if (Deno.env.get("DENORT_BIN")) return null;
  try {
    const res = await fetch("https://dl.deno.land/", { signal: AbortSignal.timeout(3000) });
    await res.body?.cancel();
    return null;
  } catch (err) {
    return `no DENORT_BIN and dl.deno.land is unreachable (${(err as Error).name})`;
  }
}

const skip = await denortAvailable();
if (skip) console.log(`SKIPPED compile test: ${skip}; set DENORT_BIN=/path/to/denort to run it`);

Deno.test({
  name: `compile: a ${HOST} binary runs a session on its own node`,
  ignore: skip !== null,
  async fn() {
    await using home = new CwHome();
    const outcome = await compileTarget(HOST, home.root);
    assert.equal(outcome.status, "built", JSON.stringify(outcome));
    const bin = outcome.status === "built" ? outcome.path : "";
    const run = async (args: string[]) => {
      const out = await new Deno.Command(bin, {
        args,
        env: home.env(),
        stdout: "piped",
        stderr: "piped",
      })
        .output();
      return { code: out.code, stdout: new TextDecoder().decode(out.stdout) };
    };
    assert.match((await run(["--version"])).stdout, /^cw /);
    const id = (await run(["launch", "--", "sh", "-c", "echo compiled-ok; exit 6"])).stdout.trim();
    assert.equal((await run(["wait", id])).code, 6);
    assert.equal((await run(["logs", id])).stdout, "compiled-ok\n");
    assert.equal((await run(["stop"])).code, 0);
  },
});
