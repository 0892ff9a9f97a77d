/**
 * {@link RelayStore} on PostgreSQL (npm `postgres`; its imports stay in this
 * file), for several relay replicas sharing one store.
 *
 * - Records (nodes, invites, users, SSH keys) are JSONB rows keyed by text
 *   in the "C" collation, so listings come in the same order as on Deno KV.
 * - KV entries are rows keyed by the namespace's and key's UTF-8 bytes
 *   (`bytea`: byte order is code point order, and NUL is allowed), with an
 *   integer version from one sequence and a logical expiry in milliseconds
 *   compared with the caller's clock. A write and its conditions are one
 *   call of `cw_kv_set` (a function the migrations create): one round trip,
 *   atomic, and it announces the change with `pg_notify` on commit.
 * - KV watches: one `LISTEN cw_kv` connection per relay process fans
 *   changes out to its watchers (store_common.ts's bounded queues). Every
 *   replica sees every commit, in commit order. When that connection is lost
 *   and comes back, every open watch is ended (it may have missed changes):
 *   callers re-read and watch again, as after falling behind.
 * - Invites are consumed under a row lock (`FOR UPDATE`), so one use raced
 *   by replicas registers exactly one node.
 * - Replica leases and which replica holds each node's link
 *   (`cw_replicas`, `cw_links`); leases compare the replicas' own clocks,
 *   which must agree within a fraction of the lease (NTP).
 * - Migrations run at open, one after another, under an advisory lock: two
 *   replicas starting at once apply each step once. A schema newer than
 *   this build knows refuses to open.
 *
 * The store URL is PostgreSQL's (`postgres://USER@HOST:PORT/DB`), plus an
 * optional `?schema=NAME` (default `public`) to keep several relays, or
 * tests, apart in one database.
 */
import postgres from "postgres";
import { Buffer } from "node:buffer";
import { DEFAULT_NETWORK } from "../shared/api.ts";
import { CwError } from "../shared/errors.ts";
import {
  checkKeyPart,
  decodeCursor,
  encodeCursor,
  inviteLive,
  keyPartOk,
  KV_LIST_MAX_LIMIT,
  KV_MAX_VALUE_BYTES,
  WatchBus,
  withNetwork,
} from "./store_common.ts";
import type { AuditEntry } from "../shared/api.ts";
import type {
  AuditStore,
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

/** Connections one relay process keeps to PostgreSQL (plus one for LISTEN). */
export const PG_POOL_MAX = 10;
/** How long opening a connection may take. */
const CONNECT_TIMEOUT_S = 10;
/** The advisory lock that serializes migrations across replicas. */
const MIGRATION_LOCK = 0x63770001;
/** Expired KV rows are deleted this long after their expiry (their logical end is exact). */
const SWEEP_GRACE_MS = 60_000;
/** How often a relay sweeps expired KV rows, and how many at most each time. */
const SWEEP_INTERVAL_MS = 60_000;
const SWEEP_BATCH = 1000;

const SCHEMA_RE = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * The schema, step by step: append, never edit a step that has shipped.
 * Step N brings the schema to version N + 1.
 */
const MIGRATIONS: string[] = [
  `
  CREATE TABLE cw_nodes (name text COLLATE "C" PRIMARY KEY, rec jsonb NOT NULL);
  CREATE TABLE cw_invites (token_hash text COLLATE "C" PRIMARY KEY, rec jsonb NOT NULL);
  CREATE TABLE cw_users (name text COLLATE "C" PRIMARY KEY, rec jsonb NOT NULL);
  CREATE TABLE cw_ssh_keys (fingerprint text COLLATE "C" PRIMARY KEY, rec jsonb NOT NULL);
  CREATE TABLE cw_shared (name text COLLATE "C" PRIMARY KEY, value text NOT NULL);
  CREATE TABLE cw_counters (name text COLLATE "C" PRIMARY KEY, value bigint NOT NULL);
  CREATE TABLE cw_replicas (
    id text COLLATE "C" PRIMARY KEY, peer_url text, expires_ms bigint NOT NULL);
  CREATE TABLE cw_links (
    node text COLLATE "C" PRIMARY KEY, replica text COLLATE "C" NOT NULL,
    link_id text NOT NULL, since_ms bigint NOT NULL);
  CREATE INDEX cw_links_replica ON cw_links (replica);
  CREATE SEQUENCE cw_kv_version;
  CREATE TABLE cw_kv (
    ns bytea NOT NULL, key bytea NOT NULL, value bytea NOT NULL,
    version bigint NOT NULL, expires_ms bigint, PRIMARY KEY (ns, key));
  CREATE INDEX cw_kv_expiry ON cw_kv (expires_ms) WHERE expires_ms IS NOT NULL;

  -- one KV write with its conditions; outcome: ok | conflict | not_found
  CREATE FUNCTION cw_kv_set(p_ns bytea, p_key bytea, p_value bytea, p_expires bigint,
      p_if_version bigint, p_if_absent boolean, p_now bigint,
      OUT outcome text, OUT new_version bigint, OUT created boolean)
  LANGUAGE plpgsql AS $$
  DECLARE
    old_version bigint;
    old_expires bigint;
    had_row boolean;
    live boolean;
  BEGIN
    LOOP
      SELECT version, expires_ms INTO old_version, old_expires
        FROM cw_kv WHERE ns = p_ns AND key = p_key FOR UPDATE;
      had_row := FOUND;
      live := had_row AND (old_expires IS NULL OR old_expires > p_now);
      IF p_if_absent AND live THEN outcome := 'conflict'; RETURN; END IF;
      IF p_if_version IS NOT NULL THEN
        IF NOT live THEN outcome := 'not_found'; RETURN; END IF;
        IF old_version <> p_if_version THEN outcome := 'conflict'; RETURN; END IF;
      END IF;
      new_version := nextval('cw_kv_version');
      IF had_row THEN
        UPDATE cw_kv SET value = p_value, version = new_version, expires_ms = p_expires
          WHERE ns = p_ns AND key = p_key;
      ELSE
        BEGIN
          INSERT INTO cw_kv (ns, key, value, version, expires_ms)
            VALUES (p_ns, p_key, p_value, new_version, p_expires);
        EXCEPTION WHEN unique_violation THEN
          CONTINUE; -- created meanwhile by another writer: decide again on its row
        END;
      END IF;
      PERFORM pg_notify('cw_kv', json_build_object('t', 's', 'ns', encode(p_ns, 'hex'),
        'k', encode(p_key, 'hex'), 'v', new_version, 'e', p_expires)::text);
      outcome := 'ok';
      created := NOT live;
      RETURN;
    END LOOP;
  END $$;

  CREATE FUNCTION cw_kv_delete(p_ns bytea, p_key bytea, p_if_version bigint, p_now bigint,
      OUT outcome text, OUT old_version bigint)
  LANGUAGE plpgsql AS $$
  DECLARE
    old_expires bigint;
  BEGIN
    SELECT version, expires_ms INTO old_version, old_expires
      FROM cw_kv WHERE ns = p_ns AND key = p_key FOR UPDATE;
    IF NOT FOUND OR (old_expires IS NOT NULL AND old_expires <= p_now) THEN
      outcome := 'not_found'; old_version := NULL; RETURN;
    END IF;
    IF p_if_version IS NOT NULL AND old_version <> p_if_version THEN
      outcome := 'conflict'; old_version := NULL; RETURN;
    END IF;
    DELETE FROM cw_kv WHERE ns = p_ns AND key = p_key;
    PERFORM pg_notify('cw_kv', json_build_object('t', 'd', 'ns', encode(p_ns, 'hex'),
      'k', encode(p_key, 'hex'))::text);
    outcome := 'ok';
  END $$;
  `,
  `
  CREATE TABLE cw_audit (id bigserial PRIMARY KEY, time text COLLATE "C" NOT NULL, entry jsonb NOT NULL);
  CREATE INDEX cw_audit_time ON cw_audit (time);
  `,
];

/** Audit entries the store keeps (the oldest go first), as the file keeps AUDIT_MAX_BYTES. */
export const PG_AUDIT_MAX_ENTRIES = 1_000_000;
/** pg_notify carries at most 8000 bytes: a larger entry is stored but not announced. */
const NOTIFY_MAX_BYTES = 7900;

type Sql = ReturnType<typeof postgres>;

/**
 * Opens the store at `url` (see the file's comment), running migrations.
 * Throws a one-line Error when PostgreSQL cannot be reached or refuses.
 */
export async function openPgStore(url: string): Promise<RelayStore> {
  const { connection, schema } = parseStoreUrl(url);
  const sql = postgres(connection, {
    max: PG_POOL_MAX,
    connect_timeout: CONNECT_TIMEOUT_S,
    onnotice: () => {},
    connection: { search_path: schema, application_name: "cw relay" },
  });
  try {
    await migrate(sql, schema);
  } catch (err) {
    await sql.end({ timeout: 1 }).catch(() => {});
    throw new CwError("internal", `PostgreSQL store ${redactStoreUrl(url)}: ${describe(err)}`);
  }
  const store = new PgStore(sql);
  try {
    await store.listen();
  } catch (err) {
    await store[Symbol.asyncDispose]();
    throw new CwError("internal", `PostgreSQL store: cannot LISTEN: ${describe(err)}`);
  }
  return store;
}

/** Splits cw's `?schema=` off a PostgreSQL URL; checks both. */
export function parseStoreUrl(url: string): { connection: string; schema: string } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new RangeError("The store URL is not a URL: use postgres://USER@HOST:PORT/DB");
  }
  if (u.protocol !== "postgres:" && u.protocol !== "postgresql:") {
    throw new RangeError(`Unknown store "${u.protocol}": use postgres://USER@HOST:PORT/DB`);
  }
  const schema = u.searchParams.get("schema") ?? "public";
  if (!SCHEMA_RE.test(schema)) {
    throw new RangeError(
      `Invalid schema "${schema.slice(0, 64)}": lower-case letters, digits and _`,
    );
  }
  u.searchParams.delete("schema");
  return { connection: u.toString(), schema };
}

/** Drops the schema `url` names, with everything in it (tests; starting over). */
export async function dropPgSchema(url: string): Promise<void> {
  const { connection, schema } = parseStoreUrl(url);
  const sql = postgres(connection, { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/** The store URL without its password, for logs. */
export function redactStoreUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "(invalid URL)";
  }
}

/** One line from a PostgreSQL or connection error. */
function describe(err: unknown): string {
  const e = err as { message?: string; code?: string };
  return String(e?.message ?? err).split("\n")[0].slice(0, 300);
}

async function migrate(sql: Sql, schema: string): Promise<void> {
  await sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`;
    await tx.unsafe(`CREATE SCHEMA IF NOT EXISTS "${schema}"`);
    await tx`CREATE TABLE IF NOT EXISTS cw_schema (version integer NOT NULL)`;
    const [row] = await tx`SELECT version FROM cw_schema`;
    const at = row ? Number(row.version) : 0;
    if (at > MIGRATIONS.length) {
      throw new Error(
        `the store's schema is version ${at}, newer than this cw knows (${MIGRATIONS.length}): upgrade cw`,
      );
    }
    for (let step = at; step < MIGRATIONS.length; step++) await tx.unsafe(MIGRATIONS[step]);
    if (!row) await tx`INSERT INTO cw_schema (version) VALUES (${MIGRATIONS.length})`;
    else if (at !== MIGRATIONS.length) {
      await tx`UPDATE cw_schema SET version = ${MIGRATIONS.length}`;
    }
  });
}

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/** Bytes for a `bytea` parameter. */
function bytes(s: string | Uint8Array): Buffer {
  const u = typeof s === "string" ? utf8.encode(s) : s;
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

/** A version as callers see it: 20 digits, so versions compare as strings too. */
function versionText(v: string | number | bigint): string {
  return String(v).padStart(20, "0");
}

/** A caller's version back to the integer; anything else matches no entry. */
function versionNumber(v: string): string {
  return /^[0-9]{1,20}$/.test(v) ? BigInt(v).toString() : "-1";
}

function hexText(hex: string): string {
  return fromUtf8.decode(Buffer.from(hex, "hex"));
}

class PgStore implements RelayStore {
  #sql: Sql;
  #bus = new WatchBus();
  #auditWatchers = new Set<(e: AuditEntry) => void>();
  #closed = false;
  #listens = 0;
  #sweep: ReturnType<typeof setInterval>;

  constructor(sql: Sql) {
    this.#sql = sql;
    this.#sweep = setInterval(() => void this.#sweepExpired().catch(() => {}), SWEEP_INTERVAL_MS);
    Deno.unrefTimer(this.#sweep);
  }

  readonly audit: AuditStore = {
    appendAudit: async (entries) => {
      if (entries.length === 0) return;
      const texts = entries.map((e) => JSON.stringify(e));
      await this.#sql.begin(async (tx) => {
        await tx`
          INSERT INTO cw_audit (time, entry)
          SELECT t::jsonb->>'time', t::jsonb FROM unnest(${texts}::text[]) WITH ORDINALITY AS u(t, n)
          ORDER BY n`;
        const announced = texts.filter((t) => utf8.encode(t).byteLength <= NOTIFY_MAX_BYTES);
        if (announced.length) {
          await tx`SELECT pg_notify('cw_audit', t) FROM unnest(${announced}::text[]) AS t`;
        }
      });
    },
    readAudit: async (since, limit) => {
      const rows = await this.#sql`
        SELECT entry FROM (
          SELECT id, entry FROM cw_audit WHERE time >= ${since} ORDER BY id DESC LIMIT ${limit}
        ) latest ORDER BY id`;
      return rows.map((r) => r.entry as AuditEntry);
    },
    watchAudit: (fn) => {
      this.#auditWatchers.add(fn);
      return () => this.#auditWatchers.delete(fn);
    },
  };

  /** Subscribes to KV changes and audit entries (called once, by openPgStore). */
  async listen(): Promise<void> {
    await this.#sql.listen("cw_audit", (payload) => {
      let entry: AuditEntry;
      try {
        entry = JSON.parse(payload);
      } catch {
        return;
      }
      for (const fn of this.#auditWatchers) fn(entry);
    });
    await this.#sql.listen("cw_kv", (payload) => this.#onNotify(payload), () => {
      // the first call is the subscription itself; later ones follow a lost connection
      if (this.#listens++ > 0) this.#bus.endAll();
    });
  }

  #onNotify(payload: string): void {
    let m: { t?: string; ns?: string; k?: string; v?: number | string; e?: number | null };
    try {
      m = JSON.parse(payload);
    } catch {
      return;
    }
    if (typeof m.ns !== "string" || typeof m.k !== "string") return;
    const event: KvEvent = m.t === "s"
      ? {
        type: "set",
        ns: hexText(m.ns),
        key: hexText(m.k),
        version: versionText(String(m.v)),
        expiresAt: m.e == null ? null : new Date(Number(m.e)).toISOString(),
      }
      : { type: "delete", ns: hexText(m.ns), key: hexText(m.k), version: null, expiresAt: null };
    this.#bus.publish(event);
  }

  async #sweepExpired(): Promise<void> {
    await this.#sql`
      DELETE FROM cw_audit WHERE id < (SELECT max(id) FROM cw_audit) - ${PG_AUDIT_MAX_ENTRIES}`;
    const before = Date.now() - SWEEP_GRACE_MS;
    await this.#sql`
      DELETE FROM cw_kv WHERE (ns, key) IN (
        SELECT ns, key FROM cw_kv WHERE expires_ms < ${before} LIMIT ${SWEEP_BATCH})`;
  }

  async register(inviteHash: string, node: NodeRecord, now: Date): Promise<RegisterResult> {
    if (!keyPartOk(inviteHash)) return { ok: false, reason: "invite_invalid" };
    checkKeyPart(node.name, "node name");
    return await this.#sql.begin(async (tx): Promise<RegisterResult> => {
      const [row] = await tx`
        SELECT rec FROM cw_invites WHERE token_hash = ${inviteHash} FOR UPDATE`;
      const invite = row?.rec as InviteRecord | undefined;
      // the invite first: without a valid one, nobody learns which names exist
      if (!invite || !inviteLive(invite, now)) return { ok: false, reason: "invite_invalid" };
      const joined: NodeRecord = { ...node, network: invite.network ?? DEFAULT_NETWORK };
      const placed = await tx`
        INSERT INTO cw_nodes (name, rec) VALUES (${node.name}, ${tx.json(json(joined))})
        ON CONFLICT (name) DO UPDATE SET rec = EXCLUDED.rec
          WHERE cw_nodes.rec->>'revokedAt' IS NOT NULL
             OR cw_nodes.rec->>'credentialHash' = ${node.credentialHash}
        RETURNING name`;
      if (placed.length === 0) return { ok: false, reason: "name_taken" };
      const usesLeft = invite.usesLeft - 1;
      if (usesLeft <= 0) await tx`DELETE FROM cw_invites WHERE token_hash = ${inviteHash}`;
      else {
        await tx`UPDATE cw_invites SET rec = ${tx.json(json({ ...invite, usesLeft }))}
          WHERE token_hash = ${inviteHash}`;
      }
      return { ok: true, node: joined };
    });
  }

  async getNode(name: string): Promise<NodeRecord | null> {
    if (!keyPartOk(name)) return null;
    const [row] = await this.#sql`SELECT rec FROM cw_nodes WHERE name = ${name}`;
    return withNetwork((row?.rec as NodeRecord | undefined) ?? null);
  }

  async listNodes(): Promise<NodeRecord[]> {
    const rows = await this.#sql`SELECT rec FROM cw_nodes ORDER BY name`;
    return rows.map((r) => withNetwork(r.rec as NodeRecord)!);
  }

  async putNode(node: NodeRecord): Promise<void> {
    checkKeyPart(node.name, "node name");
    await this.#sql`
      INSERT INTO cw_nodes (name, rec) VALUES (${node.name}, ${this.#sql.json(json(node))})
      ON CONFLICT (name) DO UPDATE SET rec = EXCLUDED.rec`;
  }

  async createInvite(invite: InviteRecord): Promise<void> {
    checkKeyPart(invite.tokenHash, "invite hash");
    await this.#sql`
      INSERT INTO cw_invites (token_hash, rec)
      VALUES (${invite.tokenHash}, ${this.#sql.json(json(invite))})
      ON CONFLICT (token_hash) DO UPDATE SET rec = EXCLUDED.rec`;
  }

  async listInvites(now: Date): Promise<InviteRecord[]> {
    const rows = await this.#sql`SELECT rec FROM cw_invites ORDER BY token_hash`;
    return rows.map((r) => r.rec as InviteRecord).filter((i) => inviteLive(i, now))
      .map((i) => withNetwork(i)!);
  }

  async revokeInvite(tokenHash: string): Promise<boolean> {
    if (!keyPartOk(tokenHash)) return false;
    const rows = await this.#sql`
      DELETE FROM cw_invites WHERE token_hash = ${tokenHash} RETURNING token_hash`;
    return rows.length > 0;
  }

  async getUser(name: string): Promise<UserRecord | null> {
    if (!keyPartOk(name)) return null;
    const [row] = await this.#sql`SELECT rec FROM cw_users WHERE name = ${name}`;
    return (row?.rec as UserRecord | undefined) ?? null;
  }

  async listUsers(): Promise<UserRecord[]> {
    return (await this.#sql`SELECT rec FROM cw_users ORDER BY name`).map((r) =>
      r.rec as UserRecord
    );
  }

  async putUser(user: UserRecord): Promise<void> {
    checkKeyPart(user.name, "user name");
    await this.#sql`
      INSERT INTO cw_users (name, rec) VALUES (${user.name}, ${this.#sql.json(json(user))})
      ON CONFLICT (name) DO UPDATE SET rec = EXCLUDED.rec`;
  }

  async authVersion(): Promise<bigint> {
    const [row] = await this.#sql`SELECT value::text AS v FROM cw_counters WHERE name = 'auth'`;
    return row ? BigInt(row.v as string) : 0n;
  }

  async bumpAuthVersion(): Promise<void> {
    await this.#sql`
      INSERT INTO cw_counters (name, value) VALUES ('auth', 1)
      ON CONFLICT (name) DO UPDATE SET value = cw_counters.value + 1`;
  }

  async addSshKey(key: SshKeyRecord): Promise<void> {
    checkKeyPart(key.fingerprint, "SSH key fingerprint");
    await this.#sql`
      INSERT INTO cw_ssh_keys (fingerprint, rec)
      VALUES (${key.fingerprint}, ${this.#sql.json(json(key))})
      ON CONFLICT (fingerprint) DO UPDATE SET rec = EXCLUDED.rec`;
  }

  async listSshKeys(): Promise<SshKeyRecord[]> {
    const rows = await this.#sql`SELECT rec FROM cw_ssh_keys ORDER BY fingerprint`;
    return rows.map((r) => withNetwork(r.rec as SshKeyRecord)!);
  }

  async removeSshKey(fingerprint: string): Promise<boolean> {
    if (!keyPartOk(fingerprint)) return false;
    const rows = await this.#sql`
      DELETE FROM cw_ssh_keys WHERE fingerprint = ${fingerprint} RETURNING fingerprint`;
    return rows.length > 0;
  }

  async sharedValue(name: string, make: () => string): Promise<string> {
    checkKeyPart(name, "shared value name");
    const [had] = await this.#sql`SELECT value FROM cw_shared WHERE name = ${name}`;
    if (had) return had.value as string;
    await this.#sql`
      INSERT INTO cw_shared (name, value) VALUES (${name}, ${make()})
      ON CONFLICT (name) DO NOTHING`;
    const [row] = await this.#sql`SELECT value FROM cw_shared WHERE name = ${name}`;
    return row.value as string;
  }

  async heartbeat(
    replica: { id: string; peerUrl: string | null },
    leaseMs: number,
    now: Date,
  ): Promise<Set<string>> {
    checkKeyPart(replica.id, "replica id");
    const until = now.getTime() + leaseMs;
    await this.#sql`
      INSERT INTO cw_replicas (id, peer_url, expires_ms) VALUES (${replica.id}, ${replica.peerUrl}, ${until})
      ON CONFLICT (id) DO UPDATE SET peer_url = EXCLUDED.peer_url, expires_ms = EXCLUDED.expires_ms`;
    const rows = await this.#sql`SELECT link_id FROM cw_links WHERE replica = ${replica.id}`;
    return new Set(rows.map((r) => r.link_id as string));
  }

  async claimLink(node: string, replica: string, linkId: string, now: Date): Promise<void> {
    checkKeyPart(node, "node name");
    await this.#sql`
      INSERT INTO cw_links (node, replica, link_id, since_ms)
      VALUES (${node}, ${replica}, ${linkId}, ${now.getTime()})
      ON CONFLICT (node) DO UPDATE SET replica = EXCLUDED.replica,
        link_id = EXCLUDED.link_id, since_ms = EXCLUDED.since_ms`;
  }

  async releaseLink(node: string, linkId: string): Promise<void> {
    if (!keyPartOk(node)) return;
    await this.#sql`DELETE FROM cw_links WHERE node = ${node} AND link_id = ${linkId}`;
  }

  async getLink(node: string, now: Date): Promise<LinkRecord | null> {
    if (!keyPartOk(node)) return null;
    const [row] = await this.#sql`
      SELECT l.node, l.replica, l.link_id, l.since_ms::text AS since, r.peer_url
      FROM cw_links l JOIN cw_replicas r ON r.id = l.replica
      WHERE l.node = ${node} AND r.expires_ms > ${now.getTime()}`;
    return row ? linkOf(row) : null;
  }

  async listLinks(now: Date): Promise<LinkRecord[]> {
    const rows = await this.#sql`
      SELECT l.node, l.replica, l.link_id, l.since_ms::text AS since, r.peer_url
      FROM cw_links l JOIN cw_replicas r ON r.id = l.replica
      WHERE r.expires_ms > ${now.getTime()} ORDER BY l.node`;
    return rows.map(linkOf);
  }

  async leave(id: string): Promise<void> {
    if (!keyPartOk(id)) return;
    await this.#sql.begin(async (tx) => {
      await tx`DELETE FROM cw_links WHERE replica = ${id}`;
      await tx`DELETE FROM cw_replicas WHERE id = ${id}`;
    });
  }

  async kvGet(ns: string, key: string, now: Date): Promise<KvEntry | null> {
    if (!keyPartOk(ns) || !keyPartOk(key)) return null;
    const [row] = await this.#sql`
      SELECT value, version::text AS version, expires_ms::text AS expires FROM cw_kv
      WHERE ns = ${bytes(ns)} AND key = ${bytes(key)}
        AND (expires_ms IS NULL OR expires_ms > ${now.getTime()})`;
    if (!row) return null;
    return {
      value: new Uint8Array(row.value as Uint8Array),
      version: versionText(row.version as string),
      expiresAt: row.expires === null ? null : new Date(Number(row.expires)).toISOString(),
    };
  }

  async kvSet(
    ns: string,
    key: string,
    value: Uint8Array,
    opts: KvSetOptions,
    now: Date,
  ): Promise<KvWriteResult> {
    checkKeyPart(ns, "namespace");
    checkKeyPart(key, "key");
    if (value.byteLength > KV_MAX_VALUE_BYTES) {
      throw new RangeError(`Value too large: at most ${KV_MAX_VALUE_BYTES} bytes`);
    }
    if (opts.ttlMs !== undefined && !(Number.isFinite(opts.ttlMs) && opts.ttlMs > 0)) {
      throw new RangeError("ttlMs must be a positive number of milliseconds");
    }
    const expires = opts.ttlMs === undefined ? null : now.getTime() + Math.ceil(opts.ttlMs);
    const ifVersion = opts.ifVersion === undefined ? null : versionNumber(opts.ifVersion);
    const [r] = await this.#sql`
      SELECT outcome, new_version::text AS version, created FROM cw_kv_set(
        ${bytes(ns)}, ${bytes(key)}, ${bytes(value)}, ${expires}::bigint, ${ifVersion}::bigint,
        ${opts.ifAbsent === true}, ${now.getTime()}::bigint)`;
    if (r.outcome !== "ok") return { ok: false, reason: r.outcome as "conflict" | "not_found" };
    return { ok: true, version: versionText(r.version as string), created: r.created as boolean };
  }

  async kvDelete(
    ns: string,
    key: string,
    opts: { ifVersion?: string },
    now: Date,
  ): Promise<KvWriteResult> {
    if (!keyPartOk(ns) || !keyPartOk(key)) return { ok: false, reason: "not_found" };
    const ifVersion = opts.ifVersion === undefined ? null : versionNumber(opts.ifVersion);
    const [r] = await this.#sql`
      SELECT outcome, old_version::text AS version FROM cw_kv_delete(
        ${bytes(ns)}, ${bytes(key)}, ${ifVersion}::bigint, ${now.getTime()}::bigint)`;
    if (r.outcome !== "ok") return { ok: false, reason: r.outcome as "conflict" | "not_found" };
    return { ok: true, version: versionText(r.version as string) };
  }

  async kvList(
    ns: string,
    prefix: string,
    limit: number,
    cursor: string | null,
    now: Date,
  ): Promise<KvPage> {
    if (!Number.isInteger(limit) || limit < 1 || limit > KV_LIST_MAX_LIMIT) {
      throw new RangeError(`limit must be 1..${KV_LIST_MAX_LIMIT}`);
    }
    const after = cursor === null ? null : decodeCursor(cursor);
    if (!keyPartOk(ns) || !keyPartOk(prefix)) return { entries: [], cursor: null };
    const sql = this.#sql;
    const lo = bytes(prefix);
    const hi = prefixEnd(lo);
    const rows = await sql`
      SELECT key, version::text AS version, expires_ms::text AS expires,
        octet_length(value) AS size
      FROM cw_kv
      WHERE ns = ${bytes(ns)} AND key >= ${lo}
        ${hi ? sql`AND key < ${hi}` : sql``}
        ${after !== null ? sql`AND key > ${bytes(after)}` : sql``}
        AND (expires_ms IS NULL OR expires_ms > ${now.getTime()})
      ORDER BY key LIMIT ${limit + 1}`;
    const entries = rows.slice(0, limit).map((r) => ({
      key: fromUtf8.decode(r.key as Uint8Array),
      version: versionText(r.version as string),
      expiresAt: r.expires === null ? null : new Date(Number(r.expires)).toISOString(),
      size: Number(r.size),
    }));
    return {
      entries,
      cursor: rows.length > limit ? encodeCursor(entries[entries.length - 1].key) : null,
    };
  }

  kvWatch(
    ns: string,
    match: { key: string } | { prefix: string },
    signal: AbortSignal,
  ): AsyncIterable<KvEvent> {
    return this.#bus.subscribe(ns, match, signal, this.#closed);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#sweep);
    this.#bus.endAll();
    await this.#sql.end({ timeout: 2 }).catch(() => {});
  }
}

/** The first byte string after every string starting with `p`; null: none (all 0xff, or empty). */
function prefixEnd(p: Uint8Array): Buffer | null {
  const out = Buffer.from(p);
  for (let i = out.length - 1; i >= 0; i--) {
    if (out[i] < 0xff) {
      out[i]++;
      return out.subarray(0, i + 1);
    }
  }
  return null;
}

function linkOf(row: Record<string, unknown>): LinkRecord {
  return {
    node: row.node as string,
    replica: row.replica as string,
    linkId: row.link_id as string,
    peerUrl: (row.peer_url as string | null) ?? null,
    since: new Date(Number(row.since)).toISOString(),
  };
}

/** A record as JSON for a `jsonb` parameter. */
function json(v: unknown): postgres.JSONValue {
  return v as postgres.JSONValue;
}
