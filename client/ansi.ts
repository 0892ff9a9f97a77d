const ESC = 0x1b;
const BEL = 0x07;

const enum State {
  Text,
  Esc,
  Csi,
  Str, // OSC, DCS, SOS, PM, APC: until BEL or ESC \
  StrEsc,
}

/**
 * Removes terminal control sequences (CSI, OSC, DCS …) and control bytes
 * other than newline and tab from a byte stream, across chunk boundaries.
 * Carriage returns are dropped, so `\r\n` reads as `\n`. What remains is safe
 * to print: no clipboard writes, no terminal queries, no cursor games.
 */
export class AnsiStripper {
  #state = State.Text;

  /** Strips one chunk; state carries over to the next. */
  push(chunk: Uint8Array): Uint8Array {
    const out = new Uint8Array(chunk.byteLength);
    let n = 0;
    for (const b of chunk) {
      switch (this.#state) {
        case State.Text:
          if (b === ESC) this.#state = State.Esc;
          else if (b === 0x0a || b === 0x09 || b >= 0x20 && b !== 0x7f) out[n++] = b;
          break;
        case State.Esc:
          if (b === 0x5b) this.#state = State.Csi; // [
          else if (b === 0x5d || b === 0x50 || b === 0x58 || b === 0x5e || b === 0x5f) {
            this.#state = State.Str; // ] P X ^ _
          } else if (b >= 0x20 && b <= 0x2f) this.#state = State.Esc; // intermediates, e.g. ESC ( B
          else this.#state = State.Text;
          break;
        case State.Csi:
          if (b >= 0x40 && b <= 0x7e) this.#state = State.Text;
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
}
