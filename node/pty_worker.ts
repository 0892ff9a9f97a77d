/// <reference lib="deno.worker" />
/**
 * The PTY worker: the only place that touches node-pty (its native addon).
 * It runs with narrow permissions (no net, no env, no run; ffi only for the
 * addon) and does what needs the addon: it forks programs on new PTYs,
 * resizes them and reports their exit, by messages (pty_messages.ts).
 *
 * A PTY's bytes do not pass through here: the worker hands the master
 * descriptor to the main thread (threads share descriptors), which reads and
 * writes it itself (node/pty_host.ts). Each hop between threads costs
 * ~80–140 µs in Deno, and a keystroke's echo used to make two.
 *
 * node-pty's own `spawn` would start reading the descriptor in this thread
 * (a second reader racing the main thread's), so the addon's `fork` is
 * called directly, as node-pty's unixTerminal.js calls it (node-pty is pinned).
 */
import { createRequire } from "node:module";
import process from "node:process";
import type { FromWorker, ToWorker } from "./pty_messages.ts";
import { PTY_MAX_SIZE } from "./limits.ts";

/** The addon's functions that cw uses (node-pty 1.1's `pty.node` on unix). */
interface PtyAddon {
  fork(
    file: string,
    args: string[],
    env: string[],
    cwd: string,
    cols: number,
    rows: number,
    uid: number,
    gid: number,
    utf8: boolean,
    helperPath: string,
    onExit: (code: number, signal: number) => void,
  ): { fd: number; pid: number; pty: string };
  resize(fd: number, cols: number, rows: number): void;
}

const require = createRequire(import.meta.url);
const addon = (require("@lydell/node-pty/requireBinary.js") as {
  requireBinary(name: string): PtyAddon;
}).requireBinary("pty.node");
/** macOS forks through node-pty's spawn-helper; elsewhere the addon ignores it. */
const helperPath = process.platform === "darwin"
  ? require.resolve(`@lydell/node-pty-${process.platform}-${process.arch}/spawn-helper`)
  : "spawn-helper-unused";

/** The running PTYs: descriptor and process id by session id. */
const ptys = new Map<number, { fd: number; pid: number }>();

function post(msg: FromWorker): void {
  self.postMessage(msg);
}

function onSpawn(msg: Extract<ToWorker, { t: "spawn" }>): void {
  const env = { ...msg.env, PWD: msg.cwd, TERM: msg.env.TERM ?? "xterm-256color" };
  try {
    const { fd, pid } = addon.fork(
      msg.file,
      msg.args,
      Object.entries(env).map(([k, v]) => `${k}=${v}`),
      msg.cwd,
      msg.cols,
      msg.rows,
      -1,
      -1,
      true, // IUTF8: erasing a multi-byte character in cooked mode erases all of it
      helperPath,
      (exitCode, signal) => {
        ptys.delete(msg.id);
        post({ t: "exit", id: msg.id, exitCode, signal: signal ?? 0 });
      },
    );
    ptys.set(msg.id, { fd, pid });
    post({ t: "spawned", id: msg.id, pid, fd });
  } catch (err) {
    post({ t: "spawn_error", id: msg.id, message: String((err as Error)?.message ?? err) });
  }
}

/** A size the kernel and programs can use. */
function cells(n: number, fallback: number): number {
  return Number.isFinite(n) ? Math.min(Math.max(Math.trunc(n), 1), PTY_MAX_SIZE) : fallback;
}

self.onmessage = (event: MessageEvent<ToWorker>) => {
  const msg = event.data;
  switch (msg.t) {
    case "spawn":
      onSpawn({ ...msg, cols: cells(msg.cols, 80), rows: cells(msg.rows, 24) });
      break;
    case "resize": {
      const pty = ptys.get(msg.id);
      try {
        if (pty) addon.resize(pty.fd, cells(msg.cols, 80), cells(msg.rows, 24));
      } catch {
        // the PTY closed between the message and now
      }
      break;
    }
    case "close":
      try {
        const pty = ptys.get(msg.id);
        if (pty) process.kill(pty.pid, "SIGHUP");
      } catch {
        // already exited; its exit is on the way
      }
      break;
  }
};

post({ t: "ready" });
