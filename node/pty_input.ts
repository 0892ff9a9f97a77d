/**
 * PTY input written with libc's `write` on the master descriptor, by the
 * node's main thread (which owns the descriptors: node/pty_host.ts). A Node
 * socket's write on Deno 2.9 resumes after a full kernel buffer (EAGAIN) only
 * when the PTY also produces output: a program that reads its input silently
 * (`stty -echo; cat > file`) got ~12 KiB of a 800 KiB `cw send` and the rest
 * never. Here a write that meets a full buffer is retried on a short timer
 * (1 ms, doubling to 16 ms) and at once when the PTY has output. The
 * descriptor is non-blocking (the PTY addon makes it so): a write never
 * blocks the thread.
 */

const RETRY_FIRST_MS = 1;
const RETRY_MAX_MS = 16;

const SYMBOLS = {
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
} as const;

/** Writes queued input to PTY master descriptors without blocking the worker. */
export interface InputWriter {
  /**
   * Input for master descriptor `fd`; `taken(n)` reports bytes the kernel took
   * (or that were dropped). `alive()` says the descriptor is still the PTY's:
   * once node-pty closes it, the number may name another file.
   */
  open(fd: number, taken: (bytes: number) => void, alive: () => boolean): PtyInput;
}

/** One PTY's input queue. */
export interface PtyInput {
  write(data: Uint8Array): void;
  /** The PTY produced output: a good moment to retry a full buffer. */
  kick(): void;
  /** The PTY is gone: what is queued counts as taken. */
  close(): void;
}

/** Opens libc; throws where this platform has none cw knows. */
export function openInputWriter(): InputWriter {
  const name = Deno.build.os === "darwin" ? "/usr/lib/libSystem.B.dylib" : "libc.so.6";
  const lib = Deno.dlopen(name, SYMBOLS);
  const libc = lib;
  return {
    open(fd, taken, alive) {
      let queue: Uint8Array[] = [];
      let timer: ReturnType<typeof setTimeout> | undefined;
      let delay = RETRY_FIRST_MS;
      let closed = false;
      const pump = () => {
        clearTimeout(timer);
        timer = undefined;
        let took = 0;
        while (queue.length && !closed) {
          if (!alive()) {
            closed = true;
            for (const c of queue) took += c.byteLength;
            queue = [];
            break;
          }
          const chunk = queue[0];
          const n = Number(libc.symbols.write(fd, chunk, BigInt(chunk.byteLength)));
          if (n > 0) {
            took += n;
            delay = RETRY_FIRST_MS;
            if (n === chunk.byteLength) queue.shift();
            else queue[0] = chunk.subarray(n);
            continue;
          }
          // a full buffer (EAGAIN) or a PTY on its way out (EIO): errno cannot be read
          // reliably between two FFI calls (the runtime's own calls may change it), so
          // retry while the PTY is alive; its exit closes this queue
          timer = setTimeout(pump, delay);
          delay = Math.min(delay * 2, RETRY_MAX_MS);
          break;
        }
        if (took > 0) taken(took);
      };
      return {
        write(data) {
          if (closed) return taken(data.byteLength);
          queue.push(data);
          if (timer === undefined) pump();
        },
        kick() {
          if (queue.length && timer !== undefined) pump();
        },
        close() {
          closed = true;
          clearTimeout(timer);
          const left = queue.reduce((n, c) => n + c.byteLength, 0);
          queue = [];
          if (left > 0) taken(left);
        },
      };
    },
  };
}
