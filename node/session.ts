import type { SessionInfo, SessionStatus } from "../shared/protocol.ts";
import type { Activity } from "./activity.ts";
import { ByteRing } from "./ring.ts";
import { OutputLog } from "./output_log.ts";
import { TermHistory } from "./term_history.ts";

/** A viewer that makes no progress this long no longer slows the program. */
export const STALL_MS = 2000;
/** Longest single pause of a program's output for its viewers. */
const PAUSE_SLICE_MS = 50;

/** How a session pauses its program's output (the PTY host). */
export interface FlowControl {
  pause(): void;
  resume(): void;
}

/** One reader of a session's output, with its own offset into the ring. */
export interface Viewer {
  /** Next offset this viewer will get. */
  pos: number;
  /** When it last took output. */
  progressAt: number;
  interactive: boolean;
  /** Records that the viewer has taken output up to `to`. */
  advance(to: number): void;
  /** The viewer is gone. */
  leave(): void;
}

/**
 * One session in the node: its metadata, its output (ring + log) and the
 * promises readers wait on. Output is pushed in by the PTY host and never
 * waits for a reader.
 */
export class Session {
  /** Persisted metadata; `outputBytes` follows the ring. */
  readonly meta: SessionInfo;
  /** Directory holding meta.json and the log files. */
  readonly dir: string;
  /** Recent output for replay. */
  readonly ring: ByteRing;
  /** The PTY's size now (as last set; 80×24 for a session from before this node). */
  size = { cols: 80, rows: 24 };
  /** Modes and sizes along the output, for the terminal model (node/screen.ts). */
  readonly history: TermHistory;
  /** When the program last printed (ms epoch; its start before that). */
  lastOutputAt = Date.now();
  /** Working or waiting, while it runs (set by the manager: node/activity.ts). */
  activityOf: ((s: Session) => { activity: Activity; since: number }) | null = null;
  #log: OutputLog | null;
  #viewers = new Set<Viewer>();
  #flow: FlowControl | null = null;
  #paused = false;
  #stallTimer: ReturnType<typeof setTimeout> | undefined;
  #wake: (() => void) | null = null;
  #changed: Promise<void> | null = null;
  #ended: Promise<void>;
  #resolveEnded!: () => void;

  /** A session over existing metadata; `log` is null for a finished one. */
  constructor(meta: SessionInfo, dir: string, ringBytes: number, log: OutputLog | null) {
    this.meta = meta;
    this.dir = dir;
    this.ring = new ByteRing(ringBytes);
    this.ring.reset(meta.outputBytes);
    this.history = new TermHistory(meta.outputBytes, this.size.cols, this.size.rows);
    this.#log = log;
    this.#ended = new Promise((resolve) => this.#resolveEnded = resolve);
    if (meta.status !== "running") this.#resolveEnded();
  }

  /** Whether the process is still running. */
  get running(): boolean {
    return this.meta.status === "running";
  }

  /** Records output: log first, then ring, then wakes readers. */
  append(data: Uint8Array): void {
    this.#log?.append(data);
    this.ring.write(data);
    this.meta.outputBytes = this.ring.end;
    this.history.feed(data, this.ring.end);
    this.lastOutputAt = Date.now();
    if (this.#viewers.size > 0) this.#checkFlow();
    this.#notify();
  }

  /** Records that the PTY is now `cols`×`rows` (output from here on is drawn at that size). */
  resized(cols: number, rows: number): void {
    this.size = { cols, rows };
    this.history.resized(this.ring.end, cols, rows);
    this.#notify(); // attached viewers are told
  }

  /** Marks the session ended and wakes everybody. */
  finish(status: SessionStatus, exitCode: number | null, signal: string | null, at: Date): void {
    this.meta.status = status;
    this.meta.exitCode = exitCode;
    this.meta.signal = signal;
    this.meta.endedAt = at.toISOString();
    this.#log?.close();
    this.#log = null;
    if (this.#paused) this.#checkFlow();
    this.#releaseRing();
    this.#resolveEnded();
    this.#notify();
  }

  /**
   * A reader starts following the ring at `pos`. An `interactive` viewer (a
   * writable attach) takes part in flow control; call `leave()` when done.
   */
  follow(pos: number, interactive: boolean): Viewer {
    const viewer: Viewer = {
      pos,
      progressAt: Date.now(),
      interactive,
      advance: (to: number) => {
        viewer.pos = to;
        viewer.progressAt = Date.now();
        if (this.#paused) this.#checkFlow();
      },
      leave: () => {
        if (!this.#viewers.delete(viewer)) return;
        this.#checkFlow();
        this.#releaseRing();
      },
    };
    this.#viewers.add(viewer);
    return viewer;
  }

  /** Sets how the session pauses and resumes its program's output. */
  setFlowControl(flow: FlowControl): void {
    this.#flow = flow;
  }

  /**
   * Pauses the PTY while every active interactive viewer is more than half a
   * ring behind, so a local terminal that reads as fast as it can sees every
   * byte (no cut escape sequences). A viewer that makes
   * no progress for {@link STALL_MS} stops counting: it is told what it
   * skipped and cannot freeze the session. Read-only viewers, log followers
   * and remote clients never slow the program.
   */
  #checkFlow(): void {
    if (!this.#flow) return;
    const now = Date.now();
    const high = this.ring.capacity / 2;
    const low = this.ring.capacity / 4;
    let active = 0;
    let allBehind = true;
    let anyCaughtUp = false;
    for (const v of this.#viewers) {
      if (!v.interactive) continue;
      const behind = this.ring.end - v.pos;
      if (behind > 0 && now - v.progressAt >= STALL_MS) continue; // stalled
      active++;
      if (behind <= high) allBehind = false;
      if (behind < low) anyCaughtUp = true;
    }
    if (!this.#paused && active > 0 && allBehind && this.running) {
      this.#paused = true;
      this.#flow.pause();
      // Pauses are short slices, re-decided at the next output: node-pty
      // gives a paused PTY only 200 ms to drain after its program exits.
      this.#stallTimer = setTimeout(() => this.#setRunning(), PAUSE_SLICE_MS);
    } else if (this.#paused && (active === 0 || anyCaughtUp || !this.running)) {
      this.#setRunning();
    }
  }

  #setRunning(): void {
    if (!this.#paused) return;
    this.#paused = false;
    clearTimeout(this.#stallTimer);
    this.#flow?.resume();
  }

  /**
   * Nothing replays an ended session from memory (attach refuses it, logs
   * read the disk), so once its last reader is done the ring is given back;
   * only its end offset is still needed.
   */
  #releaseRing(): void {
    if (!this.running && this.#viewers.size === 0) this.ring.reset(this.ring.end);
  }

  /** Resolves at the next output or at the end, whichever comes first. */
  changed(): Promise<void> {
    if (!this.#changed) {
      this.#changed = new Promise((resolve) => this.#wake = resolve);
    }
    return this.#changed;
  }

  /** Resolves when the session has ended. */
  ended(): Promise<void> {
    return this.#ended;
  }

  /** A copy of the public info. */
  info(): SessionInfo {
    const info: SessionInfo = {
      ...this.meta,
      argv: [...this.meta.argv],
      tags: [...this.meta.tags],
    };
    if (this.running && this.activityOf) {
      const { activity, since } = this.activityOf(this);
      info.state = activity;
      info.stateSince = new Date(since).toISOString();
    } else info.state = this.meta.status === "running" ? "working" : this.meta.status;
    return info;
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = null;
    this.#changed = null;
    wake?.();
  }
}
