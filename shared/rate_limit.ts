/**
 * Token buckets per key (a client address), in a map bounded in entries: the
 * least recently used keys are forgotten first, so a flood of addresses
 * cannot grow memory.
 */
export class RateLimiter {
  #rate: number;
  #burst: number;
  #max: number;
  #buckets = new Map<string, { tokens: number; at: number }>();
  #now: () => number;

  /** `perMinute` refill, `burst` capacity, `maxKeys` tracked at most. */
  constructor(perMinute: number, burst: number, maxKeys = 10_000, now: () => number = Date.now) {
    this.#rate = perMinute / 60_000;
    this.#burst = burst;
    this.#max = maxKeys;
    this.#now = now;
  }

  /** Whether `key` has no token left right now (without taking one). */
  exhausted(key: string): boolean {
    const b = this.#buckets.get(key);
    if (!b) return false;
    return Math.min(this.#burst, b.tokens + (this.#now() - b.at) * this.#rate) < 1;
  }

  /** Takes one token for `key`; false when the key is over its limit. */
  take(key: string): boolean {
    const now = this.#now();
    let b = this.#buckets.get(key);
    if (b) {
      this.#buckets.delete(key); // re-insert: most recently used last
      b.tokens = Math.min(this.#burst, b.tokens + (now - b.at) * this.#rate);
      b.at = now;
    } else {
      b = { tokens: this.#burst, at: now };
      if (this.#buckets.size >= this.#max) {
        this.#buckets.delete(this.#buckets.keys().next().value!);
      }
    }
    this.#buckets.set(key, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }
}
