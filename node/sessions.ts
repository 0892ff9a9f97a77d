import { isAbsolute, join, resolve } from "node:path";
import { CwError } from "../shared/errors.ts";
import { checkSessionName, checkTag } from "../shared/names.ts";
import type { SessionEvent, SessionInfo, SessionRef, SessionStatus } from "../shared/protocol.ts";
import { SessionEvents } from "./events.ts";
import { parseSignal, signalName } from "../shared/signals.ts";
import { logSize, OutputLog } from "./output_log.ts";
import type { PtyHost } from "./pty_host.ts";
import { ActivityMonitor } from "./activity.ts";
import { Session } from "./session.ts";
import type { MetaStore } from "./store.ts";

/** Sizes and collaborators of a {@link SessionManager}. */
export interface ManagerOptions {
  store: MetaStore;
  pty: PtyHost;
  /** In-memory replay buffer per session. */
  ringBytes: number;
  /** On-disk log cap per session. */
  logBytes: number;
  now?: () => Date;
}

/** A validated launch. */
export interface LaunchSpec {
  argv: string[];
  name?: string;
  dir: string;
  tags: string[];
  env: Record<string, string>;
  cols: number;
  rows: number;
}

/** How long `kill` waits for the processes to end before answering. */
const KILL_SETTLE_MS = 5000;

/**
 * The node's sessions: launch, look up, signal, feed input, and keep their
 * metadata on disk. Transport-free; the protocol service sits on top.
 */
export class SessionManager {
  #opts: ManagerOptions;
  #sessions = new Map<number, Session>();
  #now: () => Date;
  #closing = false;
  #onEnd = new Set<(s: Session) => void>();
  /** Working or waiting, for the running sessions (node/activity.ts). */
  readonly activity: ActivityMonitor;
  /** What happens to sessions, for subscribers (node/events.ts). */
  readonly events = new SessionEvents();

  /** A manager; call {@link load} before use. */
  constructor(opts: ManagerOptions) {
    this.#opts = opts;
    this.#now = opts.now ?? (() => new Date());
    this.activity = new ActivityMonitor(() => this.#sessions.values());
    this.activity.onChange((session, state) => {
      if (session.running) this.emit(session, "state", { state });
    });
  }

  /** Tells subscribers that `type` happened to `session`. */
  emit(session: Session, type: SessionEvent["type"], more: Partial<SessionEvent> = {}): void {
    if (this.events.size === 0) return;
    this.events.emit({
      type,
      session: session.meta.id,
      name: session.meta.name,
      tags: session.meta.tags,
      time: this.#now().toISOString(),
      ...more,
    });
  }

  /** Loads sessions from disk; those that were running when a node died become `lost`. */
  load(): void {
    for (const meta of this.#opts.store.load()) {
      const dir = this.#opts.store.sessionDir(meta.id);
      if (meta.status === "running" || meta.status === "lost") {
        // A node that died never saved how much its sessions printed; their
        // logs hold it (all of it, unless a log rotated away its oldest part).
        const onDisk = logSize(dir);
        if (meta.status === "running" || meta.outputBytes < onDisk) {
          meta.status = "lost";
          meta.pid = null;
          meta.endedAt ??= this.#now().toISOString();
          meta.outputBytes = Math.max(meta.outputBytes, onDisk);
          this.#opts.store.save(meta);
        }
      }
      const session = new Session(meta, dir, this.#opts.ringBytes, null);
      session.activityOf = (x) => this.activity.of(x);
      this.#sessions.set(meta.id, session);
    }
  }

  /** Validates and starts a session. */
  async launch(spec: LaunchSpec): Promise<SessionInfo> {
    if (this.#closing) throw new CwError("shutting_down", "The node is shutting down");
    if (spec.argv.length === 0 || spec.argv[0] === "") {
      throw new CwError("bad_request", "Nothing to launch: give a command after --");
    }
    if (spec.name !== undefined) {
      checkSessionName(spec.name);
      const holder = [...this.#sessions.values()].find((s) =>
        s.running && s.meta.name === spec.name
      );
      if (holder) {
        throw new CwError(
          "name_taken",
          `The name "${spec.name}" is taken by running session ${holder.meta.id}`,
        );
      }
    }
    spec.tags.forEach(checkTag);
    checkDir(spec.dir);
    const file = resolveCommand(spec.argv[0], spec.dir, spec.env.PATH ?? "");

    const id = this.#opts.store.allocateId();
    const dir = this.#opts.store.sessionDir(id);
    const meta: SessionInfo = {
      id,
      name: spec.name ?? null,
      argv: spec.argv,
      dir: spec.dir,
      tags: [...new Set(spec.tags)],
      status: "running",
      pid: null,
      exitCode: null,
      signal: null,
      startedAt: this.#now().toISOString(),
      endedAt: null,
      outputBytes: 0,
    };
    const session = new Session(
      meta,
      dir,
      this.#opts.ringBytes,
      new OutputLog(dir, this.#opts.logBytes),
    );
    const env: Record<string, string> = {
      ...spec.env,
      CW_SESSION_ID: String(id),
      CW_SESSION_NAME: spec.name ?? "",
      TERM: spec.env.TERM && spec.env.TERM !== "dumb" ? spec.env.TERM : "xterm-256color",
    };
    this.#sessions.set(id, session);
    session.activityOf = (x) => this.activity.of(x);
    session.resized(spec.cols, spec.rows);
    session.setFlowControl({
      pause: () => this.#opts.pty.setPaused(id, true),
      resume: () => this.#opts.pty.setPaused(id, false),
    });
    try {
      meta.pid = await this.#opts.pty.spawn(id, {
        file,
        args: spec.argv.slice(1),
        cwd: spec.dir,
        env,
        cols: spec.cols,
        rows: spec.rows,
      }, {
        onData: (data) => session.append(data),
        onExit: (code, sig) => this.#onExit(session, code, sig),
      });
    } catch (err) {
      this.#sessions.delete(id);
      session.finish("exited", 127, null, this.#now());
      this.#opts.store.save(meta);
      throw err;
    }
    this.#opts.store.save(meta);
    this.emit(session, "launched");
    return session.info();
  }

  /** Sessions matching the filters, by id. */
  list(filter: { tag?: string; status?: SessionStatus } = {}): Session[] {
    return [...this.#sessions.values()]
      .filter((s) => !filter.tag || s.meta.tags.includes(filter.tag))
      .filter((s) => !filter.status || s.meta.status === filter.status)
      .sort((a, b) => a.meta.id - b.meta.id);
  }

  /**
   * Finds a session by id or name. A name means the running session of that
   * name, else the newest ended one. Throws {@link CwError} `not_found`.
   */
  resolve(ref: SessionRef): Session {
    if (/^[0-9]+$/.test(ref)) {
      const s = this.#sessions.get(Number(ref));
      if (s) return s;
    } else {
      const named = this.list().filter((s) => s.meta.name === ref);
      const pick = named.find((s) => s.running) ?? named.at(-1);
      if (pick) return pick;
    }
    throw new CwError("not_found", `Cannot find session "${ref}"`);
  }

  /**
   * Signals the process groups of running sessions and waits (bounded) for
   * them to end. Naming an ended session is an error; a tag or `all` only
   * picks running ones. `signal` defaults to SIGHUP then SIGTERM, as when a
   * terminal closes, so interactive shells end too.
   */
  async kill(
    target: { sessions?: SessionRef[]; tag?: string; all?: boolean },
    signal?: string,
  ): Promise<SessionInfo[]> {
    const sig = signal === undefined ? undefined : parseSignalOrThrow(signal);
    let picked: Session[];
    if (target.sessions?.length) {
      picked = target.sessions.map((ref) => this.resolve(ref));
      for (const s of picked) {
        if (!s.running) {
          throw new CwError(
            "not_running",
            `Cannot kill session "${s.meta.id}": it has already ${
              s.meta.status === "lost" ? "been lost" : "ended"
            }`,
          );
        }
      }
    } else if (target.tag) {
      picked = this.list({ tag: target.tag, status: "running" });
    } else if (target.all) {
      picked = this.list({ status: "running" });
    } else {
      throw new CwError("bad_request", "Say which sessions to kill: ids or names, --tag or --all");
    }
    for (const s of picked) signalGroup(s, sig);
    await settle(picked.map((s) => s.ended()), KILL_SETTLE_MS);
    return picked.map((s) => s.info());
  }

  /**
   * Writes input to a running session's PTY once it has room (a program that
   * does not read holds at most PTY_INPUT_MAX of it; see PtyHost.write).
   * Resolves true once written, false when the session ended or `signal`
   * aborted first. Throws {@link CwError} `not_running` for an ended session.
   */
  write(session: Session, data: Uint8Array, signal?: AbortSignal): Promise<boolean> {
    if (!session.running) {
      throw new CwError("not_running", `Cannot send to session "${session.meta.id}": it has ended`);
    }
    return this.#opts.pty.write(session.meta.id, data, signal);
  }

  /** Input written to a session and not yet taken by its program, in bytes. */
  inputPending(session: Session): number {
    return this.#opts.pty.inputPending(session.meta.id);
  }

  /** Resizes a running session's PTY. */
  resize(session: Session, cols: number, rows: number): void {
    if (!session.running) return;
    this.#opts.pty.resize(session.meta.id, cols, rows);
    session.resized(cols, rows);
  }

  /**
   * Ends every session as a closing terminal would (SIGHUP, then SIGKILL after
   * `graceMs`) and saves all metadata.
   */
  async shutdown(graceMs: number): Promise<void> {
    this.activity.close();
    this.#closing = true;
    const running = this.list({ status: "running" });
    for (const s of running) signalGroup(s, "SIGHUP");
    if (!(await settle(running.map((s) => s.ended()), graceMs))) {
      for (const s of running) if (s.running) signalGroup(s, "SIGKILL");
      await settle(running.map((s) => s.ended()), 1000);
    }
    for (const s of this.#sessions.values()) this.#opts.store.save(s.meta);
  }

  /** Number of sessions known, and of running ones. */
  counts(): { total: number; running: number } {
    return { total: this.#sessions.size, running: this.list({ status: "running" }).length };
  }

  #onExit(session: Session, exitCode: number, signal: number): void {
    const sig = signal ? signalName(signal) ?? `SIG${signal}` : null;
    if (sig) session.finish("killed", null, sig, this.#now());
    else session.finish("exited", exitCode, null, this.#now());
    session.meta.pid = null;
    this.#opts.store.save(session.meta);
    this.emit(session, "exited", {
      status: session.meta.status,
      exitCode: session.meta.exitCode,
      signal: session.meta.signal,
    });
    for (const fn of this.#onEnd) fn(session);
  }

  /** Calls `fn` when a running session's program ends. */
  onEnd(fn: (s: Session) => void): void {
    this.#onEnd.add(fn);
  }
}

function parseSignalOrThrow(signal: string): Deno.Signal {
  try {
    return parseSignal(signal);
  } catch (err) {
    throw new CwError("bad_request", (err as Error).message);
  }
}

/** Sends a signal to a session's whole process group (the PTY child leads it). */
function signalGroup(session: Session, signal: Deno.Signal | undefined): void {
  const pid = session.meta.pid;
  if (!pid || !session.running) return;
  for (const sig of signal ? [signal] : ["SIGHUP", "SIGTERM"] as Deno.Signal[]) {
    try {
      Deno.kill(-pid, sig);
    } catch {
      try {
        Deno.kill(pid, sig); // the group is gone but the leader may not be
      } catch {
        // already exited; its exit message is on the way
      }
    }
  }
}

/** Resolves true when all promises settle within `ms`, false on timeout. */
async function settle(promises: Promise<unknown>[], ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), ms));
  try {
    return await Promise.race([Promise.all(promises).then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function checkDir(dir: string): void {
  if (!isAbsolute(dir)) {
    throw new CwError("dir_not_found", `The directory "${dir}" is not an absolute path`);
  }
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(dir);
  } catch {
    throw new CwError("dir_not_found", `The directory "${dir}" does not exist`);
  }
  if (!info.isDirectory) throw new CwError("dir_not_found", `"${dir}" is not a directory`);
}

/**
 * Finds the executable for `cmd`: a path (relative to the session's dir) when
 * it contains a slash, else the first match on the session's PATH.
 */
export function resolveCommand(cmd: string, dir: string, path: string): string {
  const candidates = cmd.includes("/")
    ? [resolve(dir, cmd)]
    : path.split(":").filter((p) => p !== "").map((p) => join(resolve(dir, p), cmd));
  for (const file of candidates) {
    try {
      const info = Deno.statSync(file);
      if (info.isFile && (info.mode === null || (info.mode & 0o111) !== 0)) return file;
    } catch {
      // not here
    }
  }
  throw new CwError(
    "command_not_found",
    cmd.includes("/")
      ? `Cannot launch "${cmd}": no executable file at that path`
      : `Cannot launch "${cmd}": command not found on PATH`,
  );
}
