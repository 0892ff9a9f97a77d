/**
 * Whether a running session's program is working or waiting for you.
 *
 * Signals, decided here:
 * - output: a program that printed within {@link QUIET_MS} is `working`
 *   (agents draw spinners and stream text while they work);
 * - CPU: a quiet program whose processes (the session's leader and all its
 *   descendants, read from /proc on Linux) used at least
 *   {@link BUSY_TICKS_PER_S} clock ticks of CPU per second since the last
 *   sample is still `working` — busy computing quietly (a build, a test run);
 * - otherwise it is `waiting`: quiet and idle, which for an interactive
 *   program means it waits for input. (Blocked reads do not tell "waiting for
 *   the terminal" from "waiting for the network" for event-loop programs such
 *   as agents, which wait in epoll either way; their spinners cover the latter.)
 *
 * The monitor samples once a second, only the sessions quiet long enough for
 * CPU to matter, and reports changes (working → waiting, waiting → working)
 * to its listeners; an exit is reported by the session itself.
 */

import type { Session } from "./session.ts";
import { readProcFile } from "../shared/libc.ts";

/** Output within this long makes a session `working`. */
export const QUIET_MS = 3000;
/** CPU (in clock ticks, 100 per second on Linux) per second that makes a quiet session `working`. */
export const BUSY_TICKS_PER_S = 10;
/** How often states are re-read. */
const TICK_MS = 1000;
/** Most processes walked per session tree per sample (a fork bomb stays cheap to watch). */
const MAX_TREE = 256;
/** Most processes read per tick over all sessions; the rest wait for the next tick. */
const MAX_PER_TICK = 4096;

/** What a running session is doing. */
export type Activity = "working" | "waiting";

interface Sample {
  ticks: number;
  at: number;
}

/** The node's view of its sessions' activity; see the file's comment. */
export class ActivityMonitor {
  #sessions: () => Iterable<Session>;
  #state = new Map<number, { activity: Activity; since: number }>();
  #samples = new Map<number, Sample>();
  #busy = new Map<number, boolean>();
  #listeners = new Set<(s: Session, activity: Activity) => void>();
  #timer: ReturnType<typeof setInterval>;
  #proc = Deno.build.os === "linux";

  /** Watches the sessions `sessions()` returns (the running ones are looked at). */
  constructor(sessions: () => Iterable<Session>) {
    this.#sessions = sessions;
    this.#timer = setInterval(() => this.#tick(), TICK_MS);
    Deno.unrefTimer(this.#timer);
  }

  /** The activity of a running session now, and since when (ms epoch). */
  of(s: Session): { activity: Activity; since: number } {
    const known = this.#state.get(s.meta.id);
    const now = Date.now();
    const activity = this.#judge(s, now);
    if (known && known.activity === activity) return known;
    // not sampled yet (or changed since the last tick): judged now, with a stable start
    return { activity, since: this.#firstSince(s, activity, known) };
  }

  /** When a state no tick has recorded yet began, as well as the output tells. */
  #firstSince(
    s: Session,
    activity: Activity,
    known: { activity: Activity; since: number } | undefined,
  ): number {
    if (activity === "waiting") return s.lastOutputAt + QUIET_MS;
    // working: since it started, or since it last printed after waiting
    return known ? s.lastOutputAt : Date.parse(s.meta.startedAt);
  }

  /** Calls `fn` at every change of a running session's activity; returns an unsubscribe. */
  onChange(fn: (s: Session, activity: Activity) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** Stops sampling. */
  close(): void {
    clearInterval(this.#timer);
  }

  #judge(s: Session, now: number): Activity {
    if (now - s.lastOutputAt < QUIET_MS) return "working";
    return this.#busy.get(s.meta.id) ? "working" : "waiting";
  }

  #tick(): void {
    const now = Date.now();
    const seen = new Set<number>();
    let budget = MAX_PER_TICK;
    for (const s of this.#sessions()) {
      if (!s.running) continue;
      const id = s.meta.id;
      seen.add(id);
      // CPU matters only once the output is quiet; sampled from 2 ticks before, so that two
      // samples (a rate) exist when the output's 3 s are up
      if (this.#proc && now - s.lastOutputAt >= QUIET_MS - 2 * TICK_MS && s.meta.pid) {
        if (budget <= 0) continue; // sampled at the next tick; its last judgement stands
        const read = { processes: 0 };
        const ticks = treeTicks(s.meta.pid, read);
        budget -= read.processes;
        const last = this.#samples.get(id);
        if (ticks !== null) {
          this.#samples.set(id, { ticks, at: now });
          if (last) {
            const perS = (ticks - last.ticks) / Math.max(0.001, (now - last.at) / 1000);
            this.#busy.set(id, perS >= BUSY_TICKS_PER_S);
          }
        }
      } else {
        this.#samples.delete(id);
        this.#busy.delete(id);
      }
      const activity = this.#judge(s, now);
      const known = this.#state.get(id);
      if (known?.activity === activity) continue;
      const since = known
        ? (activity === "waiting" ? Math.min(now, s.lastOutputAt + QUIET_MS) : now)
        : this.#firstSince(s, activity, undefined);
      this.#state.set(id, { activity, since });
      if (known) { for (const fn of this.#listeners) fn(s, activity); }
    }
    for (const id of this.#state.keys()) {
      if (!seen.has(id)) {
        this.#state.delete(id);
        this.#samples.delete(id);
        this.#busy.delete(id);
      }
    }
  }
}

/**
 * CPU clock ticks (user + system) of `pid` and its descendants; null if it is
 * gone. `read.processes` counts the processes looked at.
 */
export function treeTicks(pid: number, read = { processes: 0 }): number | null {
  let total = 0;
  let found = false;
  const queue = [pid];
  for (let n = 0; queue.length > 0 && n < MAX_TREE; n++) {
    const p = queue.shift()!;
    read.processes++;
    const stat = readText(`/proc/${p}/stat`);
    if (stat === null) continue;
    // the command name (field 2) may hold spaces and parentheses: fields follow the last ")"
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    total += Number(fields[11]) + Number(fields[12]); // utime, stime
    found = true;
    // the children of its main thread (a process that forks from another thread is rare;
    // /proc/PID/task cannot be listed without --allow-all)
    const children = readText(`/proc/${p}/task/${p}/children`);
    if (children) { for (const c of children.trim().split(" ")) if (c) queue.push(Number(c)); }
  }
  return found ? total : null;
}

function readText(path: string): string | null {
  return readProcFile(path);
}
