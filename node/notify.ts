/**
 * Notices for people: when a session starts waiting (it went quiet and idle:
 * node/activity.ts) or ends, the node POSTs JSON to the `notifyUrl` of its
 * config.json — route it to ntfy, Slack or a phone. Off by default.
 *
 * Body: `{ event: "waiting" | "exited", node, session: {id, name, argv, tags,
 * status, exitCode, signal, state}, at, lines }` where `lines` are the last
 * rows of the screen. It never carries a credential (no header is added; the
 * URL is yours), and the URL is never logged beyond its origin. Deliveries go
 * one at a time, in order; an attempt is bounded in time, a failure (network,
 * 429, 5xx) is retried a few times with growing waits, a 4xx or a redirect is
 * not; the queue is bounded (limits in node/limits.ts).
 */
import type { Logger } from "../shared/logger.ts";
import type { SessionInfo } from "../shared/protocol.ts";
import { NOTIFY_QUEUE_MAX, NOTIFY_RETRY_MS, NOTIFY_TIMEOUT_MS } from "./limits.ts";

/** What a notice says. */
export interface Notice {
  event: "waiting" | "exited";
  node: string;
  session: Pick<
    SessionInfo,
    "id" | "name" | "argv" | "tags" | "status" | "exitCode" | "signal" | "state"
  >;
  at: string;
  lines: string[];
}

/** Delivers notices to one URL; see the file's comment. */
export class Notifier {
  #url: string;
  #logger: Logger;
  #queue: Notice[] = [];
  #running = false;
  #closed = new AbortController();

  constructor(url: string, logger: Logger) {
    this.#url = url;
    this.#logger = logger;
  }

  /** Queues a notice. */
  send(notice: Notice): void {
    if (this.#closed.signal.aborted) return;
    if (this.#queue.length >= NOTIFY_QUEUE_MAX) {
      const dropped = this.#queue.shift()!;
      this.#logger.warn(
        `notify: queue full, dropped the ${dropped.event} notice of session ${dropped.session.id}`,
      );
    }
    this.#queue.push(notice);
    if (!this.#running) void this.#drain();
  }

  /** Stops delivering (what is queued is dropped). */
  close(): void {
    this.#closed.abort();
    this.#queue = [];
  }

  async #drain(): Promise<void> {
    this.#running = true;
    try {
      while (this.#queue.length > 0 && !this.#closed.signal.aborted) {
        await this.#deliver(this.#queue.shift()!);
      }
    } finally {
      this.#running = false;
    }
  }

  async #deliver(notice: Notice): Promise<void> {
    const where = new URL(this.#url).origin;
    const body = JSON.stringify(notice);
    for (let attempt = 0;; attempt++) {
      let outcome: string;
      try {
        const res = await fetch(this.#url, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body,
          redirect: "manual",
          signal: AbortSignal.any([
            AbortSignal.timeout(NOTIFY_TIMEOUT_MS),
            this.#closed.signal,
          ]),
        });
        await res.body?.cancel();
        if (res.status >= 200 && res.status < 300) return;
        outcome = `HTTP ${res.status}`;
        if (res.status !== 429 && res.status < 500) {
          this.#logger.warn(`notify: ${where} refused a notice (${outcome}); not retried`);
          return;
        }
      } catch (err) {
        if (this.#closed.signal.aborted) return;
        outcome = (err as Error).name;
      }
      const wait = NOTIFY_RETRY_MS[attempt];
      if (wait === undefined) {
        this.#logger.warn(`notify: gave up on a notice to ${where} (${outcome})`);
        return;
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, wait);
        this.#closed.signal.addEventListener("abort", () => {
          clearTimeout(timer);
          resolve();
        }, { once: true });
      });
      if (this.#closed.signal.aborted) return;
    }
  }
}
