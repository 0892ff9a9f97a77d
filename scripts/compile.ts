/**
 * Builds one `cw` executable per target with `deno compile`, with the same
 * permissions and unstable flags as `deno task cw` and the PTY worker included.
 *
 * `deno compile` needs the `denort` runtime of each target. Deno downloads it;
 * where the network does not allow that, set DENORT_BIN to a local denort
 * (host target only). A target that cannot get its runtime is reported as
 * SKIPPED, never as built.
 *
 * Usage: deno task compile [--target TRIPLE]... [--out DIR]
 */
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { RUN_FLAGS } from "../shared/runtime.ts";

/** Every target cw ships for. */
export const TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
] as const;

/** Files loaded at run time that `deno compile` cannot see statically. */
const INCLUDES = ["node/pty_worker.ts", "node/model_worker.ts"];

const root = fileURLToPath(new URL("..", import.meta.url));

/** Outcome of one target. */
export type Outcome = { target: string; status: "built"; path: string } | {
  target: string;
  status: "skipped" | "failed";
  reason: string;
};

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

/** Compiles one target. */
export async function compileTarget(target: string, outDir: string): Promise<Outcome> {
  const path = join(outDir, `cw-${target}`);
  const out = await new Deno.Command(Deno.execPath(), {
    args: compileArgs(target, path),
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const log = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
  if (out.success) return { target, status: "built", path };
  if (/denort|download|dl\.deno\.land|dns|connect|network|tcp/i.test(log)) {
    return {
      target,
      status: "skipped",
      reason: `cannot get the denort runtime (offline?); set DENORT_BIN: ${
        lastLine(log, /denort|dl\.deno\.land/)
      }`,
    };
  }
  return { target, status: "failed", reason: lastLine(log, /error/i) };
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
  for (const target of targets) {
    const r = await compileTarget(target, outDir);
    if (r.status === "built") console.log(`BUILT    ${target}  ${r.path}`);
    else console.log(`${r.status.toUpperCase().padEnd(8)} ${target}  ${r.reason}`);
    failed ||= r.status === "failed";
  }
  Deno.exit(failed ? 1 : 0);
}
