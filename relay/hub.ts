import type { Mux } from "../shared/mux.ts";

/** A node connected right now. */
export interface LiveNode {
  readonly name: string;
  /** The network it belongs to. */
  readonly network: string;
  mux: Mux;
  addr: string;
  version: string | null;
  sessions: number | null;
  /** What the node said it speaks (shared/dialback.ts DIALBACK_FEATURES). */
  features?: string[];
  connectedAt: Date;
}

/**
 * The nodes connected to this relay now: the source of truth for "online".
 * One link per node; a new link for the same name replaces the old one.
 */
export class Hub {
  #nodes = new Map<string, LiveNode>();

  /** Adds a link, closing any earlier link of the same node. */
  add(node: LiveNode): void {
    const old = this.#nodes.get(node.name);
    this.#nodes.set(node.name, node);
    old?.mux.close("replaced by a newer connection of the same node");
  }

  /** Removes `node` if it is still the current link of its name. */
  remove(node: LiveNode): void {
    if (this.#nodes.get(node.name) === node) this.#nodes.delete(node.name);
  }

  /** The live link of a node, if connected. */
  get(name: string): LiveNode | undefined {
    return this.#nodes.get(name);
  }

  /** Closes a node's link (revocation); true if it was connected. */
  disconnect(name: string, reason: string): boolean {
    const node = this.#nodes.get(name);
    if (!node) return false;
    this.#nodes.delete(name);
    node.mux.close(reason);
    return true;
  }

  /** Every live node. */
  all(): LiveNode[] {
    return [...this.#nodes.values()];
  }

  /** Number of live nodes. */
  get size(): number {
    return this.#nodes.size;
  }
}
