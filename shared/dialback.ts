/**
 * The dial-back connection behind an SSH session on the relay's gateway.
 *
 * 1. A user runs `ssh dev-1@relay -p 2222`; the gateway authenticates them.
 * 2. The relay makes a one-time ticket bound to node `dev-1` and this one
 *    request (valid {@link TICKET_TTL_MS}) and sends CONTROL
 *    `{type: "dialback", ticket}` on dev-1's persistent link.
 * 3. The node opens a second WebSocket to `/node/dialback` with its
 *    credential (`Authorization: Bearer …`) and the ticket (`X-Cw-Ticket`).
 *    The relay refuses a ticket that is unknown, expired, already used, or
 *    bound to another node.
 * 4. The relay sends START; the node runs the command (in a PTY from its PTY
 *    worker when the client asked for one, else with pipes, stdout and stderr
 *    apart) and the relay bridges the SSH channel to this connection.
 *
 * ## Messages (binary WebSocket messages)
 *
 * ```
 *  +------+---------------+
 *  | type | payload       |
 *  +------+---------------+
 * ```
 *
 * | type | name      | dir          | payload                               |
 * |------|-----------|--------------|---------------------------------------|
 * | 0x01 | START     | relay → node | JSON {@link DialbackStart}            |
 * | 0x02 | STDIN     | relay → node | bytes                                 |
 * | 0x03 | EOF       | relay → node | none: stdin is closed                 |
 * | 0x04 | RESIZE    | relay → node | JSON {cols, rows}                     |
 * | 0x05 | SIGNAL    | relay → node | JSON {signal}                         |
 * | 0x06 | ACK       | relay → node | u32: output bytes the SSH client took |
 * | 0x07 | EOW       | relay → node | none: the client takes no more stdout |
 * | 0x11 | STDOUT    | node → relay | bytes                                 |
 * | 0x12 | STDERR    | node → relay | bytes                                 |
 * | 0x13 | EXIT      | node → relay | JSON {code, signal}: the last message |
 * | 0x14 | ERROR     | node → relay | JSON {message}: could not start       |
 * | 0x15 | STDIN_ACK | node → relay | u32: stdin bytes the program took     |
 * | 0x16 | READY     | node → relay | none: a forward's connection is open  |
 *
 * START is `{command: string | null, pty: {term, cols, rows} | null, env}`;
 * sizes (START, RESIZE) are positive integers; STDIN, STDOUT and STDERR carry
 * at most {@link DIALBACK_MAX_CHUNK} bytes each. A message of an unknown type
 * is ignored (room to grow); a malformed one, or one that breaks flow
 * control, ends that connection only.
 *
 * Flow control, both ways, with the same {@link DIALBACK_WINDOW}:
 * - Output: the node never has more than the window of output bytes
 *   unacknowledged (+ one message); it stops reading the program's output
 *   (pausing the PTY or the pipes) until ACKs come. The relay acknowledges
 *   output as the SSH channel accepts it, so a client that stops reading
 *   pauses its program.
 * - Input: the relay never has more than the window of stdin bytes
 *   unacknowledged (+ one message); it pauses the SSH channel (which then
 *   stops granting the client window) until STDIN_ACKs come. The node
 *   acknowledges stdin once the program took it: a pipe write resolved, or the
 *   PTY's input flushed to the kernel. So a program that does not read its
 *   stdin (`sleep 5; wc -c`) holds its client back, byte-exact.
 *
 * Either side closes a connection whose peer sends beyond the window: memory
 * stays bounded on both sides whatever the other does.
 */

/**
 * What a node says it speaks, in the `features` of its link status (CONTROL
 * `{type: "status"}`): a relay holds stdin to {@link DIALBACK_WINDOW} only for
 * a node that acknowledges it, so a newer relay still serves older nodes.
 */
export const DIALBACK_FEATURES = ["stdin-ack"] as const;

/** How long a ticket is valid. */
export const TICKET_TTL_MS = 10_000;
/** Unacknowledged bytes allowed in flight, each way (output and stdin). */
export const DIALBACK_WINDOW = 256 * 1024;
/**
 * The relay acknowledges output, and the node stdin, in batches of at least
 * this many bytes (well under the window). An ACK for each small output would
 * be a second small write in a row before the next keystroke, which Nagle's
 * algorithm holds until the node's delayed ACK: ~40 ms on every keystroke.
 */
export const DIALBACK_ACK_BATCH = 64 * 1024;
/** Largest output or input message. */
export const DIALBACK_MAX_CHUNK = 64 * 1024;

/** Message types. */
export const Dial = {
  START: 0x01,
  STDIN: 0x02,
  EOF: 0x03,
  RESIZE: 0x04,
  SIGNAL: 0x05,
  ACK: 0x06,
  /**
   * OpenSSH's `eow@openssh.com` (`ssh … cmd | head` after head left): the
   * node stops reading the program's stdout, whose writer then gets SIGPIPE,
   * as under sshd. Ignored with a PTY, as sshd does.
   */
  EOW: 0x07,
  STDOUT: 0x11,
  STDERR: 0x12,
  EXIT: 0x13,
  ERROR: 0x14,
  STDIN_ACK: 0x15,
  /** node → relay: a forward (START `forward`) reached its destination; bytes flow now. */
  READY: 0x16,
} as const;

/** What to run. */
export interface DialbackStart {
  /** A command line for the login shell's `-c`, or null for an interactive shell. */
  command: string | null;
  /** Terminal, when the client asked for one. */
  pty: { term: string; cols: number; rows: number } | null;
  /** Variables from the client's allow-list (LANG, LC_*). */
  env: Record<string, string>;
  /** `sftp`: the node's SFTP server instead of a shell (`command` and `pty` are null). */
  subsystem?: "sftp" | null;
  /** For `sftp`: the principal may only read (the server runs read-only). */
  readOnly?: boolean;
  /**
   * `ssh -L`: a TCP connection from the node to this address instead of a
   * program; READY once connected, EXIT when it closes, ERROR if refused.
   */
  forward?: { host: string; port: number } | null;
}

/** Longest host name of a forward's destination. */
export const FORWARD_MAX_HOST = 255;

/** Variables an SSH client may set on the node. */
export function allowedEnv(name: string): boolean {
  return name === "LANG" || name === "LANGUAGE" || name === "COLORTERM" ||
    /^LC_[A-Z_]+$/.test(name);
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Encodes a message. */
export function encodeDial(
  type: number,
  payload?: Uint8Array | Record<string, unknown> | number,
): Uint8Array {
  let body: Uint8Array;
  if (payload === undefined) body = new Uint8Array(0);
  else if (typeof payload === "number") {
    body = new Uint8Array(4);
    new DataView(body.buffer).setUint32(0, payload);
  } else if (payload instanceof Uint8Array) body = payload;
  else body = encoder.encode(JSON.stringify(payload));
  const out = new Uint8Array(1 + body.byteLength);
  out[0] = type;
  out.set(body, 1);
  return out;
}

/** Decodes a message: its type and raw payload. */
export function decodeDial(data: Uint8Array): { type: number; payload: Uint8Array } {
  if (data.byteLength < 1) throw new RangeError("Empty dial-back message");
  return { type: data[0], payload: data.subarray(1) };
}

/** Parses a JSON payload; throws RangeError when it is not an object. */
export function dialJson(payload: Uint8Array): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(decoder.decode(payload));
  } catch {
    throw new RangeError("Expected a JSON object");
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new RangeError("Expected a JSON object");
  }
  return v as Record<string, unknown>;
}

/** Reads an ACK's or STDIN_ACK's count. */
export function dialCount(payload: Uint8Array): number {
  if (payload.byteLength !== 4) throw new RangeError("ACK needs a u32");
  return new DataView(payload.buffer, payload.byteOffset, 4).getUint32(0);
}

/** Parses START field by field; throws RangeError naming the first bad one. */
export function parseStart(payload: Uint8Array): DialbackStart {
  const v = dialJson(payload);
  if (v.command !== null && typeof v.command !== "string") {
    throw new RangeError("START: command must be a string or null");
  }
  let pty: DialbackStart["pty"] = null;
  if (v.pty !== null) {
    const p = v.pty as Record<string, unknown>;
    if (typeof p !== "object" || Array.isArray(p) || typeof p.term !== "string") {
      throw new RangeError("START: pty must be {term, cols, rows} or null");
    }
    pty = { term: p.term, ...dialSize(p) };
  }
  const env: Record<string, string> = {};
  if (typeof v.env !== "object" || v.env === null || Array.isArray(v.env)) {
    throw new RangeError("START: env must be an object");
  }
  for (const [k, val] of Object.entries(v.env)) {
    if (!allowedEnv(k) || typeof val !== "string") {
      throw new RangeError(`START: env ${JSON.stringify(k.slice(0, 40))} is not allowed`);
    }
    env[k] = val;
  }
  let subsystem: DialbackStart["subsystem"] = null;
  if (v.subsystem !== undefined && v.subsystem !== null) {
    if (v.subsystem !== "sftp") throw new RangeError("START: subsystem must be sftp or null");
    subsystem = "sftp";
  }
  let forward: DialbackStart["forward"] = null;
  if (v.forward !== undefined && v.forward !== null) {
    const f = v.forward as Record<string, unknown>;
    if (
      typeof f !== "object" || typeof f.host !== "string" || f.host.length === 0 ||
      f.host.length > FORWARD_MAX_HOST || !Number.isInteger(f.port) ||
      (f.port as number) < 1 || (f.port as number) > 65535
    ) {
      throw new RangeError("START: forward must be {host, port}");
    }
    forward = { host: f.host, port: f.port as number };
  }
  return { command: v.command, pty, env, subsystem, readOnly: v.readOnly === true, forward };
}

/** Reads `{cols, rows}` (START's pty, RESIZE): positive integers; throws RangeError. */
export function dialSize(v: Record<string, unknown>): { cols: number; rows: number } {
  const ok = (n: unknown) => Number.isSafeInteger(n) && (n as number) >= 1;
  if (!ok(v.cols) || !ok(v.rows)) throw new RangeError("cols and rows must be positive integers");
  return { cols: v.cols as number, rows: v.rows as number };
}
