const ESC = 0x1b;
const BEL = 0x07;

const enum State {
  Text,
  Esc,
  Csi,
  Str, // OSC, DCS, SOS, PM, APC: until BEL or ESC \
  StrEsc,
}

/** Parameter bytes of one CSI kept to read a cursor movement; more are ignored. */
const MAX_PARAMS = 16;

/**
 * Removes terminal control sequences (CSI, OSC, DCS …) and control bytes
 * other than newline and tab from a byte stream, across chunk boundaries.
 * Carriage returns are dropped, so `\r\n` reads as `\n`. What remains is safe
 * to print: no clipboard writes, no terminal queries, no cursor games.
 *
 * Full-screen programs place text by moving the cursor rather than by
 * newlines; so that their output still reads as lines, a move to another row
 * (`CSI r;c H`, `CSI r d`, up, down, next line, index) becomes a line break and
 * a move along the row (`CSI n C`, `CSI c G`) a space. It is a layout for
 * reading, not a terminal model (`cw screen` renders one).
 */
export class AnsiStripper {
  #state = State.Text;
  #params: number[] = [];
  /** The row the cursor was last placed on by an absolute move, or -1. */
  #row = -1;
  /** The last byte written out, to avoid doubling breaks and spaces. */
  #last = 0x0a;

  /** Strips one chunk; state carries over to the next. */
  push(chunk: Uint8Array): Uint8Array {
    const out = new Uint8Array(chunk.byteLength * 2);
    let n = 0;
    const emit = (b: number) => {
      if (
        (b === 0x0a && this.#last === 0x0a) ||
        (b === 0x20 && (this.#last === 0x20 || this.#last === 0x0a))
      ) {
        return;
      }
      out[n++] = b;
      this.#last = b;
    };
    for (const b of chunk) {
      switch (this.#state) {
        case State.Text:
          if (b === ESC) this.#state = State.Esc;
          else if (b === 0x0a || b === 0x09 || b >= 0x20 && b !== 0x7f) {
            out[n++] = b;
            this.#last = b;
            if (b === 0x0a && this.#row >= 0) this.#row++;
          }
          break;
        case State.Esc:
          if (b === 0x5b) { // [
            this.#state = State.Csi;
            this.#params = [];
          } else if (b === 0x5d || b === 0x50 || b === 0x58 || b === 0x5e || b === 0x5f) {
            this.#state = State.Str; // ] P X ^ _
          } else if (b >= 0x20 && b <= 0x2f) this.#state = State.Esc; // intermediates, e.g. ESC ( B
          else {
            if (b === 0x44 || b === 0x45 || b === 0x4d) emit(0x0a); // IND, NEL, RI
            this.#state = State.Text;
          }
          break;
        case State.Csi:
          if (b >= 0x40 && b <= 0x7e) {
            this.#state = State.Text;
            this.#move(b, emit);
          } else if (this.#params.length < MAX_PARAMS) this.#params.push(b);
          break;
        case State.Str:
          if (b === BEL) this.#state = State.Text;
          else if (b === ESC) this.#state = State.StrEsc;
          break;
        case State.StrEsc:
          this.#state = b === 0x5c ? State.Text : State.Str;
          break;
      }
    }
    return out.subarray(0, n);
  }

  /** A CSI's cursor movement as layout: a line break, a space, or nothing. */
  #move(final: number, emit: (b: number) => void): void {
    const text = String.fromCharCode(...this.#params);
    if (/^[?<>=]/.test(text)) return; // private sequences move nothing
    const [first] = text.split(";").map((p) => Number(p) || 1);
    switch (final) {
      case 0x48: // H: cursor position (row;col)
      case 0x66: // f
      case 0x64: // d: row
        if (first !== this.#row) emit(0x0a);
        else emit(0x20);
        this.#row = first;
        break;
      case 0x41: // A: up
      case 0x42: // B: down
      case 0x45: // E: next line
      case 0x46: // F: previous line
        emit(0x0a);
        this.#row = -1;
        break;
      case 0x43: // C: forward
      case 0x47: // G: column
      case 0x60: // `: column
        emit(0x20);
        break;
      case 0x4a: // J: erase the screen
        if (first >= 2) emit(0x0a);
        break;
    }
  }
}
