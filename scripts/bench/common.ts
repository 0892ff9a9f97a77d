/**
 * Small pieces every part of the benchmark report uses: process facts read
 * from /proc, formatting, the target table and the results file.
 */
import { fileURLToPath } from "node:url";
import { MIB } from "./measure.ts";

/** A target of the brief, judged. */
export interface Target {
  name: string;
  value: string;
  pass: boolean;
}

/** Runs a command and returns its trimmed stdout, or "?" when it cannot run. */
export async function output(cmd: string, args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).output();
    return new TextDecoder().decode(out.stdout).trim();
  } catch {
    return "?";
  }
}

/**
 * VmRSS of a process in KiB. Read through `cat`: Deno only lets a process read
 * another's /proc entries with --allow-all.
 */
export async function rssKiB(pid: number): Promise<number> {
  const status = await output("cat", [`/proc/${pid}/status`]);
  const m = status.match(/^VmRSS:\s+(\d+) kB/m);
  if (!m) throw new Error(`No VmRSS in /proc/${pid}/status`);
  return Number(m[1]);
}

let clockTicks = 0;

/** CPU time (user + system) a process has used so far, in seconds, from /proc/PID/stat. */
export async function cpuSeconds(pid: number): Promise<number> {
  clockTicks ||= Number(await output("getconf", ["CLK_TCK"])) || 100;
  const stat = await output("cat", [`/proc/${pid}/stat`]);
  // fields after the command name, which may hold spaces: state is field 3, utime 14, stime 15
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) {
    throw new Error(`Cannot read CPU times from /proc/${pid}/stat`);
  }
  return (utime + stime) / clockTicks;
}

/** The 1, 5 and 15 minute load averages. */
export async function loadAverage(): Promise<string> {
  return (await output("cat", ["/proc/loadavg"])).split(" ").slice(0, 3).join(" ");
}

/** Facts about this machine, for a report's header and JSON. */
export interface MachineInfo {
  cpu: string;
  cores: number;
  kernel: string;
  deno: string;
  commit: string;
}

/** Facts about this machine, for the report's header and JSON. */
export async function machineInfo(): Promise<MachineInfo> {
  return {
    cpu: ((await output("cat", ["/proc/cpuinfo"])).match(/^model name\s*:\s*(.*)$/m)?.[1] ?? "?")
      .trim(),
    cores: navigator.hardwareConcurrency,
    kernel: Deno.osRelease(),
    deno: Deno.version.deno,
    commit: await output("git", [
      "-C",
      fileURLToPath(new URL("../..", import.meta.url)),
      "describe",
      "--always",
      "--dirty",
    ]),
  };
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Milliseconds, in µs below 1 ms. */
export function fmtMs(ms: number): string {
  if (ms < 1) return `${(ms * 1000).toFixed(0)} µs`;
  if (ms < 100) return `${ms.toFixed(2)} ms`;
  return `${ms.toFixed(0)} ms`;
}

/** Bytes in MiB. */
export function fmtMiB(bytes: number): string {
  return `${(bytes / MIB).toFixed(1)} MiB`;
}

/** A plain text table, columns padded to their widest cell. */
export function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => "  " + r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd();
  return [line(head), ...rows.map(line)].join("\n");
}

/** The PASS/MISS table of a part of the report. */
export function targetsTable(targets: Target[]): string {
  return table(
    ["", "target", "measured"],
    targets.map((t) => [t.pass ? "PASS" : "MISS", t.name, t.value]),
  );
}

/** A progress line on stderr (the report itself goes to stdout). */
export function progress(message: string): void {
  console.error(`… ${message}`);
}

/** Writes `bench-results/NAME.json` and returns its path. */
export function writeResults(name: string, value: unknown): string {
  const dir = fileURLToPath(new URL("../../bench-results/", import.meta.url));
  Deno.mkdirSync(dir, { recursive: true });
  const file = `${dir}${name}.json`;
  Deno.writeTextFileSync(file, JSON.stringify(value, null, 2) + "\n");
  return file;
}

/** The environment of a bench terminal: ours, minus anything that says we are nested. */
export function outerEnv(extra: Record<string, string>): Record<string, string> {
  const env = Deno.env.toObject();
  for (const k of ["TMUX", "TMUX_PANE", "CW_SESSION_ID", "CW_SESSION_NAME"]) delete env[k];
  return { ...env, TERM: "xterm-256color", ...extra };
}

/** Writes `bytes` of base64 text in 76-column lines, like `base64` prints. */
export async function writeTextFile(path: string, bytes: number): Promise<void> {
  const b64 = crypto.getRandomValues(new Uint8Array(57 * 1024)).toBase64();
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 76) lines.push(b64.slice(i, i + 76));
  const block = new TextEncoder().encode(lines.join("\n") + "\n");
  using f = await Deno.open(path, { write: true, create: true, truncate: true });
  let left = bytes;
  while (left > 0) {
    const part = block.subarray(0, Math.min(left, block.byteLength));
    let off = 0;
    while (off < part.byteLength) off += await f.write(part.subarray(off));
    left -= part.byteLength;
  }
}

/** Polls `check` every `everyMs` until it returns a truthy value; throws after `timeoutMs`. */
export async function pollUntil<T>(
  what: string,
  check: () => Promise<T>,
  timeoutMs: number,
  everyMs = 25,
): Promise<NonNullable<T>> {
  const deadline = performance.now() + timeoutMs;
  while (true) {
    const v = await check();
    if (v) return v as NonNullable<T>;
    if (performance.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await sleep(everyMs);
  }
}

let interrupted: Promise<never> | null = null;

/**
 * Runs `fn`, rejecting early on SIGINT so that the caller's `await using`
 * clean-up runs (the work itself is abandoned, not awaited).
 */
export function interruptible<T>(fn: () => Promise<T>): Promise<T> {
  interrupted ??= new Promise<never>((_, reject) => {
    Deno.addSignalListener("SIGINT", () => reject(new Error("Interrupted")));
  });
  interrupted.catch(() => {});
  return Promise.race([fn(), interrupted]);
}

/** Resolves as `promise` does, or rejects after `ms` naming `what`. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
