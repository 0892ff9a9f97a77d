import { fileURLToPath as fromFileUrl } from "node:url";
import type { FromWorker, ToWorker } from "./pty_messages.ts";
import { CwError } from "../shared/errors.ts";

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
}

/**
 * The main thread's side of the PTY worker. One worker serves every PTY of
 * the node; each is addressed by its session id.
 */
export class PtyHost {
  #worker: Worker;
  #ready: Promise<void>;
  #handlers = new Map<number, PtyHandlers>();
  #pending = new Map<number, { resolve(pid: number): void; reject(err: Error): void }>();

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
    await this.#ready;
    this.#handlers.set(id, handlers);
    const pid = new Promise<number>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
    });
    this.#post({ t: "spawn", id, ...opts });
    return await pid;
  }

  /** Writes input to a PTY. */
  write(id: number, data: Uint8Array): void {
    this.#post({ t: "write", id, data });
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

  #onMessage(msg: FromWorker): void {
    switch (msg.t) {
      case "spawned":
        this.#pending.get(msg.id)?.resolve(msg.pid);
        this.#pending.delete(msg.id);
        break;
      case "spawn_error":
        this.#handlers.delete(msg.id);
        this.#pending.get(msg.id)?.reject(new CwError("spawn_failed", msg.message));
        this.#pending.delete(msg.id);
        break;
      case "data":
        this.#handlers.get(msg.id)?.onData(msg.data);
        this.#post({ t: "ack", id: msg.id });
        break;
      case "exit": {
        const h = this.#handlers.get(msg.id);
        this.#handlers.delete(msg.id);
        h?.onExit(msg.exitCode, msg.signal);
        break;
      }
    }
  }
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
