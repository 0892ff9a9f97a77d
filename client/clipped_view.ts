/**
 * A program drawn at another size than the viewer's terminal, as tmux draws
 * a window larger or smaller than its client: `cw attach` keeps a terminal
 * model at the program's size (npm `@xterm/headless`, behind
 * shared/xterm.ts, loaded only when this is needed) and draws its screen
 * from the top-left, clipped to the viewer's terminal or padded with blank,
 * never re-wrapped. Only rows that changed are drawn again, at most one frame
 * per {@link FRAME_MS} while output streams; the program's input modes
 * (keys, mouse, paste, focus) are passed on, its cursor shown where it is
 * when that is inside the viewer's terminal.
 *
 * The viewer's terminal is on its alternate screen while this draws; the
 * caller tracks what is written (`out`) so that leaving resets it all.
 */

import { Terminal } from "../shared/xterm.ts";
import type { IBufferCell, IBufferLine } from "../shared/xterm_types.d.ts";
import { TerminalModes } from "../shared/term_modes.ts";

/** Least time between two frames while output streams. */
const FRAME_MS = 16;

/** Where the program's terminal and the viewer's differ in size; see the file's comment. */
export class ClippedView {
  #term: InstanceType<typeof Terminal>;
  /** The program's modes, read off its output (its input modes and cursor). */
  #program = new TerminalModes();
  /** The input modes written to the viewer's terminal. */
  #applied = new TerminalModes();
  #appliedInput = "";
  #viewer: { cols: number; rows: number };
  /** What each of the viewer's rows shows now (null: unknown, draw it). */
  #drawn: (string | null)[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #lastFrame = 0;
  #out: (text: string) => Promise<void>;
  #writing: Promise<void> = Promise.resolve();
  #closed = false;

  /** A view of a `cols`×`rows` program in a viewer's terminal of `viewer`'s size. */
  constructor(
    cols: number,
    rows: number,
    viewer: { cols: number; rows: number },
    out: (text: string) => Promise<void>,
  ) {
    this.#term = new Terminal({ cols, rows, scrollback: 0, allowProposedApi: true });
    this.#viewer = viewer;
    this.#out = out;
    // the viewer's terminal: its alternate screen, cleared
    this.#write("\x1b[?1049h\x1b[0m\x1b[H\x1b[2J");
  }

  /** Output of the program; resolves once the model has read it. */
  feed(bytes: Uint8Array | string): Promise<void> {
    this.#program.feed(typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes);
    return new Promise((resolve) =>
      this.#term.write(bytes, () => {
        this.#schedule();
        resolve();
      })
    );
  }

  /** The program's state as a snapshot (its terminal at `cols`×`rows`), replacing the model's. */
  load(snapshot: string, cols: number, rows: number): Promise<void> {
    this.#term.reset();
    this.#program = new TerminalModes();
    this.programResized(cols, rows);
    return this.feed(snapshot);
  }

  /** The program's terminal is now `cols`×`rows`. */
  programResized(cols: number, rows: number): void {
    if (this.#term.cols === cols && this.#term.rows === rows) return;
    this.#term.resize(cols, rows);
    this.#drawn = [];
    this.#schedule();
  }

  /** The viewer's terminal is now `cols`×`rows`. */
  viewerResized(cols: number, rows: number): void {
    this.#viewer = { cols, rows };
    this.#drawn = [];
    this.#write("\x1b[0m\x1b[H\x1b[2J");
    this.#schedule();
  }

  /** Stops drawing; resolves when what was written is out. */
  close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#term.dispose();
    return this.#writing;
  }

  #schedule(): void {
    if (this.#timer !== undefined || this.#closed) return;
    const wait = Math.max(0, this.#lastFrame + FRAME_MS - performance.now());
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#lastFrame = performance.now();
      this.#frame();
    }, wait);
  }

  #write(text: string): void {
    if (text === "") return;
    this.#writing = this.#writing.then(() => this.#out(text)).catch(() => {});
  }

  /** Draws the rows that changed, then the cursor and the input modes. */
  #frame(): void {
    if (this.#closed) return;
    const term = this.#term;
    const buffer = term.buffer.active;
    const cell = buffer.getNullCell();
    const width = Math.min(this.#viewer.cols, term.cols);
    let out = "";
    for (let y = 0; y < this.#viewer.rows; y++) {
      const row = y < term.rows ? rowText(buffer.getLine(buffer.baseY + y), cell, width) : "";
      if (this.#drawn[y] === row) continue;
      this.#drawn[y] = row;
      out += `\x1b[${y + 1};1H${row}\x1b[0m\x1b[K`;
    }
    const input = this.#program.inputModes();
    if (input !== this.#appliedInput) {
      out += this.#applied.inputReset() + input;
      this.#applied = this.#program.clone();
      this.#appliedInput = input;
    }
    const { cursorX: x, cursorY: y } = buffer;
    const shown = !this.#program.cursorHidden && x < this.#viewer.cols && y < this.#viewer.rows;
    out += shown ? `\x1b[${y + 1};${x + 1}H\x1b[?25h` : "\x1b[?25l";
    // drawn as one synchronized update where the terminal supports it
    this.#write(`\x1b[?2026h\x1b[?25l${out}\x1b[?2026l`);
  }
}

/**
 * The first `width` cells of a row as text with its attributes (SGR), the
 * trailing default blanks left out (the caller clears the rest of the row).
 */
export function rowText(line: IBufferLine | undefined, cell: IBufferCell, width: number): string {
  if (!line) return "";
  let out = "";
  let sgr = "";
  let blanks = "";
  for (let x = 0; x < width; x++) {
    line.getCell(x, cell);
    const w = cell.getWidth();
    if (w === 0) continue; // the second half of a wide character
    let ch = cell.getChars() || " ";
    if (w === 2 && x + 1 >= width) ch = " "; // a wide character cut by the edge
    const attrs = sgrOf(cell);
    if (ch === " " && attrs === "") {
      blanks += " ";
      continue;
    }
    if (blanks) {
      if (sgr !== "") out += "\x1b[0m";
      sgr = "";
      out += blanks;
      blanks = "";
    }
    if (attrs !== sgr) {
      out += `\x1b[0${attrs}m`;
      sgr = attrs;
    }
    out += ch;
  }
  return sgr ? out + "\x1b[0m" : out;
}

/** A cell's attributes as SGR parameters, each after a `;` ("" for the defaults). */
function sgrOf(c: IBufferCell): string {
  let s = "";
  if (c.isBold()) s += ";1";
  if (c.isDim()) s += ";2";
  if (c.isItalic()) s += ";3";
  if (c.isUnderline()) s += ";4";
  if (c.isBlink()) s += ";5";
  if (c.isInverse()) s += ";7";
  if (c.isInvisible()) s += ";8";
  if (c.isStrikethrough()) s += ";9";
  if (!c.isFgDefault()) s += color(c.isFgRGB(), c.getFgColor(), 30, 90, 38);
  if (!c.isBgDefault()) s += color(c.isBgRGB(), c.getBgColor(), 40, 100, 48);
  return s;
}

function color(rgb: boolean, c: number, base: number, bright: number, extended: number): string {
  if (rgb) return `;${extended};2;${(c >> 16) & 255};${(c >> 8) & 255};${c & 255}`;
  if (c < 8) return `;${base + c}`;
  if (c < 16) return `;${bright + c - 8}`;
  return `;${extended};5;${c}`;
}
