import type { Duplex } from "./duplex.ts";
import {
  DATA_CHUNK,
  encodeFrame,
  encodeJson,
  type ErrorCode,
  type Frame,
  FrameDecoder,
  FrameKind,
  type Hello,
  PROTOCOL_MAGIC,
  PROTOCOL_VERSION,
  ProtocolError,
} from "./protocol.ts";
import { CwError } from "./errors.ts";
import { VERSION } from "./version.ts";

/** A socket's own I/O (Deno.Conn has it). */
interface RawConn {
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
}

/** Bytes asked for per socket read. */
const READ_SIZE = 64 * 1024;

/**
 * Frames over a {@link Duplex}: one reader, one writer, PING answered
 * automatically. `send*` resolve once the transport accepted the bytes, which
 * is the backpressure every stream in cw relies on.
 */
export class FramedConn {
  #duplex: Duplex;
  #reader: ReadableStreamDefaultReader<Uint8Array> | null = null;
  #writer: WritableStreamDefaultWriter<Uint8Array> | null = null;
  /** A socket's own read/write, used instead of its web streams when it has them (cheaper). */
  #raw: RawConn | null;
  #readBuf: Uint8Array | null = null;
  #writing: Promise<unknown> = Promise.resolve();
  #decoder = new FrameDecoder();
  #queue: Frame[] = [];
  #closed = false;

  /** Wraps a duplex; the framed connection owns it from now on. */
  constructor(duplex: Duplex) {
    this.#duplex = duplex;
    const raw = duplex as Partial<RawConn>;
    this.#raw = typeof raw.read === "function" && typeof raw.write === "function"
      ? raw as RawConn
      : null;
    if (!this.#raw) {
      this.#reader = duplex.readable.getReader();
      this.#writer = duplex.writable.getWriter();
    }
  }

  /**
   * Next frame, or `null` at end of stream. Throws {@link ProtocolError} on
   * malformed input.
   */
  async next(): Promise<Frame | null> {
    while (true) {
      const frame = this.#queue.shift();
      if (frame) {
        if (frame.kind === FrameKind.PING) {
          this.send(encodeFrame(FrameKind.PONG, frame.bytes)).catch(() => {});
          continue;
        }
        return frame;
      }
      let chunk: Uint8Array | null;
      try {
        chunk = await this.#read();
      } catch {
        return null; // reset by peer is an end of stream for us
      }
      if (chunk === null) return null;
      this.#queue.push(...this.#decoder.push(chunk));
    }
  }

  /**
   * Takes the DATA frames already decoded and waiting, without reading more
   * (lets a reader write a burst of output at once).
   */
  takeQueuedData(): Uint8Array[] {
    const out: Uint8Array[] = [];
    while (this.#queue[0]?.kind === FrameKind.DATA) {
      out.push((this.#queue.shift() as { bytes: Uint8Array }).bytes);
    }
    return out;
  }

  /** Writes pre-encoded frame bytes; writes never interleave. */
  async send(bytes: Uint8Array): Promise<void> {
    if (this.#closed) throw new CwError("internal", "Connection is closed");
    if (this.#writer) return await this.#writer.write(bytes);
    const raw = this.#raw!;
    const done = this.#writing.then(async () => {
      let off = 0;
      while (off < bytes.byteLength) off += await raw.write(bytes.subarray(off));
    });
    this.#writing = done.catch(() => {});
    await done;
  }

  async #read(): Promise<Uint8Array | null> {
    if (this.#reader) {
      const r = await this.#reader.read();
      return r.done ? null : r.value;
    }
    // one buffer read into again and again; what was read is copied out (decoded frames are
    // views into it): a keystroke costs a copy of its few bytes, not a fresh 64 KiB
    const buf = this.#readBuf ??= new Uint8Array(READ_SIZE);
    const n = await this.#raw!.read(buf);
    return n === null ? null : buf.slice(0, n);
  }

  /** Sends a JSON frame. */
  sendJson(kind: FrameKind, value: unknown): Promise<void> {
    return this.send(encodeJson(kind, value));
  }

  /** Sends bytes as DATA frames of at most {@link DATA_CHUNK} bytes. */
  async sendData(bytes: Uint8Array): Promise<void> {
    for (let i = 0; i < bytes.byteLength; i += DATA_CHUNK) {
      await this.send(encodeFrame(FrameKind.DATA, bytes.subarray(i, i + DATA_CHUNK)));
    }
  }

  /** Sends an ERROR frame; never throws. */
  async sendError(code: ErrorCode, message: string): Promise<void> {
    try {
      await this.sendJson(FrameKind.ERROR, { code, message });
    } catch {
      // the peer is gone; nothing to tell
    }
  }

  /** Closes the connection and its transport. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#reader?.cancel().catch(() => {});
    this.#writer?.close().catch(() => {});
    try {
      this.#duplex.close();
    } catch {
      // already closed
    }
  }

  /** Whether {@link close} was called. */
  get closed(): boolean {
    return this.#closed;
  }
}

/** The HELLO this build sends. */
export function helloFrame(): Hello {
  return { magic: PROTOCOL_MAGIC, version: PROTOCOL_VERSION, agent: `cw/${VERSION}` };
}

/** Checks a peer's HELLO; throws a {@link CwError} when it cannot be spoken to. */
export function checkHello(frame: Frame | null): Hello {
  if (!frame) throw new CwError("protocol_error", "Connection closed before the handshake");
  if (frame.kind === FrameKind.ERROR) throw errorFromFrame(frame.value);
  if (frame.kind !== FrameKind.HELLO || frame.value.magic !== PROTOCOL_MAGIC) {
    throw new CwError("protocol_error", "The peer does not speak the cw protocol");
  }
  if (frame.value.version !== PROTOCOL_VERSION) {
    throw new CwError(
      "unsupported_version",
      // the peer's value is shown as JSON: a hostile object must not throw here
      `Protocol version ${
        JSON.stringify(frame.value.version)?.slice(0, 40)
      } is not supported (this is ${PROTOCOL_VERSION})`,
    );
  }
  return frame.value as unknown as Hello;
}

/** Turns an ERROR frame's payload into a {@link CwError}. */
export function errorFromFrame(value: Record<string, unknown>): CwError {
  const code = typeof value.code === "string" ? value.code as ErrorCode : "internal";
  const message = typeof value.message === "string" ? value.message : "Unknown error";
  return new CwError(code, message);
}

export { ProtocolError };
