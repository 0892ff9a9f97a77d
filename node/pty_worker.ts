/// <reference lib="deno.worker" />
/**
 * The PTY worker: the only place that touches node-pty. It runs with narrow
 * permissions (no net, no env, no run; ffi only for the PTY addon) and talks to
 * the node's main thread by messages (see pty_messages.ts). Output is handed
 * over as transferred buffers, never decoded.
 */
import { type IPty, spawn } from "@lydell/node-pty";
import type { FromWorker, ToWorker } from "./pty_messages.ts";

/** A PTY and its output not yet handed to the main thread. */
interface Pty {
  pty: IPty;
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
  const entry: Pty = {
    pty,
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
    // whatever is still held goes out before the exit
    if (entry.heldBytes > 0) send(msg.id, entry.held, entry.heldBytes);
    post({ t: "exit", id: msg.id, exitCode, signal: signal ?? 0 });
  });
  post({ t: "spawned", id: msg.id, pid: pty.pid });
}

self.onmessage = (event: MessageEvent<ToWorker>) => {
  const msg = event.data;
  switch (msg.t) {
    case "spawn":
      onSpawn(msg);
      break;
    case "write":
      // node-pty takes a string or Buffer; a Uint8Array is written as bytes
      ptys.get(msg.id)?.pty.write(msg.data as unknown as string);
      break;
    case "resize":
      try {
        ptys.get(msg.id)?.pty.resize(msg.cols, msg.rows);
      } catch {
        // the PTY closed between the message and now
      }
      break;
    case "close":
      ptys.get(msg.id)?.pty.kill("SIGHUP");
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
