/**
 * A WebSocket client (RFC 6455) over a TCP socket with TCP_NODELAY set, for
 * every connection cw dials (node links, dial-backs, clients).
 *
 * Why not the built-in `WebSocket`: Deno 2.9's client disables TCP_NODELAY
 * and writes a frame's header and payload as two TLS records, so any message
 * over ~1 KiB waits ~40 ms for a delayed ACK behind Nagle's algorithm
 * (measured: a 1024-byte round trip 0.05 ms, a 1500-byte one 44 ms). Here a
 * frame is one write on a no-delay socket. It also reports the HTTP status
 * and JSON error of a refused upgrade, which the built-in client hides.
 *
 * The object offers the parts of the WebSocket API that cw uses (`send`,
 * `close`, `binaryType`, `bufferedAmount`, `readyState`, message/close/error
 * events), so it fits {@link wsDuplex} and the link multiplexer unchanged.
 */
import { errorFromBody } from "./api.ts";
import { CwError } from "./errors.ts";
import { concat, writeAll } from "./bytes.ts";

/** Largest message accepted from a server. */
export const WS_CLIENT_MAX_MESSAGE = 16 * 1024 * 1024;
const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const HANDSHAKE_LIMIT = 64 * 1024;

/** Options of {@link connectWebSocket}. */
export interface WsConnectOptions {
  headers?: Record<string, string>;
  /** PEM CA certificates to trust for wss://. */
  caCerts?: string[];
  /** Abandon the handshake after this long. */
  timeoutMs?: number;
}

/**
 * Opens a WebSocket to `url` (ws:// or wss://). Throws {@link CwError}
 * `node_unavailable` when the server cannot be reached, or with the server's
 * own code and message when it refuses the upgrade.
 */
export async function connectWebSocket(
  url: URL,
  opts: WsConnectOptions = {},
): Promise<ClientWebSocket> {
  const secure = url.protocol === "wss:" || url.protocol === "https:";
  const hostname = url.hostname.replace(/^\[|\]$/g, "");
  const port = Number(url.port || (secure ? 443 : 80));
  let conn: Deno.Conn;
  try {
    const tcp = await Deno.connect({ hostname, port });
    tcp.setNoDelay(true);
    conn = secure ? await Deno.startTls(tcp, { hostname, caCerts: opts.caCerts }) : tcp;
  } catch (err) {
    throw new CwError(
      "node_unavailable",
      `Cannot connect to ${url.host}: ${(err as Error).message}`,
    );
  }
  const timer = setTimeout(() => conn.close(), opts.timeoutMs ?? 10_000);
  try {
    const key = crypto.getRandomValues(new Uint8Array(16)).toBase64();
    const lines = [
      `GET ${url.pathname}${url.search} HTTP/1.1`,
      `Host: ${url.host}`,
      "Upgrade: websocket",
      "Connection: Upgrade",
      `Sec-WebSocket-Key: ${key}`,
      "Sec-WebSocket-Version: 13",
      ...Object.entries(opts.headers ?? {}).map(([k, v]) => `${k}: ${v}`),
    ];
    await writeAll(conn, new TextEncoder().encode(lines.join("\r\n") + "\r\n\r\n"));
    const { status, headers, rest, body } = await readResponse(conn);
    if (status !== 101) {
      conn.close();
      const err = errorFromBody(status, body, "the server");
      // a body that is not an API error: the server is not one of ours, or not up
      throw err.code === "internal" && !body.includes('"error"')
        ? new CwError("node_unavailable", err.message)
        : new CwError(err.code, `${err.message} (HTTP ${status})`);
    }
    const digest = new Uint8Array(
      await crypto.subtle.digest("SHA-1", new TextEncoder().encode(key + GUID)),
    );
    if (headers.get("sec-websocket-accept") !== digest.toBase64()) {
      conn.close();
      throw new CwError("protocol_error", "The server's WebSocket handshake is invalid");
    }
    return new ClientWebSocket(conn, rest);
  } catch (err) {
    try {
      conn.close();
    } catch { /* closed */ }
    if (err instanceof CwError) throw err;
    throw new CwError(
      "node_unavailable",
      `Cannot connect to ${url.host}: ${(err as Error).message}`,
    );
  } finally {
    clearTimeout(timer);
  }
}

async function readResponse(conn: Deno.Conn) {
  let buf: Uint8Array = new Uint8Array(0);
  const chunk = new Uint8Array(16 * 1024);
  let end = -1;
  while (end < 0) {
    const n = await conn.read(chunk);
    if (n === null) throw new Error("connection closed during the handshake");
    buf = concat([buf, chunk.subarray(0, n)]);
    end = indexOf(buf, [13, 10, 13, 10]);
    if (end < 0 && buf.byteLength > HANDSHAKE_LIMIT) {
      throw new Error("handshake response too large");
    }
  }
  const head = new TextDecoder().decode(buf.subarray(0, end));
  let rest: Uint8Array = buf.subarray(end + 4);
  const [statusLine, ...headerLines] = head.split("\r\n");
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? 0);
  const headers = new Headers();
  for (const line of headerLines) {
    const i = line.indexOf(":");
    if (i > 0) headers.append(line.slice(0, i).trim(), line.slice(i + 1).trim());
  }
  let body = "";
  if (status !== 101) {
    // read a short error body (Content-Length only; enough for JSON errors)
    const length = Math.min(Number(headers.get("content-length") ?? 0), HANDSHAKE_LIMIT);
    while (rest.byteLength < length) {
      const n = await conn.read(chunk);
      if (n === null) break;
      rest = concat([rest, chunk.subarray(0, n)]);
    }
    body = new TextDecoder().decode(rest.subarray(0, length));
  }
  return { status, headers, rest, body };
}

/** An open client WebSocket; see the file comment. */
export class ClientWebSocket extends EventTarget {
  binaryType: BinaryType = "arraybuffer";
  #conn: Deno.Conn;
  #state: number = WebSocket.OPEN;
  #queued = 0;
  #writing: Promise<void> = Promise.resolve();
  #closeSent = false;

  /** @internal Made by {@link connectWebSocket}. */
  constructor(conn: Deno.Conn, initial: Uint8Array) {
    super();
    this.#conn = conn;
    // start reading once the caller, resumed from connectWebSocket, has
    // added its listeners: the handshake may already hold whole messages
    setTimeout(() => void this.#readLoop(initial), 0);
  }

  /** Bytes accepted by {@link send} and not yet written. */
  get bufferedAmount(): number {
    return this.#queued;
  }

  /** WebSocket.OPEN, CLOSING or CLOSED. */
  get readyState(): number {
    return this.#state;
  }

  /** Sends a binary message (or text, for a string). */
  send(data: Uint8Array | string): void {
    if (this.#state !== WebSocket.OPEN) {
      throw new DOMException("The WebSocket is not open", "InvalidStateError");
    }
    const payload = typeof data === "string" ? new TextEncoder().encode(data) : data;
    this.#write(typeof data === "string" ? 0x1 : 0x2, payload);
  }

  /** Starts the closing handshake and closes the socket. */
  close(code = 1000, reason = ""): void {
    if (this.#state === WebSocket.CLOSED) return;
    if (!this.#closeSent) {
      this.#closeSent = true;
      const r = new TextEncoder().encode(reason.slice(0, 120));
      const body = new Uint8Array(2 + r.byteLength);
      new DataView(body.buffer).setUint16(0, code);
      body.set(r, 2);
      if (this.#state === WebSocket.OPEN) this.#write(0x8, body);
    }
    this.#state = WebSocket.CLOSING;
    // give the close frame a moment to leave, then drop the socket
    this.#writing.finally(() => setTimeout(() => this.#finish(code, reason), 50));
  }

  #write(opcode: number, payload: Uint8Array): void {
    const len = payload.byteLength;
    const header = len < 126 ? 2 : len < 65536 ? 4 : 10;
    // the body starts 4-byte aligned in its buffer, so that it is masked a word at a time
    const pad = (4 - ((header + 4) & 3)) & 3;
    const frame = new Uint8Array(new ArrayBuffer(pad + header + 4 + len), pad);
    frame[0] = 0x80 | opcode;
    if (len < 126) frame[1] = 0x80 | len;
    else if (len < 65536) {
      frame[1] = 0x80 | 126;
      new DataView(frame.buffer, pad).setUint16(2, len);
    } else {
      frame[1] = 0x80 | 127;
      new DataView(frame.buffer, pad).setBigUint64(2, BigInt(len));
    }
    const mask = crypto.getRandomValues(new Uint8Array(4));
    frame.set(mask, header);
    const body = frame.subarray(header + 4);
    body.set(payload);
    const words = new Uint32Array(frame.buffer, pad + header + 4, len >>> 2);
    const mask32 = new Uint32Array(mask.buffer)[0]; // same byte order as the words
    for (let i = 0; i < words.length; i++) words[i] ^= mask32;
    for (let i = words.length * 4; i < len; i++) body[i] ^= mask[i & 3];
    this.#queued += frame.byteLength;
    this.#writing = this.#writing.then(async () => {
      try {
        await writeAll(this.#conn, frame);
      } catch {
        this.#finish(1006, "write failed");
      } finally {
        this.#queued -= frame.byteLength;
      }
    });
  }

  async #readLoop(initial: Uint8Array): Promise<void> {
    let buf = initial;
    const chunk = new Uint8Array(64 * 1024);
    let fragments: Uint8Array[] = [];
    let fragmentOpcode = 0;
    try {
      while (true) {
        // parse every whole frame in buf
        while (true) {
          if (buf.byteLength < 2) break;
          const opcode = buf[0] & 0x0f;
          const fin = (buf[0] & 0x80) !== 0;
          let len = buf[1] & 0x7f;
          let at = 2;
          if (len === 126) {
            if (buf.byteLength < 4) break;
            len = new DataView(buf.buffer, buf.byteOffset).getUint16(2);
            at = 4;
          } else if (len === 127) {
            if (buf.byteLength < 10) break;
            const big = new DataView(buf.buffer, buf.byteOffset).getBigUint64(2);
            if (big > BigInt(WS_CLIENT_MAX_MESSAGE)) throw new Error("message too large");
            len = Number(big);
            at = 10;
          }
          if (len > WS_CLIENT_MAX_MESSAGE) throw new Error("message too large");
          if (buf.byteLength < at + len) break;
          const payload = buf.slice(at, at + len);
          buf = buf.subarray(at + len);
          if (opcode === 0x8) {
            const code = payload.byteLength >= 2 ? new DataView(payload.buffer).getUint16(0) : 1005;
            const reason = new TextDecoder().decode(payload.subarray(2));
            if (!this.#closeSent) {
              this.#closeSent = true;
              this.#write(0x8, payload.subarray(0, 2));
            }
            await this.#writing;
            this.#finish(code, reason);
            return;
          }
          if (opcode === 0x9) {
            if (this.#state === WebSocket.OPEN) this.#write(0xa, payload);
            continue;
          }
          if (opcode === 0xa) continue;
          if (opcode !== 0) fragmentOpcode = opcode;
          fragments.push(payload);
          if (fragments.reduce((n, f) => n + f.byteLength, 0) > WS_CLIENT_MAX_MESSAGE) {
            throw new Error("message too large");
          }
          if (!fin) continue;
          const whole = fragments.length === 1 ? fragments[0] : concat(fragments);
          fragments = [];
          const data = fragmentOpcode === 0x1 ? new TextDecoder().decode(whole) : whole.buffer;
          this.dispatchEvent(new MessageEvent("message", { data }));
        }
        const n = await this.#conn.read(chunk);
        if (n === null) break;
        buf = buf.byteLength ? concat([buf, chunk.subarray(0, n)]) : chunk.slice(0, n);
      }
      this.#finish(1006, "connection closed");
    } catch (err) {
      if (this.#state !== WebSocket.CLOSED) this.dispatchEvent(new Event("error"));
      this.#finish(1006, (err as Error).message);
    }
  }

  #finish(code: number, reason: string): void {
    if (this.#state === WebSocket.CLOSED) return;
    this.#state = WebSocket.CLOSED;
    try {
      this.#conn.close();
    } catch { /* closed */ }
    this.dispatchEvent(new CloseEvent("close", { code, reason, wasClean: code === 1000 }));
  }
}

function indexOf(buf: Uint8Array, seq: number[]): number {
  outer: for (let i = 0; i + seq.length <= buf.byteLength; i++) {
    for (let j = 0; j < seq.length; j++) if (buf[i + j] !== seq[j]) continue outer;
    return i;
  }
  return -1;
}
