/**
 * Notices per network: a node forwards each notice (a session started
 * waiting, or ended: shared/notify.ts) over its link, and the relay POSTs it
 * to the webhook of the node's network, named in `webhooks.json` in its data
 * dir — `{ "NETWORK": "https://…" }`, read again whenever it changes. The
 * node's name and network in the notice are the link's, never the message's;
 * every field is bounded; each node may send {@link NOTICES_PER_MINUTE}
 * (beyond, they are dropped).
 */
import type { Logger } from "../shared/logger.ts";
import {
  checkWebhookUrl,
  type Notice,
  Notifier,
  NOTIFY_LINE_CHARS,
  NOTIFY_LINES,
} from "../shared/notify.ts";
import { RateLimiter } from "../shared/rate_limit.ts";
import { SESSION_STATUSES, type SessionStatus } from "../shared/protocol.ts";

/** Notices a node may send per minute (and in a burst). */
export const NOTICES_PER_MINUTE = 60;
const NOTICES_BURST = 20;

/** The relay's webhooks per network; see the file's comment. */
export class NetworkWebhooks {
  #file: string;
  #logger: Logger;
  #mtime = -1;
  #urls = new Map<string, string>();
  #notifiers = new Map<string, Notifier>();
  #limits = new Map<string, RateLimiter>();

  constructor(file: string, logger: Logger) {
    this.#file = file;
    this.#logger = logger;
  }

  /** A notice from node `node` of `network`, as its link brought it. */
  deliver(node: string, network: string, raw: unknown): void {
    let limit = this.#limits.get(node);
    if (!limit) this.#limits.set(node, limit = new RateLimiter(NOTICES_PER_MINUTE, NOTICES_BURST));
    if (!limit.take(node)) return;
    const url = this.#urlOf(network);
    if (!url) return;
    const notice = bounded(raw, node, network);
    if (!notice) return;
    let notifier = this.#notifiers.get(url);
    if (!notifier) this.#notifiers.set(url, notifier = new Notifier(url, this.#logger));
    notifier.send(notice);
  }

  /** Stops every delivery. */
  close(): void {
    for (const n of this.#notifiers.values()) n.close();
    this.#notifiers.clear();
  }

  #urlOf(network: string): string | null {
    let mtime = -1;
    try {
      mtime = Deno.statSync(this.#file).mtime?.getTime() ?? 0;
    } catch {
      // no file: no webhooks
    }
    if (mtime !== this.#mtime) {
      this.#mtime = mtime;
      this.#urls.clear();
      if (mtime !== -1) {
        try {
          const v = JSON.parse(Deno.readTextFileSync(this.#file)) as Record<string, unknown>;
          for (const [net, url] of Object.entries(v ?? {})) {
            this.#urls.set(net, checkWebhookUrl(url, `The webhook of network "${net}"`));
          }
        } catch (err) {
          this.#logger.warn(`webhooks: ${this.#file} is not used: ${(err as Error).message}`);
        }
      }
      // a URL no longer named gets nothing more
      const named = new Set(this.#urls.values());
      for (const [url, n] of this.#notifiers) {
        if (!named.has(url)) {
          n.close();
          this.#notifiers.delete(url);
        }
      }
    }
    return this.#urls.get(network) ?? null;
  }
}

const str = (v: unknown, max: number): string | null =>
  typeof v === "string" ? v.slice(0, max) : null;
const strs = (v: unknown, count: number, max: number): string[] =>
  Array.isArray(v)
    ? v.filter((x) => typeof x === "string").slice(0, count).map((x) => x.slice(0, max))
    : [];

/** The notice with every field checked and bounded, or null if it is not one. */
function bounded(raw: unknown, node: string, network: string): Notice | null {
  const n = raw as Partial<Notice> | null;
  if (!n || (n.event !== "waiting" && n.event !== "exited")) return null;
  const s = n.session as Record<string, unknown> | undefined;
  if (!s || !Number.isSafeInteger(s.id)) return null;
  const status = SESSION_STATUSES.includes(s.status as SessionStatus)
    ? s.status as SessionStatus
    : "running";
  return {
    event: n.event,
    node,
    network,
    session: {
      id: s.id as number,
      name: str(s.name, 128),
      argv: strs(s.argv, 64, 1000),
      tags: strs(s.tags, 32, 128),
      status,
      exitCode: Number.isSafeInteger(s.exitCode) ? s.exitCode as number : null,
      signal: str(s.signal, 32),
      state: (str(s.state, 16) ?? undefined) as Notice["session"]["state"],
    },
    at: typeof n.at === "string" && !Number.isNaN(Date.parse(n.at))
      ? new Date(n.at).toISOString()
      : new Date().toISOString(),
    lines: strs(n.lines, NOTIFY_LINES, NOTIFY_LINE_CHARS),
  };
}
