/**
 * Builds one `cw` executable per target with `deno compile`, with the same
 * permissions and unstable flags as `deno task cw` and both workers included,
 * and says BUILT only for a binary that was checked:
 *
 * - each target is compiled in a clean copy of the sources whose npm packages
 *   were installed for that target (`deno install --os --arch`): node-pty's
 *   PTY addon is a per-OS, per-CPU package, and a macOS binary built on Linux
 *   would otherwise carry Linux's;
 * - the host's binary is run: `--version` must print cw's version (a plain
 *   deno — what `deno compile` leaves with DENORT_BIN pointing at deno — prints
 *   deno's), and a session must run on its own node;
 * - another target's binary must be an executable of that OS and CPU (ELF or
 *   Mach-O header) and carry that target's PTY addon;
 * - `SHA256SUMS` (the `sha256sum` format) lists every binary built.
 *
 * `deno compile` needs the `denort` runtime of each target. Deno downloads it;
 * where the network does not allow that, set DENORT_BIN to a local denort
 * (host target only). A target that cannot get its runtime is SKIPPED.
 *
 * Usage: deno task compile [--target TRIPLE]... [--out DIR]
 */
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { RUN_FLAGS } from "../shared/runtime.ts";
import { VERSION } from "../shared/version.ts";
import { buildWeb } from "./web_build.ts";

/** Every target cw ships for. */
export const TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
] as const;

/** Files loaded at run time that `deno compile` cannot see statically. */
const INCLUDES = ["node/pty_worker.ts", "node/model_worker.ts", "web/dist"];
/** What a compiled cw is made of (copied for each target's build). */
const SOURCES = ["deno.json", "deno.lock", "main.ts", "shared", "node", "client", "relay", "web"];

const root = fileURLToPath(new URL("..", import.meta.url));

/** Outcome of one target. */
export type Outcome = { target: string; status: "built"; path: string; sha256: string } | {
  target: string;
  status: "skipped" | "failed";
  reason: string;
};

/** npm's names for a target's OS and CPU. */
export function npmPlatform(target: string): { os: string; arch: string } {
  const arch = target.startsWith("x86_64") ? "x64" : target.startsWith("aarch64") ? "arm64" : "";
  const os = target.includes("linux") ? "linux" : target.includes("apple-darwin") ? "darwin" : "";
  if (!arch || !os) throw new RangeError(`Unknown target "${target}"`);
  return { os, arch };
}

/** The `deno compile` argv for one target. */
export function compileArgs(target: string, output: string): string[] {
  return [
    "compile",
    ...RUN_FLAGS,
    ...INCLUDES.flatMap((f) => ["--include", f]),
    "--target",
    target,
    "--output",
    output,
    "main.ts",
  ];
}

async function deno(args: string[], cwd: string): Promise<{ ok: boolean; log: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { ok: out.success, log: dec.decode(out.stderr) + dec.decode(out.stdout) };
}

/**
 * A clean copy of the sources in a new directory, with the npm packages
 * installed for `target`; the caller removes the directory.
 */
export async function prepareTarget(target: string): Promise<{ dir: string } | Outcome> {
  const { os, arch } = npmPlatform(target);
  // the web client's files, which the binary carries (web/dist)
  await buildWeb();
  const dir = await Deno.makeTempDir({ prefix: `cw-compile-${target}-` });
  for (const name of SOURCES) {
    const cp = await new Deno.Command("cp", { args: ["-R", join(root, name), dir] }).output();
    if (!cp.success) return { target, status: "failed", reason: `cannot copy ${name}` };
  }
  const install = await deno(["install", "--frozen", "--os", os, "--arch", arch], dir);
  if (!install.ok) {
    return {
      target,
      status: /connect|dns|network|tcp|certificate/i.test(install.log) ? "skipped" : "failed",
      reason: `npm packages for ${os}-${arch}: ${lastLine(install.log, /error/i)}`,
    };
  }
  const addon = await addonOf(dir, os, arch);
  if (!addon) {
    return { target, status: "failed", reason: `no PTY addon for ${os}-${arch} was installed` };
  }
  return { dir };
}

/** The directory of the target's node-pty addon package in `dir`, if installed. */
async function addonOf(dir: string, os: string, arch: string): Promise<string | null> {
  const name = `@lydell+node-pty-${os}-${arch}@`;
  try {
    for await (const e of Deno.readDir(join(dir, "node_modules", ".deno"))) {
      if (e.name.startsWith(name)) return join(dir, "node_modules", ".deno", e.name);
    }
  } catch {
    // no node_modules
  }
  return null;
}

/** Compiles one target into `outDir` and checks the result (see the file's comment). */
export async function compileTarget(target: string, outDir: string): Promise<Outcome> {
  const path = join(outDir, `cw-${target}`);
  const prepared = await prepareTarget(target);
  if (!("dir" in prepared)) return prepared;
  try {
    const out = await deno(compileArgs(target, path), prepared.dir);
    if (!out.ok) {
      if (/denort|download|dl\.deno\.land|dns|connect|network|tcp/i.test(out.log)) {
        return {
          target,
          status: "skipped",
          reason: `cannot get the denort runtime (offline?); set DENORT_BIN: ${
            lastLine(out.log, /denort|dl\.deno\.land/)
          }`,
        };
      }
      return { target, status: "failed", reason: lastLine(out.log, /error/i) };
    }
    const problem = target === Deno.build.target
      ? await checkRuns(path)
      : await checkFormat(path, target);
    if (problem) {
      await Deno.remove(path).catch(() => {});
      return { target, status: "failed", reason: problem };
    }
    return { target, status: "built", path, sha256: await sha256File(path) };
  } finally {
    await Deno.remove(prepared.dir, { recursive: true }).catch(() => {});
  }
}

/**
 * Runs a binary built for this machine: null when it is cw (its version, a
 * session on its own node), else what is wrong.
 */
export async function checkRuns(bin: string): Promise<string | null> {
  const home = await Deno.makeTempDir({ prefix: "cw-compile-check-" });
  const run = async (args: string[]) => {
    const out = await new Deno.Command(bin, {
      args,
      env: { ...Deno.env.toObject(), CW_HOME: `${home}/home` },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  };
  try {
    const version = await run(["--version"]);
    if (version.stdout.trim() !== `cw ${VERSION}`) {
      return `not a cw binary: --version printed ${
        JSON.stringify((version.stdout || version.stderr).trim().split("\n")[0])
      } (a plain deno? check DENORT_BIN)`;
    }
    const launched = await run(["launch", "--", "sh", "-c", "echo compiled-ok; exit 6"]);
    if (launched.code !== 0) return `cw launch failed: ${launched.stderr.trim()}`;
    const id = launched.stdout.trim();
    const waited = await run(["wait", id]);
    const logs = await run(["logs", id]);
    if (waited.code !== 6 || logs.stdout !== "compiled-ok\n") {
      return `a session did not run: wait exited ${waited.code}, logs ${
        JSON.stringify(logs.stdout)
      }`;
    }
    return null;
  } finally {
    await run(["stop"]).catch(() => {});
    await Deno.remove(home, { recursive: true }).catch(() => {});
  }
}

/** Executable formats by target: ELF machine numbers, Mach-O CPU types. */
const ELF_MACHINE: Record<string, number> = { x64: 0x3e, arm64: 0xb7 };
const MACHO_CPU: Record<string, number> = { x64: 0x01000007, arm64: 0x0100000c };

/**
 * Null when `bin` is a 64-bit executable of the target's OS and CPU that
 * carries the target's PTY addon; else what is wrong.
 */
export async function checkFormat(bin: string, target: string): Promise<string | null> {
  const { os, arch } = npmPlatform(target);
  const file = await Deno.open(bin);
  const head = new Uint8Array(20);
  try {
    await file.read(head);
  } finally {
    file.close();
  }
  const view = new DataView(head.buffer);
  if (os === "linux") {
    const elf = head[0] === 0x7f && head[1] === 0x45 && head[2] === 0x4c && head[3] === 0x46;
    if (!elf) return "not an ELF executable";
    if (head[4] !== 2) return "not a 64-bit ELF executable";
    const machine = view.getUint16(18, true);
    if (machine !== ELF_MACHINE[arch]) {
      return `an ELF executable for machine 0x${machine.toString(16)}, not ${arch}`;
    }
  } else {
    if (view.getUint32(0, true) !== 0xfeedfacf) return "not a 64-bit Mach-O executable";
    const cpu = view.getUint32(4, true);
    if (cpu !== MACHO_CPU[arch]) {
      return `a Mach-O executable for CPU 0x${cpu.toString(16)}, not ${arch}`;
    }
  }
  if (!(await contains(bin, new TextEncoder().encode(`node-pty-${os}-${arch}`)))) {
    return `the PTY addon for ${os}-${arch} is not inside`;
  }
  return null;
}

/** Whether the file holds `needle` (read in blocks, overlapping by its length). */
async function contains(path: string, needle: Uint8Array): Promise<boolean> {
  const file = await Deno.open(path);
  const block = new Uint8Array(1 << 20);
  let carry = new Uint8Array(0);
  try {
    while (true) {
      const n = await file.read(block);
      if (n === null) return false;
      const data = new Uint8Array(carry.byteLength + n);
      data.set(carry);
      data.set(block.subarray(0, n), carry.byteLength);
      if (indexOf(data, needle) !== -1) return true;
      carry = data.slice(Math.max(0, data.byteLength - needle.byteLength + 1));
    }
  } finally {
    file.close();
  }
}

function indexOf(hay: Uint8Array, needle: Uint8Array): number {
  for (let i = hay.indexOf(needle[0]); i !== -1; i = hay.indexOf(needle[0], i + 1)) {
    if (i + needle.byteLength > hay.byteLength) return -1;
    let j = 1;
    while (j < needle.byteLength && hay[i + j] === needle[j]) j++;
    if (j === needle.byteLength) return i;
  }
  return -1;
}

/** A file's SHA-256, hex. */
export async function sha256File(path: string): Promise<string> {
  const data = await Deno.readFile(path);
  const digest = await crypto.subtle.digest("SHA-256", data);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** `SHA256SUMS` text for files in one directory (`sha256sum -c` reads it). */
export function checksums(files: { name: string; sha256: string }[]): string {
  return files.map((f) => `${f.sha256}  ${f.name}\n`).join("");
}

function lastLine(s: string, prefer: RegExp): string {
  // deno-lint-ignore no-control-regex
  const lines = s.replace(/\x1b\[[0-9;]*m/g, "").trim().split("\n");
  return lines.find((l) => prefer.test(l))?.trim() ?? lines.at(-1)?.trim() ?? "";
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { target: { type: "string", multiple: true }, out: { type: "string" } },
  });
  const targets = values.target ?? [...TARGETS];
  const outDir = values.out ?? join(root, "dist");
  await Deno.mkdir(outDir, { recursive: true });
  let failed = false;
  const built: { name: string; sha256: string }[] = [];
  for (const target of targets) {
    const r = await compileTarget(target, outDir);
    if (r.status === "built") {
      console.log(`BUILT    ${target}  ${r.path}  sha256 ${r.sha256}`);
      built.push({ name: `cw-${target}`, sha256: r.sha256 });
    } else console.log(`${r.status.toUpperCase().padEnd(8)} ${target}  ${r.reason}`);
    failed ||= r.status === "failed";
  }
  if (built.length > 0) {
    // merged with what an earlier run (another target, another machine) wrote
    const sums = join(outDir, "SHA256SUMS");
    const old = await Deno.readTextFile(sums).catch(() => "");
    const keep = old.split("\n").filter((l) => l && !built.some((b) => l.endsWith(`  ${b.name}`)))
      .map((l) => `${l}\n`).join("");
    await Deno.writeTextFile(sums, keep + checksums(built));
    console.log(`wrote ${sums}`);
  }
  Deno.exit(failed ? 1 : 0);
}
