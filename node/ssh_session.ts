import {
  allowedEnv,
  decodeDial,
  Dial,
  DIALBACK_MAX_CHUNK,
  DIALBACK_WINDOW,
  type DialbackStart,
  dialCount,
  dialJson,
  encodeDial,
} from "../shared/dialback.ts";
import type { Logger } from "../shared/logger.ts";
import { type RelayConfig, relayHttpClient } from "../shared/relay_config.ts";
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
): Promise<void> {
  const url = new URL("/node/dialback", config.url);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const client = relayHttpClient(config);
  const ws = new WebSocket(url, {
    headers: { authorization: `Bearer ${config.credential}`, "x-cw-ticket": ticket },
    client,
  } as unknown as string[]);
  ws.binaryType = "arraybuffer";
  try {
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener("open", () => resolve(), { once: true });
      ws.addEventListener("error", () => reject(new Error("dial-back refused")), { once: true });
    });
    await serve(ws, pty, logger);
  } catch (err) {
    logger.warn(`ssh dial-back failed: ${(err as Error).message}`);
  } finally {
    try {
      ws.close();
    } catch { /* closed */ }
    client?.close();
  }
}

/** The running program behind one SSH channel. */
interface Program {
  stdin(data: Uint8Array): void;
  eof(): void;
  resize(cols: number, rows: number): void;
  signal(sig: Deno.Signal): void;
  /** Output flow: pause or resume reading the program. */
  flow(paused: boolean): void;
  kill(): void;
}

function serve(ws: WebSocket, pty: PtyHost, logger: Logger): Promise<void> {
  return new Promise((resolve) => {
    let program: Program | null = null;
    let unacked = 0;
    let paused = false;
    let waiters: (() => void)[] = [];
    let closed = false;
    const send = (msg: Uint8Array) => {
      if (!closed) ws.send(msg);
    };
    /** Sends output, counting it against the window. */
    const output = (type: number, data: Uint8Array) => {
      for (let i = 0; i < data.byteLength; i += DIALBACK_MAX_CHUNK) {
        const part = data.subarray(i, i + DIALBACK_MAX_CHUNK);
        send(encodeDial(type, part));
        unacked += part.byteLength;
      }
      if (unacked >= DIALBACK_WINDOW && !paused) {
        paused = true;
        program?.flow(true);
      }
    };
    /** Resolves when there is room in the window (pipes wait here). */
    const room = () =>
      unacked < DIALBACK_WINDOW || closed
        ? Promise.resolve()
        : new Promise<void>((r) => waiters.push(r));
    const exit = (code: number | null, signal: string | null) => {
      send(encodeDial(Dial.EXIT, { code, signal }));
      closed = true;
      ws.close(1000);
    };

    ws.addEventListener("close", () => {
      closed = true;
      waiters.forEach((w) => w());
      waiters = [];
      program?.kill();
      resolve();
    });
    ws.addEventListener("message", (e) => {
      if (!(e.data instanceof ArrayBuffer)) return;
      try {
        const { type, payload } = decodeDial(new Uint8Array(e.data));
        switch (type) {
          case Dial.START:
            if (program) throw new RangeError("START twice");
            program = start(
              dialJson(payload) as unknown as DialbackStart,
              pty,
              output,
              room,
              exit,
              logger,
            );
            break;
          case Dial.STDIN:
            program?.stdin(payload.slice());
            break;
          case Dial.EOF:
            program?.eof();
            break;
          case Dial.RESIZE: {
            const { cols, rows } = dialJson(payload);
            if (Number.isInteger(cols) && Number.isInteger(rows)) {
              program?.resize(cols as number, rows as number);
            }
            break;
          }
          case Dial.SIGNAL:
            program?.signal(parseSignal(String(dialJson(payload).signal)));
            break;
          case Dial.ACK:
            unacked = Math.max(0, unacked - dialCount(payload));
            if (unacked < DIALBACK_WINDOW) {
              waiters.forEach((w) => w());
              waiters = [];
              if (paused && unacked < DIALBACK_WINDOW / 2) {
                paused = false;
                program?.flow(false);
              }
            }
            break;
        }
      } catch (err) {
        logger.warn(`ssh dial-back: bad message: ${(err as Error).message}`);
        ws.close(1008, "bad message");
      }
    });
  });
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
  output: (type: number, data: Uint8Array) => void,
  room: () => Promise<void>,
  exit: (code: number | null, signal: string | null) => void,
  logger: Logger,
): Program {
  const shell = loginShell();
  const env: Record<string, string> = { ...Deno.env.toObject() };
  for (const [k, v] of Object.entries(req.env ?? {})) {
    if (allowedEnv(k) && typeof v === "string") env[k] = v;
  }
  const cwd = env.HOME ?? "/";
  const args = typeof req.command === "string" ? ["-c", req.command] : req.pty ? ["-l"] : [];
  if (req.pty) {
    env.TERM = req.pty.term || "xterm-256color";
    const id = nextPtyId++;
    let pid = 0;
    pty.spawn(id, {
      file: shell,
      args,
      cwd,
      env,
      cols: req.pty.cols || 80,
      rows: req.pty.rows || 24,
    }, {
      onData: (data) => output(Dial.STDOUT, data),
      onExit: (code, sig) => exit(sig ? null : code, sig ? signalName(sig) : null),
    }).then((p) => pid = p).catch((err) => {
      output(
        Dial.STDERR,
        new TextEncoder().encode(`cw: cannot start ${shell}: ${err.message}\r\n`),
      );
      exit(127, null);
    });
    return {
      stdin: (data) => pty.write(id, data),
      eof: () => {},
      resize: (cols, rows) => pty.resize(id, cols, rows),
      signal: (sig) => pid && tryKill(-pid, sig),
      flow: (paused) => pty.setPaused(id, paused),
      kill: () => pid && tryKill(-pid, "SIGHUP"),
    };
  }
  // no terminal: pipes, stdout and stderr kept apart
  const child = new Deno.Command(shell, {
    args,
    cwd,
    env,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  })
    .spawn();
  const stdin = child.stdin.getWriter();
  const pumpOut = async (stream: ReadableStream<Uint8Array>, type: number) => {
    for await (const chunk of stream) {
      output(type, chunk);
      await room(); // a client that stops reading stops this pipe
    }
  };
  Promise.all([
    pumpOut(child.stdout, Dial.STDOUT),
    pumpOut(child.stderr, Dial.STDERR),
    child.status,
  ])
    .then(([, , status]) => exit(status.signal ? null : status.code, status.signal ?? null))
    .catch((err) => {
      logger.warn(`ssh exec failed: ${err}`);
      exit(1, null);
    });
  return {
    stdin: (data) => void stdin.write(data).catch(() => {}),
    eof: () => void stdin.close().catch(() => {}),
    resize: () => {},
    signal: (sig) => tryKill(child.pid, sig),
    flow: () => {}, // pipes wait for room instead
    kill: () => tryKill(child.pid, "SIGHUP"),
  };
}

function tryKill(pid: number, sig: Deno.Signal): void {
  try {
    Deno.kill(pid, sig);
  } catch {
    // already gone
  }
}
