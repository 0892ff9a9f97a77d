/**
 * What a session's program shows right now, rendered by a terminal model
 * (npm `@xterm/headless` behind node/xterm.ts, loaded on first use, so a node
 * that is never asked for a screen does not pay for it).
 *
 * The model is built on demand from the end of the session's output (at most
 * {@link SCREEN_SOURCE_BYTES}) at the session's current size. That is exact
 * whenever that much output holds the program's last full redraw — always for
 * full-screen programs that redraw, and for line programs whose screen is their
 * last lines. (A model per session, fed live, is planned: see the README.)
 */

/** Most output fed to the model to render one screen. */
export const SCREEN_SOURCE_BYTES = 1024 * 1024;

import { CwError } from "../shared/errors.ts";

/** A rendered screen. */
export interface ScreenView {
  cols: number;
  rows: number;
  /** One string per row, trailing blanks trimmed (as `tmux capture-pane -p`). */
  lines: string[];
  cursor: { x: number; y: number };
  /** The program is on the alternate screen (a full-screen program). */
  alternate: boolean;
  /** The window title the program set, if any. */
  title: string;
  /** The screen with colours and attributes as escape sequences (only when asked). */
  ansi?: string;
}

let loaded: Promise<typeof import("./xterm.ts")> | null = null;

/** The model's module, loaded once, on first use. */
function load(): Promise<typeof import("./xterm.ts")> {
  return loaded ??= import("./xterm.ts");
}

/** Renders `output` (the end of a session's output) on a `cols`×`rows` terminal. */
export function renderScreen(
  output: Uint8Array,
  cols: number,
  rows: number,
  opts: { ansi?: boolean } = {},
): Promise<ScreenView> {
  return oneAtATime(async () => {
    const { Terminal, SerializeAddon } = await load();
    const term = new Terminal({ cols, rows, scrollback: 0, allowProposedApi: true });
    try {
      let title = "";
      term.onTitleChange((t: string) => title = t.slice(0, 256));
      // queries in the output are answered into nothing: the model has no program to type into
      await new Promise<void>((resolve) => term.write(output, resolve));
      const buffer = term.buffer.active;
      const lines: string[] = [];
      for (let y = 0; y < rows; y++) {
        lines.push(buffer.getLine(buffer.baseY + y)?.translateToString(true) ?? "");
      }
      let ansi: string | undefined;
      if (opts.ansi) {
        const addon = new SerializeAddon();
        term.loadAddon(addon);
        ansi = addon.serialize({ scrollback: 0 });
      }
      return {
        cols,
        rows,
        lines,
        cursor: { x: buffer.cursorX, y: buffer.cursorY },
        alternate: buffer.type === "alternate",
        title,
        ansi,
      };
    } finally {
      term.dispose();
    }
  });
}

/** Most characters of a snapshot: it travels in one JSON frame (MAX_JSON_PAYLOAD, 256 KiB). */
export const SNAPSHOT_MAX_CHARS = 192 * 1024;
/** Most lines of scrollback a viewer may ask for. */
export const SNAPSHOT_MAX_SCROLLBACK = 10_000;
/**
 * Most cells (scrollback and screen) of one rendering: the model holds ~12
 * bytes per cell, so this bounds one rendering near 24 MiB however wide the
 * session or long the history asked for.
 */
export const SNAPSHOT_MAX_CELLS = 2_000_000;

/**
 * Renderings waiting at most: more are refused (`rate_limited`), so that a
 * client asking for screens in a loop cannot keep the node's thread busy
 * for everyone else.
 */
export const MAX_QUEUED_RENDERINGS = 8;

/** Renderings run one at a time (they are CPU-bound on the node's thread anyway). */
let queue: Promise<unknown> = Promise.resolve();
let queued = 0;
function oneAtATime<T>(fn: () => Promise<T>): Promise<T> {
  if (queued >= MAX_QUEUED_RENDERINGS) {
    return Promise.reject(
      new CwError("rate_limited", "The node is busy rendering screens; try again shortly"),
    );
  }
  queued++;
  const run = queue.then(fn, fn).finally(() => queued--);
  queue = run.catch(() => {});
  return run;
}

/**
 * The last rendering of each key (session, output offset, size, options):
 * asking again for an idle session's screen costs nothing. Bounded in entries.
 */
const MEMO_MAX = 64;
const memo = new Map<string, Promise<unknown>>();

/** `render()`'s result for `key`, made once while the key holds. */
export function memoized<T>(key: string, render: () => Promise<T>): Promise<T> {
  const hit = memo.get(key);
  if (hit) return hit as Promise<T>;
  const made = render();
  made.catch(() => memo.delete(key));
  if (memo.size >= MEMO_MAX) memo.delete(memo.keys().next().value!);
  memo.set(key, made);
  return made;
}

/**
 * The state of a session's terminal as bytes a viewer's terminal can be
 * given instead of the raw history: `scrollback` lines above the screen (as
 * many as fit in {@link SNAPSHOT_MAX_CHARS}), the screen, the cursor, and the
 * modes (the alternate screen, keys, mouse, paste and focus from the model;
 * the rest from `extras`, read off the same output by shared/term_modes.ts).
 * Built from the end of the output, like {@link renderScreen}; it holds no
 * terminal query, so a viewer's terminal never answers an old one.
 */
export function renderSnapshot(
  output: Uint8Array,
  cols: number,
  rows: number,
  scrollback: number,
  extras: string,
): Promise<string> {
  return oneAtATime(async () => {
    const { Terminal, SerializeAddon } = await load();
    const fits = Math.max(0, Math.floor(SNAPSHOT_MAX_CELLS / cols) - rows);
    const lines = Math.max(0, Math.min(scrollback, SNAPSHOT_MAX_SCROLLBACK, fits));
    const term = new Terminal({ cols, rows, scrollback: lines, allowProposedApi: true });
    try {
      await new Promise<void>((resolve) => term.write(output, resolve));
      const addon = new SerializeAddon();
      term.loadAddon(addon);
      for (let n = lines;; n = Math.floor(n / 2)) {
        const text = addon.serialize({ scrollback: n });
        if (text.length + extras.length <= SNAPSHOT_MAX_CHARS || n === 0) {
          return text.slice(-SNAPSHOT_MAX_CHARS) + extras;
        }
      }
    } finally {
      term.dispose();
    }
  });
}
