import type { SessionInfo, SessionStatus } from "../shared/protocol.ts";
import { ByteRing } from "./ring.ts";
import { OutputLog } from "./output_log.ts";

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
  #log: OutputLog | null;
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
    this.#notify();
  }

  /** Marks the session ended and wakes everybody. */
  finish(status: SessionStatus, exitCode: number | null, signal: string | null, at: Date): void {
    this.meta.status = status;
    this.meta.exitCode = exitCode;
    this.meta.signal = signal;
    this.meta.endedAt = at.toISOString();
    this.#log?.close();
    this.#log = null;
    this.#resolveEnded();
    this.#notify();
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
    return { ...this.meta, argv: [...this.meta.argv], tags: [...this.meta.tags] };
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = null;
    this.#changed = null;
    wake?.();
  }
}
