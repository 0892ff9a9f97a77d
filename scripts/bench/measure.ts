/**
 * The measurements themselves, each run against a {@link Terminal} the same
 * way whatever runs inside it (bare PTY, `cw attach`, `tmux attach`).
 */
import { AnsiStripper } from "../../shared/ansi.ts";
import type { Terminal } from "./terminal.ts";

/** Bytes in a MiB. */
export const MIB = 1024 * 1024;
/** Printed by the echo program once its terminal is raw; built so argv never contains it. */
export const READY = "READY";
/** Printed after the cat in a throughput run. */
export const END_MARKER = "END-OF-BENCH-OUTPUT";

/**
 * Echo program: the inner PTY in raw mode without kernel echo, so every byte
 * travels to `cat` and back (a real process round trip, as in an agent's UI).
 */
export const ECHO_SCRIPT = `stty raw -echo && printf '%s%s' RE ADY && exec cat`;

/**
 * Throughput program (`sh -c SCRIPT sh FILE`): waits for a newline so the clock
 * starts when the bench says so, cats the file, prints the end marker, and
 * stays: tmux drops a pane's last screen when the pane exits right away.
 */
export const CAT_SCRIPT = `stty -echo; printf '%s%s\\n' RE ADY; read x; cat "$1"; ` +
  `printf '%s%s\\n' END-OF- BENCH-OUTPUT; exec sleep 3600`;

/** Letters to echo: no two consecutive samples share one. */
const ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/** Round-trip times of single keystrokes, in milliseconds. */
export interface EchoResult {
  samples: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Samples whose output held more than the echoed byte (redraws around it). */
  extraOutput: number;
}

/**
 * Sends one byte at a time and times until it is visible in the output (escape
 * sequences around it, as tmux writes them, are skipped), `warmup` times
 * unrecorded and then `samples` times.
 */
export async function measureEcho(
  term: Terminal,
  warmup: number,
  samples: number,
): Promise<EchoResult> {
  const stripper = new AnsiStripper();
  const latin1 = new TextDecoder("latin1");
  let visible = "";
  term.tap = (chunk) => visible += latin1.decode(stripper.push(chunk));
  const times: number[] = [];
  let extraOutput = 0;
  try {
    for (let i = 0; i < warmup + samples; i++) {
      const ch = ALPHABET[i % ALPHABET.length];
      visible = "";
      let t1 = 0;
      const t0 = performance.now();
      await term.expect(`the echo of "${ch}"`, () => {
        if (!visible.includes(ch)) return false;
        t1 = performance.now();
        return true;
      }, { input: ch, timeoutMs: 5000 });
      if (i < warmup) continue;
      times.push(t1 - t0);
      if (visible !== ch) extraOutput++;
    }
  } finally {
    term.tap = null;
  }
  return {
    samples: times.length,
    p50Ms: percentile(times, 50),
    p99Ms: percentile(times, 99),
    maxMs: Math.max(...times),
    extraOutput,
  };
}

/** One throughput run. */
export interface ThroughputRun {
  seconds: number;
  mibPerS: number;
  /** Bytes that reached the bench terminal (escape sequences included). */
  bytesReceived: number;
  /** Bytes cw reported as skipped for a slow reader. */
  bytesSkipped: number;
}

/**
 * Waits for the program's READY, then sends a newline and times until the end
 * marker arrives; `fileBytes` over that time is the throughput.
 */
export async function measureThroughput(
  term: Terminal,
  fileBytes: number,
): Promise<ThroughputRun> {
  await term.expectText(READY, { timeoutMs: 20_000 });
  await term.settle(150, 3000);
  const latin1 = new TextDecoder("latin1");
  const before = term.bytes;
  let carry = "";
  let bytesSkipped = 0;
  let t1 = 0;
  const t0 = performance.now();
  await term.expect("the end marker", (chunk) => {
    const s = carry + latin1.decode(chunk);
    if (s.includes("skipped]")) {
      // count each notice once: the one that ends in the new text
      for (const m of s.matchAll(/\[cw: (\d+) bytes skipped\]/g)) {
        if (m.index + m[0].length > carry.length) bytesSkipped += Number(m[1]);
      }
    }
    if (s.includes(END_MARKER)) {
      t1 = performance.now();
      return true;
    }
    carry = s.slice(-64);
    return false;
  }, { input: "\r", timeoutMs: 90_000 });
  const seconds = (t1 - t0) / 1000;
  return {
    seconds,
    mibPerS: fileBytes / MIB / seconds,
    bytesReceived: term.bytes - before,
    bytesSkipped,
  };
}

/** The `p`th percentile (nearest rank) of `values`. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/** Wall time of `fn` in milliseconds, with its result. */
export async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const t0 = performance.now();
  const value = await fn();
  return { ms: performance.now() - t0, value };
}
