/**
 * The benchmark's own terminal: a PTY opened by the bench process (through
 * node-pty) running the thing under test — `cat`, `cw attach N` or
 * `tmux attach`. Every path is measured from the same side of the same kind of
 * PTY, so the numbers compare.
 */
import { type IPty, spawn } from "@lydell/node-pty";

/** Size and environment of a bench terminal. */
export interface TerminalOptions {
  cols: number;
  rows: number;
  env: Record<string, string>;
  cwd: string;
}

/** Output kept for error messages, in bytes. */
const TAIL_BYTES = 600;

/** Receives each output chunk; returns true when the awaited output has arrived. */
export type ChunkCheck = (chunk: Uint8Array) => boolean;

/**
 * A PTY whose output is handed to one awaiting check at a time. Dispose it to
 * kill the program (SIGHUP, then SIGKILL) and wait for it to go.
 */
export class Terminal implements AsyncDisposable {
  #pty: IPty;
  #check: ChunkCheck | null = null;
  #done: (() => void) | null = null;
  #fail: ((err: Error) => void) | null = null;
  #lastOutput = performance.now();
  #exited: Promise<number>;
  #running = true;
  #tail = new Uint8Array(0);
  /** Output bytes seen since the terminal opened. */
  bytes = 0;
  /** Sees every output chunk, before any check does. */
  tap: ((chunk: Uint8Array) => void) | null = null;

  /** Starts `file args` on a new PTY. Throws when the program cannot start. */
  constructor(file: string, args: string[], opts: TerminalOptions) {
    this.#pty = spawn(file, args, {
      name: "xterm-256color",
      cols: opts.cols,
      rows: opts.rows,
      cwd: opts.cwd,
      env: opts.env,
      encoding: null,
    });
    this.#pty.onData((data: unknown) => {
      const chunk = data as Uint8Array;
      this.bytes += chunk.byteLength;
      this.#lastOutput = performance.now();
      this.#keepTail(chunk);
      this.tap?.(chunk);
      if (this.#check?.(chunk)) this.#settle()?.done();
    });
    this.#exited = new Promise((resolve) => {
      this.#pty.onExit(({ exitCode }) => {
        this.#running = false;
        this.#settle()?.fail(
          new Error(`The program exited with code ${exitCode}; its last output: ${this.tail()}`),
        );
        resolve(exitCode);
      });
    });
  }

  /** Pid of the program. */
  get pid(): number {
    return this.#pty.pid;
  }

  /**
   * Writes `input` (if any) and resolves when `check` accepts a chunk of the
   * output that follows. Rejects after `timeoutMs` or when the program exits.
   */
  expect(
    what: string,
    check: ChunkCheck,
    opts: { input?: string; timeoutMs: number },
  ): Promise<void> {
    if (this.#check) throw new Error(`Cannot wait for ${what}: already waiting`);
    if (!this.#running) return Promise.reject(new Error(`Cannot wait for ${what}: it exited`));
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#settle();
        reject(
          new Error(
            `Timed out after ${opts.timeoutMs} ms waiting for ${what}; last output: ${this.tail()}`,
          ),
        );
      }, opts.timeoutMs);
      this.#check = check;
      this.#done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.#fail = (err) => {
        clearTimeout(timer);
        reject(new Error(`${err.message} while waiting for ${what}`));
      };
      if (opts.input !== undefined) this.#pty.write(opts.input);
    });
  }

  /** Ends the current wait, returning its callbacks. */
  #settle(): { done(): void; fail(err: Error): void } | null {
    const done = this.#done;
    const fail = this.#fail;
    this.#check = null;
    this.#done = null;
    this.#fail = null;
    return done && fail ? { done, fail } : null;
  }

  /** Resolves when `text` appears in the output (searching across chunk boundaries). */
  expectText(text: string, opts: { input?: string; timeoutMs: number }): Promise<void> {
    return this.expect(JSON.stringify(text), textCheck(text), opts);
  }

  /** Resolves once no output has arrived for `quietMs`, or after `maxMs` in any case. */
  async settle(quietMs: number, maxMs: number): Promise<void> {
    const deadline = performance.now() + maxMs;
    while (performance.now() < deadline) {
      const idle = performance.now() - this.#lastOutput;
      if (idle >= quietMs) return;
      await new Promise((r) => setTimeout(r, Math.max(1, quietMs - idle)));
    }
  }

  /** The last output (at most {@link TAIL_BYTES}), escaped for an error message. */
  tail(): string {
    return JSON.stringify(new TextDecoder().decode(this.#tail));
  }

  #keepTail(chunk: Uint8Array): void {
    const keep = Math.min(TAIL_BYTES, this.#tail.byteLength + chunk.byteLength);
    const next = new Uint8Array(keep);
    const fromChunk = Math.min(chunk.byteLength, keep);
    next.set(this.#tail.subarray(this.#tail.byteLength - (keep - fromChunk)), 0);
    next.set(chunk.subarray(chunk.byteLength - fromChunk), keep - fromChunk);
    this.#tail = next;
  }

  /** Writes input without waiting. */
  write(input: string): void {
    this.#pty.write(input);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const sig of ["SIGHUP", "SIGKILL"]) {
      if (!this.#running) return;
      try {
        this.#pty.kill(sig);
      } catch {
        return; // already gone
      }
      await Promise.race([this.#exited, new Promise((r) => setTimeout(r, 2000))]);
    }
  }
}

/**
 * A check that finds `text` in the stream even when it is split across
 * chunks; it keeps only the last `text.length - 1` bytes between chunks.
 */
export function textCheck(text: string): ChunkCheck {
  const decoder = new TextDecoder("latin1");
  let carry = "";
  return (chunk) => {
    const s = carry + decoder.decode(chunk);
    if (s.includes(text)) return true;
    carry = s.slice(-(text.length - 1));
    return false;
  };
}
