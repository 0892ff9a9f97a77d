/// <reference lib="deno.worker" />
/**
 * The PTY worker: the only place that touches node-pty. It runs with narrow
 * permissions (no net, no env, no run; ffi only for the PTY addon) and talks to
 * the node's main thread by messages (see pty_messages.ts). Output is handed
 * over as transferred buffers, never decoded.
 */
import { type IPty, spawn } from "@lydell/node-pty";
import type { FromWorker, ToWorker } from "./pty_messages.ts";
import { PTY_MAX_SIZE } from "./limits.ts";
import { openInputWriter, type PtyInput } from "./pty_input.ts";

/** Input through libc (see pty_input.ts); null: node-pty's own write. */
const inputWriter = openInputWriter();

/** node-pty's master socket: its own `write` takes a callback (node-pty's does not). */
interface MasterSocket {
  write(data: Uint8Array, done: (err?: unknown) => void): boolean;
}

/** A PTY and its output not yet handed to the main thread. */
interface Pty {
  pty: IPty;
  /** Where input goes; null if this node-pty build hides it (then input counts as taken at once). */
  socket: MasterSocket | null;
  /** Input written with libc, when available (preferred over `socket`). */
  input: PtyInput | null;
  /** Output read while a `data` message is unacknowledged. */
  held: Uint8Array[];
  heldBytes: number;
  inFlight: boolean;
  /** Paused because the main thread is behind. */
  paused: boolean;
  /** Paused because every interactive viewer is behind. */
  viewersBehind: boolean;
}

/**
 * Output held per PTY while the main thread is busy; beyond it the PTY is
 * paused (the kernel then stops the program) until the main thread catches up.
 * This is backpressure from the node itself, never from a slow viewer.
 */
const MAX_HELD = 256 * 1024;

const ptys = new Map<number, Pty>();

function post(msg: FromWorker, transfer: Transferable[] = []): void {
  self.postMessage(msg, transfer);
}

function send(id: number, chunks: Uint8Array[], size: number): void {
  const data = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    data.set(c, at);
    at += c.byteLength;
  }
  post({ t: "data", id, data }, [data.buffer]);
}

function onAck(id: number): void {
  const entry = ptys.get(id);
  if (!entry) return;
  if (entry.heldBytes === 0) {
    entry.inFlight = false;
    return;
  }
  send(id, entry.held, entry.heldBytes);
  entry.held = [];
  entry.heldBytes = 0;
  if (entry.paused) {
    entry.paused = false;
    if (!entry.viewersBehind) entry.pty.resume();
  }
}

function onFlow(id: number, paused: boolean): void {
  const entry = ptys.get(id);
  if (!entry || entry.viewersBehind === paused) return;
  entry.viewersBehind = paused;
  if (paused && !entry.paused) entry.pty.pause();
  if (!paused && !entry.paused) entry.pty.resume();
}

function onSpawn(msg: Extract<ToWorker, { t: "spawn" }>): void {
  let pty: IPty;
  try {
    pty = spawn(msg.file, msg.args, {
      name: msg.env.TERM ?? "xterm-256color",
      cols: msg.cols,
      rows: msg.rows,
      cwd: msg.cwd,
      env: msg.env,
      encoding: null,
    });
  } catch (err) {
    post({ t: "spawn_error", id: msg.id, message: String(err) });
    return;
  }
  const socket = masterSocket(pty);
  const fd = (pty as unknown as { _fd?: unknown })._fd;
  const entry: Pty = {
    pty,
    socket,
    input: inputWriter && typeof fd === "number"
      ? inputWriter.open(
        fd,
        (bytes) => post({ t: "input_taken", id: msg.id, bytes }),
        () => ptys.get(msg.id) === entry && !(socket as { destroyed?: boolean } | null)?.destroyed,
      )
      : null,
    held: [],
    heldBytes: 0,
    inFlight: false,
    paused: false,
    viewersBehind: false,
  };
  ptys.set(msg.id, entry);
  // One data message in flight per PTY: the first chunk goes at once (no
  // added latency), chunks read meanwhile are sent together on the ack.
  pty.onData((chunk: unknown) => {
    entry.input?.kick();
    const buf = chunk as Uint8Array;
    if (!entry.inFlight) {
      entry.inFlight = true;
      send(msg.id, [buf], buf.byteLength);
      return;
    }
    entry.held.push(buf.slice());
    entry.heldBytes += buf.byteLength;
    if (entry.heldBytes >= MAX_HELD && !entry.paused) {
      entry.paused = true;
      if (!entry.viewersBehind) pty.pause();
    }
  });
  pty.onExit(({ exitCode, signal }) => {
    ptys.delete(msg.id);
    entry.input?.close();
    // whatever is still held goes out before the exit
    if (entry.heldBytes > 0) send(msg.id, entry.held, entry.heldBytes);
    post({ t: "exit", id: msg.id, exitCode, signal: signal ?? 0 });
  });
  post({ t: "spawned", id: msg.id, pid: pty.pid });
}

/**
 * node-pty writes input with `this._socket.write(data)` and no callback, so
 * nothing would tell when the kernel took it; the same socket's write with a
 * callback does. Private to node-pty, hence checked, and only used here.
 */
function masterSocket(pty: IPty): MasterSocket | null {
  const socket = (pty as unknown as { _socket?: Partial<MasterSocket> })._socket;
  return typeof socket?.write === "function" ? socket as MasterSocket : null;
}

/**
 * Writes input; `input_taken` follows once the kernel took all of it (or it
 * was dropped). Until then the bytes sit in the socket's queue: what the main
 * thread counts against the PTY's input bound.
 */
function onWrite(id: number, data: Uint8Array): void {
  const taken = () => post({ t: "input_taken", id, bytes: data.byteLength });
  const entry = ptys.get(id);
  if (!entry) return taken(); // exited meanwhile: nobody will read it
  try {
    if (entry.input) entry.input.write(data);
    else if (entry.socket) entry.socket.write(data, taken);
    else {
      // node-pty takes a string or Buffer; a Uint8Array is written as bytes
      entry.pty.write(data as unknown as string);
      taken();
    }
  } catch {
    taken(); // the PTY closed between the message and now
  }
}

/** A size the kernel and programs can use: node-pty takes any positive number. */
function cells(n: number, fallback: number): number {
  return Number.isFinite(n) ? Math.min(Math.max(Math.trunc(n), 1), PTY_MAX_SIZE) : fallback;
}

self.onmessage = (event: MessageEvent<ToWorker>) => {
  const msg = event.data;
  switch (msg.t) {
    case "spawn":
      onSpawn({ ...msg, cols: cells(msg.cols, 80), rows: cells(msg.rows, 24) });
      break;
    case "write":
      onWrite(msg.id, msg.data);
      break;
    case "resize":
      try {
        ptys.get(msg.id)?.pty.resize(cells(msg.cols, 80), cells(msg.rows, 24));
      } catch {
        // the PTY closed between the message and now
      }
      break;
    case "close":
      try {
        ptys.get(msg.id)?.pty.kill("SIGHUP");
      } catch {
        // already exited; its exit is on the way
      }
      break;
    case "ack":
      onAck(msg.id);
      break;
    case "flow":
      onFlow(msg.id, msg.paused);
      break;
  }
};

post({ t: "ready" });
