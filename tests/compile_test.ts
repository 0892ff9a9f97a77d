/**
 * `deno compile` builds a cw that was checked, never assumed: the host's
 * binary runs a session on its own node (this needs the denort runtime, so it
 * runs only where DENORT_BIN is set or dl.deno.land answers, and says so
 * plainly when skipped); a plain deno passed off as denort is refused; each
 * target gets its own PTY addon; other targets' binaries are checked for
 * their OS, CPU and addon.
 */
import assert from "node:assert/strict";
import { checkFormat, compileTarget, prepareTarget, TARGETS } from "../scripts/compile.ts";
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
  name: `compile: a ${HOST} binary is BUILT only once it ran a session on its own node`,
  ignore: skip !== null,
  async fn() {
    await using home = new CwHome();
    const outcome = await compileTarget(HOST, home.root);
    assert.equal(outcome.status, "built", JSON.stringify(outcome));
  },
});

Deno.test("compile: a plain deno given as the runtime (DENORT_BIN=deno) is FAILED, not BUILT", async () => {
  await using home = new CwHome();
  const before = Deno.env.get("DENORT_BIN");
  Deno.env.set("DENORT_BIN", Deno.execPath());
  try {
    const outcome = await compileTarget(HOST, home.root);
    if (outcome.status === "skipped") {
      console.log(`SKIPPED: ${outcome.reason}`);
      return;
    }
    assert.equal(outcome.status, "failed", JSON.stringify(outcome));
    assert.match(outcome.reason, /not a cw binary: --version printed "deno /);
    // and nothing is left that could be mistaken for a build
    await assert.rejects(Deno.stat(`${home.root}/cw-${HOST}`));
  } finally {
    if (before === undefined) Deno.env.delete("DENORT_BIN");
    else Deno.env.set("DENORT_BIN", before);
  }
});

Deno.test("compile: every target's build has that target's PTY addon installed", async () => {
  for (const target of TARGETS) {
    const prepared = await prepareTarget(target);
    if (!("dir" in prepared)) {
      assert.equal(prepared.status, "skipped", JSON.stringify(prepared));
      console.log(`SKIPPED ${target}: ${prepared.reason}`);
      continue;
    }
    await Deno.remove(prepared.dir, { recursive: true });
  }
});

Deno.test("compile: another target's binary must be of its OS and CPU and carry its addon", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = async (name: string, head: number[], tail: string) => {
      const path = `${dir}/${name}`;
      const bytes = new Uint8Array(4096);
      bytes.set(head);
      bytes.set(new TextEncoder().encode(tail), 2000);
      await Deno.writeFile(path, bytes);
      return path;
    };
    const elf = (machine: number) => [
      0x7f,
      0x45,
      0x4c,
      0x46,
      2,
      1,
      1,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      2,
      0,
      machine,
      0,
    ];
    const macho = (cpu: number) => [
      0xcf,
      0xfa,
      0xed,
      0xfe,
      cpu & 0xff,
      (cpu >> 8) & 0xff,
      (cpu >> 16) & 0xff,
      cpu >>> 24,
    ];
    const armLinux = await file("a", elf(0xb7), "…/@lydell/node-pty-linux-arm64/pty.node…");
    assert.equal(await checkFormat(armLinux, "aarch64-unknown-linux-gnu"), null);
    assert.match(
      (await checkFormat(armLinux, "x86_64-unknown-linux-gnu"))!,
      /machine 0xb7, not x64/,
    );
    assert.match((await checkFormat(armLinux, "aarch64-apple-darwin"))!, /not a 64-bit Mach-O/);
    const noAddon = await file("b", elf(0x3e), "no addon in here");
    assert.match(
      (await checkFormat(noAddon, "x86_64-unknown-linux-gnu"))!,
      /PTY addon for linux-x64 is not inside/,
    );
    const armMac = await file("c", macho(0x0100000c), "node-pty-darwin-arm64");
    assert.equal(await checkFormat(armMac, "aarch64-apple-darwin"), null);
    assert.match((await checkFormat(armMac, "x86_64-apple-darwin"))!, /CPU 0x100000c, not x64/);
    // a Linux binary is never taken for a macOS one
    assert.match(
      (await checkFormat(Deno.execPath(), "x86_64-apple-darwin"))!,
      /not a 64-bit Mach-O/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
