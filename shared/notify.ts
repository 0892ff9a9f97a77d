/**
 * Notices for people: when a session starts waiting (it went quiet and idle:
 * node/activity.ts) or ends, a JSON POST to a webhook — the `notifyUrl` of a
 * node's config.json, and the URL of its network in a relay's
 * `webhooks.json` (the node forwards each notice over its link). Route it to
 * ntfy, Slack or a phone. Off by default.
 *
 * Body: `{ event: "waiting" | "exited", node, network?, session: {id, name,
 * argv, tags, status, exitCode, signal, state}, at, lines }` where `lines`
 * are the last rows of the screen. It never carries a credential (no header is added; the
 * URL is yours), and the URL is never logged beyond its origin. Deliveries go
 * one at a time, in order; an attempt is bounded in time, a failure (network,
 * 429, 5xx) is retried a few times with growing waits, a 4xx or a redirect is
 * not; the queue is bounded (the limits below).
 */
import type { Logger } from "./logger.ts";
import { CwError } from "./errors.ts";
import type { SessionInfo } from "./protocol.ts";

/** Notices waiting to be delivered at most; past it the oldest is dropped. */
export const NOTIFY_QUEUE_MAX = 64;
/** One delivery attempt's bound, and the waits before each retry (then it is dropped). */
export const NOTIFY_TIMEOUT_MS = 5000;
export const NOTIFY_RETRY_MS: readonly number[] = [1000, 4000, 16000];
/** Rows of the screen a notice carries, and the characters of each. */
export const NOTIFY_LINES = 10;
export const NOTIFY_LINE_CHARS = 500;

/** What a notice says. */
export interface Notice {
  event: "waiting" | "exited";
  node: string;
  /** The node's network (in a relay's notices). */
  network?: string;
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

/** A webhook's address: https, or http to loopback (notices carry screen lines); else throws. */
export function checkWebhookUrl(value: unknown, where: string): string {
  let url: URL;
  try {
    url = new URL(String(value));
  } catch {
    throw new CwError("bad_request", `${where} is not a URL`);
  }
  const loopback = ["127.0.0.1", "[::1]", "localhost"].includes(url.hostname);
  if (url.protocol !== "https:" && !(url.protocol === "http:" && loopback)) {
    throw new CwError("bad_request", `${where} must be https:// (http:// only to loopback)`);
  }
  return url.href;
}
