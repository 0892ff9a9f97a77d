/// <reference lib="deno.worker" />
/**
 * The PTY worker: the only place that touches node-pty. It runs with narrow
 * permissions (no net, no env, no run; ffi only for the PTY addon) and talks to
 * the node's main thread by messages (see pty_messages.ts). Output is handed
 * over as transferred buffers, never decoded.
 */
import { type IPty, spawn } from "@lydell/node-pty";
import type { FromWorker, ToWorker } from "./pty_messages.ts";

const ptys = new Map<number, IPty>();

function post(msg: FromWorker, transfer: Transferable[] = []): void {
  self.postMessage(msg, transfer);
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
  ptys.set(msg.id, pty);
  pty.onData((chunk: unknown) => {
    const buf = chunk as Uint8Array;
    const data = new Uint8Array(buf.byteLength);
    data.set(buf);
    post({ t: "data", id: msg.id, data }, [data.buffer]);
  });
  pty.onExit(({ exitCode, signal }) => {
    ptys.delete(msg.id);
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
      ptys.get(msg.id)?.write(msg.data as unknown as string);
      break;
    case "resize":
      try {
        ptys.get(msg.id)?.resize(msg.cols, msg.rows);
      } catch {
        // the PTY closed between the message and now
      }
      break;
    case "close":
      ptys.get(msg.id)?.kill("SIGHUP");
      break;
  }
};

post({ t: "ready" });
