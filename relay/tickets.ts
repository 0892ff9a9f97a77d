import { TICKET_TTL_MS } from "../shared/dialback.ts";
import { hashSecret, newToken } from "../shared/secrets.ts";
import { CwError } from "../shared/errors.ts";

/**
 * Dial-backs waiting for one node at once. Each is an SSH login waiting for
 * the node to connect back (normally milliseconds); more than this means the
 * node is not answering or someone is flooding it with logins.
 */
export const MAX_PENDING_DIALBACKS_PER_NODE = 16;

interface Pending {
  node: string;
  expires: number;
  resolve(ws: WebSocket): void;
}

/**
 * One-time dial-back tickets, each bound to a node and one waiting request,
 * valid for {@link TICKET_TTL_MS}. Held in memory by hash only.
 */
export class Tickets {
  #pending = new Map<string, Pending>();

  /** Issues a ticket for `node`; `connected` resolves with the node's socket. */
  async issue(
    node: string,
  ): Promise<{ ticket: string; connected: Promise<WebSocket>; cancel(): void }> {
    let waiting = 0;
    for (const p of this.#pending.values()) if (p.node === node) waiting++;
    if (waiting >= MAX_PENDING_DIALBACKS_PER_NODE) {
      throw new CwError(
        "rate_limited",
        `Node "${node}" has ${waiting} SSH sessions waiting to start; try again shortly`,
      );
    }
    const ticket = newToken("cwt");
    const key = await hashSecret(ticket);
    let resolve!: (ws: WebSocket) => void;
    const connected = new Promise<WebSocket>((r) => resolve = r);
    this.#pending.set(key, { node, expires: Date.now() + TICKET_TTL_MS, resolve });
    return { ticket, connected, cancel: () => this.#pending.delete(key) };
  }

  /**
   * Takes a ticket presented by `node`: null when it is unknown, used,
   * expired, or bound to another node. A ticket works once.
   */
  async claim(ticket: string, node: string): Promise<Pending | null> {
    const key = await hashSecret(ticket);
    const entry = this.#pending.get(key);
    if (!entry) return null;
    this.#pending.delete(key);
    if (entry.node !== node || Date.now() > entry.expires) return null;
    return entry;
  }
}
