import {
  decodeDial,
  Dial,
  DIALBACK_ACK_BATCH,
  DIALBACK_MAX_CHUNK,
  DIALBACK_WINDOW,
  type DialbackStart,
  dialCount,
  dialJson,
  dialSize,
  encodeDial,
  parseStart,
} from "../shared/dialback.ts";
import type { Logger } from "../shared/logger.ts";
import type { RelayConfig } from "../shared/relay_config.ts";
import { type ClientWebSocket, connectWebSocket } from "../shared/ws_client.ts";
import { parseSignal, signalName } from "../shared/signals.ts";
import type { PtyHost } from "./pty_host.ts";

/** PTY ids for SSH sessions start here, apart from cw session ids. */
let nextPtyId = 2 ** 31;

/**
 * Answers one dial-back request from the relay (see shared/dialback.ts):
 * connects back with the ticket, then runs what the SSH client asked for —
 * in a PTY from the PTY worker, or with pipes — until it exits.
 */
export async function runDialback(
  config: RelayConfig,
  ticket: string,
  pty: PtyHost,
  logger: Logger,
  opts: DialbackOptions = { forwarding: "off" },
): Promise<void> {
  const url = new URL("/node/dialback", config.url);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  let ws: ClientWebSocket;
  try {
    // our client, not the built-in one: TCP_NODELAY, so output does not wait ~40 ms for ACKs
    ws = await connectWebSocket(url, {
      headers: { authorization: `Bearer ${config.credential}`, "x-cw-ticket": ticket },
      caCerts: config.caCert ? [config.caCert] : undefined,
    });
  } catch (err) {
    logger.warn(`ssh dial-back failed: ${(err as Error).message}`);
    return;
  }
  try {
    await serve(ws, pty, logger, opts);
  } finally {
    ws.close();
  }
}

/** What this node allows through its SSH gateway beyond shells and commands. */
export interface DialbackOptions {
  /**
   * `ssh -L` to addresses this node reaches: `off` (the default), `loopback`
   * (127.0.0.0/8, ::1 and localhost only) or `any`.
   */
  forwarding: "off" | "loopback" | "any";
}

/** Where OpenSSH's SFTP server lives on common systems. */
export const SFTP_SERVER_PATHS = [
  "/usr/lib/openssh/sftp-server",
  "/usr/libexec/openssh/sftp-server",
  "/usr/lib/ssh/sftp-server",
  "/usr/libexec/sftp-server",
  "/usr/lib/sftp-server",
];

/** The running program behind one SSH channel. */
interface Program {
  /** Input; each byte is reported to `taken` once the program took it. */
  stdin(data: Uint8Array): void;
  eof(): void;
  /** The client takes no more stdout. */
  eow(): void;
  resize(cols: number, rows: number): void;
  signal(sig: Deno.Signal): void;
  /** Output flow: pause or resume reading the program. */
  flow(paused: boolean): void;
  kill(): void;
}

/** What a program reports back to its connection. */
interface ProgramIo {
  /** Sends output, counting it against the window. */
  output(type: number, data: Uint8Array): void;
  /** Resolves when the output so far has gone out (pipes wait here). */
  room(): Promise<void>;
  /** The program ended: EXIT follows the output still queued. */
  exit(code: number | null, signal: string | null): void;
  /** The program took `n` bytes of stdin. */
  taken(n: number): void;
}

function serve(
  ws: ClientWebSocket,
  pty: PtyHost,
  logger: Logger,
  opts: DialbackOptions,
): Promise<void> {
  return new Promise((resolve) => {
    let program: Program | null = null;
    let unacked = 0;
    let paused = false;
    let waiters: (() => void)[] = [];
    let closed = false;
    /** Output beyond the window, sent as ACKs come (bounded: the program is paused meanwhile). */
    const queue: { type: number; data: Uint8Array }[] = [];
    let exitStatus: { code: number | null; signal: string | null } | null = null;
    /** Stdin received and not yet taken by the program (the relay keeps it within the window). */
    let stdinHeld = 0;
    /** Stdin taken since the last STDIN_ACK. */
    let stdinTaken = 0;
    const send = (msg: Uint8Array) => {
      if (!closed && ws.readyState === WebSocket.OPEN) ws.send(msg);
    };
    /**
     * Sends queued output while the window allows; pauses the program while
     * some waits. Sending on each ACK at once also matters for latency: the
     * node's data carries the TCP ACK the relay's next small write waits for.
     */
    const pump = () => {
      while (queue.length && unacked < DIALBACK_WINDOW) {
        const head = queue[0];
        const part = head.data.subarray(0, DIALBACK_MAX_CHUNK);
        send(encodeDial(head.type, part));
        unacked += part.byteLength;
        if (part.byteLength === head.data.byteLength) queue.shift();
        else head.data = head.data.subarray(part.byteLength);
      }
      const full = queue.length > 0;
      if (full !== paused) {
        paused = full;
        program?.flow(full);
      }
      if (full) return;
      waiters.forEach((w) => w());
      waiters = [];
      if (exitStatus) {
        send(encodeDial(Dial.EXIT, exitStatus));
        closed = true;
        ws.close(1000);
      }
    };
    const io: ProgramIo = {
      output: (type, data) => {
        queue.push({ type, data });
        pump();
      },
      room: () => !paused || closed ? Promise.resolve() : new Promise<void>((r) => waiters.push(r)),
      exit: (code, signal) => {
        exitStatus ??= { code, signal };
        pump();
      },
      // acknowledged in batches, as output is: the relay keeps sending while less than
      // the window is unacknowledged, so a batch never holds it back
      taken: (n) => {
        stdinHeld = Math.max(0, stdinHeld - n);
        stdinTaken += n;
        if (stdinTaken < DIALBACK_ACK_BATCH) return;
        send(encodeDial(Dial.STDIN_ACK, stdinTaken));
        stdinTaken = 0;
      },
    };

    const onMessage = (data: unknown) => {
      if (!(data instanceof ArrayBuffer)) throw new RangeError("text message");
      const { type, payload } = decodeDial(new Uint8Array(data));
      switch (type) {
        case Dial.START:
          if (program) throw new RangeError("START twice");
          program = start(
            parseStart(payload),
            pty,
            io,
            logger,
            opts,
            () => send(encodeDial(Dial.READY)),
          );
          break;
        case Dial.STDIN:
          if (payload.byteLength > DIALBACK_MAX_CHUNK) throw new RangeError("STDIN too large");
          stdinHeld += payload.byteLength;
          if (stdinHeld > DIALBACK_WINDOW + DIALBACK_MAX_CHUNK) {
            throw new RangeError("stdin beyond the window");
          }
          if (program) program.stdin(payload.slice());
          else io.taken(payload.byteLength); // before START: nobody to take it
          break;
        case Dial.EOF:
          program?.eof();
          break;
        case Dial.EOW:
          program?.eow();
          break;
        case Dial.RESIZE: {
          const { cols, rows } = dialSize(dialJson(payload));
          program?.resize(cols, rows);
          break;
        }
        case Dial.SIGNAL: {
          const sig = knownSignal(dialJson(payload).signal);
          if (sig) program?.signal(sig);
          else logger.warn(`ssh dial-back: ignored an unknown signal`);
          break;
        }
        case Dial.ACK:
          unacked = Math.max(0, unacked - dialCount(payload));
          pump();
          break;
      }
    };

    ws.addEventListener("close", () => {
      closed = true;
      waiters.forEach((w) => w());
      waiters = [];
      program?.kill();
      resolve();
    });
    ws.addEventListener("message", (e) => {
      try {
        onMessage((e as MessageEvent).data);
      } catch (err) {
        // this session ends; the node and its other sessions go on
        logger.warn(`ssh dial-back: bad message from the relay: ${(err as Error).message}`);
        closed = true;
        ws.close(4008, "bad message"); // a client socket may not send 1008
      }
    });
  });
}

/** A signal name from the relay, or null when it names none cw knows (ignored, as sshd does). */
function knownSignal(name: unknown): Deno.Signal | null {
  if (typeof name !== "string" || name.length > 32) return null;
  try {
    return parseSignal(name);
  } catch {
    return null; // parseSignal's RangeError: not a signal
  }
}

/** The node user's login shell. */
function loginShell(): string {
  const shell = Deno.env.get("SHELL");
  for (const candidate of [shell, "/bin/bash", "/bin/sh"]) {
    if (!candidate) continue;
    try {
      if (Deno.statSync(candidate).isFile) return candidate;
    } catch {
      // not here
    }
  }
  return "/bin/sh";
}

function start(
  req: DialbackStart,
  pty: PtyHost,
  io: ProgramIo,
  logger: Logger,
  opts: DialbackOptions,
  ready: () => void,
): Program {
  if (req.forward) return forward(req.forward, io, opts, ready);
  let shell = loginShell();
  const env: Record<string, string> = { ...Deno.env.toObject(), ...req.env };
  const cwd = env.HOME ?? "/";
  let args = req.command !== null ? ["-c", req.command] : req.pty ? ["-l"] : [];
  if (req.subsystem === "sftp") {
    // OpenSSH's own SFTP server, as sshd runs it: this node's user, its home to start in;
    // read-only principals get its read-only mode
    const server = SFTP_SERVER_PATHS.find((p) => {
      try {
        return Deno.statSync(p).isFile;
      } catch {
        return false;
      }
    });
    if (!server) {
      io.output(
        Dial.STDERR,
        new TextEncoder().encode(
          "cw: this node has no SFTP server (install openssh-sftp-server)\r\n",
        ),
      );
      io.exit(127, null);
      return idle(io);
    }
    shell = server;
    args = ["-d", cwd, ...(req.readOnly ? ["-R"] : [])];
  }
  const cannot = (message: string): Program => {
    io.output(Dial.STDERR, new TextEncoder().encode(`cw: cannot start ${shell}: ${message}\r\n`));
    io.exit(127, null);
    return {
      stdin: (data) => io.taken(data.byteLength),
      eof: () => {},
      eow: () => {},
      resize: () => {},
      signal: () => {},
      flow: () => {},
      kill: () => {},
    };
  };
  if (req.pty) {
    env.TERM = req.pty.term || "xterm-256color";
    const id = nextPtyId++;
    let pid = 0;
    let killed = false;
    pty.spawn(id, { file: shell, args, cwd, env, cols: req.pty.cols, rows: req.pty.rows }, {
      onData: (data) => io.output(Dial.STDOUT, data),
      onExit: (code, sig) => io.exit(sig ? null : code, sig ? signalName(sig) : null),
      onInputTaken: io.taken,
    }).then((p) => {
      pid = p;
      if (killed) tryKill(-pid, "SIGHUP"); // the client left while it started
    }).catch((err) => void cannot(err.message));
    return {
      // acknowledged when the PTY's input reaches the kernel (onInputTaken)
      stdin: (data) => void pty.write(id, data),
      eof: () => {},
      eow: () => {}, // as sshd: a terminal has one stream for both ways
      resize: (cols, rows) => pty.resize(id, cols, rows),
      signal: (sig) => pid && tryKill(-pid, sig),
      flow: (paused) => pty.setPaused(id, paused),
      kill: () => {
        killed = true;
        if (pid) tryKill(-pid, "SIGHUP");
      },
    };
  }
  // no terminal: pipes, stdout and stderr kept apart
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(shell, {
      args,
      cwd,
      env,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      // a group of its own, so that a client that leaves takes the whole pipeline with it
      detached: true,
    }).spawn();
  } catch (err) {
    return cannot((err as Error).message); // e.g. a command line beyond the kernel's limit
  }
  const stdin = child.stdin.getWriter();
  const stdout = child.stdout.getReader();
  const stderr = child.stderr.getReader();
  let gone = false;
  const pumpOut = async (reader: ReadableStreamDefaultReader<Uint8Array>, type: number) => {
    while (!gone) {
      const { value, done } = await reader.read();
      if (done || gone) break;
      io.output(type, value);
      await io.room(); // a client that stops reading stops this pipe
    }
    // closes the pipe: a writer still there gets SIGPIPE, as under sshd
    await reader.cancel().catch(() => {});
  };
  Promise.all([
    pumpOut(stdout, Dial.STDOUT),
    pumpOut(stderr, Dial.STDERR),
    child.status,
  ])
    .then(([, , status]) => io.exit(status.signal ? null : status.code, status.signal ?? null))
    .catch((err) => {
      logger.warn(`ssh exec failed: ${err}`);
      io.exit(1, null);
    });
  return {
    // taken once the pipe accepted it; a program that closed its stdin discards it, as under sshd
    stdin: (data) => {
      const n = data.byteLength;
      stdin.write(data).then(() => io.taken(n), () => io.taken(n));
    },
    eof: () => void stdin.close().catch(() => {}),
    eow: () => void stdout.cancel().catch(() => {}),
    resize: () => {},
    signal: (sig) => tryKill(child.pid, sig),
    flow: () => {}, // pipes wait for room instead
    kill: () => {
      gone = true;
      tryKill(-child.pid, "SIGHUP");
      void stdout.cancel().catch(() => {});
      void stderr.cancel().catch(() => {});
    },
  };
}

/** A program that is already over: input is discarded. */
function idle(io: ProgramIo): Program {
  return {
    stdin: (data) => io.taken(data.byteLength),
    eof: () => {},
    eow: () => {},
    resize: () => {},
    signal: () => {},
    flow: () => {},
    kill: () => {},
  };
}

/** Whether `host` is this machine's loopback (an address, or `localhost`). */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/**
 * `ssh -L`: a TCP connection from this node to `to`, if this node allows it
 * (DialbackOptions.forwarding). READY once connected; the relay's stdin is
 * written to it and what it sends is output, under the same window; EOF
 * half-closes it; its end is EXIT.
 */
function forward(
  to: { host: string; port: number },
  io: ProgramIo,
  opts: DialbackOptions,
  ready: () => void,
): Program {
  const refuse = (why: string) => {
    io.output(Dial.STDERR, new TextEncoder().encode(why));
    io.exit(1, null);
    return idle(io);
  };
  if (opts.forwarding === "off") return refuse("this node does not allow port forwarding");
  if (opts.forwarding === "loopback" && !isLoopbackHost(to.host)) {
    return refuse("this node allows port forwarding to its loopback only");
  }
  let conn: Deno.TcpConn | null = null;
  let gone = false;
  const pending: Uint8Array[] = [];
  let writing = Promise.resolve();
  const write = (data: Uint8Array) => {
    const n = data.byteLength;
    writing = writing.then(async () => {
      try {
        let at = 0;
        while (at < data.byteLength && conn) at += await conn.write(data.subarray(at));
      } catch {
        // the destination closed: its end comes as EXIT
      }
      io.taken(n);
    });
  };
  const host = to.host.replace(/^\[|\]$/g, "");
  Deno.connect({ hostname: host === "localhost" ? "127.0.0.1" : host, port: to.port }).then(
    async (c) => {
      if (gone) return c.close();
      conn = c;
      c.setNoDelay(true);
      ready();
      for (const p of pending.splice(0)) write(p);
      const buf = new Uint8Array(64 * 1024);
      try {
        for (;;) {
          const n = await c.read(buf);
          if (n === null || gone) break;
          io.output(Dial.STDOUT, buf.slice(0, n));
          await io.room(); // a client that stops reading stops reading the destination
        }
      } catch {
        // reset by the destination
      }
      try {
        c.close();
      } catch { /* closed */ }
      io.exit(0, null);
    },
    (err) => refuse(`cannot connect to ${to.host}:${to.port}: ${(err as Error).message}`),
  );
  return {
    stdin: (data) => conn ? write(data) : pending.push(data),
    eof: () => {
      writing = writing.then(() => conn?.closeWrite().catch(() => {}));
    },
    eow: () => {},
    resize: () => {},
    signal: () => {},
    flow: () => {}, // reading waits for room instead
    kill: () => {
      gone = true;
      try {
        conn?.close();
      } catch { /* closed */ }
    },
  };
}

function tryKill(pid: number, sig: Deno.Signal): void {
  try {
    Deno.kill(pid, sig);
  } catch {
    // already gone
  }
}
