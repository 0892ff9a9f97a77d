/**
 * What happens to sessions, as a stream for subscribers (`subscribe`, `cw
 * events`, `cw mcp`): launched, working/waiting, exited, a viewer attached or
 * detached. In-process fan-out; each subscriber holds at most
 * {@link SUBSCRIBER_MAX_QUEUED} events it has not taken, then it is told it
 * fell behind and dropped: a client that stops reading never grows the node.
 */
import type { SessionEvent } from "../shared/protocol.ts";

/** Events a subscriber may fall behind by before it is dropped. */
export const SUBSCRIBER_MAX_QUEUED = 1000;
/** Subscribers at once on one node (each is a connection the node serves anyway). */
export const MAX_SUBSCRIBERS = 256;

/** One subscriber: a bounded queue, read with {@link next}. */
export class Subscription {
  #queue: SessionEvent[] = [];
  #wake: (() => void) | null = null;
  #lagged = false;
  #closed = false;
  #off: () => void;
  #filter: (e: SessionEvent) => boolean;

  constructor(filter: (e: SessionEvent) => boolean, off: () => void) {
    this.#filter = filter;
    this.#off = off;
  }

  /** @internal */
  offer(e: SessionEvent): void {
    if (this.#closed || this.#lagged || !this.#filter(e)) return;
    if (this.#queue.length >= SUBSCRIBER_MAX_QUEUED) {
      this.#lagged = true; // told once the queue is read: it must re-read and subscribe again
    } else this.#queue.push(e);
    this.#wake?.();
  }

  /** The next event, "lagged" once after it fell behind, or null when closed. */
  async next(): Promise<SessionEvent | "lagged" | null> {
    for (;;) {
      const e = this.#queue.shift();
      if (e) return e;
      if (this.#lagged) {
        this.#lagged = false; // said once; closed from now on
        this.close();
        return "lagged";
      }
      if (this.#closed) return null;
      await new Promise<void>((r) => this.#wake = r);
      this.#wake = null;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#off();
    this.#wake?.();
  }
}

/** The node's session events. */
export class SessionEvents {
  #subs = new Set<Subscription>();

  /** Delivers `e` to every subscriber whose filter takes it. */
  emit(e: SessionEvent): void {
    for (const s of this.#subs) s.offer(e);
  }

  /** Subscribes; throws RangeError when {@link MAX_SUBSCRIBERS} are subscribed. */
  subscribe(filter: (e: SessionEvent) => boolean): Subscription {
    if (this.#subs.size >= MAX_SUBSCRIBERS) {
      throw new RangeError(`${MAX_SUBSCRIBERS} subscribers already`);
    }
    const sub: Subscription = new Subscription(filter, () => this.#subs.delete(sub));
    this.#subs.add(sub);
    return sub;
  }

  get size(): number {
    return this.#subs.size;
  }
}
