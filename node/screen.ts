/**
 * What a session's program shows right now, rendered by a terminal model:
 * npm `@xterm/headless` (and `@xterm/addon-serialize` for `--ansi`), the
 * only file that touches them. Loaded on first use, so a node that is never
 * asked for a screen does not pay for it.
 *
 * The model is built on demand from the end of the session's output (at most
 * {@link SCREEN_SOURCE_BYTES}) at the session's current size. That is exact
 * whenever that much output holds the program's last full redraw — always for
 * full-screen programs that redraw, and for line programs whose screen is their
 * last lines. (A model per session, fed live, is planned: see the README.)
 */

/** Most output fed to the model to render one screen. */
export const SCREEN_SOURCE_BYTES = 1024 * 1024;

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

// deno-lint-ignore no-explicit-any
type XtermTerminal = any;
let loaded:
  | Promise<{ Terminal: new (o: object) => XtermTerminal; Serialize: new () => object }>
  | null = null;

function load() {
  loaded ??= (async () => {
    const xterm = await import("@xterm/headless");
    const serialize = await import("@xterm/addon-serialize");
    // the package is CommonJS: its exports come as the default export
    const mod = (xterm as { default?: unknown }).default ?? xterm;
    const ser = (serialize as { default?: unknown }).default ?? serialize;
    return {
      Terminal: (mod as { Terminal: new (o: object) => XtermTerminal }).Terminal,
      Serialize: (ser as { SerializeAddon: new () => object }).SerializeAddon,
    };
  })();
  return loaded;
}

/** Renders `output` (the end of a session's output) on a `cols`×`rows` terminal. */
export async function renderScreen(
  output: Uint8Array,
  cols: number,
  rows: number,
  opts: { ansi?: boolean } = {},
): Promise<ScreenView> {
  const { Terminal, Serialize } = await load();
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
      const addon = new Serialize();
      term.loadAddon(addon);
      ansi = (addon as { serialize(o: object): string }).serialize({ scrollback: 0 });
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
}
