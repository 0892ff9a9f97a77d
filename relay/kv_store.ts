/**
 * {@link RelayStore} on Deno KV (`--unstable-kv`), on one file that one relay
 * process owns. `Deno.openKv` and its types stay inside this file.
 *
 * Key layout:
 * - `["node", name]` → {@link NodeRecord}
 * - `["invite", tokenHash]` → {@link InviteRecord}
 * - `["sshkey", fingerprint]` → {@link SshKeyRecord}
 * - `["user", name]` → {@link UserRecord}
 * - `["shared", name]` → a value every relay on the store shares (SSH host key …)
 * - `["replica", id]` → a replica's lease; `["link", node]` → who holds its link
 * - `["authversion"]` → a `Deno.KvU64` moved on by every revocation
 * - `["kv", ns, key]` → {@link KvMeta}: size, expiry, and either the value
 *   itself (up to {@link INLINE_MAX_BYTES}) or where its chunks are. Its
 *   versionstamp is the entry's version.
 * - `["kvblob", blobId, i]` → chunk `i` of a larger value (Deno KV caps one
 *   value at 64 KiB and one atomic commit at ~800 KiB, so a 1 MiB value can be
 *   neither one record nor one commit).
 * - `["kvorphan", blobId]` → {@link OrphanMark}: a blob that is not (or no
 *   longer) referenced by any metadata and must be deleted; swept on open, so
 *   a crash mid-write leaks nothing.
 *
 * A small value is written in one atomic commit with the compare-and-set
 * check. A large one is stored as chunks under a fresh blob id first (plain
 * batches), then the metadata is committed atomically with the check, then
 * the old blob is deleted. A read takes the metadata, then the chunks; if a
 * chunk is gone because a concurrent write replaced the entry, it reads again.
 *
 * Expiry is logical: `expiresAt` is kept in the metadata and compared with the
 * caller's `now`, so expired entries are absent everywhere at once. Deno's
 * `expireIn` (lazy) is also set, with a grace period, only to reclaim space.
 */
import type {
  InviteRecord,
  KvEntry,
  KvEvent,
  KvPage,
  KvSetOptions,
  KvWriteResult,
  LinkRecord,
  NodeRecord,
  RegisterResult,
  RelayStore,
  SshKeyRecord,
  UserRecord,
} from "./store.ts";
import { DEFAULT_NETWORK } from "../shared/api.ts";
import {
  checkKeyPart,
  compareUtf8,
  decodeCursor,
  encodeCursor,
  expired,
  inviteLive,
  keyPartOk,
  KV_LIST_MAX_LIMIT,
  KV_MAX_VALUE_BYTES,
  WatchBus,
  withNetwork,
} from "./store_common.ts";

export { KV_LIST_MAX_LIMIT, KV_MAX_VALUE_BYTES, KV_WATCH_QUEUE_EVENTS } from "./store_common.ts";

/** Values up to this size live in their metadata record: one commit, one read. */
const INLINE_MAX_BYTES = 16 * 1024;
/** One chunk record; Deno KV's limit is 64 KiB per value. */
const CHUNK_BYTES = 60 * 1024;
/** Chunks written per atomic batch: 8 × 60 KiB stays under the ~800 KiB commit limit. */
const CHUNKS_PER_BATCH = 8;
/** Metadata records per list batch: bounds a listing's memory with inline values. */
const LIST_BATCH = 100;
/** Deno KV reads at most 10 keys per getMany. */
const GET_MANY_MAX = 10;
/** Retries of a commit whose check failed (contention), and of a read that raced a write. */
const COMMIT_ATTEMPTS = 100;
const READ_ATTEMPTS = 20;
/**
 * Most KV writes committed together (group commit). Each write is 1 check and
 * at most 3 mutations with an inline value of at most 16 KiB, so 32 stay well
 * inside Deno KV's limits on one atomic operation (100 checks, 1000
 * mutations, 800 KiB). Measured here: 2,600 single commits/s at most; writes
 * arriving while one commit runs wait for the next and go together.
 */
const GROUP_COMMIT_MAX = 32;

/**
 * Bytes of small KV entries (inline values) kept in memory for reads; the
 * least recently used go first. This process is the only writer of its
 * store's KV entries (admin commands on the data dir touch nodes, users and
 * invites only), so every write updates the cache and reads never go stale.
 */
export const KV_CACHE_BYTES = 32 * 1024 * 1024;
/** What one cached entry costs besides its value, roughly. */
const CACHE_ENTRY_OVERHEAD = 256;

/** The write-through cache of {@link KV_CACHE_BYTES}. */
class MetaCache {
  #map = new Map<string, { value: KvMeta; versionstamp: string; bytes: number }>();
  #bytes = 0;
  #max: number;
  /** Moves on with every write: a read that began before one does not fill the cache. */
  writes = 0;

  constructor(max: number) {
    this.#max = max;
  }

  get(key: Deno.KvKey): { value: KvMeta; versionstamp: string } | undefined {
    const id = JSON.stringify(key);
    const e = this.#map.get(id);
    if (e) {
      this.#map.delete(id); // most recently used last
      this.#map.set(id, e);
    }
    return e;
  }

  /** A read's result, kept unless a write happened since `since`. */
  putRead(entry: Deno.KvEntryMaybe<KvMeta>, since: number): void {
    if (since !== this.writes || entry.value === null) return;
    this.#put(JSON.stringify(entry.key), entry.value, entry.versionstamp);
  }

  /** What a write left: the new entry, or null (deleted, or unknown after a failed check). */
  putWrite(key: Deno.KvKey, entry: { value: KvMeta; versionstamp: string } | null): void {
    this.writes++;
    const id = JSON.stringify(key);
    this.#drop(id);
    if (entry) this.#put(id, entry.value, entry.versionstamp);
  }

  #put(id: string, value: KvMeta, versionstamp: string): void {
    this.#drop(id);
    if (value.inline === null) return; // large values are read from the store
    const bytes = value.inline.byteLength + CACHE_ENTRY_OVERHEAD;
    this.#map.set(id, { value, versionstamp, bytes });
    this.#bytes += bytes;
    for (const [old, e] of this.#map) {
      if (this.#bytes <= this.#max) break;
      this.#map.delete(old);
      this.#bytes -= e.bytes;
    }
  }

  #drop(id: string): void {
    const e = this.#map.get(id);
    if (!e) return;
    this.#map.delete(id);
    this.#bytes -= e.bytes;
  }
}

/** A write waiting for the next group commit. */
interface PendingWrite {
  /** Its key, so that one group never writes a key twice. */
  id: string;
  /** Adds its check and mutations to an atomic operation. */
  build(op: Deno.AtomicOperation): void;
  done(res: Deno.KvCommitResult | Deno.KvCommitError): void;
  fail(err: unknown): void;
}
/** Engine expiry trails the logical one, so `expireIn` never removes a live entry. */
const EXPIRE_GRACE_MS = 60_000;

/** Where a large value's chunks are. */
interface BlobRef {
  id: string;
  chunks: number;
}

/** Metadata of one KV entry; exactly one of `inline` and `blob` is set. */
interface KvMeta {
  size: number;
  /** ISO time, or null for no expiry. */
  expiresAt: string | null;
  inline: Uint8Array | null;
  blob: BlobRef | null;
}

/** A blob waiting to be deleted. */
interface OrphanMark {
  chunks: number;
}

/**
 * Opens (creating it if needed) the relay's store on the Deno KV file at
 * `path`, and deletes blobs left behind by a crash during a write.
 *
 * Throws what `Deno.openKv` throws (e.g. `Deno.errors.PermissionDenied`, or a
 * `TypeError` without `--unstable-kv`).
 *
 * @example
 * ```ts
 * await using store = await openKvStore(`${dataDir}/relay.kv`);
 * await store.kvSet("ns", "key", new TextEncoder().encode("v"), {}, new Date());
 * ```
 */
export async function openKvStore(path: string): Promise<RelayStore> {
  makePrivate(path);
  const kv = await Deno.openKv(path);
  try {
    await sweepOrphans(kv);
  } catch (err) {
    kv.close();
    throw err;
  }
  return new DenoKvStore(kv);
}

/**
 * Makes the database file 0600 before SQLite opens it: SQLite gives its
 * `-wal` and `-shm` files the database file's mode, so all three hold
 * credentials' hashes and KV values for this user only. Files left wider by
 * an older relay are narrowed.
 */
function makePrivate(path: string): void {
  if (path === ":memory:") return;
  Deno.openSync(path, { write: true, create: true, mode: 0o600 }).close();
  for (const file of [path, `${path}-wal`, `${path}-shm`]) {
    let mode: number | null;
    try {
      mode = Deno.statSync(file).mode;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) continue;
      throw err;
    }
    if (mode !== null && (mode & 0o077) !== 0) Deno.chmodSync(file, 0o600);
  }
}

/** A link as kept: the replica's address is read from its lease. */
type StoredLink = Omit<LinkRecord, "peerUrl">;
/** A replica's lease. */
interface StoredReplica {
  id: string;
  peerUrl: string | null;
  expiresAt: string;
}

class DenoKvStore implements RelayStore {
  #kv: Deno.Kv;
  #bus = new WatchBus();
  #closed = false;
  #waiting: PendingWrite[] = [];
  #committing = false;
  #cache = new MetaCache(KV_CACHE_BYTES);

  constructor(kv: Deno.Kv) {
    this.#kv = kv;
  }

  async register(inviteHash: string, node: NodeRecord, now: Date): Promise<RegisterResult> {
    if (!keyPartOk(inviteHash)) return { ok: false, reason: "invite_invalid" };
    checkKeyPart(node.name, "node name");
    const inviteKey = ["invite", inviteHash];
    const nodeKey = ["node", node.name];
    for (let attempt = 0; attempt < COMMIT_ATTEMPTS; attempt++) {
      const [invite, holder] = await this.#kv.getMany<[InviteRecord, NodeRecord]>([
        inviteKey,
        nodeKey,
      ]);
      // The invite first: without a valid one, nobody learns which names exist.
      if (invite.value === null || !inviteLive(invite.value, now)) {
        return { ok: false, reason: "invite_invalid" };
      }
      const h = holder.value;
      if (h !== null && h.revokedAt === null && h.credentialHash !== node.credentialHash) {
        return { ok: false, reason: "name_taken" };
      }
      // the invite says which network the node joins
      const joined = { ...node, network: invite.value.network ?? DEFAULT_NETWORK };
      const op = this.#kv.atomic().check(invite, holder).set(nodeKey, joined);
      const usesLeft = invite.value.usesLeft - 1;
      if (usesLeft <= 0) op.delete(inviteKey);
      else op.set(inviteKey, { ...invite.value, usesLeft });
      if ((await op.commit()).ok) return { ok: true, node: joined };
    }
    throw new Error(`Cannot register node "${node.name}": the store is too busy, try again`);
  }

  async getNode(name: string): Promise<NodeRecord | null> {
    if (!keyPartOk(name)) return null;
    return withNetwork((await this.#kv.get<NodeRecord>(["node", name])).value);
  }

  async listNodes(): Promise<NodeRecord[]> {
    return (await this.#listValues<NodeRecord>(["node"])).map((n) => withNetwork(n)!);
  }

  async getUser(name: string): Promise<UserRecord | null> {
    if (!keyPartOk(name)) return null;
    return (await this.#kv.get<UserRecord>(["user", name])).value;
  }

  async listUsers(): Promise<UserRecord[]> {
    return await this.#listValues<UserRecord>(["user"]);
  }

  async putUser(user: UserRecord): Promise<void> {
    checkKeyPart(user.name, "user name");
    await this.#kv.set(["user", user.name], user);
  }

  async authVersion(): Promise<bigint> {
    return (await this.#kv.get<Deno.KvU64>(["authversion"])).value?.value ?? 0n;
  }

  async bumpAuthVersion(): Promise<void> {
    await this.#kv.atomic().sum(["authversion"], 1n).commit();
  }

  async putNode(node: NodeRecord): Promise<void> {
    checkKeyPart(node.name, "node name");
    await this.#kv.set(["node", node.name], node);
  }

  async sharedValue(name: string, make: () => string): Promise<string> {
    checkKeyPart(name, "shared value name");
    const key = ["shared", name];
    for (let attempt = 0; attempt < COMMIT_ATTEMPTS; attempt++) {
      const had = await this.#kv.get<string>(key);
      if (had.value !== null) return had.value;
      const value = make();
      if ((await this.#kv.atomic().check(had).set(key, value).commit()).ok) return value;
    }
    throw new Error(`Cannot store the shared value "${name}": the store is too busy`);
  }

  async heartbeat(
    replica: { id: string; peerUrl: string | null },
    leaseMs: number,
    now: Date,
  ): Promise<Set<string>> {
    checkKeyPart(replica.id, "replica id");
    const record = { ...replica, expiresAt: new Date(now.getTime() + leaseMs).toISOString() };
    await this.#kv.set(["replica", replica.id], record);
    const held = new Set<string>();
    for await (const e of this.#kv.list<StoredLink>({ prefix: ["link"] })) {
      if (e.value.replica === replica.id) held.add(e.value.linkId);
    }
    return held;
  }

  async claimLink(node: string, replica: string, linkId: string, now: Date): Promise<void> {
    checkKeyPart(node, "node name");
    const link: StoredLink = { node, replica, linkId, since: now.toISOString() };
    await this.#kv.set(["link", node], link);
  }

  async releaseLink(node: string, linkId: string): Promise<void> {
    if (!keyPartOk(node)) return;
    for (let attempt = 0; attempt < COMMIT_ATTEMPTS; attempt++) {
      const had = await this.#kv.get<StoredLink>(["link", node]);
      if (had.value?.linkId !== linkId) return;
      if ((await this.#kv.atomic().check(had).delete(["link", node]).commit()).ok) return;
    }
  }

  async getLink(node: string, now: Date): Promise<LinkRecord | null> {
    if (!keyPartOk(node)) return null;
    const link = (await this.#kv.get<StoredLink>(["link", node])).value;
    if (!link) return null;
    const replica = (await this.#kv.get<StoredReplica>(["replica", link.replica])).value;
    return replica && Date.parse(replica.expiresAt) > now.getTime()
      ? { ...link, peerUrl: replica.peerUrl }
      : null;
  }

  async listLinks(now: Date): Promise<LinkRecord[]> {
    const replicas = new Map<string, StoredReplica>();
    for await (const e of this.#kv.list<StoredReplica>({ prefix: ["replica"] })) {
      if (Date.parse(e.value.expiresAt) > now.getTime()) replicas.set(e.value.id, e.value);
    }
    const out: LinkRecord[] = [];
    for await (const e of this.#kv.list<StoredLink>({ prefix: ["link"] })) {
      const r = replicas.get(e.value.replica);
      if (r) out.push({ ...e.value, peerUrl: r.peerUrl });
    }
    return out;
  }

  async leave(id: string): Promise<void> {
    if (!keyPartOk(id)) return;
    for await (const e of this.#kv.list<StoredLink>({ prefix: ["link"] })) {
      if (e.value.replica === id) await this.releaseLink(e.value.node, e.value.linkId);
    }
    await this.#kv.delete(["replica", id]);
  }

  async createInvite(invite: InviteRecord): Promise<void> {
    checkKeyPart(invite.tokenHash, "invite hash");
    await this.#kv.set(["invite", invite.tokenHash], invite);
  }

  async listInvites(now: Date): Promise<InviteRecord[]> {
    return (await this.#listValues<InviteRecord>(["invite"])).filter((i) => inviteLive(i, now))
      .map((i) => withNetwork(i)!);
  }

  async revokeInvite(tokenHash: string): Promise<boolean> {
    return keyPartOk(tokenHash) && await this.#deleteIfPresent(["invite", tokenHash]);
  }

  async addSshKey(key: SshKeyRecord): Promise<void> {
    checkKeyPart(key.fingerprint, "SSH key fingerprint");
    await this.#kv.set(["sshkey", key.fingerprint], key);
  }

  async listSshKeys(): Promise<SshKeyRecord[]> {
    return (await this.#listValues<SshKeyRecord>(["sshkey"])).map((k) => withNetwork(k)!);
  }

  async removeSshKey(fingerprint: string): Promise<boolean> {
    return keyPartOk(fingerprint) && await this.#deleteIfPresent(["sshkey", fingerprint]);
  }

  async kvGet(ns: string, key: string, now: Date): Promise<KvEntry | null> {
    if (!keyPartOk(ns) || !keyPartOk(key)) return null;
    const metaKey = ["kv", ns, key];
    const hit = this.#cache.get(metaKey);
    if (hit) {
      if (expired(hit.value, now)) return null;
      return {
        value: hit.value.inline!,
        version: hit.versionstamp,
        expiresAt: hit.value.expiresAt,
      };
    }
    const since = this.#cache.writes;
    let meta = await this.#meta(metaKey);
    this.#cache.putRead(meta, since);
    for (let attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
      if (meta.value === null || expired(meta.value, now)) return null;
      const m = meta.value;
      const value = m.blob === null ? m.inline : await this.#readBlob(m.blob, m.size);
      if (value !== null) {
        return { value, version: meta.versionstamp!, expiresAt: meta.value.expiresAt };
      }
      const again = await this.#kv.get<KvMeta>(metaKey);
      // Same version but chunks gone: the engine reclaimed them (expireIn).
      if (again.versionstamp === meta.versionstamp) return null;
      meta = again;
    }
    throw new Error(`Cannot read KV key "${key}" in "${ns}": it keeps changing, try again`);
  }

  async kvSet(
    ns: string,
    key: string,
    value: Uint8Array,
    opts: KvSetOptions,
    now: Date,
  ): Promise<KvWriteResult> {
    checkKeyPart(ns, "KV namespace");
    checkKeyPart(key, "KV key");
    if (value.byteLength > KV_MAX_VALUE_BYTES) {
      throw new RangeError(
        `Cannot store ${value.byteLength} bytes in KV key "${key}": the limit is ${KV_MAX_VALUE_BYTES}`,
      );
    }
    if (opts.ifAbsent && opts.ifVersion !== undefined) {
      throw new TypeError("Cannot combine ifAbsent with ifVersion");
    }
    let expiresAt: string | null = null;
    let expireIn: number | undefined;
    if (opts.ttlMs !== undefined) {
      const end = new Date(now.getTime() + opts.ttlMs);
      if (!(opts.ttlMs > 0) || Number.isNaN(end.getTime())) {
        throw new RangeError(`Invalid KV TTL ${opts.ttlMs} ms: use a positive number`);
      }
      expiresAt = end.toISOString();
      expireIn = Math.ceil(opts.ttlMs) + EXPIRE_GRACE_MS;
    }

    const metaKey = ["kv", ns, key];
    // A copy: a view would be stored with its whole underlying buffer.
    const inline = value.byteLength <= INLINE_MAX_BYTES ? value.slice() : null;
    let blob: BlobRef | null = null;
    let committed = false;
    try {
      for (let attempt = 0; attempt < COMMIT_ATTEMPTS; attempt++) {
        const cur = attempt === 0 ? await this.#meta(metaKey) : await this.#kv.get<KvMeta>(metaKey);
        const live = cur.value !== null && !expired(cur.value, now);
        if (opts.ifAbsent && live) return { ok: false, reason: "conflict" };
        if (opts.ifVersion !== undefined) {
          if (!live) return { ok: false, reason: "not_found" };
          if (cur.versionstamp !== opts.ifVersion) return { ok: false, reason: "conflict" };
        }
        if (inline === null) blob ??= await this.#writeBlob(value, expireIn);
        const meta: KvMeta = { size: value.byteLength, expiresAt, inline, blob };
        const old = cur.value?.blob ?? null;
        const written = blob;
        const res = await this.#commit(metaKey, (op) => {
          op.check(cur).set(metaKey, meta, expireIn === undefined ? undefined : { expireIn });
          if (written !== null) op.delete(["kvorphan", written.id]);
          if (old !== null) {
            op.set(["kvorphan", old.id], { chunks: old.chunks } satisfies OrphanMark);
          }
        });
        // after a failed check the next attempt reads the store, not the cache
        this.#cache.putWrite(
          metaKey,
          res.ok ? { value: meta, versionstamp: res.versionstamp } : null,
        );
        if (!res.ok) continue;
        committed = true;
        // Published before any await, so watchers see changes in commit order.
        this.#bus.publish({ type: "set", ns, key, version: res.versionstamp, expiresAt });
        if (old !== null) await deleteBlob(this.#kv, old);
        return { ok: true, version: res.versionstamp, created: !live };
      }
      throw new Error(`Cannot write KV key "${key}" in "${ns}": the store is too busy, try again`);
    } finally {
      if (blob !== null && !committed) await deleteBlob(this.#kv, blob);
    }
  }

  /** On success, `version` is the version that was deleted. */
  async kvDelete(
    ns: string,
    key: string,
    opts: { ifVersion?: string },
    now: Date,
  ): Promise<KvWriteResult> {
    if (!keyPartOk(ns) || !keyPartOk(key)) return { ok: false, reason: "not_found" };
    const metaKey = ["kv", ns, key];
    for (let attempt = 0; attempt < COMMIT_ATTEMPTS; attempt++) {
      const cur = attempt === 0 ? await this.#meta(metaKey) : await this.#kv.get<KvMeta>(metaKey);
      if (cur.value === null || expired(cur.value, now)) return { ok: false, reason: "not_found" };
      if (opts.ifVersion !== undefined && cur.versionstamp !== opts.ifVersion) {
        return { ok: false, reason: "conflict" };
      }
      const old = cur.value.blob;
      const res = await this.#commit(metaKey, (op) => {
        op.check(cur).delete(metaKey);
        if (old !== null) op.set(["kvorphan", old.id], { chunks: old.chunks } satisfies OrphanMark);
      });
      this.#cache.putWrite(metaKey, null);
      if (!res.ok) continue;
      this.#bus.publish({ type: "delete", ns, key, version: null, expiresAt: null });
      if (old !== null) await deleteBlob(this.#kv, old);
      return { ok: true, version: cur.versionstamp! };
    }
    throw new Error(`Cannot delete KV key "${key}" in "${ns}": the store is too busy, try again`);
  }

  /**
   * Keys are ordered by their UTF-8 bytes (code point order). The cursor is
   * the base64url of the last key returned. Throws `RangeError` for a limit
   * outside 1..{@link KV_LIST_MAX_LIMIT} or a cursor this store did not make.
   */
  async kvList(
    ns: string,
    prefix: string,
    limit: number,
    cursor: string | null,
    now: Date,
  ): Promise<KvPage> {
    if (!Number.isInteger(limit) || limit < 1 || limit > KV_LIST_MAX_LIMIT) {
      throw new RangeError(`Invalid KV list limit ${limit}: use 1 to ${KV_LIST_MAX_LIMIT}`);
    }
    let after = cursor === null ? null : decodeCursor(cursor);
    if (!keyPartOk(ns) || !keyPartOk(prefix)) return { entries: [], cursor: null };
    if (after !== null && compareUtf8(after, prefix) < 0) after = null;
    const entries: KvPage["entries"] = [];
    const iter = this.#kv.list<KvMeta>(
      { prefix: ["kv", ns], start: ["kv", ns, after ?? prefix] },
      { batchSize: Math.min(limit + 1, LIST_BATCH) },
    );
    for await (const e of iter) {
      const key = e.key[2];
      if (typeof key !== "string" || !key.startsWith(prefix)) break;
      if (key === after || expired(e.value, now)) continue;
      if (entries.length === limit) return { entries, cursor: encodeCursor(entries.at(-1)!.key) };
      entries.push({
        key,
        version: e.versionstamp,
        expiresAt: e.value.expiresAt,
        size: e.value.size,
      });
    }
    return { entries, cursor: null };
  }

  /**
   * Served by an in-process event bus (Deno KV's own watch has no prefixes).
   * Entries that expire produce no event. A watcher that falls
   * {@link KV_WATCH_QUEUE_EVENTS} events behind gets what was queued, then
   * its iterable ends although `signal` has not aborted: the caller should
   * re-read and watch again. Closing the store ends every watch.
   */
  kvWatch(
    ns: string,
    match: { key: string } | { prefix: string },
    signal: AbortSignal,
  ): AsyncIterable<KvEvent> {
    return this.#bus.subscribe(ns, match, signal, this.#closed);
  }

  [Symbol.asyncDispose](): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#bus.endAll();
      this.#kv.close();
    }
    return Promise.resolve();
  }

  /** A KV entry's metadata: from the cache when it holds it, else from the store. */
  async #meta(key: Deno.KvKey): Promise<Deno.KvEntryMaybe<KvMeta>> {
    const hit = this.#cache.get(key);
    if (hit) return { key, value: hit.value, versionstamp: hit.versionstamp };
    return await this.#kv.get<KvMeta>(key);
  }

  /**
   * Commits one write's check and mutations, together with the writes that
   * arrive while a commit runs (group commit: one SQLite transaction for up
   * to {@link GROUP_COMMIT_MAX}). An idle store commits at once. If a group
   * fails (one of its checks no longer holds), each of its writes is
   * committed alone, so a conflict is reported only to the write it concerns.
   */
  #commit(
    key: Deno.KvKey,
    build: (op: Deno.AtomicOperation) => void,
  ): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
    return new Promise((done, fail) => {
      this.#waiting.push({ id: JSON.stringify(key), build, done, fail });
      if (!this.#committing) void this.#drain();
    });
  }

  async #drain(): Promise<void> {
    this.#committing = true;
    try {
      while (this.#waiting.length > 0) {
        const group: PendingWrite[] = [];
        const ids = new Set<string>();
        const later: PendingWrite[] = [];
        for (const w of this.#waiting) {
          if (group.length < GROUP_COMMIT_MAX && !ids.has(w.id)) {
            group.push(w);
            ids.add(w.id);
          } else later.push(w);
        }
        this.#waiting = later;
        const alone = (w: PendingWrite) => {
          const op = this.#kv.atomic();
          w.build(op);
          return op.commit().then(w.done, w.fail);
        };
        if (group.length === 1) {
          await alone(group[0]);
          continue;
        }
        const op = this.#kv.atomic();
        for (const w of group) w.build(op);
        let res: Deno.KvCommitResult | Deno.KvCommitError;
        try {
          res = await op.commit();
        } catch {
          res = { ok: false };
        }
        if (res.ok) { for (const w of group) w.done(res); }
        else await Promise.all(group.map(alone));
      }
    } finally {
      this.#committing = false;
    }
  }

  async #listValues<T>(prefix: string[]): Promise<T[]> {
    const out: T[] = [];
    for await (const e of this.#kv.list<T>({ prefix })) out.push(e.value);
    return out;
  }

  async #deleteIfPresent(key: string[]): Promise<boolean> {
    for (let attempt = 0; attempt < COMMIT_ATTEMPTS; attempt++) {
      const cur = await this.#kv.get(key);
      if (cur.versionstamp === null) return false;
      if ((await this.#kv.atomic().check(cur).delete(key).commit()).ok) return true;
    }
    throw new Error(`Cannot delete ${key.join("/")}: the store is too busy, try again`);
  }

  /** Writes `value` as chunks under a fresh blob id, marked orphan until committed. */
  async #writeBlob(value: Uint8Array, expireIn: number | undefined): Promise<BlobRef> {
    const blobId = crypto.randomUUID();
    const chunks = Math.ceil(value.byteLength / CHUNK_BYTES);
    const opts = expireIn === undefined ? undefined : { expireIn: expireIn + EXPIRE_GRACE_MS };
    // The mark goes first: if we crash after any chunk is written, the sweep finds it.
    await this.#kv.set(["kvorphan", blobId], { chunks } satisfies OrphanMark);
    for (let first = 0; first < chunks; first += CHUNKS_PER_BATCH) {
      const op = this.#kv.atomic();
      for (let i = first; i < Math.min(first + CHUNKS_PER_BATCH, chunks); i++) {
        op.set(["kvblob", blobId, i], value.slice(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES), opts);
      }
      await op.commit();
    }
    return { id: blobId, chunks };
  }

  /** The value of a blob, or null if any chunk is missing (replaced or reclaimed). */
  async #readBlob(blob: BlobRef, size: number): Promise<Uint8Array | null> {
    const keys = Array.from({ length: blob.chunks }, (_, i) => ["kvblob", blob.id, i]);
    const groups: Deno.KvKey[][] = [];
    for (let i = 0; i < keys.length; i += GET_MANY_MAX) {
      groups.push(keys.slice(i, i + GET_MANY_MAX));
    }
    const read = await Promise.all(groups.map((g) => this.#kv.getMany<Uint8Array[]>(g)));
    const out = new Uint8Array(size);
    let offset = 0;
    for (const e of read.flat()) {
      const chunk = e.value;
      if (!(chunk instanceof Uint8Array) || offset + chunk.byteLength > size) return null;
      out.set(chunk, offset);
      offset += chunk.byteLength;
    }
    return offset === size ? out : null;
  }
}

/** Deletes a blob's chunks, then its orphan mark. */
async function deleteBlob(kv: Deno.Kv, blob: BlobRef): Promise<void> {
  // Deletes are small: a commit holds many more of them than of chunk writes.
  const perCommit = 64;
  for (let first = 0; first < blob.chunks; first += perCommit) {
    const op = kv.atomic();
    for (let i = first; i < Math.min(first + perCommit, blob.chunks); i++) {
      op.delete(["kvblob", blob.id, i]);
    }
    await op.commit();
  }
  await kv.delete(["kvorphan", blob.id]);
}

/** Deletes every blob marked orphan: left by a write or delete that crashed half-way. */
async function sweepOrphans(kv: Deno.Kv): Promise<void> {
  for await (const e of kv.list<OrphanMark>({ prefix: ["kvorphan"] })) {
    const blobId = e.key[1];
    if (typeof blobId !== "string") continue;
    const chunks = Number.isInteger(e.value?.chunks) ? e.value.chunks : 0;
    await deleteBlob(kv, { id: blobId, chunks });
  }
}
