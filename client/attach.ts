import { FrameKind, type SessionInfo, type StreamEvent } from "../shared/protocol.ts";
import { CwError } from "../shared/errors.ts";
import type { FramedConn } from "../shared/framed.ts";
import type { NodeClient } from "./node_client.ts";
import { exitCodeOf, LOST_EXIT_CODE } from "./exit_code.ts";
import { concat, writeAll, writeOut } from "./io.ts";
import { TerminalModes } from "../shared/term_modes.ts";
import { QueryFilter } from "./query_filter.ts";
import { acknowledge, REMOTE_WINDOW } from "./ack.ts";
import type { ClippedView } from "./clipped_view.ts";

/** The detach prefix: Ctrl+B, as in tmux. */
const PREFIX = 0x02;
const DETACH_KEY = 0x64; // d

/** Options of `cw attach`. */
export interface AttachOptions {
  readOnly: boolean;
  history: boolean;
  /**
   * Ask for the terminal's state rendered by the node (this many lines of
   * scrollback) instead of the raw history; a node that cannot sends the raw history.
   */
  snapshot?: number;
  /** Reconnect and resume after a lost connection (remote targets). */
  resume?: boolean;
}

/**
 * Splits keyboard input into what goes to the session and a detach request.
 * Ctrl+B d detaches, Ctrl+B Ctrl+B sends one Ctrl+B, Ctrl+B followed by any
 * other key sends both. The prefix may end one read and its key start the next.
 */
export class DetachKeys {
  #pending = false;

  /** Returns the bytes to forward and whether to detach. */
  feed(input: Uint8Array): { forward: Uint8Array; detach: boolean } {
    const out: number[] = [];
    for (const b of input) {
      if (this.#pending) {
        this.#pending = false;
        if (b === DETACH_KEY) return { forward: new Uint8Array(out), detach: true };
        if (b === PREFIX) out.push(PREFIX);
        else out.push(PREFIX, b);
      } else if (b === PREFIX) {
        this.#pending = true;
      } else {
        out.push(b);
      }
    }
    return { forward: new Uint8Array(out), detach: false };
  }
}

/** How long a remote attach keeps trying to get back after a network loss. */
const RESUME_WINDOW_MS = 60_000;

/**
 * Attaches the terminal to a session: raw mode, history replay, live output,
 * input, size following the terminal. Resolves to the process exit code: the
 * session's when it ends, 0 on detach. With `resume` (remote targets), a lost
 * connection is re-opened from the byte offset already shown, so nothing is
 * lost or shown twice while the node's ring still holds it.
 */
export async function attach(
  client: NodeClient,
  ref: string,
  opts: AttachOptions,
): Promise<number> {
  const tty = Deno.stdin.isTerminal();
  const first = await client.stream({
    op: "attach",
    session: ref,
    readOnly: opts.readOnly,
    history: opts.history,
    window: opts.resume ? REMOTE_WINDOW : undefined,
    snapshot: opts.snapshot,
    ...consoleSize(),
  });
  const info = first.response.session as SessionInfo;
  const terminal = Deno.stdout.isTerminal();
  const viewer = terminal ? consoleSize() : undefined;
  const state: Stream = {
    conn: first.conn,
    offset: first.response.offset as number,
    ack: opts.resume === true,
    // what the program turns on in this terminal is turned off again when we leave it
    modes: terminal ? new TerminalModes() : null,
    view: null,
    program: sizeOf(first.response.size),
    sent: viewer && !opts.readOnly ? [viewer] : [],
    readOnly: opts.readOnly,
    ...replayOf(first.response),
  };
  if (tty) Deno.stdin.setRaw(true);
  if (viewer && state.program && !sameSize(viewer, state.program)) {
    // the program's terminal is not this one's size: draw it clipped, never re-wrapped
    await startView(state, state.program);
  }
  const snapshot = first.response.snapshot;
  if (typeof snapshot === "string") {
    // the terminal's state as the node's model has it: screen, scrollback, modes, no queries
    if (state.view) await state.view.feed(snapshot);
    else await show(state, new TextEncoder().encode(snapshot));
  }
  const onResize = () => {
    const s = consoleSize();
    if (!s) return;
    state.view?.viewerResized(s.cols, s.rows);
    if (!opts.readOnly) {
      state.sent = [...state.sent.slice(-7), s];
      state.conn.sendJson(FrameKind.EVENT, { type: "resize", ...s } satisfies StreamEvent).catch(
        () => {},
      );
    } else if (!state.view && state.program && !sameSize(s, state.program)) askRedraw(state);
  };
  if (tty) Deno.addSignalListener("SIGWINCH", onResize);
  try {
    const detached = readInput(state, opts.readOnly);
    while (true) {
      const result = await Promise.race([detached, readOutput(state)]);
      if (result === "detach") {
        await leaveTerminal(state);
        restore(tty);
        console.error(`\n[detached from session ${info.id}]`);
        return 0;
      }
      if (result === "lost" && opts.resume && await reconnect(client, info.id, state, opts)) {
        continue;
      }
      await leaveTerminal(state);
      restore(tty);
      if (result === "lost") {
        // the node is gone (or unreachable for the whole resume window): the
        // session's fate is unknown, which reads as "lost" to scripts
        console.error(`\ncw: lost the connection to the node while attached to session ${info.id}`);
        return LOST_EXIT_CODE;
      }
      console.error(`\n[session ${info.id} ${describeEnd(result)}]`);
      return exitCodeOf(result);
    }
  } finally {
    await state.view?.close();
    await leaveTerminal(state).catch(() => {});
    restore(tty);
    if (tty) Deno.removeSignalListener("SIGWINCH", onResize);
    state.conn.close();
  }
}

/** The current connection of an attach and the next output offset it expects. */
interface Stream {
  conn: FramedConn;
  offset: number;
  /** Acknowledge output (remote transports). */
  ack: boolean;
  /** Modes the program set in our terminal (null: stdout is not a terminal). */
  modes: TerminalModes | null;
  /** Output before this offset is history: its terminal queries are removed. */
  live: number;
  replay: QueryFilter | null;
  /** Draws the program when its size is not this terminal's (null: output goes straight out). */
  view: ClippedView | null;
  /** The program's terminal size, as the node last said. */
  program: { cols: number; rows: number } | null;
  /** Sizes this viewer asked for lately (a size event of one of them is ours). */
  sent: { cols: number; rows: number }[];
  readOnly: boolean;
  /** A `redraw` was asked and its `screen` has not come yet. */
  redrawing?: boolean;
}

/**
 * Most cells of a program this client draws with a model of its own (~12 bytes each): a
 * larger one (or a node that says so) is shown as its bytes come.
 */
const VIEW_MAX_CELLS = 2_000_000;

function sizeOf(v: unknown): { cols: number; rows: number } | null {
  const s = v as { cols?: unknown; rows?: unknown } | null;
  return s && Number.isInteger(s.cols) && Number.isInteger(s.rows) && (s.cols as number) > 0 &&
      (s.rows as number) > 0 && (s.cols as number) * (s.rows as number) <= VIEW_MAX_CELLS
    ? { cols: s.cols as number, rows: s.rows as number }
    : null;
}

function sameSize(a: { cols: number; rows: number }, b: { cols: number; rows: number }): boolean {
  return a.cols === b.cols && a.rows === b.rows;
}

/** Writes output to the terminal as it is, noting the modes it sets. */
async function show(state: Stream, bytes: Uint8Array): Promise<void> {
  state.modes?.feed(bytes);
  await writeOut(bytes);
}

/**
 * From now on the program is drawn by a model at its own size. The terminal
 * is first reset to clean (the modes raw output left on), then the view takes it.
 */
async function startView(state: Stream, size: { cols: number; rows: number }): Promise<void> {
  const viewer = consoleSize() ?? size;
  if (state.modes?.dirty) {
    const reset = state.modes.reset();
    state.modes = new TerminalModes();
    await writeAll(Deno.stdout, new TextEncoder().encode(reset));
  }
  const { ClippedView } = await import("./clipped_view.ts");
  const encoder = new TextEncoder();
  state.view = new ClippedView(size.cols, size.rows, viewer, (text) => {
    const bytes = encoder.encode(text);
    state.modes?.feed(bytes);
    return writeOut(bytes);
  });
}

/** Asks the node for the program's state (answered by a `screen` event). */
function askRedraw(state: Stream): void {
  if (state.redrawing) return;
  state.redrawing = true;
  state.conn.sendJson(FrameKind.EVENT, { type: "redraw" } satisfies StreamEvent).catch(() => {});
}

/** The history part of an attach: from its offset to the node's `live` offset. */
function replayOf(response: Record<string, unknown>): Pick<Stream, "live" | "replay"> {
  const live = Number.isSafeInteger(response.live) ? response.live as number : 0;
  return { live, replay: live > (response.offset as number) ? new QueryFilter() : null };
}

/** What of `bytes` (output at `state.offset`) goes to the terminal: history without its queries. */
function shown(state: Stream, bytes: Uint8Array): Uint8Array {
  if (!state.replay) return bytes;
  const history = Math.min(bytes.byteLength, state.live - state.offset);
  if (history <= 0) return bytes;
  const parts = [state.replay.push(bytes.subarray(0, history))];
  if (history < bytes.byteLength || state.offset + history >= state.live) {
    parts.push(state.replay.flush(), bytes.subarray(history));
    state.replay = null;
  }
  return parts.length === 1 ? parts[0] : concat(parts);
}

/** Turns off every mode the program left on, so the shell gets its terminal back. */
async function leaveTerminal(state: Stream): Promise<void> {
  const modes = state.modes;
  if (!modes) return;
  state.modes = null; // once
  await writeAll(Deno.stdout, new TextEncoder().encode(modes.reset()));
}

/** Re-opens a remote attach from `state.offset`; false when it cannot within the window. */
async function reconnect(
  client: NodeClient,
  id: number,
  state: Stream,
  opts: AttachOptions,
): Promise<boolean> {
  state.conn.close();
  const note = (text: string) =>
    writeAll(Deno.stderr, new TextEncoder().encode(`\r\n[cw: ${text}]\r\n`));
  await note("connection lost; reconnecting");
  const deadline = Date.now() + RESUME_WINDOW_MS;
  for (let delay = 100; Date.now() < deadline; delay = Math.min(delay * 2, 2000)) {
    try {
      const { response, conn } = await client.stream({
        op: "attach",
        session: String(id),
        readOnly: opts.readOnly,
        from: state.offset,
        window: REMOTE_WINDOW,
        ...consoleSize(),
      });
      const skipped = (response.skipped as number) ?? 0;
      state.conn = conn;
      state.offset = response.offset as number;
      Object.assign(state, replayOf(response));
      await note(
        skipped > 0
          ? `reconnected; ${skipped} bytes were no longer held and are skipped`
          : "reconnected",
      );
      return true;
    } catch (err) {
      // the session itself is gone, or this credential was revoked: no point in retrying
      if (
        err instanceof CwError &&
        ["not_found", "not_running", "unauthorized", "forbidden"].includes(err.code)
      ) {
        await note(`cannot reconnect: ${err.message}`);
        return false;
      }
      await new Promise((r) => setTimeout(r, delay));
    }
  }
  return false;
}

function restore(tty: boolean): void {
  if (!tty) return;
  try {
    Deno.stdin.setRaw(false);
  } catch {
    // stdin is gone
  }
}

function consoleSize(): { cols: number; rows: number } | undefined {
  try {
    const { columns, rows } = Deno.consoleSize();
    return columns > 0 && rows > 0 ? { cols: columns, rows } : undefined;
  } catch {
    return undefined;
  }
}

type End = Pick<SessionInfo, "status" | "exitCode" | "signal">;

async function readOutput(state: Stream): Promise<End | "lost"> {
  const conn = state.conn;
  while (true) {
    const frame = await conn.next().catch(() => null);
    if (!frame) return "lost";
    if (frame.kind === FrameKind.DATA) {
      const more = conn.takeQueuedData();
      const bytes = more.length ? concat([frame.bytes, ...more]) : frame.bytes;
      const out = shown(state, bytes);
      if (state.view) await state.view.feed(out);
      else await show(state, out);
      state.offset += bytes.byteLength;
      if (state.ack) await acknowledge(conn, bytes.byteLength);
    } else if (frame.kind === FrameKind.EVENT) {
      const e = frame.value as StreamEvent;
      if (e.type === "exit") return e;
      if (e.type === "size") {
        const size = sizeOf(e);
        if (!size) continue;
        state.program = size;
        if (state.view) state.view.programResized(size.cols, size.rows);
        else if (state.modes && !state.sent.some((s) => sameSize(s, size))) {
          // another viewer's size (or a read-only view): the program is drawn here from its state
          const mine = consoleSize();
          if (mine && !sameSize(mine, size)) askRedraw(state);
        }
      }
      if (e.type === "screen" && typeof e.snapshot === "string") {
        const size = sizeOf(e);
        if (!size || !Number.isSafeInteger(e.offset) || e.offset < state.offset) continue;
        state.redrawing = false;
        state.program = size;
        state.offset = e.offset;
        state.replay = null;
        if (!state.view) await startView(state, size);
        await state.view!.load(e.snapshot, size.cols, size.rows);
      }
      if (e.type === "skipped") {
        state.offset = e.offset;
        await writeAll(
          Deno.stdout,
          new TextEncoder().encode(`\r\n[cw: ${e.bytes} bytes skipped]\r\n`),
        );
      }
    } else if (frame.kind === FrameKind.ERROR) {
      return "lost";
    }
  }
}

async function readInput(state: Stream, readOnly: boolean): Promise<"detach"> {
  const keys = new DetachKeys();
  const buf = new Uint8Array(16 * 1024);
  while (true) {
    const n = await Deno.stdin.read(buf);
    if (n === null) return new Promise<never>(() => {}); // no more input; keep watching output
    const { forward, detach } = keys.feed(buf.subarray(0, n));
    if (forward.byteLength > 0 && !readOnly) {
      await state.conn.sendData(forward).catch(() => {}); // lost while reconnecting
    }
    if (detach) return "detach";
  }
}

function describeEnd(end: End): string {
  if (end.status === "exited") return `exited with code ${end.exitCode}`;
  if (end.status === "killed") return `was killed by ${end.signal}`;
  return end.status;
}
