/**
 * A WebSocket as a {@link Duplex}: binary messages in, binary messages out, so
 * the node protocol runs over it unchanged. Sending waits while the socket
 * holds more than {@link WS_HIGH_WATER} unsent bytes; received messages are
 * queued up to {@link WS_MAX_QUEUED} bytes, beyond which the peer is ignoring
 * flow control and the socket is closed.
 */
import type { Duplex } from "./duplex.ts";

/** Writers wait while more than this is buffered in the socket. */
export const WS_HIGH_WATER = 1024 * 1024;
/** Most bytes of received, unread messages held for a reader. */
export const WS_MAX_QUEUED = 8 * 1024 * 1024;

/**
 * Wraps an open (or opening) WebSocket. `onTaken(bytes)` is called as the
 * reader consumes each received message (a guarded server's credit; see
 * shared/guarded_http.ts).
 */
export function wsDuplex(
  ws: WebSocket,
  opts: { onTaken?: (bytes: number) => void } = {},
): Duplex {
  ws.binaryType = "arraybuffer";
  const queue: Uint8Array[] = [];
  let queued = 0;
  let ended = false;
  let wake: (() => void) | null = null;
  const opened = ws.readyState === WebSocket.OPEN
    ? Promise.resolve(true)
    : new Promise<boolean>((resolve) => {
      ws.addEventListener("open", () => resolve(true), { once: true });
      ws.addEventListener("close", () => resolve(false), { once: true });
    });
  const notify = () => {
    wake?.();
    wake = null;
  };
  ws.addEventListener("message", (e) => {
    if (!(e.data instanceof ArrayBuffer)) {
      ws.close(4003, "binary messages only"); // 4xxx: client sockets refuse 1003/1008
      return;
    }
    queue.push(new Uint8Array(e.data));
    queued += e.data.byteLength;
    if (queued > WS_MAX_QUEUED) ws.close(4008, "receive queue overflow");
    notify();
  });
  ws.addEventListener("close", () => {
    ended = true;
    notify();
  });
  ws.addEventListener("error", () => {
    ended = true;
    notify();
  });

  const readable = new ReadableStream<Uint8Array>({
    async pull(controller) {
      while (queue.length === 0) {
        if (ended) {
          controller.close();
          return;
        }
        await new Promise<void>((r) => wake = r);
      }
      const chunk = queue.shift()!;
      queued -= chunk.byteLength;
      opts.onTaken?.(chunk.byteLength);
      controller.enqueue(chunk);
    },
    cancel() {
      ws.close();
    },
  }, { highWaterMark: 0 });

  const writable = new WritableStream<Uint8Array>({
    async write(chunk) {
      if (!(await opened) || ended) throw new Error("The WebSocket is closed");
      while (ws.bufferedAmount > WS_HIGH_WATER) {
        if (ended) throw new Error("The WebSocket is closed");
        await new Promise((r) => setTimeout(r, 2));
      }
      ws.send(chunk);
    },
    close() {
      ws.close(1000);
    },
    abort() {
      ws.close(1000);
    },
  });

  return {
    readable,
    writable,
    close() {
      try {
        ws.close(1000);
      } catch {
        // already closed
      }
    },
  };
}

/** Pipes two duplexes into each other until either side ends; closes both. */
export async function splice(a: Duplex, b: Duplex): Promise<void> {
  const ab = a.readable.pipeTo(b.writable).catch(() => {});
  const ba = b.readable.pipeTo(a.writable).catch(() => {});
  await Promise.race([ab, ba]);
  a.close();
  b.close();
}
