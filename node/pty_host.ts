import { fileURLToPath as fromFileUrl } from "node:url";
import type { FromWorker, ToWorker } from "./pty_messages.ts";
import { CwError } from "../shared/errors.ts";
import { PTY_INPUT_MAX } from "./limits.ts";

/** What the host needs to start a PTY. */
export interface PtySpawn {
  file: string;
  args: string[];
  cwd: string;
  env: Record<string, string>;
  cols: number;
  rows: number;
}

/** Callbacks for a PTY's life. */
export interface PtyHandlers {
  onData(data: Uint8Array): void;
  onExit(exitCode: number, signal: number): void;
  /** The program's side took `bytes` more input (for writers that acknowledge it). */
  onInputTaken?(bytes: number): void;
}

/** A write waiting for room in a PTY's input. */
interface InputWaiter {
  data: Uint8Array;
  done(posted: boolean): void;
}

/** Input of one PTY: bytes posted and not yet taken, and writers waiting for room. */
interface PtyInput {
  pending: number;
  waiting: InputWaiter[];
}

/**
 * The main thread's side of the PTY worker. One worker serves every PTY of
 * the node; each is addressed by its session id.
 */
export class PtyHost {
  #worker: Worker;
  #ready: Promise<void>;
  #isReady = false;
  #handlers = new Map<number, PtyHandlers>();
  #pending = new Map<number, { resolve(pid: number): void; reject(err: Error): void }>();
  #inputs = new Map<number, PtyInput>();

  /** Starts the worker with narrow permissions. */
  constructor() {
    const url = new URL("./pty_worker.ts", import.meta.url);
    this.#worker = new Worker(url, {
      type: "module",
      deno: {
        permissions: {
          ffi: ffiScope(),
          read: true,
          write: true,
          net: false,
          env: false,
          run: false,
          sys: false,
        },
      },
    } as WorkerOptions);
    this.#ready = new Promise((resolve, reject) => {
      this.#worker.onerror = (e) => {
        e.preventDefault();
        reject(new CwError("internal", `PTY worker failed: ${e.message}`));
      };
      this.#worker.onmessage = (e: MessageEvent<FromWorker>) => {
        if (e.data.t === "ready") {
          this.#worker.onmessage = (m: MessageEvent<FromWorker>) => this.#onMessage(m.data);
          this.#isReady = true;
          resolve();
        }
      };
    });
  }

  /** Resolves when the worker can spawn. */
  ready(): Promise<void> {
    return this.#ready;
  }

  /** Spawns a PTY for session `id`; resolves with the child's pid. */
  async spawn(id: number, opts: PtySpawn, handlers: PtyHandlers): Promise<number> {
    // once the worker is up, the spawn is posted before this returns: input
    // written right after it (an SSH client's first bytes) lands in the PTY
    if (!this.#isReady) await this.#ready;
    this.#handlers.set(id, handlers);
    const pid = new Promise<number>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
    });
    this.#post({ t: "spawn", id, ...opts });
    return await pid;
  }

  /**
   * Writes input to PTY `id` once it has room: at most {@link PTY_INPUT_MAX}
   * bytes (or one larger write) wait for its program at a time, and writers
   * take turns in order. Resolves true once the bytes went to the PTY, false
   * when they were dropped because the PTY ended or `signal` aborted first.
   */
  write(id: number, data: Uint8Array, signal?: AbortSignal): Promise<boolean> {
    if (!this.#handlers.has(id) || signal?.aborted) return Promise.resolve(false);
    let input = this.#inputs.get(id);
    if (!input) this.#inputs.set(id, input = { pending: 0, waiting: [] });
    if (input.waiting.length === 0 && fits(input, data.byteLength)) {
      this.#postInput(id, input, data);
      return Promise.resolve(true);
    }
    const queue = input.waiting;
    return new Promise<boolean>((resolve) => {
      const waiter: InputWaiter = {
        data,
        done: (posted) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(posted);
        },
      };
      const onAbort = () => {
        const at = queue.indexOf(waiter);
        if (at === -1) return;
        queue.splice(at, 1);
        waiter.done(false);
        this.#admit(id); // the next writer may fit now
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      queue.push(waiter);
    });
  }

  /** Bytes of input posted to PTY `id` that its program has not taken yet. */
  inputPending(id: number): number {
    return this.#inputs.get(id)?.pending ?? 0;
  }

  /** Resizes a PTY. */
  resize(id: number, cols: number, rows: number): void {
    this.#post({ t: "resize", id, cols, rows });
  }

  /** Pauses or resumes reading a PTY's output. */
  setPaused(id: number, paused: boolean): void {
    this.#post({ t: "flow", id, paused });
  }

  /** Stops the worker. */
  terminate(): void {
    this.#worker.terminate();
  }

  #post(msg: ToWorker): void {
    this.#worker.postMessage(msg);
  }

  #postInput(id: number, input: PtyInput, data: Uint8Array): void {
    input.pending += data.byteLength;
    this.#post({ t: "write", id, data });
  }

  /** Posts the waiting writes that fit now, in order. */
  #admit(id: number): void {
    const input = this.#inputs.get(id);
    if (!input) return;
    while (input.waiting.length > 0 && fits(input, input.waiting[0].data.byteLength)) {
      const waiter = input.waiting.shift()!;
      this.#postInput(id, input, waiter.data);
      waiter.done(true);
    }
  }

  /** The PTY is gone: waiting writes are dropped. */
  #dropInput(id: number): void {
    const input = this.#inputs.get(id);
    this.#inputs.delete(id);
    for (const waiter of input?.waiting ?? []) waiter.done(false);
  }

  #onMessage(msg: FromWorker): void {
    switch (msg.t) {
      case "spawned":
        this.#pending.get(msg.id)?.resolve(msg.pid);
        this.#pending.delete(msg.id);
        break;
      case "spawn_error":
        this.#handlers.delete(msg.id);
        this.#dropInput(msg.id);
        this.#pending.get(msg.id)?.reject(new CwError("spawn_failed", msg.message));
        this.#pending.delete(msg.id);
        break;
      case "data":
        this.#handlers.get(msg.id)?.onData(msg.data);
        this.#post({ t: "ack", id: msg.id });
        break;
      case "input_taken": {
        const input = this.#inputs.get(msg.id);
        if (!input) break; // the PTY is gone
        input.pending = Math.max(0, input.pending - msg.bytes);
        this.#handlers.get(msg.id)?.onInputTaken?.(msg.bytes);
        this.#admit(msg.id);
        break;
      }
      case "exit": {
        const h = this.#handlers.get(msg.id);
        this.#handlers.delete(msg.id);
        this.#dropInput(msg.id);
        h?.onExit(msg.exitCode, msg.signal);
        break;
      }
    }
  }
}

/** Whether `n` more bytes of input fit; one write larger than the bound goes alone. */
function fits(input: PtyInput, n: number): boolean {
  return input.pending === 0 || input.pending + n <= PTY_INPUT_MAX;
}

/**
 * The ffi permission of the worker: the npm directory holding the PTY addon
 * when running from source; in a compiled binary the addon is unpacked to a
 * path only known at run time, so ffi is granted without a path there.
 */
function ffiScope(): string[] | true {
  const url = new URL("../node_modules/", import.meta.url);
  if (url.protocol !== "file:") return true;
  const dir = fromFileUrl(url);
  try {
    Deno.statSync(dir);
    return [dir];
  } catch {
    return true;
  }
}
