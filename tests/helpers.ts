/**
 * Test helpers: run the real cw CLI as a subprocess against a temporary
 * CW_HOME, and drive terminals with tmux. Every helper bounds its waits.
 */
import { fileURLToPath } from "node:url";
import { RUN_FLAGS } from "../shared/runtime.ts";
import type { FramedConn } from "../shared/framed.ts";
import { encodeFrame, FrameKind } from "../shared/protocol.ts";

/** Absolute path of main.ts. */
export const MAIN = fileURLToPath(new URL("../main.ts", import.meta.url));
/** Absolute path of deno.json. */
export const CONFIG = fileURLToPath(new URL("../deno.json", import.meta.url));
/** argv prefix that runs cw from source, exactly as `deno task cw` does. */
export const CW_ARGV: string[] = [Deno.execPath(), "run", ...RUN_FLAGS, "--config", CONFIG, MAIN];
/** The same as one shell-quoted string, for tmux panes. */
export const CW_SHELL = CW_ARGV.map(shellQuote).join(" ");

/** Result of one cw invocation. */
export interface CwResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Quotes a word for /bin/sh. */
export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_\/.:=@%+-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}

/**
 * A temporary CW_HOME with helpers to run cw in it. Dispose it (`await using`)
 * to stop its node and remove the directory.
 */
export class CwHome implements AsyncDisposable {
  readonly home: string;
  readonly root: string;

  constructor() {
    this.root = Deno.makeTempDirSync({ prefix: "cw-test-" });
    this.home = `${this.root}/home`;
  }

  /** Environment for a cw process in this home. */
  env(extra: Record<string, string> = {}): Record<string, string> {
    return { ...Deno.env.toObject(), CW_HOME: this.home, ...extra };
  }

  /** Runs `cw ARGS` to completion (bounded by `timeoutMs`). */
  async run(
    args: string[],
    opts: {
      stdin?: string | Uint8Array;
      timeoutMs?: number;
      cwd?: string;
      env?: Record<string, string>;
    } = {},
  ): Promise<CwResult> {
    const [cmd, ...pre] = CW_ARGV;
    const child = new Deno.Command(cmd, {
      args: [...pre, ...args],
      env: this.env(opts.env),
      cwd: opts.cwd ?? this.root,
      stdin: opts.stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    if (opts.stdin !== undefined) {
      const w = child.stdin.getWriter();
      await w.write(
        typeof opts.stdin === "string" ? new TextEncoder().encode(opts.stdin) : opts.stdin,
      );
      await w.close();
    }
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
    }, opts.timeoutMs ?? 30_000);
    const out = await child.output();
    clearTimeout(timer);
    return {
      code: out.code,
      stdout: new TextDecoder().decode(out.stdout),
      stderr: new TextDecoder().decode(out.stderr),
    };
  }

  /** Runs cw and fails unless it exits 0; returns stdout. */
  async ok(args: string[], opts: Parameters<CwHome["run"]>[1] = {}): Promise<string> {
    const r = await this.run(args, opts);
    if (r.code !== 0) {
      throw new Error(
        `cw ${args.join(" ")} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`,
      );
    }
    return r.stdout;
  }

  /** Launches a session and returns its id. */
  async launch(argv: string[], opts: string[] = []): Promise<number> {
    const out = await this.ok(["launch", ...opts, "--", ...argv]);
    return Number(out.trim());
  }

  /** Pid of the running node, or null. */
  nodePid(): number | null {
    try {
      return Number(Deno.readTextFileSync(`${this.home}/node.pid`).trim());
    } catch {
      return null;
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    const pid = this.nodePid();
    if (pid) {
      await this.run(["stop"], { timeoutMs: 20_000 });
      // a node that did not stop cleanly must not outlive the test
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
    await Deno.remove(this.root, { recursive: true }).catch(() => {});
  }
}

/**
 * Polls `check` until it returns a truthy value or `timeoutMs` passes; for
 * state that has no event to await (a tmux pane's content, a file).
 */
export async function waitFor<T>(
  what: string,
  check: () => T | Promise<T>,
  timeoutMs = 10_000,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let delay = 5;
  while (true) {
    const v = await check();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 100);
  }
}

/**
 * Sessions as `--json` gives them, without what changes by the second
 * (`state`, `stateSince`): two listings a moment apart compare equal.
 */
export function stable<T>(sessions: T): T {
  const strip = (s: unknown) => {
    if (s && typeof s === "object") {
      const { state: _s, stateSince: _t, ...rest } = s as Record<string, unknown>;
      return rest;
    }
    return s;
  };
  return (Array.isArray(sessions) ? sessions.map(strip) : strip(sessions)) as T;
}

/** What a finished command printed, and its exit code. */
export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command to its end with no stdin; `env` is added to this process's
 * environment. A command that cannot start reads as exit code 127.
 */
export async function runCommand(
  cmd: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<CommandResult> {
  const dec = new TextDecoder();
  try {
    const out = await new Deno.Command(cmd, {
      args,
      env: { ...Deno.env.toObject(), ...env },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  } catch (err) {
    return { code: 127, stdout: "", stderr: String(err) };
  }
}

/** Whether a path exists. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Resolves with `promise`, or rejects once `ms` pass first. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A tmux server of its own (private socket) for driving terminals like a person. */
export class Tmux implements AsyncDisposable {
  readonly socket: string;

  constructor(dir: string) {
    this.socket = `${dir}/tmux.sock`;
  }

  /** Runs a tmux command on this server. */
  async cmd(...args: string[]): Promise<string> {
    const out = await new Deno.Command("tmux", {
      args: ["-S", this.socket, ...args],
      stdout: "piped",
      stderr: "piped",
    })
      .output();
    if (!out.success) {
      throw new Error(`tmux ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
    }
    return new TextDecoder().decode(out.stdout);
  }

  /** Starts a detached session running `shellCommand` in a cols×rows window. */
  async start(
    name: string,
    shellCommand: string,
    cols = 100,
    rows = 30,
    env: Record<string, string> = {},
  ): Promise<void> {
    const envArgs = Object.entries(env).flatMap(([k, v]) => ["-e", `${k}=${v}`]);
    await this.cmd(
      "new-session",
      "-d",
      "-s",
      name,
      "-x",
      String(cols),
      "-y",
      String(rows),
      ...envArgs,
      shellCommand,
    );
  }

  /**
   * Starts a pane running an interactive bash (prompt `pane$ `) whose `cw` is
   * this checkout's, for `home`, in a `cols`×`rows` terminal. The PATH and
   * prompt are set on the command line, not with tmux -e: tmux puts its
   * client's PATH in new panes, and runs the command with `$SHELL -c`, whose
   * bash drops PS1.
   */
  async cwPane(
    home: CwHome,
    name: string,
    cols = 100,
    rows = 30,
    env: Record<string, string> = {},
  ): Promise<void> {
    const bin = `${home.root}/bin`;
    await Deno.mkdir(bin, { recursive: true });
    await Deno.writeTextFile(`${bin}/cw`, `#!/bin/sh\nexec ${CW_SHELL} "$@"\n`, { mode: 0o755 });
    const path = `${bin}:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}`;
    const shell = ["env", `PATH=${path}`, "PS1=pane$ ", "bash", "--norc", "--noprofile", "-i"]
      .map(shellQuote).join(" ");
    await this.start(name, shell, cols, rows, { CW_HOME: home.home, HISTFILE: "", ...env });
    await this.waitFor(name, "pane$");
  }

  /** The visible text of a pane. */
  capture(target: string): Promise<string> {
    return this.cmd("capture-pane", "-p", "-t", target);
  }

  /** Sends keys (tmux key names or literal text with `literal`). */
  async keys(target: string, keys: string[], literal = false): Promise<void> {
    await this.cmd("send-keys", "-t", target, ...(literal ? ["-l"] : []), ...keys);
  }

  /** Types a line and presses Enter. */
  async typeLine(target: string, line: string): Promise<void> {
    await this.keys(target, [line], true);
    await this.keys(target, ["Enter"]);
  }

  /** The pane's size as tmux reports it: "ROWS COLS", the way `stty size` prints it. */
  async size(target: string): Promise<string> {
    return (await this.cmd("display-message", "-p", "-t", target, "#{pane_height} #{pane_width}"))
      .trim();
  }

  /** Clears a pane (from its own shell, whose prompt starts with `prompt`) and its history. */
  async clearPane(target: string, prompt = "pane$"): Promise<void> {
    await this.typeLine(target, "clear");
    await waitFor(`pane ${target} to clear`, async () => {
      const lines = (await this.capture(target)).split("\n").filter((l) => l.trim() !== "");
      return lines.length === 1 && lines[0].startsWith(prompt);
    });
    await this.cmd("clear-history", "-t", target);
  }

  /** Waits until the pane shows text matching `pattern`. */
  async waitFor(target: string, pattern: RegExp | string, timeoutMs = 10_000): Promise<string> {
    let last = "";
    try {
      return await waitFor(`pane ${target} to show ${pattern}`, async () => {
        last = await this.capture(target).catch(() => "");
        const ok = typeof pattern === "string" ? last.includes(pattern) : pattern.test(last);
        return ok ? last : null;
      }, timeoutMs);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n--- pane ---\n${last}`);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await new Deno.Command("tmux", {
      args: ["-S", this.socket, "kill-server"],
      stderr: "null",
      stdout: "null",
    }).output();
  }
}

/**
 * Pushes up to `total` bytes of lines into an attach stream while draining
 * what comes back; `sent` counts what the transport took.
 */
export function pushInput(conn: FramedConn, total: number) {
  const state = { sent: 0, done: false };
  // lines: a terminal in canonical mode discards what does not fit a line, but keeps lines
  const line = new TextEncoder().encode("x".repeat(1023) + "\n");
  const chunk = new Uint8Array(64 * 1024);
  for (let i = 0; i < chunk.byteLength; i += line.byteLength) chunk.set(line, i);
  const frame = encodeFrame(FrameKind.DATA, chunk);
  const writing = (async () => {
    try {
      while (state.sent < total) {
        await conn.send(frame);
        state.sent += chunk.byteLength;
      }
    } catch {
      // the connection closed under the writer: that is how it leaves
    } finally {
      state.done = true;
    }
  })();
  const draining = (async () => {
    while (await conn.next()) { /* the terminal's echo */ }
  })();
  return { state, finished: Promise.all([writing, draining]) };
}

/** Waits until `state.sent` stops growing for `quietMs`; returns it. */
export async function stalled(
  state: { sent: number; done: boolean },
  quietMs = 1000,
): Promise<number> {
  let last = -1;
  let since = Date.now();
  return await waitFor("the writer to be held back", () => {
    if (state.done) throw new Error(`the writer finished: ${state.sent} bytes all taken`);
    if (state.sent !== last) {
      last = state.sent;
      since = Date.now();
      return null;
    }
    return Date.now() - since >= quietMs ? state.sent : null;
  }, 15_000);
}
