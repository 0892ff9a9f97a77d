/**
 * What every {@link RelayStore} implementation shares: the limits callers
 * see, key checks, list cursors, expiry, and the fan-out of KV changes to
 * watchers with its bounded queues.
 */
import type { InviteRecord, KvEvent } from "./store.ts";
import { DEFAULT_NETWORK } from "../shared/api.ts";

/** Largest KV value the store accepts, in bytes. */
export const KV_MAX_VALUE_BYTES = 1024 * 1024;
/** Most entries one {@link RelayStore.kvList} page may ask for. */
export const KV_LIST_MAX_LIMIT = 1000;
/** Events a watcher may fall behind by before its watch is ended. */
export const KV_WATCH_QUEUE_EVENTS = 1000;
/** Bytes of one caller-given key part (ns, key, name …). */
export const MAX_KEY_PART_BYTES = 1024;

const encoder = new TextEncoder();

export function expired(meta: { expiresAt: string | null }, now: Date): boolean {
  return meta.expiresAt !== null && !(Date.parse(meta.expiresAt) > now.getTime());
}

/** An invite registers while it has uses left and `now` is before its expiry. */
export function inviteLive(invite: InviteRecord, now: Date): boolean {
  return invite.usesLeft > 0 && Date.parse(invite.expiresAt) > now.getTime();
}

/** Whether Deno KV can hold `s` as a key part without altering or refusing it. */
export function keyPartOk(s: string): boolean {
  return typeof s === "string" && s.isWellFormed() &&
    s.length <= MAX_KEY_PART_BYTES && encoder.encode(s).byteLength <= MAX_KEY_PART_BYTES;
}

export function checkKeyPart(s: string, what: string): void {
  if (!keyPartOk(s)) {
    throw new RangeError(
      `Invalid ${what}: use well-formed text of at most ${MAX_KEY_PART_BYTES} bytes`,
    );
  }
}

/** Compares as Deno KV orders strings: by UTF-8 bytes, i.e. by code point. */
export function compareUtf8(a: string, b: string): number {
  const x = encoder.encode(a);
  const y = encoder.encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] !== y[i]) return x[i] - y[i];
  }
  return x.length - y.length;
}

export function encodeCursor(key: string): string {
  const bin = Array.from(encoder.encode(key), (b) => String.fromCharCode(b)).join("");
  return btoa(bin).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

export function decodeCursor(cursor: string): string {
  try {
    if (!/^[A-Za-z0-9_-]*$/.test(cursor) || cursor.length > 4 * MAX_KEY_PART_BYTES) {
      throw new TypeError("not base64url");
    }
    const bin = atob(cursor.replaceAll("-", "+").replaceAll("_", "/"));
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (err) {
    throw new RangeError(`Invalid KV list cursor "${cursor.slice(0, 64)}"`, { cause: err });
  }
}

/** In-process fan-out of KV changes to watchers; one relay process owns the file. */
export class WatchBus {
  #subs = new Set<Watcher>();

  publish(event: KvEvent): void {
    for (const sub of this.#subs) sub.offer(event);
  }

  subscribe(
    ns: string,
    match: { key: string } | { prefix: string },
    signal: AbortSignal,
    closed: boolean,
  ): Watcher {
    const sub = new Watcher(ns, match, () => this.#subs.delete(sub));
    // Subscribed now, not at the first next(): no change between the call and
    // the first iteration is missed.
    this.#subs.add(sub);
    if (closed || signal.aborted) sub.end(true);
    else sub.bindSignal(signal);
    return sub;
  }

  endAll(): void {
    for (const sub of this.#subs) sub.end(false);
  }
}

/** One watch: a bounded queue of events, consumed as an async iterator. */
export class Watcher implements AsyncIterableIterator<KvEvent> {
  #ns: string;
  #match: { key: string } | { prefix: string };
  #unsubscribe: () => void;
  #queue: KvEvent[] = [];
  #wake: (() => void) | null = null;
  #done = false;
  #unbind: (() => void) | null = null;

  constructor(ns: string, match: { key: string } | { prefix: string }, unsubscribe: () => void) {
    this.#ns = ns;
    this.#match = match;
    this.#unsubscribe = unsubscribe;
  }

  bindSignal(signal: AbortSignal): void {
    const onAbort = () => this.end(true);
    signal.addEventListener("abort", onAbort, { once: true });
    this.#unbind = () => signal.removeEventListener("abort", onAbort);
  }

  offer(event: KvEvent): void {
    if (this.#done || event.ns !== this.#ns) return;
    const m = this.#match;
    if ("key" in m ? event.key !== m.key : !event.key.startsWith(m.prefix)) return;
    if (this.#queue.length >= KV_WATCH_QUEUE_EVENTS) {
      // Fallen behind: silently dropping events would let a coordinating
      // agent miss a change, so end the watch and let it re-read.
      this.end(false);
      return;
    }
    this.#queue.push(event);
    this.#wakeUp();
  }

  /** Ends the watch; `discard` drops what is queued (the consumer is gone). */
  end(discard: boolean): void {
    if (discard) this.#queue.length = 0;
    if (this.#done) return;
    this.#done = true;
    this.#unsubscribe();
    this.#unbind?.();
    this.#unbind = null;
    this.#wakeUp();
  }

  async next(): Promise<IteratorResult<KvEvent>> {
    for (;;) {
      const event = this.#queue.shift();
      if (event !== undefined) return { value: event, done: false };
      if (this.#done) return { value: undefined, done: true };
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
  }

  return(): Promise<IteratorResult<KvEvent>> {
    this.end(true);
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<KvEvent> {
    return this;
  }

  #wakeUp(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }
}

/** A record from before networks belongs to the default network. */
export function withNetwork<T extends { network?: string }>(r: T | null): T | null {
  return r === null || typeof r.network === "string" ? r : { ...r, network: DEFAULT_NETWORK };
}
