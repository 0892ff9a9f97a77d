/**
 * A byte ring addressed by absolute stream offsets: byte `n` of a session's
 * output stays readable at offset `n` until `capacity` newer bytes push it
 * out. Readers keep their own offset, so a slow reader never holds the writer
 * back; it only learns how much it missed.
 *
 * The buffer starts small and grows to `capacity`, so an idle session costs
 * kilobytes, not the whole ring.
 */
export class ByteRing {
  #cap: number;
  #buf: Uint8Array;
  #end = 0; // absolute offset one past the newest byte
  #used = 0; // bytes held while still linear (before the buffer is full size)
  #circular = false;

  /** A ring holding the last `capacity` bytes. */
  constructor(capacity: number, initial = 16 * 1024) {
    if (!Number.isInteger(capacity) || capacity <= 0) {
      throw new RangeError(`Ring capacity must be a positive integer, got ${capacity}`);
    }
    this.#cap = capacity;
    this.#buf = new Uint8Array(Math.min(capacity, initial));
  }

  /** Starts the ring at `offset` (empty), e.g. for a session loaded from disk. */
  reset(offset: number): void {
    this.#end = offset;
    this.#used = 0;
    this.#circular = false;
    this.#buf = new Uint8Array(Math.min(this.#cap, 1024));
  }

  /** Most bytes the ring holds. */
  get capacity(): number {
    return this.#cap;
  }

  /** Oldest offset still held. */
  get start(): number {
    return this.#circular ? Math.max(0, this.#end - this.#cap) : this.#end - this.#used;
  }

  /** Offset one past the newest byte (total bytes ever written). */
  get end(): number {
    return this.#end;
  }

  /** Appends bytes, overwriting the oldest once full. */
  write(data: Uint8Array): void {
    if (this.#circular) return this.#writeCircular(data);
    const need = this.#used + data.byteLength;
    if (need <= this.#buf.byteLength) {
      this.#buf.set(data, this.#used);
      this.#used = need;
      this.#end += data.byteLength;
      return;
    }
    if (need < this.#cap) {
      const grown = new Uint8Array(Math.min(this.#cap, Math.max(need, this.#buf.byteLength * 2)));
      grown.set(this.#buf.subarray(0, this.#used));
      grown.set(data, this.#used);
      this.#buf = grown;
      this.#used = need;
      this.#end += data.byteLength;
      return;
    }
    // full size reached: lay the held bytes out at their circular positions
    const held = this.#buf.subarray(0, this.#used);
    this.#buf = new Uint8Array(this.#cap);
    this.#circular = true;
    this.#end -= this.#used;
    this.#writeCircular(held);
    this.#writeCircular(data);
  }

  #writeCircular(data: Uint8Array): void {
    const cap = this.#cap;
    let src = data;
    if (src.byteLength > cap) {
      this.#end += src.byteLength - cap;
      src = src.subarray(src.byteLength - cap);
    }
    const at = this.#end % cap;
    const first = Math.min(src.byteLength, cap - at);
    this.#buf.set(src.subarray(0, first), at);
    if (first < src.byteLength) this.#buf.set(src.subarray(first), 0);
    this.#end += src.byteLength;
  }

  /** Bytes readable from `offset` (at most `max`). */
  available(offset: number, max: number): number {
    return Math.max(0, Math.min(max, this.#end - offset));
  }

  /**
   * Copies up to `max` bytes starting at absolute `offset` into a new array.
   * Throws RangeError when `offset` is outside [start, end].
   */
  read(offset: number, max: number): Uint8Array {
    const out = new Uint8Array(this.available(offset, max));
    this.readInto(offset, out);
    return out;
  }

  /** Fills `out` with the bytes at absolute `offset`; throws RangeError outside [start, end]. */
  readInto(offset: number, out: Uint8Array): void {
    const len = out.byteLength;
    if (offset < this.start || offset + len > this.#end) {
      throw new RangeError(`Offset ${offset} is outside the ring [${this.start}, ${this.#end}]`);
    }
    if (!this.#circular) {
      const at = offset - this.start;
      out.set(this.#buf.subarray(at, at + len));
      return;
    }
    const cap = this.#cap;
    const at = offset % cap;
    const first = Math.min(len, cap - at);
    out.set(this.#buf.subarray(at, at + first));
    if (first < len) out.set(this.#buf.subarray(0, len - first), first);
  }
}
