import { fileURLToPath as fromFileUrl } from "node:url";
import type { FromWorker, ToWorker } from "./pty_messages.ts";
import { CwError } from "../shared/errors.ts";
import { PTY_INPUT_MAX } from "./limits.ts";
import { openInputWriter, type PtyInput } from "./pty_input.ts";
import tty from "node:tty";

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

/** One PTY, on the main thread: its descriptor's reader and writer, its input bound. */
interface Pty {
  handlers: PtyHandlers;
  /** Input given to the writer and not yet taken by the kernel. */
  pending: number;
  /** Writers waiting for room (or for the PTY to open), in order. */
  waiting: InputWaiter[];
  /** Null until the worker has forked the program. */
  reader: ReadStream | null;
  writer: PtyInput | null;
  /** The descriptor is closed (its number may name another file now). */
  closed: boolean;
  /** Resolves when reading has ended (the program's side closed: EIO). */
  drained: Promise<void>;
  onDrained(): void;
}

/** What node:tty's ReadStream is to this file. */
type ReadStream = InstanceType<typeof tty.ReadStream>;

/**
 * How long a program's output may still come after it exited: a process it
 * left in the background can hold the PTY open for ever (node-pty's figure).
 */
const EXIT_DRAIN_MS = 200;

/**
 * The node's PTYs. The PTY worker (narrow permissions, the only user of
 * node-pty's addon) forks programs and reports their exit; the bytes never
 * cross a thread: this thread reads each master descriptor (node:tty) and
 * writes it (libc, node/pty_input.ts). Each PTY is addressed by its session id.
 */
export class PtyHost {
  #worker: Worker;
  #ready: Promise<void>;
  #isReady = false;
  #ptys = new Map<number, Pty>();
  #pending = new Map<number, { resolve(pid: number): void; reject(err: Error): void }>();
  #input = openInputWriter();

  /** Starts the worker with narrow permissions. */
  constructor() {
    const url = new URL("./pty_worker.ts", import.meta.url);
    this.#worker = new Worker(url, {
      type: "module",
      deno: {
        permissions: {
          ffi: ffiScope(),
          read: true,
          write: false,
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

  /**
   * Spawns a PTY for session `id`; resolves with the child's pid. Input
   * written from the moment this is called is kept for the program, in order
   * (an SSH client's first bytes).
   */
  async spawn(id: number, opts: PtySpawn, handlers: PtyHandlers): Promise<number> {
    let onDrained!: () => void;
    const drained = new Promise<void>((resolve) => onDrained = resolve);
    this.#ptys.set(id, {
      handlers,
      pending: 0,
      waiting: [],
      reader: null,
      writer: null,
      closed: false,
      drained,
      onDrained,
    });
    if (!this.#isReady) await this.#ready;
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
    const pty = this.#ptys.get(id);
    if (!pty || pty.closed || signal?.aborted) return Promise.resolve(false);
    if (pty.writer && pty.waiting.length === 0 && fits(pty, data.byteLength)) {
      this.#give(pty, data);
      return Promise.resolve(true);
    }
    const queue = pty.waiting;
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
        this.#admit(pty); // the next writer may fit now
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      queue.push(waiter);
    });
  }

  /** Bytes of input written to PTY `id` that its program has not taken yet. */
  inputPending(id: number): number {
    return this.#ptys.get(id)?.pending ?? 0;
  }

  /** Resizes a PTY. */
  resize(id: number, cols: number, rows: number): void {
    this.#post({ t: "resize", id, cols, rows });
  }

  /** Pauses or resumes reading a PTY's output (the kernel then holds the program). */
  setPaused(id: number, paused: boolean): void {
    const reader = this.#ptys.get(id)?.reader;
    if (paused) reader?.pause();
    else reader?.resume();
  }

  /** Stops the worker and closes every PTY. */
  terminate(): void {
    this.#worker.terminate();
    for (const pty of this.#ptys.values()) this.#close(pty);
    this.#ptys.clear();
  }

  #post(msg: ToWorker): void {
    this.#worker.postMessage(msg);
  }

  #give(pty: Pty, data: Uint8Array): void {
    pty.pending += data.byteLength;
    pty.writer!.write(data);
  }

  /** Gives the waiting writes that fit now to the writer, in order. */
  #admit(pty: Pty): void {
    if (!pty.writer) return;
    while (pty.waiting.length > 0 && fits(pty, pty.waiting[0].data.byteLength)) {
      const waiter = pty.waiting.shift()!;
      this.#give(pty, waiter.data);
      waiter.done(true);
    }
  }

  /** The program runs on descriptor `fd`: read and write it from here on. */
  #open(pty: Pty, fd: number): void {
    const reader = new tty.ReadStream(fd);
    pty.reader = reader;
    pty.writer = this.#input.open(
      fd,
      (bytes) => {
        pty.pending = Math.max(0, pty.pending - bytes);
        pty.handlers.onInputTaken?.(bytes);
        this.#admit(pty);
      },
      () => !pty.closed,
    );
    reader.on("data", (chunk: Uint8Array) => {
      pty.writer?.kick();
      pty.handlers.onData(chunk);
    });
    // the program's side closed (EIO), or the descriptor did: no more output
    reader.on("error", () => pty.onDrained());
    reader.on("end", () => pty.onDrained());
    reader.on("close", () => pty.onDrained());
    this.#admit(pty);
  }

  /** Closes the descriptor; input waiting for it is dropped. */
  #close(pty: Pty): void {
    if (pty.closed) return;
    pty.closed = true;
    pty.writer?.close();
    pty.reader?.destroy();
    pty.onDrained();
    for (const waiter of pty.waiting) waiter.done(false);
    pty.waiting = [];
  }

  #onMessage(msg: FromWorker): void {
    if (msg.t === "ready") return;
    const pty = this.#ptys.get(msg.id);
    switch (msg.t) {
      case "spawned":
        if (pty) this.#open(pty, msg.fd);
        this.#pending.get(msg.id)?.resolve(msg.pid);
        this.#pending.delete(msg.id);
        break;
      case "spawn_error":
        if (pty) this.#close(pty);
        this.#ptys.delete(msg.id);
        this.#pending.get(msg.id)?.reject(new CwError("spawn_failed", msg.message));
        this.#pending.delete(msg.id);
        break;
      case "exit": {
        if (!pty) break;
        // the output still in the PTY comes first, then the exit
        let timer: ReturnType<typeof setTimeout> | undefined;
        const late = new Promise<void>((resolve) => timer = setTimeout(resolve, EXIT_DRAIN_MS));
        void Promise.race([pty.drained, late]).then(() => {
          clearTimeout(timer);
          this.#close(pty);
          if (this.#ptys.get(msg.id) === pty) this.#ptys.delete(msg.id);
          pty.handlers.onExit(msg.exitCode, msg.signal);
        });
        break;
      }
    }
  }
}

/** Whether `n` more bytes of input fit; one write larger than the bound goes alone. */
function fits(pty: Pty, n: number): boolean {
  return pty.pending === 0 || pty.pending + n <= PTY_INPUT_MAX;
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
