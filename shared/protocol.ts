/**
 * The cw node protocol, version 1. This file is the spec.
 *
 * One protocol, many transports: the same frames travel over the node's unix
 * socket, over its direct WebSocket listener and over a stream multiplexed on
 * the node's link to a relay. A transport only has to carry an ordered byte
 * stream in both directions.
 *
 * ## Frame layout
 *
 * ```
 *  0       4      5                      5+len
 *  +-------+------+----------- ... ------+
 *  | len   | kind | payload (len bytes)  |
 *  +-------+------+----------- ... ------+
 *  len: u32 big-endian, 0 ≤ len ≤ MAX_FRAME_PAYLOAD
 * ```
 *
 * | kind | name     | payload                 | direction        |
 * |------|----------|-------------------------|------------------|
 * | 0x01 | HELLO    | JSON {@link Hello}      | both, first      |
 * | 0x02 | REQUEST  | JSON {@link Request}    | client → node    |
 * | 0x03 | RESPONSE | JSON (per operation)    | node → client    |
 * | 0x04 | EVENT    | JSON {@link StreamEvent}| both, in a stream|
 * | 0x05 | DATA     | raw bytes               | both, in a stream|
 * | 0x06 | ERROR    | JSON {@link WireError}  | both, then close |
 * | 0x07 | PING     | ≤ 64 opaque bytes       | both             |
 * | 0x08 | PONG     | the PING's bytes        | both             |
 *
 * ## Conversation
 *
 * A connection carries one call. The client sends HELLO; the node answers
 * HELLO (or ERROR `unsupported_version`). The client sends one REQUEST; the
 * node answers RESPONSE or ERROR. Unary operations end there. Streaming
 * operations (`attach`, `logs` with `follow`) continue: the node sends DATA
 * (session output, contiguous from the `offset` given in the RESPONSE) and
 * EVENTs (`skipped`, `exit`); the client may send DATA (input) and EVENTs
 * (`resize`, `detach`). Either side may close at any time.
 *
 * A malformed, oversized or unknown frame is answered with ERROR
 * `protocol_error` / `frame_too_large` and the connection is closed; nothing
 * else on the node is affected.
 */

/** Protocol version spoken by this build. Bumped on incompatible changes. */
export const PROTOCOL_VERSION = 1;
/** Magic string in HELLO, so that a stray peer is recognised at once. */
export const PROTOCOL_MAGIC = "cw";

/** Largest payload of one frame, in bytes. */
export const MAX_FRAME_PAYLOAD = 1024 * 1024;
/** Largest payload of a JSON frame (HELLO, REQUEST, RESPONSE, EVENT, ERROR). */
export const MAX_JSON_PAYLOAD = 256 * 1024;
/** Output is sent in DATA frames of at most this many bytes. */
export const DATA_CHUNK = 64 * 1024;
/** Largest PING payload. */
export const MAX_PING_PAYLOAD = 64;
/** Bytes of the frame header. */
export const HEADER_SIZE = 5;

/** Frame kinds; see the table above. */
export const FrameKind = {
  HELLO: 0x01,
  REQUEST: 0x02,
  RESPONSE: 0x03,
  EVENT: 0x04,
  DATA: 0x05,
  ERROR: 0x06,
  PING: 0x07,
  PONG: 0x08,
} as const;
/** A frame kind byte. */
export type FrameKind = typeof FrameKind[keyof typeof FrameKind];

const JSON_KINDS = new Set<number>([
  FrameKind.HELLO,
  FrameKind.REQUEST,
  FrameKind.RESPONSE,
  FrameKind.EVENT,
  FrameKind.ERROR,
]);

/** A decoded frame: JSON kinds carry `value`, DATA/PING/PONG carry `bytes`. */
export type Frame =
  | {
    kind: typeof FrameKind.DATA | typeof FrameKind.PING | typeof FrameKind.PONG;
    bytes: Uint8Array;
  }
  | {
    kind:
      | typeof FrameKind.HELLO
      | typeof FrameKind.REQUEST
      | typeof FrameKind.RESPONSE
      | typeof FrameKind.EVENT
      | typeof FrameKind.ERROR;
    value: Record<string, unknown>;
  };

/** HELLO payload. */
export interface Hello {
  magic: typeof PROTOCOL_MAGIC;
  version: number;
  /** Software that speaks, e.g. `cw/0.1.0`. */
  agent: string;
}

/** Stable error codes: the same in a wire ERROR, an HTTP body and a CLI message. */
export type ErrorCode =
  | "protocol_error"
  | "frame_too_large"
  | "unsupported_version"
  | "bad_request"
  | "not_found"
  | "invalid_name"
  | "name_taken"
  | "command_not_found"
  | "dir_not_found"
  | "not_running"
  | "input_blocked"
  | "spawn_failed"
  | "shutting_down"
  | "unsafe_data_dir"
  | "node_unavailable"
  | "timeout"
  | "unauthorized"
  | "forbidden"
  | "invite_invalid"
  | "rate_limited"
  | "too_large"
  | "precondition_failed"
  | "method_not_allowed"
  | "node_offline"
  | "internal";

/** ERROR payload. */
export interface WireError {
  code: ErrorCode;
  message: string;
}

/** Session states. `lost`: the node died while the session ran. */
export type SessionStatus = "running" | "exited" | "killed" | "lost";
/** All session states, for validation. */
export const SESSION_STATUSES: readonly SessionStatus[] = ["running", "exited", "killed", "lost"];

/** What the node tells about a session (`list`, `status`, `launch`). */
export interface SessionInfo {
  id: number;
  name: string | null;
  argv: string[];
  dir: string;
  tags: string[];
  status: SessionStatus;
  pid: number | null;
  exitCode: number | null;
  signal: string | null;
  /** ISO 8601 times. */
  startedAt: string;
  endedAt: string | null;
  /** Bytes of output produced so far. */
  outputBytes: number;
  /**
   * What it is doing: a running session is `working` (output within the last
   * 3 s, or a quiet program using CPU) or `waiting` (quiet and idle: for an
   * interactive program, waiting for input); an ended one has its status.
   * (Absent from nodes older than this field.)
   */
  state?: "working" | "waiting" | SessionStatus;
  /** When a running session's state began (ISO 8601). */
  stateSince?: string;
  /** Its last line of output, escape sequences removed (`list` with `lastLines`). */
  lastLine?: string;
}

/** A request names a session by id (`"3"`) or name. */
export type SessionRef = string;

/** Every REQUEST, discriminated by `op`. */
export type Request =
  | {
    op: "launch";
    argv: string[];
    name?: string;
    dir?: string;
    tags?: string[];
    /** Complete environment of the session, before cw's own variables. */
    env?: Record<string, string>;
    /** Start from the node's own environment, with `env` on top (remote launches). */
    inheritNodeEnv?: boolean;
    cols?: number;
    rows?: number;
  }
  | {
    op: "list";
    tag?: string;
    status?: SessionStatus;
    /** Also each session's last line of output, laid out for reading (`lastLine`). */
    lastLines?: boolean;
  }
  | {
    op: "status";
    session: SessionRef;
    lines?: number;
    /** Also the program's screen now, as the node's model renders it (RESPONSE `screen`). */
    screen?: boolean;
  }
  | { op: "kill"; sessions?: SessionRef[]; tag?: string; all?: boolean; signal?: string }
  | { op: "send"; session: SessionRef; data: string /* base64 */ }
  | {
    op: "wait";
    sessions?: SessionRef[];
    tag?: string;
    condition?: "all" | "any";
    /** Also done when a session is `waiting` (for at least `idleMs`), not only when it ends. */
    idle?: boolean;
    idleMs?: number;
  }
  | {
    op: "attach";
    session: SessionRef;
    readOnly?: boolean;
    /** Replay the ring from this absolute offset; default: the whole ring. */
    from?: number;
    history?: boolean;
    cols?: number;
    rows?: number;
    /** Output credit: see {@link StreamEvent} `ack`. */
    window?: number;
    /**
     * Instead of the raw history, the terminal's state as the node's model renders it,
     * with this many lines of scrollback: RESPONSE `snapshot` (a string for the terminal),
     * then output from `live`. Ignored with `from` (a resume).
     */
    snapshot?: number;
  }
  | {
    op: "logs";
    session: SessionRef;
    /** The last this many lines. */
    tail?: number;
    /** The last this many bytes. */
    tailBytes?: number;
    /** From this absolute output offset (RESPONSE `offset` says where it really starts). */
    from?: number;
    /** At most this many bytes (not with `follow`). */
    limit?: number;
    follow?: boolean;
    window?: number;
  }
  | { op: "info" }
  /** What the program shows now, rendered (`ansi`: with colours as escape sequences). */
  | { op: "screen"; session: SessionRef; ansi?: boolean }
  /**
   * A stream of {@link SessionEvent}s (EVENT `{type: "session", event}`) for the named
   * sessions, those with `tag`, or all, after a RESPONSE `{sessions}` with their state
   * now; until the client closes. A client that falls behind gets EVENT `{type:
   * "lagged"}` and the stream ends (re-read, then subscribe again).
   */
  | { op: "subscribe"; sessions?: SessionRef[]; tag?: string }
  /** Re-read the relay config (after `cw setup`) and relink. */
  | { op: "relay_reload" }
  | { op: "shutdown" };

/** The operations, for validation. */
export const OPS = [
  "launch",
  "list",
  "status",
  "kill",
  "send",
  "wait",
  "attach",
  "logs",
  "info",
  "screen",
  "subscribe",
  "relay_reload",
  "shutdown",
] as const;

/** Something that happened to a session (`subscribe`). */
export interface SessionEvent {
  type: "launched" | "state" | "exited" | "attached" | "detached";
  session: number;
  name: string | null;
  tags: string[];
  /** ISO 8601. */
  time: string;
  /** `state`: what it does now. */
  state?: "working" | "waiting";
  /** `exited`: how it ended. */
  status?: SessionStatus;
  exitCode?: number | null;
  signal?: string | null;
  /** `attached`/`detached`: the viewer's mode, and how many viewers there are now. */
  readOnly?: boolean;
  viewers?: number;
}

/** Events inside a stream. */
export type StreamEvent =
  /** node → client: output between `from` and `from + bytes` is gone from the ring. */
  | { type: "skipped"; bytes: number; offset: number }
  /** node → client: the session ended; the stream ends after this. */
  | { type: "exit"; status: SessionStatus; exitCode: number | null; signal: string | null }
  /** node → client: a finite stream (logs without follow) is complete. */
  | { type: "end" }
  /**
   * client → node: `bytes` more output was consumed. A client that asked for
   * a `window` in its request must acknowledge; the node then never has more
   * than `window` bytes of output unacknowledged (transports whose receiving
   * side has no backpressure of its own, such as WebSockets, need this).
   */
  | { type: "ack"; bytes: number }
  /** client → node: the terminal has this size. */
  | { type: "resize"; cols: number; rows: number }
  /**
   * node → client (attach): the program's terminal (the PTY) is `cols`×`rows`
   * from this point of the output on. Sent before the first output and at
   * every change, in order with the output.
   */
  | { type: "size"; cols: number; rows: number }
  /**
   * client → node (attach): send the terminal's state now (a client that
   * starts drawing the program itself, e.g. at another size, needs it). The
   * node answers `screen`, unless it is too busy rendering.
   */
  | { type: "redraw" }
  /**
   * node → client (attach): the terminal's state (`snapshot`, as in an
   * attach's RESPONSE, without scrollback) at output offset `offset`, at
   * `cols`×`rows`; output continues from `offset`.
   */
  | { type: "screen"; offset: number; cols: number; rows: number; snapshot: string }
  /** node → client (subscribe): something happened to a session. */
  | { type: "session"; event: SessionEvent }
  /** node → client (subscribe): the client fell behind; the stream ends. */
  | { type: "lagged" };

/** Thrown by the codec for anything that is not a valid frame. */
export class ProtocolError extends Error {
  /** Stable code sent to the peer. */
  readonly code: "protocol_error" | "frame_too_large";
  /** Builds the error. */
  constructor(code: "protocol_error" | "frame_too_large", message: string) {
    super(message);
    this.name = "ProtocolError";
    this.code = code;
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** Encodes one frame. Throws RangeError if the payload is too large. */
export function encodeFrame(kind: FrameKind, payload: Uint8Array): Uint8Array {
  const limit = JSON_KINDS.has(kind) ? MAX_JSON_PAYLOAD : MAX_FRAME_PAYLOAD;
  if (payload.byteLength > limit) {
    throw new RangeError(`Frame payload of ${payload.byteLength} bytes exceeds ${limit}`);
  }
  const out = new Uint8Array(HEADER_SIZE + payload.byteLength);
  new DataView(out.buffer).setUint32(0, payload.byteLength);
  out[4] = kind;
  out.set(payload, HEADER_SIZE);
  return out;
}

/** The header of a frame whose payload of `len` bytes the caller writes at {@link HEADER_SIZE}. */
export function frameWithRoom(kind: FrameKind, len: number): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + len);
  new DataView(out.buffer).setUint32(0, len);
  out[4] = kind;
  return out;
}

/** Encodes a JSON frame. */
export function encodeJson(kind: FrameKind, value: unknown): Uint8Array {
  return encodeFrame(kind, encoder.encode(JSON.stringify(value)));
}

/**
 * Incremental frame decoder: feed bytes with {@link push}, take whole frames
 * from its result. Pure; throws {@link ProtocolError} on invalid input, after
 * which the decoder must not be used again.
 */
export class FrameDecoder {
  /** Bytes of an incomplete frame, at [#start, #end); room to append after #end. */
  #buf: Uint8Array = new Uint8Array(0);
  #start = 0;
  #end = 0;

  /**
   * Appends bytes and returns every frame that is now complete. Payloads are
   * views, never copies: the decoder only writes past what it handed out (a
   * buffer that is full is replaced, not reused). Held bytes go into a buffer
   * sized for the whole frame once its header is known, so each byte is
   * copied at most about twice however finely a peer splits its frames
   * (joining on every chunk let a slow drip of a 1 MiB frame cost minutes of CPU).
   */
  push(chunk: Uint8Array): Frame[] {
    const frames: Frame[] = [];
    if (this.#start === this.#end) {
      // nothing held: decode straight from the chunk
      const used = decodeFrames(chunk, frames);
      if (used < chunk.byteLength) this.#hold(chunk.subarray(used));
      return frames;
    }
    this.#append(chunk);
    this.#start += decodeFrames(this.#buf.subarray(this.#start, this.#end), frames);
    if (this.#start === this.#end) {
      this.#buf = new Uint8Array(0);
      this.#start = this.#end = 0;
    }
    return frames;
  }

  /** Bytes held for an incomplete frame. */
  get pending(): number {
    return this.#end - this.#start;
  }

  #hold(rest: Uint8Array): void {
    this.#buf = new Uint8Array(Math.max(wholeFrame(rest), 256));
    this.#buf.set(rest);
    this.#start = 0;
    this.#end = rest.byteLength;
  }

  #append(chunk: Uint8Array): void {
    if (this.#end + chunk.byteLength > this.#buf.byteLength) {
      const held = this.#buf.subarray(this.#start, this.#end);
      const need = held.byteLength + chunk.byteLength;
      const next = new Uint8Array(Math.max(need, wholeFrame(held), 2 * held.byteLength));
      next.set(held);
      this.#buf = next;
      this.#start = 0;
      this.#end = held.byteLength;
    }
    this.#buf.set(chunk, this.#end);
    this.#end += chunk.byteLength;
  }
}

/** The size of the frame starting at `data[0]`, once its header is there; else 0. */
function wholeFrame(data: Uint8Array): number {
  if (data.byteLength < HEADER_SIZE) return 0;
  return HEADER_SIZE + new DataView(data.buffer, data.byteOffset, 4).getUint32(0);
}

/** Decodes the whole frames at the start of `data` into `frames`; returns the bytes used. */
function decodeFrames(data: Uint8Array, frames: Frame[]): number {
  let pos = 0;
  while (data.byteLength - pos >= HEADER_SIZE) {
    const view = new DataView(data.buffer, data.byteOffset + pos, HEADER_SIZE);
    const len = view.getUint32(0);
    const kind = view.getUint8(4);
    checkHeader(kind, len);
    if (data.byteLength - pos < HEADER_SIZE + len) break;
    frames.push(
      decodePayload(kind as FrameKind, data.subarray(pos + HEADER_SIZE, pos + HEADER_SIZE + len)),
    );
    pos += HEADER_SIZE + len;
  }
  return pos;
}

function checkHeader(kind: number, len: number): void {
  if (kind < FrameKind.HELLO || kind > FrameKind.PONG) {
    throw new ProtocolError("protocol_error", `Unknown frame kind 0x${kind.toString(16)}`);
  }
  const limit = JSON_KINDS.has(kind)
    ? MAX_JSON_PAYLOAD
    : kind === FrameKind.DATA
    ? MAX_FRAME_PAYLOAD
    : MAX_PING_PAYLOAD;
  if (len > limit) {
    throw new ProtocolError(
      "frame_too_large",
      `Frame of ${len} bytes exceeds the limit of ${limit}`,
    );
  }
}

function decodePayload(kind: FrameKind, payload: Uint8Array): Frame {
  if (!JSON_KINDS.has(kind)) {
    return { kind: kind as typeof FrameKind.DATA, bytes: payload };
  }
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(payload));
  } catch {
    throw new ProtocolError("protocol_error", "Frame payload is not valid UTF-8 JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ProtocolError("protocol_error", "Frame payload is not a JSON object");
  }
  return { kind: kind as typeof FrameKind.HELLO, value: value as Record<string, unknown> };
}
