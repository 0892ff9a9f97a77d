/**
 * The terminal modes a program turned on through `cw attach`, read off the
 * bytes the client writes to its terminal, so that detaching (or the session
 * ending, or the connection dropping) can turn exactly those off again — as
 * tmux's client does — and the user's shell gets its terminal back as it
 * was: main screen, cursor shown, no mouse reporting, normal keys.
 *
 * Tracked: DEC private modes (alternate screen 47/1047/1049, cursor keys 1,
 * origin 6, autowrap 7, cursor visibility 25, mouse 9/1000-1003/1005/1006/
 * 1015/1016, focus 1004, bracketed paste 2004, synchronized output 2026),
 * the keypad (`ESC =`), the kitty keyboard protocol's pushes and flags
 * (`CSI > n u`, `CSI = n u`), xterm's modifyOtherKeys (`CSI > 4 ; n m`), the
 * scroll region (`CSI t ; b r`) and the cursor style (`CSI n SP q`).
 * Character sets and attributes are always reset.
 */

import { concat } from "./bytes.ts";

/** Longest escape sequence held across two chunks; longer ones are not modes. */
const MAX_HELD = 64;

/** DEC private modes that are off by default: set means a detach must reset. */
const OFF_BY_DEFAULT = new Set([
  1,
  6,
  9,
  47,
  1000,
  1001,
  1002,
  1003,
  1004,
  1005,
  1006,
  1015,
  1016,
  1047,
  1049,
  2004,
  2026,
]);
/** DEC private modes that are on by default: reset means a detach must set. */
const ON_BY_DEFAULT = new Set([7, 25]);

/** Tracks modes from output; see the file's comment. */
export class TerminalModes {
  /** Modes that differ from the terminal's default now. */
  #changed = new Set<number>();
  #keypad = false;
  #kittyPushes = 0;
  /** The flags of the last few kitty pushes, most recent last (to restore them). */
  #kittyStack: number[] = [];
  #kittyFlags = false;
  #kittyFlagsValue = 0;
  #modifyOtherKeys = false;
  #modifyOtherKeysLevel = 0;
  #scrollRegion = false;
  #scrollRegionValue = "";
  #cursorStyle = false;
  #cursorStyleValue = 0;
  #held: Uint8Array | null = null;

  /** Reads one chunk of output on its way to the terminal. */
  feed(chunk: Uint8Array): void {
    const data = this.#held ? concat([this.#held, chunk]) : chunk;
    this.#held = null;
    let at = data.indexOf(0x1b);
    while (at !== -1) {
      const end = this.#sequence(data, at);
      if (end === -1) {
        // cut by the chunk's end: keep it for the next chunk, if it is short
        if (data.byteLength - at <= MAX_HELD) this.#held = data.slice(at);
        return;
      }
      at = data.indexOf(0x1b, end);
    }
  }

  /** Bytes of a sequence cut by the last chunk's end, held for the next one. */
  get held(): number {
    return this.#held?.byteLength ?? 0;
  }

  /** An independent copy of this tracker's state. */
  clone(): TerminalModes {
    const c = new TerminalModes();
    c.#changed = new Set(this.#changed);
    c.#keypad = this.#keypad;
    c.#kittyPushes = this.#kittyPushes;
    c.#kittyStack = [...this.#kittyStack];
    c.#kittyFlags = this.#kittyFlags;
    c.#kittyFlagsValue = this.#kittyFlagsValue;
    c.#modifyOtherKeys = this.#modifyOtherKeys;
    c.#modifyOtherKeysLevel = this.#modifyOtherKeysLevel;
    c.#scrollRegion = this.#scrollRegion;
    c.#scrollRegionValue = this.#scrollRegionValue;
    c.#cursorStyle = this.#cursorStyle;
    c.#cursorStyleValue = this.#cursorStyleValue;
    c.#held = this.#held;
    return c;
  }

  /**
   * The bytes that put a fresh terminal (a model) into these modes: the
   * alternate screen first (so what follows is drawn on it), then the DEC
   * modes, the keypad, the scroll region and {@link restoreExtras}.
   */
  restoreAll(): string {
    const c = this.#changed;
    let out = "";
    for (const m of [1049, 1047, 47]) {
      if (c.has(m)) {
        out += `\x1b[?${m}h`;
        break;
      }
    }
    for (const m of c) {
      if (m === 1049 || m === 1047 || m === 47) continue;
      out += ON_BY_DEFAULT.has(m) ? `\x1b[?${m}l` : `\x1b[?${m}h`;
    }
    if (this.#scrollRegion) out += `\x1b[${this.#scrollRegionValue}r`;
    return out + this.restoreExtras();
  }

  /** Whether any mode is on that the terminal would not have by default. */
  get dirty(): boolean {
    return this.#changed.size > 0 || this.#keypad || this.#kittyPushes > 0 || this.#kittyFlags ||
      this.#modifyOtherKeys || this.#scrollRegion || this.#cursorStyle;
  }

  /**
   * The bytes that turn every tracked mode back to the terminal's default,
   * leaving the cursor where the program's main screen had it.
   */
  reset(): string {
    const c = this.#changed;
    let out = "";
    if (c.has(2026)) out += "\x1b[?2026l";
    out += this.inputReset();
    if (c.has(6)) out += "\x1b[?6l";
    // DECSTBM homes the cursor: keep it where it is
    if (this.#scrollRegion) out += "\x1b7\x1b[r\x1b8";
    if (this.#cursorStyle) out += "\x1b[0 q";
    out += "\x1b[0m\x1b(B\x0f"; // attributes, and the ASCII character set in G0
    // leaving the alternate screen last restores the shell's screen and cursor
    for (const m of [1049, 1047, 47]) if (c.has(m)) out += `\x1b[?${m}l`;
    if (c.has(25)) out += "\x1b[?25h";
    if (c.has(7)) out += "\x1b[?7h";
    return out;
  }

  /** Whether the program hid the cursor. */
  get cursorHidden(): boolean {
    return this.#changed.has(25);
  }

  /**
   * The bytes that put a terminal in this program's input modes — what its
   * keys, mouse, paste and focus send: cursor keys, keypad, mouse reporting
   * and its encodings, focus events, bracketed paste, the kitty keyboard
   * flags and modifyOtherKeys (for a client that draws the program itself
   * and passes only these on).
   */
  inputModes(): string {
    const c = this.#changed;
    let out = c.has(1) ? "\x1b[?1h" : "";
    if (this.#keypad) out += "\x1b=";
    for (const m of [9, 1000, 1001, 1002, 1003, 1005, 1006, 1015, 1016, 1004, 2004]) {
      if (c.has(m)) out += `\x1b[?${m}h`;
    }
    const pushed = this.#kittyPushes > 0 ? this.#kittyStack.slice(-this.#kittyPushes) : [];
    for (const f of pushed) out += `\x1b[>${f}u`;
    if (this.#kittyFlags) out += `\x1b[=${this.#kittyFlagsValue};1u`;
    if (this.#modifyOtherKeys) out += `\x1b[>4;${this.#modifyOtherKeysLevel}m`;
    return out;
  }

  /** The bytes that turn off the input modes {@link inputModes} turns on. */
  inputReset(): string {
    const c = this.#changed;
    let out = "";
    for (const m of [9, 1000, 1001, 1002, 1003, 1005, 1006, 1015, 1016, 1004, 2004, 1]) {
      if (c.has(m)) out += `\x1b[?${m}l`;
    }
    if (this.#keypad) out += "\x1b>";
    if (this.#kittyPushes > 0) out += `\x1b[<${this.#kittyPushes}u`;
    if (this.#kittyFlags) out += "\x1b[=0;1u";
    if (this.#modifyOtherKeys) out += "\x1b[>4m";
    return out;
  }

  /**
   * The bytes that turn on again what a terminal model's snapshot does not
   * carry (node/screen.ts: xterm's serializer restores the screens, cursor
   * keys, keypad, mouse tracking, focus and paste modes): the hidden cursor,
   * the mouse encodings, the kitty keyboard flags, modifyOtherKeys and the
   * cursor style.
   */
  restoreExtras(): string {
    const c = this.#changed;
    let out = "";
    if (c.has(25)) out += "\x1b[?25l";
    // the serializer's keypad is DECNKM (`CSI ? 66 h`), which not every terminal reads
    if (this.#keypad) out += "\x1b=";
    for (const m of [1005, 1006, 1015, 1016]) if (c.has(m)) out += `\x1b[?${m}h`;
    const pushed = this.#kittyPushes > 0 ? this.#kittyStack.slice(-this.#kittyPushes) : [];
    for (const f of pushed) out += `\x1b[>${f}u`;
    if (this.#kittyFlags) out += `\x1b[=${this.#kittyFlagsValue};1u`;
    if (this.#modifyOtherKeys) out += `\x1b[>4;${this.#modifyOtherKeysLevel}m`;
    if (this.#cursorStyle) out += `\x1b[${this.#cursorStyleValue} q`;
    return out;
  }

  /** Forgets every mode (after {@link reset} was written). */
  clear(): void {
    this.#changed.clear();
    this.#keypad = this.#kittyFlags = this.#modifyOtherKeys = false;
    this.#scrollRegion = this.#cursorStyle = false;
    this.#kittyPushes = 0;
    this.#kittyStack = [];
    this.#held = null;
  }

  /** Parses the sequence at `at` (an ESC); returns where it ends, or -1 if cut short. */
  #sequence(d: Uint8Array, at: number): number {
    if (at + 1 >= d.byteLength) return -1;
    const kind = d[at + 1];
    if (kind === 0x3d) { // ESC =
      this.#keypad = true;
      return at + 2;
    }
    if (kind === 0x3e) { // ESC >
      this.#keypad = false;
      return at + 2;
    }
    if (kind !== 0x5b) return at + 1; // not a CSI: nothing tracked
    let i = at + 2;
    let prefix = 0;
    if (i < d.byteLength && d[i] >= 0x3c && d[i] <= 0x3f) prefix = d[i++];
    const paramsStart = i;
    while (i < d.byteLength && d[i] >= 0x30 && d[i] <= 0x3f) i++;
    const paramsEnd = i;
    let intermediate = 0;
    while (i < d.byteLength && d[i] >= 0x20 && d[i] <= 0x2f) intermediate = d[i++];
    if (i >= d.byteLength) return i - at > MAX_HELD ? i : -1;
    const final = d[i];
    if (final < 0x40 || final > 0x7e) return i; // malformed: resume scanning here
    // only a few finals can change a tracked mode: the common SGR (`m`) and cursor moves
    // are passed over without reading their parameters
    if (
      final === 0x68 || final === 0x6c || final === 0x75 || final === 0x72 || final === 0x71 ||
      (final === 0x6d && prefix === 0x3e)
    ) {
      this.#csi(prefix, d.subarray(paramsStart, paramsEnd), intermediate, final);
    }
    return i + 1;
  }

  #csi(prefix: number, raw: Uint8Array, intermediate: number, final: number): void {
    const params = raw.byteLength === 0
      ? []
      : String.fromCharCode(...raw).split(";").map((p) => p === "" ? 0 : Number(p) || 0);
    if (prefix === 0x3f && (final === 0x68 || final === 0x6c)) { // CSI ? … h / l
      const set = final === 0x68;
      for (const m of params) {
        if (OFF_BY_DEFAULT.has(m)) set ? this.#changed.add(m) : this.#changed.delete(m);
        else if (ON_BY_DEFAULT.has(m)) set ? this.#changed.delete(m) : this.#changed.add(m);
      }
    } else if (final === 0x75) { // u: the kitty keyboard protocol
      if (prefix === 0x3e) this.#kittyPushes = Math.min(this.#kittyPushes + 1, 64);
      else if (prefix === 0x3c) {
        this.#kittyPushes = Math.max(0, this.#kittyPushes - (params[0] || 1));
      } else if (prefix === 0x3d) this.#kittyFlags = (params[0] ?? 0) !== 0;
    } else if (prefix === 0x3e && final === 0x6d) { // CSI > 4 ; n m
      if (params[0] === 4) this.#modifyOtherKeys = (params[1] ?? 0) !== 0;
    } else if (prefix === 0 && intermediate === 0 && final === 0x72) { // CSI t ; b r
      this.#scrollRegion = params.length > 0 && !(params.length === 1 && params[0] === 0);
      this.#scrollRegionValue = params.slice(0, 2).join(";");
    } else if (prefix === 0 && intermediate === 0x20 && final === 0x71) { // CSI n SP q
      this.#cursorStyleValue = params[0] ?? 0;
      this.#cursorStyle = this.#cursorStyleValue !== 0;
    }
  }
}
