import type { Duplex } from "../shared/duplex.ts";
import { CwError, isPeerGone } from "../shared/errors.ts";
import { checkHello, FramedConn, helloFrame } from "../shared/framed.ts";
import {
  DATA_CHUNK,
  type Frame,
  FrameKind,
  frameWithRoom,
  HEADER_SIZE,
  ProtocolError,
  type Request,
  type SessionInfo,
  type StreamEvent,
} from "../shared/protocol.ts";
import type { Logger } from "../shared/logger.ts";
import { refusal, type RemotePrincipal } from "../shared/access.ts";
import { MAX_SEND_BYTES, PTY_MAX_SIZE, SEND_ROOM_WAIT_MS, STATUS_MAX_BYTES } from "./limits.ts";
import { LogReader } from "./output_log.ts";
import { parseRequest } from "./requests.ts";
import type { Session, Viewer } from "./session.ts";
import type { SessionManager } from "./sessions.ts";
import { ViewerSizes } from "./viewer_sizes.ts";
import { Screens, trimRows } from "./screen.ts";
import { AnsiStripper } from "../shared/ansi.ts";

/** How long a new connection may take to say HELLO and its request. */
const HANDSHAKE_TIMEOUT_MS = 10_000;
/** Lines of output `status` includes by default. */
const STATUS_LINES = 10;

/** What the service needs from the daemon around it. */
export interface ServiceHost {
  manager: SessionManager;
  logger: Logger;
  /** Called after a `shutdown` request was answered. */
  requestShutdown(): void;
  /** Facts for `info`. */
  info(): Record<string, unknown>;
  /** Re-reads the relay config and relinks; returns the new link status. */
  reloadRelay(): Promise<Record<string, unknown> | null>;
}

/**
 * The node's session service: serves one protocol connection, whatever
 * carries it (unix socket, WebSocket, relay stream). Written once; transports
 * are adapters that hand it a {@link Duplex}.
 */
export class SessionService {
  #host: ServiceHost;
  /** Writable viewers per session id, for the size policy; dropped when the last leaves. */
  #sizes = new Map<number, ViewerSizes>();
  /** Viewers attached to each session now (for `attached`/`detached` events). */
  #viewers = new Map<number, number>();
  /** The sessions' terminal models (for snapshots and `screen`). */
  readonly screens = new Screens();

  /** A service over the daemon's manager. */
  constructor(host: ServiceHost) {
    this.#host = host;
  }

  /**
   * Serves one connection to its end; never throws. `local` says the peer is
   * on this machine (the unix socket): only a local writable attach paces a
   * burst of output so that it sees every byte; a remote client, however
   * slow, never slows the program (it is told what it skipped).
   */
  async serve(
    duplex: Duplex,
    opts: { local?: boolean; principal?: RemotePrincipal | null } = {},
  ): Promise<void> {
    const conn = new FramedConn(duplex);
    let op = "handshake";
    try {
      const hello = await withTimeout(conn.next(), HANDSHAKE_TIMEOUT_MS, "handshake");
      checkHello(hello);
      await conn.sendJson(FrameKind.HELLO, helloFrame());
      const frame = await withTimeout(conn.next(), HANDSHAKE_TIMEOUT_MS, "request");
      if (!frame) return;
      if (frame.kind !== FrameKind.REQUEST) {
        throw new CwError("protocol_error", `Expected a REQUEST frame, got kind ${frame.kind}`);
      }
      const req = parseRequest(frame.value);
      op = req.op;
      const who = opts.principal;
      if (who) {
        // the relay vouches for who this is: check again what it may do (defence in depth)
        const why = refusal(who, req);
        if (why !== null) {
          this.#host.logger.warn(`refused ${op} from ${who.id} through the relay: ${why}`);
          throw new CwError("forbidden", why);
        }
        if (op !== "list" && op !== "info" && op !== "status") {
          const target = "session" in req ? ` session ${JSON.stringify(req.session)}` : "";
          this.#host.logger.info(
            `remote ${op}${target} by ${who.id} (network ${who.network ?? "*"})`,
          );
        }
      }
      await this.#dispatch(conn, req, opts.local === true);
    } catch (err) {
      if (err instanceof CwError || err instanceof ProtocolError) {
        await conn.sendError(err.code, err.message);
      } else if (isPeerGone(err)) {
        // a client that leaves mid-answer (`cw logs | head`, a closed laptop) is no bug
        this.#host.logger.info(`${op}: the client went away (${(err as Error).message})`);
      } else if (!conn.closed) {
        this.#host.logger.error(`request failed: ${(err as Error)?.stack ?? err}`);
        await conn.sendError("internal", `Internal error: ${(err as Error)?.message ?? err}`);
      }
    } finally {
      conn.close();
    }
  }

  async #dispatch(conn: FramedConn, req: Request, local: boolean): Promise<void> {
    const m = this.#host.manager;
    const respond = (value: unknown) => conn.sendJson(FrameKind.RESPONSE, value);
    switch (req.op) {
      case "launch": {
        // a remote launch starts from the node's environment and home directory
        const nodeEnv = req.inheritNodeEnv ? Deno.env.toObject() : {};
        const info = await m.launch({
          argv: req.argv,
          name: req.name,
          dir: req.dir ?? nodeEnv.HOME ?? Deno.env.get("HOME") ?? "/",
          tags: req.tags ?? [],
          env: { ...nodeEnv, ...(req.env ?? {}) },
          cols: req.cols ?? 80,
          rows: req.rows ?? 24,
        });
        this.#host.logger.info(`launched session ${info.id}: ${JSON.stringify(info.argv[0])}`);
        return respond({ session: info });
      }
      case "list": {
        const sessions = m.list(req).map((s) => s.info());
        if (req.lastLines) {
          for (const info of sessions) info.lastLine = await lastLine(m.resolve(String(info.id)));
        }
        return respond({ sessions });
      }
      case "status": {
        const s = m.resolve(req.session);
        const reader = new LogReader(s.dir);
        try {
          // long lines must not make the answer outgrow a JSON frame (base64 adds a third)
          const start = Math.max(
            await reader.tailStart(req.lines ?? STATUS_LINES),
            reader.size - STATUS_MAX_BYTES,
          );
          const tail = await reader.readAt(start, reader.size - start);
          // the rows the program shows, without the blank ones below; none when the node is
          // too busy rendering (the raw tail still answers)
          const screen = req.screen && s.running
            ? await this.screens.screen(s, false).then((v) => trimRows(v.lines), () => undefined)
            : undefined;
          return respond({ session: s.info(), lastOutput: tail.toBase64(), screen });
        } finally {
          reader.close();
        }
      }
      case "kill":
        return respond({ sessions: await m.kill(req, req.signal) });
      case "send": {
        const s = m.resolve(req.session);
        let data: Uint8Array;
        try {
          data = Uint8Array.fromBase64(req.data);
        } catch {
          throw new CwError("bad_request", 'Field "data" must be base64');
        }
        if (data.byteLength > MAX_SEND_BYTES) {
          throw new CwError("bad_request", `At most ${MAX_SEND_BYTES} bytes per send request`);
        }
        // a program that reads gets the input at once; one that does not is reported, not fed
        if (!(await m.write(s, data, AbortSignal.timeout(SEND_ROOM_WAIT_MS)))) {
          if (!s.running) {
            throw new CwError("not_running", `Cannot send to session "${s.meta.id}": it has ended`);
          }
          throw new CwError(
            "input_blocked",
            `Session ${s.meta.id} is not reading its input (${
              mebibytes(m.inputPending(s))
            } waiting)`,
          );
        }
        return respond({ session: s.info(), bytes: data.byteLength });
      }
      case "wait":
        return await this.#wait(conn, req);
      case "attach":
        return await this.#attach(conn, req, local);
      case "logs":
        return await this.#logs(conn, req);
      case "info":
        return respond(this.#host.info());
      case "subscribe":
        return await this.#subscribe(conn, req);
      case "screen": {
        const s = m.resolve(req.session);
        const screen = await this.screens.screen(s, req.ansi === true);
        return respond({ session: s.info(), screen });
      }
      case "relay_reload":
        localOnly(req.op, local);
        return respond({ relay: await this.#host.reloadRelay() });
      case "shutdown":
        localOnly(req.op, local);
        await respond({ ok: true });
        this.#host.requestShutdown();
        return;
    }
  }

  async #wait(conn: FramedConn, req: Extract<Request, { op: "wait" }>): Promise<void> {
    const m = this.#host.manager;
    let sessions: Session[];
    if (req.sessions?.length) sessions = req.sessions.map((ref) => m.resolve(ref));
    else if (req.tag) sessions = m.list({ tag: req.tag });
    else throw new CwError("bad_request", "Say which sessions to wait for: ids or names, or --tag");
    if (sessions.length === 0) {
      throw new CwError("not_found", `No session has the tag "${req.tag}"`);
    }

    let first: number | null = null;
    const unsubscribe: (() => void)[] = [];
    const ends = sessions.map((s) =>
      (req.idle ? this.#idleOrEnded(s, req.idleMs ?? 0, unsubscribe) : s.ended())
        .then(() => first ??= s.meta.id)
    );
    const done = req.condition === "any" ? Promise.race(ends) : Promise.all(ends);
    // a client that goes away (e.g. its --timeout) ends the wait
    const gone = conn.next().then(() => "gone" as const);
    try {
      if (await Promise.race([done.then(() => "done" as const), gone]) === "gone") return;
    } finally {
      for (const u of unsubscribe) u();
    }
    await conn.sendJson(FrameKind.RESPONSE, {
      sessions: sessions.map((s) => s.info()),
      first,
    });
  }

  /**
   * Resolves when `s` has been `waiting` for `forMs`, or has ended. Its
   * clean-up goes into `cleanups` (the wait may end first for another reason).
   */
  #idleOrEnded(s: Session, forMs: number, cleanups: (() => void)[]): Promise<void> {
    return new Promise((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      const check = () => {
        clearTimeout(timer);
        if (!s.running) return done();
        const now = s.activityOf?.(s);
        if (now?.activity !== "waiting") return;
        const left = now.since + forMs - Date.now();
        if (left <= 0) return done();
        timer = setTimeout(check, left);
      };
      const off = this.#host.manager.activity.onChange((x) => x === s && check());
      cleanups.push(() => {
        off();
        clearTimeout(timer);
      });
      s.ended().then(done);
      check();
    });
  }

  async #attach(
    conn: FramedConn,
    req: Extract<Request, { op: "attach" }>,
    local: boolean,
  ): Promise<void> {
    const m = this.#host.manager;
    const s = m.resolve(req.session);
    if (!s.running) {
      throw new CwError(
        "not_running",
        `Cannot attach to session "${s.meta.id}": the session has ${
          s.meta.status === "lost" ? "been lost" : "ended"
        }`,
      );
    }
    const readOnly = req.readOnly === true;
    let from = req.history === false ? s.ring.end : req.from ?? s.ring.start;
    from = Math.min(Math.max(from, s.ring.start), s.ring.end);
    const skipped = req.from !== undefined && req.from < s.ring.start ? s.ring.start - req.from : 0;
    // writable viewers drive the size, the most recent winning (node/viewer_sizes.ts);
    // the size is set first, so that the snapshot is drawn at the size the viewer sees
    const me = !readOnly && req.cols && req.rows
      ? (this.#sizes.get(s.meta.id) ?? this.#sizesOf(s.meta.id)).join(req.cols, req.rows)
      : null;
    if (me) {
      // a size change makes full-screen programs redraw for the new viewer
      m.resize(s, me.cols, Math.max(1, me.rows - 1));
      m.resize(s, me.cols, me.rows);
    }
    const leave = () => {
      const list = this.#sizes.get(s.meta.id);
      if (me && list) {
        // the viewer that set the size left: the most recent one still here sets it again
        const next = list.leave(me);
        if (next) m.resize(s, next.cols, next.rows);
        if (list.size === 0) this.#sizes.delete(s.meta.id);
      }
    };
    // `live`: where the ring ends now; bytes before it are history, which a client
    // replays without the terminal queries in it (client/query_filter.ts) — or, when it
    // asks for a snapshot, gets as the terminal's state rendered by a model (node/screen.ts)
    const live = s.ring.end;
    try {
      let snapshot: string | undefined;
      if (req.snapshot !== undefined && req.from === undefined) {
        try {
          snapshot = await this.screens.snapshot(s, req.snapshot);
          from = live;
        } catch (err) {
          // too many renderings: refused like a `screen`; a failed one: the raw history
          // still serves (the client removes its queries)
          if (err instanceof CwError && err.code === "rate_limited") throw err;
          this.#host.logger.warn(`session ${s.meta.id}: no snapshot: ${(err as Error).message}`);
        }
      }
      await conn.sendJson(FrameKind.RESPONSE, {
        session: s.info(),
        offset: from,
        skipped,
        live,
        // the PTY's size where the output sent begins (then `size` events follow it)
        size: { cols: s.history.sizeAt(from).cols, rows: s.history.sizeAt(from).rows },
        ...(snapshot !== undefined ? { snapshot } : {}),
      });
    } catch (err) {
      leave();
      throw err;
    }
    const stop = new AbortController();
    const credit = new Credit(req.window, stop.signal);
    const view: AttachView = { screens: this.screens, redraw: false, wake: null };
    const viewers = (n: number) => {
      const now = (this.#viewers.get(s.meta.id) ?? 0) + n;
      if (now > 0) this.#viewers.set(s.meta.id, now);
      else this.#viewers.delete(s.meta.id);
      return now;
    };
    m.emit(s, "attached", { readOnly, viewers: viewers(1) });
    const input = readClient(conn, credit, (frame) => {
      if (frame.kind === FrameKind.EVENT && frame.value.type === "redraw") {
        view.redraw = true; // a read: any viewer may ask
        view.wake?.();
        return;
      }
      // read-only is enforced here, in the node: input and resizes go nowhere
      if (readOnly) return;
      // resolves when the PTY had room; dropped only if this client leaves first
      if (frame.kind === FrameKind.DATA) return m.write(s, frame.bytes, stop.signal);
      else if (frame.kind === FrameKind.EVENT) {
        onEvent(frame, (cols, rows) => {
          if (me) this.#sizes.get(s.meta.id)?.change(me, cols, rows);
          m.resize(s, cols, rows);
        });
      } else throw new CwError("protocol_error", `Unexpected frame kind ${frame.kind} in attach`);
    }).finally(() => stop.abort());
    try {
      await Promise.race([
        pump(conn, s, from, stop.signal, local && !readOnly, credit, view),
        input,
      ]);
    } finally {
      stop.abort();
      leave();
      m.emit(s, "detached", { readOnly, viewers: viewers(-1) });
    }
  }

  /** Streams session events (`subscribe`) until the client leaves or falls behind. */
  async #subscribe(conn: FramedConn, req: Extract<Request, { op: "subscribe" }>): Promise<void> {
    const m = this.#host.manager;
    const ids = req.sessions?.length
      ? new Set(req.sessions.map((ref) => m.resolve(ref).meta.id))
      : null;
    let sub;
    try {
      sub = m.events.subscribe((e) =>
        (ids === null || ids.has(e.session)) && (!req.tag || e.tags.includes(req.tag))
      );
    } catch (err) {
      throw new CwError("rate_limited", `Too many event subscribers: ${(err as Error).message}`);
    }
    try {
      const now = ids ? [...ids].map((id) => m.resolve(String(id))) : m.list({ tag: req.tag });
      await conn.sendJson(FrameKind.RESPONSE, { sessions: now.map((x) => x.info()) });
      // the client says nothing more: anything from it (or its leaving) ends the stream
      const gone = conn.next().then(() => null, () => null);
      for (;;) {
        const e = await Promise.race([sub.next(), gone]);
        if (e === null) return;
        if (e === "lagged") return await conn.sendJson(FrameKind.EVENT, { type: "lagged" });
        await conn.sendJson(FrameKind.EVENT, { type: "session", event: e });
      }
    } finally {
      sub.close();
    }
  }

  /** The writable viewers' sizes of a session, created on first use. */
  #sizesOf(id: number): ViewerSizes {
    const sizes = new ViewerSizes();
    this.#sizes.set(id, sizes);
    return sizes;
  }

  async #logs(conn: FramedConn, req: Extract<Request, { op: "logs" }>): Promise<void> {
    const s = this.#host.manager.resolve(req.session);
    const stop = new AbortController();
    const credit = new Credit(req.window, stop.signal);
    // acknowledgements, and the client going away, arrive while we send
    const input = readClient(conn, credit, () => {}).catch(() => {}).finally(() => stop.abort());
    // The log is written synchronously with the ring, so the files' sizes now
    // end exactly at ring.end: disk up to there, then the ring, nothing twice.
    const reader = new LogReader(s.dir);
    // a follower holds its place in the ring from now on, so output made
    // while the disk part is sent is still there afterwards
    const viewer = req.follow ? s.follow(s.ring.end, false) : null;
    try {
      try {
        // the files end where the output ends: the absolute offset of their first byte
        const info = s.info();
        const base = Math.max(0, info.outputBytes - reader.size);
        let start = req.tail !== undefined ? await reader.tailStart(req.tail) : 0;
        if (req.tailBytes !== undefined) start = Math.max(start, reader.size - req.tailBytes);
        if (req.from !== undefined) start = Math.min(Math.max(0, req.from - base), reader.size);
        const end = req.limit !== undefined && !req.follow
          ? Math.min(reader.size, start + req.limit)
          : reader.size;
        await conn.sendJson(FrameKind.RESPONSE, {
          session: info,
          offset: base + start,
          end: base + end,
          // asked from an offset whose bytes the log no longer holds
          skipped: req.from !== undefined && req.from < base ? base - req.from : 0,
        });
        for await (const block of reader.stream(start)) {
          const part = block.subarray(0, Math.max(0, end - start));
          if (part.byteLength === 0) break;
          if (!(await credit.take(part.byteLength))) return;
          await conn.sendData(part);
          start += part.byteLength;
        }
      } finally {
        reader.close();
      }
      if (!viewer) {
        await sendEvent(conn, { type: "end" });
        return;
      }
      await Promise.race([pumpFrom(conn, s, viewer, stop.signal, credit), input]);
    } finally {
      viewer?.leave();
      stop.abort();
    }
  }
}

/**
 * Stopping the node and relinking it are for its own machine (the unix
 * socket) only: no credential that reaches the node over the relay or the
 * direct listener may end its sessions — the node checks, whatever the relay
 * lets through.
 */
function localOnly(op: string, local: boolean): void {
  if (local) return;
  throw new CwError(
    "forbidden",
    `"${op === "shutdown" ? "cw stop" : op}" works only on the node's own machine`,
  );
}

/**
 * Reads what a streaming client sends until it goes away: output
 * acknowledgements feed `credit`, every other frame goes to `onFrame`.
 *
 * Input is backpressure, not a queue: `onFrame` returns a promise for DATA
 * that must wait for room (a program that does not read its input). While one
 * waits, acknowledgements and events are still read; the next DATA frame is
 * held until it is written, so no more is read from this client — its
 * transport (unix socket, WebSocket, link window) holds it back, bounded,
 * and nothing else on the node waits.
 */
async function readClient(
  conn: FramedConn,
  credit: Credit,
  onFrame: (frame: Frame) => void | Promise<unknown>,
): Promise<void> {
  let writing: Promise<unknown> = Promise.resolve();
  while (true) {
    const frame = await conn.next();
    if (!frame) return; // a write still waiting is dropped with the stream (stop aborts it)
    if (frame.kind === FrameKind.EVENT && frame.value.type === "ack") {
      credit.ack(frame.value.bytes);
      continue;
    }
    if (frame.kind === FrameKind.DATA) await writing; // in order, one waiting write at most
    const written = onFrame(frame);
    if (written instanceof Promise) {
      writing = written;
      written.catch(() => {}); // its failure surfaces at the next await above
    }
  }
}

/**
 * Output credit granted by a client that asked for a `window`: sending waits
 * while `window` bytes are unacknowledged. Without a window it never waits
 * (the transport's own backpressure suffices).
 */
class Credit {
  #window: number | undefined;
  #unacked = 0;
  #wake: (() => void) | null = null;
  #signal: AbortSignal;

  constructor(window: number | undefined, signal: AbortSignal) {
    this.#window = window;
    this.#signal = signal;
    signal.addEventListener("abort", () => this.#wake?.());
  }

  /** Waits for room for `n` bytes; false if the stream was aborted meanwhile. */
  async take(n: number): Promise<boolean> {
    if (this.#window === undefined) return !this.#signal.aborted;
    while (this.#unacked > 0 && this.#unacked + n > this.#window) {
      if (this.#signal.aborted) return false;
      await new Promise<void>((r) => this.#wake = r);
    }
    this.#unacked += n;
    return !this.#signal.aborted;
  }

  /** The client consumed `n` bytes. */
  ack(n: unknown): void {
    if (typeof n !== "number" || !Number.isFinite(n) || n < 0) return;
    this.#unacked = Math.max(0, this.#unacked - n);
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }
}

/**
 * Sends a session's output from offset `pos` as fast as this connection takes
 * it, until the session ends or `signal` aborts. Each reader has its own
 * position in the ring; one that falls behind is told how much it missed.
 */
async function pump(
  conn: FramedConn,
  s: Session,
  from: number,
  signal: AbortSignal,
  interactive = false,
  credit?: Credit,
  view?: AttachView,
): Promise<void> {
  const viewer = s.follow(from, interactive);
  try {
    await pumpFrom(conn, s, viewer, signal, credit, view);
  } finally {
    viewer.leave();
  }
}

/** What an attach's stream carries besides output: the PTY's sizes, and screens asked for. */
interface AttachView {
  screens: Screens;
  /** The client asked for the terminal's state (`redraw`). */
  redraw: boolean;
  /** Wakes the pump waiting for output. */
  wake: (() => void) | null;
}

async function pumpFrom(
  conn: FramedConn,
  s: Session,
  viewer: Viewer,
  signal: AbortSignal,
  credit?: Credit,
  view?: AttachView,
): Promise<void> {
  const aborted = new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve()));
  let sent: { cols: number; rows: number } | null = null;
  while (!signal.aborted) {
    const pos = viewer.pos;
    if (view?.redraw) {
      view.redraw = false;
      const end = s.ring.end;
      const { cols, rows } = s.size;
      // rendered at `end` (taken in this tick); the output before it is covered by the screen
      const snapshot = await view.screens.snapshot(s, 0).catch(() => null);
      if (snapshot !== null) {
        await sendEvent(conn, { type: "screen", offset: end, cols, rows, snapshot });
        sent = { cols, rows };
        if (end > viewer.pos) viewer.advance(end);
        continue;
      }
    }
    if (pos < s.ring.start) {
      // read start once: the ring moves on while the event is sent
      const start = s.ring.start;
      await sendEvent(conn, { type: "skipped", bytes: start - pos, offset: start });
      viewer.advance(start);
      continue;
    }
    let room = DATA_CHUNK;
    if (view) {
      // the PTY's size, in order with the output: each part is drawn at its size
      const size = s.history.sizeAt(pos);
      if (size.cols !== sent?.cols || size.rows !== sent?.rows) {
        sent = { cols: size.cols, rows: size.rows };
        await sendEvent(conn, { type: "size", ...sent });
        continue;
      }
      const next = s.history.sizesIn(pos + 1, pos + DATA_CHUNK)[0];
      if (next) room = next.at - pos;
    }
    if (pos < s.ring.end) {
      // one copy, straight from the ring into the frame
      const len = s.ring.available(pos, room);
      if (credit && !(await credit.take(len))) return;
      if (pos < s.ring.start) {
        credit?.ack(len); // the ring moved on while waiting: nothing was sent
        continue;
      }
      const frame = frameWithRoom(FrameKind.DATA, len);
      s.ring.readInto(pos, frame.subarray(HEADER_SIZE));
      await conn.send(frame);
      viewer.advance(pos + len);
      continue;
    }
    if (!s.running) {
      const { status, exitCode, signal: sig } = s.meta;
      await sendEvent(conn, { type: "exit", status, exitCode, signal: sig });
      return;
    }
    viewer.progressAt = Date.now(); // caught up: idle, not stalled
    if (!view) {
      await Promise.race([s.changed(), aborted]);
      continue;
    }
    if (view.redraw) continue;
    await Promise.race([
      s.changed(),
      aborted,
      new Promise<void>((resolve) => view.wake = resolve),
    ]);
    view.wake = null;
  }
}

/** Bytes of a session's log read for its last line. */
const LAST_LINE_BYTES = 4096;

/** A session's last non-empty line of output, laid out for reading, at most 200 characters. */
async function lastLine(s: Session): Promise<string> {
  const reader = new LogReader(s.dir);
  try {
    const start = Math.max(0, reader.size - LAST_LINE_BYTES);
    const tail = await reader.readAt(start, reader.size - start);
    const text = new TextDecoder().decode(new AnsiStripper().push(tail));
    const lines = text.split("\n").map((l) => l.trim()).filter((l) => l !== "");
    return (lines.at(-1) ?? "").slice(0, 200);
  } finally {
    reader.close();
  }
}

function sendEvent(conn: FramedConn, event: StreamEvent): Promise<void> {
  return conn.sendJson(FrameKind.EVENT, event);
}

function onEvent(frame: Frame, resize: (cols: number, rows: number) => void): void {
  if (frame.kind !== FrameKind.EVENT) return;
  const e = frame.value;
  if (e.type === "resize") {
    const ok = (n: unknown) =>
      Number.isInteger(n) && (n as number) >= 1 && (n as number) <= PTY_MAX_SIZE;
    if (!ok(e.cols) || !ok(e.rows)) throw new CwError("bad_request", "Invalid resize event");
    resize(e.cols as number, e.rows as number);
  }
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new CwError("timeout", `No ${what} within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** `n` bytes in MiB for a person: "1 MiB", "1.5 MiB". */
function mebibytes(n: number): string {
  return `${Number((n / 2 ** 20).toFixed(1))} MiB`;
}

export type { SessionInfo };
