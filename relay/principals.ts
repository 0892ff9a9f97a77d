/**
 * Who is asking, and what they may do. A credential is one of:
 *
 * - the admin token (`cwa_…`): everything, in every network;
 * - a node credential (`NAME.cwn_…`): a node of one network, which also
 *   acts as a client of that network (it reaches its peers, as before networks);
 * - a user token (`NAME.cwu_…`): a person without a node, a client of one
 *   network, perhaps read-only;
 * - an SSH key (gateway only): registered into the network of whoever added it,
 *   or listed in the data dir's `authorized_keys` (every network).
 *
 * Unknown, revoked and expired credentials are the same `null`: nobody learns
 * that a token was once valid.
 */
import type { PrincipalKind } from "../shared/api.ts";
import { RELAY_NAME_RE } from "../shared/names.ts";
import { constantTimeEqual, hashSecretSync } from "../shared/secrets.ts";

/** A connection or a long-lived answer: a {@link Peer} or a KV watch. */
export interface Closable {
  close(): void;
  onClose(fn: () => void): void;
}
import type { RelayStore } from "./store.ts";

/** Who made a request. */
export interface Principal {
  kind: PrincipalKind | "key";
  /** Stable id for audit and revocation: `admin`, `node:N`, `user:N`, `key:FP`. */
  id: string;
  /** Node or user name, key fingerprint; null for the admin. */
  name: string | null;
  /** The network it reaches; null: every network (admin, `authorized_keys`). */
  network: string | null;
  /** May only read: list, logs, status, read-only attach, KV reads. */
  readOnly: boolean;
}

/** The admin principal. */
export const ADMIN: Principal = {
  kind: "admin",
  id: "admin",
  name: null,
  network: null,
  readOnly: false,
};

/** Entries of the credential cache; past this it starts again empty. */
export const AUTH_CACHE_MAX = 4096;
/** How often a relay looks for revocations made by another process on its data dir. */
export const AUTH_POLL_MS = 250;

/** Whether `p` reaches things in `network`. */
export function reaches(p: Principal, network: string): boolean {
  return p.network === null || p.network === network;
}

/** What a node credential or user token names: its kind and name, or null. */
export function credentialName(token: string): { kind: "node" | "user"; name: string } | null {
  const dot = token.indexOf(".");
  if (dot <= 0) return null;
  const name = token.slice(0, dot);
  if (!RELAY_NAME_RE.test(name)) return null;
  const secret = token.slice(dot + 1);
  if (secret.startsWith("cwn_")) return { kind: "node", name };
  if (secret.startsWith("cwu_")) return { kind: "user", name };
  return null;
}

/**
 * Turns bearer tokens into principals. Hashes once per token and keeps the
 * answer (for at most {@link AUTH_CACHE_MAX} tokens) until anything is
 * revoked: here ({@link forget}) or by another process on the data dir (seen
 * through the store's auth version within {@link AUTH_POLL_MS}).
 */
export class Authenticator implements Disposable {
  #store: RelayStore;
  #adminHash: string | null;
  #now: () => Date;
  #cache = new Map<string, { p: Principal; expiresAt: number | null }>();
  #version: bigint | null = null;
  #timer: ReturnType<typeof setInterval> | null = null;
  #onChange: () => void;

  /** `onChange` runs when another process revoked something (to cut its connections). */
  constructor(
    store: RelayStore,
    adminHash: string | null,
    opts: { now?: () => Date; onChange?: () => void; poll?: boolean } = {},
  ) {
    this.#store = store;
    this.#adminHash = adminHash;
    this.#now = opts.now ?? (() => new Date());
    this.#onChange = opts.onChange ?? (() => {});
    if (opts.poll) {
      this.#timer = setInterval(() => void this.#poll(), AUTH_POLL_MS);
      Deno.unrefTimer(this.#timer);
    }
  }

  /** The principal of `token`, or null (unknown, revoked or expired alike). */
  async principalOf(token: string): Promise<Principal | null> {
    if (token.length > 512) return null;
    const hash = hashSecretSync(token);
    const hit = this.#cache.get(hash);
    if (hit) {
      if (hit.expiresAt === null || hit.expiresAt > this.#now().getTime()) return hit.p;
      this.#cache.delete(hash);
      return null;
    }
    const found = await this.#lookup(token, hash);
    if (found) {
      if (this.#cache.size >= AUTH_CACHE_MAX) this.#cache.clear();
      this.#cache.set(hash, found);
      return found.p;
    }
    return null;
  }

  /** Drops every cached answer (after a revocation). */
  forget(): void {
    this.#cache.clear();
  }

  async #lookup(
    token: string,
    hash: string,
  ): Promise<{ p: Principal; expiresAt: number | null } | null> {
    if (this.#adminHash && constantTimeEqual(hash, this.#adminHash)) {
      return { p: ADMIN, expiresAt: null };
    }
    const cred = credentialName(token);
    if (!cred) return null;
    if (cred.kind === "node") {
      const node = await this.#store.getNode(cred.name);
      if (!node || node.revokedAt || !constantTimeEqual(hash, node.credentialHash)) return null;
      return {
        p: {
          kind: "node",
          id: `node:${node.name}`,
          name: node.name,
          network: node.network,
          readOnly: false,
        },
        expiresAt: null,
      };
    }
    const user = await this.#store.getUser(cred.name);
    if (!user || user.revokedAt || !constantTimeEqual(hash, user.tokenHash)) return null;
    const expiresAt = user.expiresAt === null ? null : Date.parse(user.expiresAt);
    if (expiresAt !== null && expiresAt <= this.#now().getTime()) return null;
    return {
      p: {
        kind: "user",
        id: `user:${user.name}`,
        name: user.name,
        network: user.network,
        readOnly: user.readOnly,
      },
      expiresAt,
    };
  }

  async #poll(): Promise<void> {
    try {
      const v = await this.#store.authVersion();
      if (this.#version !== null && v !== this.#version) {
        this.forget();
        this.#onChange();
      }
      this.#version = v;
    } catch {
      // the store is closing
    }
  }

  /** Stops polling. */
  [Symbol.dispose](): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }
}

/**
 * The live connections and watches of each principal (by {@link Principal.id}):
 * revoking the principal closes them all — its link, streams, KV watches,
 * dial-backs and SSH sessions. A KV watch is ended alone, not its
 * connection, which HTTP/2 or a proxy may share with others.
 */
export class Connections {
  #held = new Map<string, Set<Closable>>();

  /** Records that `peer` (a connection, or a long-lived answer such as a watch) is `id`'s. */
  hold(id: string, peer: Closable): void {
    let set = this.#held.get(id);
    if (!set) this.#held.set(id, set = new Set());
    if (set.has(peer)) return;
    set.add(peer);
    peer.onClose(() => {
      set.delete(peer);
      if (set.size === 0 && this.#held.get(id) === set) this.#held.delete(id);
    });
  }

  /** Closes every connection of `id`; returns how many. */
  cut(id: string): number {
    const peers = [...(this.#held.get(id) ?? [])];
    for (const peer of peers) peer.close();
    return peers.length;
  }

  /** Ids holding connections now. */
  ids(): string[] {
    return [...this.#held.keys()];
  }
}
