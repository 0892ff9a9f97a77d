/**
 * Removes terminal queries from replayed output. A program asks its terminal
 * things (device attributes, the cursor position, colours, its version); the
 * terminal answers by typing into the program. Replaying the program's old
 * output to a new viewer would ask again, and the viewer's answers would
 * reach the program as if typed — junk on a prompt, in an agent's input.
 *
 * The rule (decided, see README "Terminal queries"): a query reaches the
 * terminals attached when the program asks it — live — and is answered by
 * them; replayed history never carries a query, so a re-attach never adds an
 * answer. (With several writable viewers attached at the moment of asking,
 * each terminal answers, as with any terminal multiplexer that forwards
 * queries; read-only viewers' answers are dropped by the node.)
 *
 * Removed: DA1/DA2/DA3 (`CSI c`, `CSI > c`, `CSI = c`), DSR and its DEC form
 * (`CSI 5 n`, `CSI 6 n`, `CSI ? … n`), XTVERSION (`CSI > q`), DECRQM
 * (`CSI ? … $ p`, `CSI … $ p`), window reports (`CSI 11…21 t`), the kitty
 * keyboard query (`CSI ? u`), OSC colour queries (`OSC 4/10-19 ; … ? ST`),
 * OSC 52 clipboard reads, and DCS requests (`DCS $ q`, `DCS + q`).
 */

import { concat } from "../shared/bytes.ts";

/** Longest sequence held across two chunks; a longer one is passed through. */
const MAX_HELD = 4096;

/** A stateful filter over a byte stream; see the file's comment. */
export class QueryFilter {
  #held: Uint8Array | null = null;

  /** Filters one chunk; the result may be shorter (or hold back a cut sequence). */
  push(chunk: Uint8Array): Uint8Array {
    const data = this.#held ? concat([this.#held, chunk]) : chunk;
    this.#held = null;
    let at = data.indexOf(0x1b);
    if (at === -1) return data;
    const out: Uint8Array[] = [];
    let from = 0;
    while (at !== -1) {
      const end = sequenceEnd(data, at);
      if (end === -1) {
        if (data.byteLength - at <= MAX_HELD) {
          out.push(data.subarray(from, at));
          this.#held = data.slice(at);
          return concat(out);
        }
        break; // too long to be a query: pass it on
      }
      if (isQuery(data, at, end)) {
        out.push(data.subarray(from, at));
        from = end;
      }
      at = data.indexOf(0x1b, Math.max(end, at + 1));
    }
    out.push(data.subarray(from));
    return out.length === 1 ? out[0] : concat(out);
  }

  /** What is held back at the end of the replay: passed on as it is. */
  flush(): Uint8Array {
    const held = this.#held ?? new Uint8Array(0);
    this.#held = null;
    return held;
  }
}

/** Where the escape sequence at `at` ends (exclusive), or -1 when the chunk cuts it. */
function sequenceEnd(d: Uint8Array, at: number): number {
  if (at + 1 >= d.byteLength) return -1;
  const kind = d[at + 1];
  if (kind === 0x5b) { // CSI: parameters, intermediates, a final byte
    let i = at + 2;
    while (i < d.byteLength && d[i] >= 0x20 && d[i] <= 0x3f) i++;
    if (i >= d.byteLength) return -1;
    return i + 1;
  }
  if (kind === 0x5d || kind === 0x50 || kind === 0x5f || kind === 0x5e) {
    // OSC, DCS, APC, PM: up to BEL (OSC) or ST (ESC \)
    for (let i = at + 2; i < d.byteLength; i++) {
      if (d[i] === 0x07 && kind === 0x5d) return i + 1;
      if (d[i] === 0x1b) {
        if (i + 1 >= d.byteLength) return -1;
        if (d[i + 1] === 0x5c) return i + 2;
      }
    }
    return -1;
  }
  return at + 2;
}

function isQuery(d: Uint8Array, at: number, end: number): boolean {
  const kind = d[at + 1];
  const text = String.fromCharCode(...d.subarray(at + 2, end));
  if (kind === 0x5b) {
    const final = text.at(-1);
    const body = text.slice(0, -1);
    if (final === "c") return /^[>=]?\d*$/.test(body); // device attributes
    if (final === "n") return /^(?:[56]|\?\d+(?:;\d+)*)$/.test(body); // status reports
    if (final === "q") return /^>\d*$/.test(body); // XTVERSION
    if (final === "p") return /^\??\d+\$$/.test(body); // DECRQM
    if (final === "t") return /^(?:1[1-9]|2[01])(?:;\d+)*$/.test(body); // window reports
    if (final === "u") return body === "?"; // kitty keyboard flags
    return false;
  }
  if (kind === 0x5d) {
    // colour queries: OSC 4;n;? and OSC 10-19;?; clipboard reads OSC 52;c;?
    const body = text.endsWith("\x07") ? text.slice(0, -1) : text.slice(0, -2);
    return /^(?:4;\d+;\?|1\d;\?|52;[a-z0-9]*;\?)$/.test(body);
  }
  if (kind === 0x50) return /^(?:\$q|\+q)/.test(text); // DECRQSS, XTGETTCAP
  return false;
}
