/**
 * The relay's state behind one interface of its own, so that another engine
 * can replace Deno KV later. Secrets are never stored: only SHA-256 hashes of
 * node credentials and invite tokens.
 */
import type { AuditEntry } from "../shared/api.ts";

/** A registered node. */
export interface NodeRecord {
  name: string;
  /** The network it belongs to (records from before networks read as `default`). */
  network: string;
  /** Hex SHA-256 of the node's credential. */
  credentialHash: string;
  createdAt: string;
  /** Set when an admin revoked the node; its credential stops working. */
  revokedAt: string | null;
  lastSeenAt: string | null;
  lastAddr: string | null;
  version: string | null;
}

/** An invite: a token that registers up to `usesLeft` nodes until `expiresAt`. */
export interface InviteRecord {
  /** Hex SHA-256 of the token; also its id. */
  tokenHash: string;
  /** The network the nodes it registers join. */
  network: string;
  usesLeft: number;
  createdAt: string;
  expiresAt: string;
}

/** A person (or a program acting for one) without a node: a client of one network. */
export interface UserRecord {
  name: string;
  network: string;
  /** May list, read logs and attach read-only; nothing else. */
  readOnly: boolean;
  /** Hex SHA-256 of the user token (`NAME.cwu_…`). */
  tokenHash: string;
  createdAt: string;
  /** When the token stops working; null: until revoked. */
  expiresAt: string | null;
  revokedAt: string | null;
}

/** An SSH public key allowed to log in through the gateway. */
export interface SshKeyRecord {
  /** `SHA256:…` fingerprint, as `ssh-keygen -lf` prints it. */
  fingerprint: string;
  /** The `authorized_keys` line (type, base64, comment). */
  line: string;
  /** The network it logs in to: that of the credential that added it. */
  network: string;
  /** `node:NAME`, `user:NAME` or `admin`. */
  addedBy: string;
  addedAt: string;
}

/** Outcome of {@link RelayStore.register}. */
export type RegisterResult =
  | { ok: true; node: NodeRecord }
  | { ok: false; reason: "invite_invalid" | "name_taken" };

/** A KV entry as read. */
export interface KvEntry {
  value: Uint8Array;
  /** Opaque version; changes on every write. */
  version: string;
  /** ISO time, or null for no expiry. */
  expiresAt: string | null;
}

/** Conditions and options of a KV write. */
export interface KvSetOptions {
  /** Expire after this many milliseconds. */
  ttlMs?: number;
  /** Compare-and-set: only if the current version is this. */
  ifVersion?: string;
  /** Create-only: only if the key does not exist (or has expired). */
  ifAbsent?: boolean;
}

/** Outcome of a conditional write or delete. */
export type KvWriteResult = {
  ok: true;
  version: string;
  /** For a write: whether the key was absent (or expired) before it. */
  created?: boolean;
} | {
  ok: false;
  reason: "conflict" | "not_found";
};

/** One page of a KV listing. */
export interface KvPage {
  entries: { key: string; version: string; expiresAt: string | null; size: number }[];
  /** Pass back to get the next page; null at the end. */
  cursor: string | null;
}

/** A change seen by a KV watch. */
export interface KvEvent {
  type: "set" | "delete";
  ns: string;
  key: string;
  version: string | null;
  expiresAt: string | null;
}

/** Which relay replica holds a node's link now (replicas on one store). */
export interface LinkRecord {
  node: string;
  /** The replica's id ({@link RelayStore.heartbeat}). */
  replica: string;
  /** This link's id: a newer link of the node, on any replica, has another. */
  linkId: string;
  /** Where other replicas reach that replica (`--peer-url`); null: nowhere. */
  peerUrl: string | null;
  since: string;
}

/**
 * The audit log kept in a shared store, so that every replica's entries are
 * in one place (relay/audit.ts still writes each replica's own file too).
 */
export interface AuditStore {
  /** Appends entries, in order. */
  appendAudit(entries: AuditEntry[]): Promise<void>;
  /** Entries with `time >= since` (oldest first), at most `limit`: the latest ones. */
  readAudit(since: string, limit: number): Promise<AuditEntry[]>;
  /** Calls `fn` with each entry any relay on the store appends from now on; returns the unsubscriber. */
  watchAudit(fn: (e: AuditEntry) => void): () => void;
}

/** Everything the relay persists. */
export interface RelayStore extends AsyncDisposable {
  /** Where a shared store keeps the audit log; absent: the data dir's audit.log only. */
  readonly audit?: AuditStore;

  /** Registers a node with an invite, atomically: a 1-use invite raced by two nodes registers one. */
  register(inviteHash: string, node: NodeRecord, now: Date): Promise<RegisterResult>;
  getNode(name: string): Promise<NodeRecord | null>;
  listNodes(): Promise<NodeRecord[]>;
  /** Replaces a node record (last seen, revocation …). */
  putNode(node: NodeRecord): Promise<void>;

  createInvite(invite: InviteRecord): Promise<void>;
  listInvites(now: Date): Promise<InviteRecord[]>;
  /** Removes an invite; false if there was none. */
  revokeInvite(tokenHash: string): Promise<boolean>;

  getUser(name: string): Promise<UserRecord | null>;
  listUsers(): Promise<UserRecord[]>;
  /** Adds or replaces a user record (revocation). */
  putUser(user: UserRecord): Promise<void>;

  /**
   * A counter every change to who may do what moves on ({@link bumpAuthVersion}):
   * a relay polls it to learn of revocations made through its data dir by
   * another process.
   */
  authVersion(): Promise<bigint>;
  /** Moves {@link authVersion} on; called after each revocation. */
  bumpAuthVersion(): Promise<void>;

  addSshKey(key: SshKeyRecord): Promise<void>;
  listSshKeys(): Promise<SshKeyRecord[]>;
  removeSshKey(fingerprint: string): Promise<boolean>;

  /**
   * A value every relay on this store shares (the SSH host key, the peer
   * secret): the stored one, or `make()`'s, stored by the first of racing
   * callers (all of them get that one).
   */
  sharedValue(name: string, make: () => string): Promise<string>;

  /**
   * Starts or renews replica `id`'s lease until `now + leaseMs`; its links
   * count as held while the lease lasts. Returns the link ids the store
   * still records for it (a link another replica took since is not among them).
   */
  heartbeat(
    replica: { id: string; peerUrl: string | null },
    leaseMs: number,
    now: Date,
  ): Promise<Set<string>>;
  /** Records that `replica` holds node `node`'s link `linkId`, replacing any earlier holder. */
  claimLink(node: string, replica: string, linkId: string, now: Date): Promise<void>;
  /** Forgets node `node`'s link if it is still `linkId`. */
  releaseLink(node: string, linkId: string): Promise<void>;
  /** The link of `node` held by a replica whose lease lasts past `now`, if any. */
  getLink(node: string, now: Date): Promise<LinkRecord | null>;
  /** Every link held by a live replica at `now`. */
  listLinks(now: Date): Promise<LinkRecord[]>;
  /** Ends replica `id`'s lease and forgets its links (a clean stop). */
  leave(id: string): Promise<void>;

  kvGet(ns: string, key: string, now: Date): Promise<KvEntry | null>;
  kvSet(
    ns: string,
    key: string,
    value: Uint8Array,
    opts: KvSetOptions,
    now: Date,
  ): Promise<KvWriteResult>;
  kvDelete(
    ns: string,
    key: string,
    opts: { ifVersion?: string },
    now: Date,
  ): Promise<KvWriteResult>;
  kvList(
    ns: string,
    prefix: string,
    limit: number,
    cursor: string | null,
    now: Date,
  ): Promise<KvPage>;
  /** Changes to `key` (exact) or to keys starting with `prefix`, until `signal` aborts. */
  kvWatch(
    ns: string,
    match: { key: string } | { prefix: string },
    signal: AbortSignal,
  ): AsyncIterable<KvEvent>;
}
