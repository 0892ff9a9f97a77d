/**
 * Stream multiplexing over one WebSocket: the node's persistent link to the
 * relay carries many logical streams (a remote `cw attach`, a `cw list`, an
 * SSH session's signal) without new connections. This file is the spec.
 *
 * ## Link frames (one per binary WebSocket message)
 *
 * ```
 *  0      1            5
 *  +------+------------+----------------------+
 *  | type | stream u32 | payload              |
 *  +------+------------+----------------------+
 * ```
 *
 * | type | name    | stream | payload                                    |
 * |------|---------|--------|--------------------------------------------|
 * | 0x01 | OPEN    | new id | JSON {@link StreamMeta}                    |
 * | 0x02 | DATA    | id     | ≤ {@link MUX_MAX_DATA} bytes               |
 * | 0x03 | WINDOW  | id     | u32: bytes the sender may send in addition |
 * | 0x04 | CLOSE   | id     | empty: the stream is over in both ways     |
 * | 0x05 | PING    | 0      | ≤ 64 bytes                                 |
 * | 0x06 | PONG    | 0      | the PING's payload                         |
 * | 0x07 | GOAWAY  | 0      | JSON {reason, message}: peer is leaving    |
 * | 0x08 | CONTROL | 0      | JSON: link-level messages of the user      |
 *
 * Stream ids: the side that accepted the WebSocket (relay) opens odd ids, the
 * side that dialled (node) even ids; 0 is the link itself.
 *
 * ## Flow control
 *
 * Each direction of each stream starts with a window of
 * {@link MUX_INITIAL_WINDOW} bytes. A sender never has more unacknowledged
 * bytes in flight; the receiver grants WINDOW credit as its reader consumes
 * data. So a stream whose reader stalls holds at most one window in memory,
 * and a busy stream cannot starve the others: each write waits for its own
 * credit, and the WebSocket's buffer is kept under {@link MUX_LINK_HIGH_WATER}.
 * A peer that overruns a window breaks the protocol and loses the link.
 *
 * ## Liveness
 *
 * Each side sends PING every {@link MUX_PING_INTERVAL_MS}; a link with no
 * frame for {@link MUX_DEAD_AFTER_MS} is dead and closed.
 */
import type { Duplex } from "./duplex.ts";

/** Largest DATA payload on the link. */
export const MUX_MAX_DATA = 64 * 1024;
/** Initial (and maximum outstanding) window per stream direction. */
export const MUX_INITIAL_WINDOW = 512 * 1024;
/** Largest JSON payload (OPEN, GOAWAY, CONTROL). */
export const MUX_MAX_JSON = 64 * 1024;
/** Writers pause while the WebSocket holds more than this unsent. */
export const MUX_LINK_HIGH_WATER = 1024 * 1024;
/** Heartbeat interval. */
export const MUX_PING_INTERVAL_MS = 5_000;
/** A link silent this long is dead. */
export const MUX_DEAD_AFTER_MS = 15_000;
/** Most streams open at once on one link. */
export const MUX_MAX_STREAMS = 1024;

/** Link frame types. */
export const MuxType = {
  OPEN: 0x01,
  DATA: 0x02,
  WINDOW: 0x03,
  CLOSE: 0x04,
  PING: 0x05,
  PONG: 0x06,
  GOAWAY: 0x07,
  CONTROL: 0x08,
} as const;

/** What an OPEN says the stream is for. */
export interface StreamMeta {
  /** `node` — the node protocol (shared/protocol.ts) runs inside. */
  kind: string;
  [key: string]: unknown;
}

/** A decoded link frame. */
export interface MuxFrame {
  type: number;
  stream: number;
  payload: Uint8Array;
}

/** Thrown for a link frame that breaks this spec. */
export class MuxError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "MuxError";
  }
}

const HEADER = 5;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Encodes one link frame. */
export function encodeMux(
  type: number,
  stream: number,
  payload: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const out = new Uint8Array(HEADER + payload.byteLength);
  const view = new DataView(out.buffer);
  view.setUint8(0, type);
  view.setUint32(1, stream);
  out.set(payload, HEADER);
  return out;
}

/** Decodes one link frame; throws {@link MuxError} when malformed. */
export function decodeMux(data: Uint8Array): MuxFrame {
  if (data.byteLength < HEADER) {
    throw new MuxError(`Link frame of ${data.byteLength} bytes is too short`);
  }
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const type = view.getUint8(0);
  if (type < MuxType.OPEN || type > MuxType.CONTROL) {
    throw new MuxError(`Unknown link frame type ${type}`);
  }
  const payload = data.subarray(HEADER);
  const limit = type === MuxType.DATA
    ? MUX_MAX_DATA
    : type === MuxType.WINDOW
    ? 4
    : type === MuxType.PING || type === MuxType.PONG
    ? 64
    : type === MuxType.CLOSE
    ? 0
    : MUX_MAX_JSON;
  if (payload.byteLength > limit) {
    throw new MuxError(`Link frame type ${type} too large (${payload.byteLength})`);
  }
  return { type, stream: view.getUint32(1), payload };
}

function jsonPayload(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

function parseJson(payload: Uint8Array): Record<string, unknown> {
  try {
    const v = JSON.parse(decoder.decode(payload));
    if (typeof v === "object" && v !== null && !Array.isArray(v)) return v;
  } catch {
    // fall through
  }
  throw new MuxError("Link frame payload is not a JSON object");
}

/** The parts of a WebSocket the mux uses; both Deno's client and server sockets fit. */
export interface LinkSocket {
  binaryType: BinaryType;
  readonly bufferedAmount: number;
  readonly readyState: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "message", fn: (e: MessageEvent) => void): void;
  addEventListener(type: "close", fn: (e: CloseEvent) => void): void;
  addEventListener(type: "error", fn: (e: Event) => void): void;
}

/** Callbacks of a {@link Mux}. */
export interface MuxHandlers {
  /** A stream the peer opened. */
  onStream?(stream: MuxStream, meta: StreamMeta): void;
  /** A CONTROL message from the peer. */
  onControl?(message: Record<string, unknown>): void;
  /** The peer said it is going away (e.g. `relay restarting`). */
  onGoaway?(reason: string, message: string): void;
  /** The link ended; `reason` says why. Called once. */
  onClose?(reason: string): void;
}

/** Options of a {@link Mux}. */
export interface MuxOptions {
  /** The side that accepted the socket opens odd stream ids. */
  role: "accept" | "dial";
  pingIntervalMs?: number;
  deadAfterMs?: number;
}

/**
 * Multiplexes {@link MuxStream}s over one WebSocket. It owns the socket: use
 * {@link close}, not the socket's own close.
 */
export class Mux {
  #ws: LinkSocket;
  #handlers: MuxHandlers;
  #streams = new Map<number, MuxStream>();
  #nextId: number;
  #closed: string | null = null;
  #lastSeen = Date.now();
  #timer: ReturnType<typeof setInterval>;
  #drainWaiters: (() => void)[] = [];
  #drainTimer: ReturnType<typeof setTimeout> | null = null;
  /** Bytes received and sent on the link, for metrics. */
  readonly bytes = { in: 0, out: 0 };

  /** Starts multiplexing on an open socket. */
  constructor(ws: LinkSocket, handlers: MuxHandlers, opts: MuxOptions) {
    this.#ws = ws;
    this.#handlers = handlers;
    this.#nextId = opts.role === "accept" ? 1 : 2;
    ws.binaryType = "arraybuffer";
    ws.addEventListener("message", (e) => this.#onMessage(e));
    ws.addEventListener("close", (e) => this.#shutdown(e.reason || `socket closed (${e.code})`));
    ws.addEventListener("error", () => this.#shutdown("socket error"));
    const ping = opts.pingIntervalMs ?? MUX_PING_INTERVAL_MS;
    const dead = opts.deadAfterMs ?? MUX_DEAD_AFTER_MS;
    this.#timer = setInterval(() => {
      if (Date.now() - this.#lastSeen > dead) {
        this.close(`no traffic for ${Math.round(dead / 1000)} s`);
        return;
      }
      this.#send(encodeMux(MuxType.PING, 0, encoder.encode(String(Date.now()))));
    }, ping);
  }

  /** Why the link closed, or null while open. */
  get closedReason(): string | null {
    return this.#closed;
  }

  /** Number of open streams. */
  get streamCount(): number {
    return this.#streams.size;
  }

  /** Opens a stream to the peer. */
  open(meta: StreamMeta): MuxStream {
    if (this.#closed) throw new MuxError(`The link is closed: ${this.#closed}`);
    if (this.#streams.size >= MUX_MAX_STREAMS) throw new MuxError("Too many streams on this link");
    const id = this.#nextId;
    this.#nextId += 2;
    const stream = new MuxStream(this, id);
    this.#streams.set(id, stream);
    this.#send(encodeMux(MuxType.OPEN, id, jsonPayload(meta)));
    return stream;
  }

  /** Sends a CONTROL message. */
  control(message: Record<string, unknown>): void {
    this.#send(encodeMux(MuxType.CONTROL, 0, jsonPayload(message)));
  }

  /** Tells the peer we are leaving, then closes. */
  goaway(reason: string, message: string): void {
    this.#send(encodeMux(MuxType.GOAWAY, 0, jsonPayload({ reason, message })));
    this.close(reason);
  }

  /** Closes the link and every stream on it. */
  close(reason = "closed"): void {
    if (this.#closed) return;
    try {
      this.#ws.close(1000, reason.slice(0, 120));
    } catch {
      // already closing
    }
    this.#shutdown(reason);
  }

  // ---- used by MuxStream

  /** @internal Sends a frame. */
  sendFrame(frame: Uint8Array): void {
    this.#send(frame);
  }

  /** @internal Resolves once the socket's buffer is below the high-water mark. */
  drained(): Promise<void> {
    if (this.#closed || this.#ws.bufferedAmount <= MUX_LINK_HIGH_WATER) return Promise.resolve();
    return new Promise((resolve) => {
      this.#drainWaiters.push(resolve);
      this.#pollDrain();
    });
  }

  /** @internal Forgets a stream. */
  forget(id: number): void {
    this.#streams.delete(id);
  }

  #pollDrain(): void {
    // WebSockets have no drain event; poll only while someone waits
    if (this.#drainTimer) return;
    this.#drainTimer = setTimeout(() => {
      this.#drainTimer = null;
      if (this.#closed || this.#ws.bufferedAmount <= MUX_LINK_HIGH_WATER) {
        const waiters = this.#drainWaiters;
        this.#drainWaiters = [];
        waiters.forEach((w) => w());
      } else {
        this.#pollDrain();
      }
    }, 2);
  }

  #send(frame: Uint8Array): void {
    if (this.#closed) return;
    try {
      this.#ws.send(frame);
      this.bytes.out += frame.byteLength;
    } catch (err) {
      this.#shutdown(`send failed: ${err}`);
    }
  }

  #onMessage(e: MessageEvent): void {
    this.#lastSeen = Date.now();
    if (!(e.data instanceof ArrayBuffer)) {
      this.close("protocol error: text message on the link");
      return;
    }
    this.bytes.in += e.data.byteLength;
    try {
      this.#handle(decodeMux(new Uint8Array(e.data)));
    } catch (err) {
      // never out of a socket listener: a bad frame or a failing handler ends this link only
      if (err instanceof MuxError) this.close(`protocol error: ${err.message}`);
      else this.close(`internal error: ${(err as Error)?.message ?? err}`);
    }
  }

  #handle(f: MuxFrame): void {
    switch (f.type) {
      case MuxType.PING:
        this.#send(encodeMux(MuxType.PONG, 0, f.payload));
        return;
      case MuxType.PONG:
        return;
      case MuxType.GOAWAY: {
        const v = parseJson(f.payload);
        const text = (x: unknown) => typeof x === "string" ? x : "";
        this.#handlers.onGoaway?.(text(v.reason), text(v.message));
        return;
      }
      case MuxType.CONTROL:
        this.#handlers.onControl?.(parseJson(f.payload));
        return;
      case MuxType.OPEN: {
        const meta = parseJson(f.payload);
        const peerOpens = this.#nextId % 2 === 0 ? 1 : 0; // the parity the peer uses
        if (f.stream === 0 || f.stream % 2 !== peerOpens || this.#streams.has(f.stream)) {
          throw new MuxError(`Bad stream id ${f.stream} in OPEN`);
        }
        if (typeof meta.kind !== "string") throw new MuxError("OPEN without a kind");
        if (this.#streams.size >= MUX_MAX_STREAMS) {
          this.#send(encodeMux(MuxType.CLOSE, f.stream));
          return;
        }
        const stream = new MuxStream(this, f.stream);
        this.#streams.set(f.stream, stream);
        // Answer at once: the peer's next frame (the stream's first bytes)
        // then finds its OPEN acknowledged instead of waiting ~40 ms for a
        // delayed ACK behind Nagle's algorithm (sockets here lack TCP_NODELAY).
        this.#send(encodeMux(MuxType.WINDOW, f.stream, new Uint8Array(4)));
        if (this.#handlers.onStream) this.#handlers.onStream(stream, meta as StreamMeta);
        else stream.close();
        return;
      }
      case MuxType.DATA:
        this.#streams.get(f.stream)?.receive(f.payload);
        return;
      case MuxType.WINDOW:
        if (f.payload.byteLength !== 4) throw new MuxError("WINDOW needs a u32");
        this.#streams.get(f.stream)?.credit(
          new DataView(f.payload.buffer, f.payload.byteOffset).getUint32(0),
        );
        return;
      case MuxType.CLOSE:
        this.#streams.get(f.stream)?.remoteClosed();
        return;
    }
  }

  #shutdown(reason: string): void {
    if (this.#closed) return;
    this.#closed = reason;
    clearInterval(this.#timer);
    if (this.#drainTimer) clearTimeout(this.#drainTimer);
    this.#drainWaiters.forEach((w) => w());
    this.#drainWaiters = [];
    for (const s of [...this.#streams.values()]) s.remoteClosed();
    this.#streams.clear();
    this.#handlers.onClose?.(reason);
  }
}

/**
 * One logical stream on a {@link Mux}; a {@link Duplex}, so anything that
 * speaks over a socket speaks over it.
 */
export class MuxStream implements Duplex {
  readonly id: number;
  readonly readable: ReadableStream<Uint8Array>;
  readonly writable: WritableStream<Uint8Array>;
  #mux: Mux;
  #inbox: Uint8Array[] = [];
  #inboxBytes = 0;
  #consumed = 0; // bytes read since the last WINDOW we sent
  #sendWindow = MUX_INITIAL_WINDOW;
  #wakeReader: (() => void) | null = null;
  #wakeWriter: (() => void) | null = null;
  #closed = false;
  #remoteClosed = false;

  /** @internal Created by {@link Mux}. */
  constructor(mux: Mux, id: number) {
    this.#mux = mux;
    this.id = id;
    this.readable = new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        while (this.#inbox.length === 0) {
          if (this.#remoteClosed || this.#closed) {
            controller.close();
            return;
          }
          await new Promise<void>((r) => this.#wakeReader = r);
        }
        const chunk = this.#inbox.shift()!;
        this.#inboxBytes -= chunk.byteLength;
        this.#consumed += chunk.byteLength;
        if (this.#consumed >= MUX_INITIAL_WINDOW / 4 && !this.#closed) {
          const credit = new Uint8Array(4);
          new DataView(credit.buffer).setUint32(0, this.#consumed);
          this.#consumed = 0;
          this.#mux.sendFrame(encodeMux(MuxType.WINDOW, this.id, credit));
        }
        controller.enqueue(chunk);
      },
      cancel: () => this.close(),
    }, { highWaterMark: 0 });
    this.writable = new WritableStream<Uint8Array>({
      write: async (chunk) => {
        let off = 0;
        while (off < chunk.byteLength) {
          if (this.#closed || this.#remoteClosed) throw new MuxError("The stream is closed");
          if (this.#sendWindow === 0) {
            await new Promise<void>((r) => this.#wakeWriter = r);
            continue;
          }
          await this.#mux.drained();
          const n = Math.min(chunk.byteLength - off, this.#sendWindow, MUX_MAX_DATA);
          this.#sendWindow -= n;
          this.#mux.sendFrame(encodeMux(MuxType.DATA, this.id, chunk.subarray(off, off + n)));
          off += n;
        }
      },
      close: () => this.close(),
      abort: () => this.close(),
    });
  }

  /** Closes the stream in both directions; safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#remoteClosed) this.#mux.sendFrame(encodeMux(MuxType.CLOSE, this.id));
    this.#mux.forget(this.id);
    this.#wake();
  }

  /** @internal DATA arrived. */
  receive(data: Uint8Array): void {
    if (this.#closed) return;
    if (this.#inboxBytes + data.byteLength > MUX_INITIAL_WINDOW) {
      throw new MuxError(`Stream ${this.id} overran its window`);
    }
    this.#inbox.push(data);
    this.#inboxBytes += data.byteLength;
    this.#wakeReader?.();
    this.#wakeReader = null;
  }

  /** @internal WINDOW arrived. */
  credit(n: number): void {
    this.#sendWindow = Math.min(this.#sendWindow + n, MUX_INITIAL_WINDOW);
    this.#wakeWriter?.();
    this.#wakeWriter = null;
  }

  /** @internal The peer closed the stream, or the link died. */
  remoteClosed(): void {
    this.#remoteClosed = true;
    this.#mux.forget(this.id);
    this.#wake();
  }

  #wake(): void {
    this.#wakeReader?.();
    this.#wakeReader = null;
    this.#wakeWriter?.();
    this.#wakeWriter = null;
  }
}
