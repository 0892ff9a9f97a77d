/**
 * The KV store over HTTP, as a Hono app whose routes are relative to where it
 * is mounted (the relay mounts it at `/api/v1/kv`, behind authentication):
 *
 * - `PUT    /{ns}/{key}[?ttl=SECONDS]` — raw body ≤ 1 MiB. `If-Match: VERSION`
 *   (or `"VERSION"`, or `*`) writes only over that version; `If-None-Match: *`
 *   only creates. 201 when created, 200 when replaced; JSON
 *   `{version, expiresAt}` and `ETag: "VERSION"`. 412 when a condition fails.
 * - `GET    /{ns}/{key}` — 200 raw body, `ETag`, `X-Expires-At` when set; 404.
 * - `DELETE /{ns}/{key}` — 204; 404 when missing; `If-Match` → 412 on mismatch.
 * - `GET    /{ns}?prefix=P&limit=N&cursor=C` — JSON
 *   `{entries:[{key,version,expiresAt,size}], cursor}`; `cursor` is null on the
 *   last page. `limit` defaults to 100, at most 1000.
 * - Watch, as Server-Sent Events: `GET /{ns}/{key}?watch=1` (that key) or
 *   `GET /{ns}?watch=1&prefix=P` (every key starting with P; no prefix: the
 *   whole namespace). The stream opens with a `: watching` comment (it is
 *   subscribed from then on), then one `event: set|delete` with
 *   `data: {type,ns,key,version,expiresAt}` per change, and `: heartbeat`
 *   comments every 15 s. Expiry sends no event. If the relay ends the watch
 *   (the watcher fell too far behind, or the relay is stopping) it sends
 *   `event: end` and closes: re-read, then watch again.
 *
 * Keys may contain `/`: the key is the whole rest of the path after the
 * namespace, percent-decoded, so `a/b` and `a%2Fb` name the same key. Clients
 * should encode the key with `encodeURIComponent`, which also keeps `..`
 * segments in keys from being resolved away by URL parsing.
 *
 * Every error is JSON `{error:{code,message}}`, made in one place (`onError`).
 */
import { type Context, Hono } from "hono";
import type { Logger } from "../shared/logger.ts";
import { KV_LIST_MAX_LIMIT, KV_MAX_VALUE_BYTES } from "./kv_store.ts";
import type { KvEvent, RelayStore } from "./store.ts";
import { concat } from "../shared/bytes.ts";
import { errorResponse } from "../shared/api.ts";
import { CwError } from "../shared/errors.ts";

/** Namespaces: short, URL- and shell-safe. */
export const KV_NS_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
/** Largest key (and prefix), in UTF-8 bytes. */
export const KV_MAX_KEY_BYTES = 512;
/** Largest TTL: ten years, in seconds. */
export const KV_MAX_TTL_SECONDS = 10 * 365 * 24 * 3600;
/** Page size of a listing without `limit`. */
export const KV_DEFAULT_LIST_LIMIT = 100;
/** Interval of SSE heartbeat comments. */
export const KV_WATCH_HEARTBEAT_MS = 15_000;

/** Control, format, surrogate and line/paragraph separator characters. */
const UNPRINTABLE_RE = /[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}]/u;

/** Error codes of the KV API. */
export type KvApiErrorCode =
  | "bad_request"
  | "not_found"
  | "method_not_allowed"
  | "precondition_failed"
  | "too_large"
  | "internal";

/** Options of {@link kvApi}. */
export interface KvApiOptions {
  /** The clock; defaults to the system's. */
  now?: () => Date;
  /** Called once per KV operation handled: get, set, delete, list, watch. */
  onOp?: (op: string) => void;
  /** Where unexpected failures are reported (they answer 500 `internal`). */
  logger?: Logger;
  /** Interval of SSE heartbeats; defaults to {@link KV_WATCH_HEARTBEAT_MS}. */
  heartbeatMs?: number;
  /**
   * The store prefix of the caller's namespaces (its network's; see
   * relay/routes_client.ts): namespace `ns` is `space + ns` in the store.
   * Clients never see the prefix. Default: none.
   */
  space?: (c: Context) => string;
  /**
   * Called as a watch starts with a handle that ends it (the relay ties it
   * to the caller, so that revoking the caller ends the watch).
   */
  onWatch?: (c: Context, watch: Closable) => void;
}

/** A failure that becomes an HTTP error response in `onError`, with extra headers. */
class KvApiError extends CwError {
  readonly headers: Record<string, string>;

  constructor(
    code: KvApiErrorCode,
    message: string,
    headers: Record<string, string> = {},
    cause?: unknown,
  ) {
    super(code, message, { cause });
    this.name = "KvApiError";
    this.headers = headers;
  }
}

const badRequest = (message: string) => new KvApiError("bad_request", message);

/**
 * Builds the KV HTTP API over `store`. Mount it after authentication:
 *
 * @example
 * ```ts
 * const app = new Hono();
 * app.use("/api/v1/kv/*", requireCredential);
 * app.route("/api/v1/kv", kvApi(store, { onOp: (op) => metrics.kvOp(op) }));
 * ```
 */
export function kvApi(store: RelayStore, opts: KvApiOptions = {}): Hono {
  const now = opts.now ?? (() => new Date());
  const op = (name: string) => opts.onOp?.(name);
  const heartbeatMs = opts.heartbeatMs ?? KV_WATCH_HEARTBEAT_MS;
  const kv = (c: Context): KvSpace => {
    const prefix = opts.space?.(c) ?? "";
    return prefix === "" ? store : scopedKv(store, prefix);
  };
  const app = new Hono();

  app.onError((err, c) => {
    if (err instanceof KvApiError) return errorResponse(err.code, err.message, err.headers);
    if (err instanceof CwError) return errorResponse(err.code, err.message);
    opts.logger?.error(`KV API ${c.req.method} failed: ${err.stack ?? err}`);
    return errorResponse("internal", "Internal error");
  });

  app.get("/:ns/:key{.+}", async (c) => {
    const { ns, key } = entryTarget(c);
    if (watchParam(c)) {
      op("watch");
      return watchResponse(c, kv(c), ns, { key }, heartbeatMs, opts.onWatch);
    }
    op("get");
    const entry = await kv(c).kvGet(ns, key, now());
    if (entry === null) throw notFound(ns, key);
    const headers: Record<string, string> = {
      "Content-Type": "application/octet-stream",
      "ETag": etag(entry.version),
      "Cache-Control": "no-store",
    };
    if (entry.expiresAt !== null) headers["X-Expires-At"] = entry.expiresAt;
    const v = entry.value;
    return c.body(
      v.buffer instanceof ArrayBuffer ? v as Uint8Array<ArrayBuffer> : v.slice(),
      200,
      headers,
    );
  });

  app.put("/:ns/:key{.+}", async (c) => {
    const { ns, key } = entryTarget(c);
    op("set");
    const ttl = c.req.query("ttl");
    let ttlMs: number | undefined;
    if (ttl !== undefined) {
      if (!/^[1-9][0-9]{0,9}$/.test(ttl) || Number(ttl) > KV_MAX_TTL_SECONDS) {
        throw badRequest(`Invalid ttl "${ttl}": use whole seconds, 1 to ${KV_MAX_TTL_SECONDS}`);
      }
      ttlMs = Number(ttl) * 1000;
    }
    const cond = writeCondition(c.req.header("If-Match"), c.req.header("If-None-Match"));
    const value = await readBody(c.req.raw, KV_MAX_VALUE_BYTES);
    const at = now();
    const { version, created } = await putEntry(kv(c), ns, key, value, ttlMs, cond, at);
    const expiresAt = ttlMs === undefined ? null : new Date(at.getTime() + ttlMs).toISOString();
    return c.json({ version, expiresAt }, created ? 201 : 200, { ETag: etag(version) });
  });

  app.delete("/:ns/:key{.+}", async (c) => {
    const { ns, key } = entryTarget(c);
    op("delete");
    const ifMatch = parseIfMatch(c.req.header("If-Match"));
    const ifVersion = ifMatch === "*" ? undefined : ifMatch;
    const res = await kv(c).kvDelete(ns, key, { ifVersion }, now());
    if (!res.ok && res.reason === "not_found") throw notFound(ns, key);
    if (!res.ok) throw new KvApiError("precondition_failed", versionMismatch(ns, key));
    return c.body(null, 204);
  });

  app.get("/:ns", async (c) => {
    const ns = nsParam(c);
    const prefix = c.req.query("prefix") ?? "";
    checkKeyText(prefix, "prefix", true);
    if (watchParam(c)) {
      op("watch");
      return watchResponse(c, kv(c), ns, { prefix }, heartbeatMs, opts.onWatch);
    }
    op("list");
    const limitText = c.req.query("limit");
    const limit = limitText === undefined ? KV_DEFAULT_LIST_LIMIT : Number(limitText);
    if (
      limitText !== undefined &&
      (!/^[0-9]{1,4}$/.test(limitText) || limit < 1 || limit > KV_LIST_MAX_LIMIT)
    ) {
      throw badRequest(`Invalid limit "${limitText}": use 1 to ${KV_LIST_MAX_LIMIT}`);
    }
    const cursor = c.req.query("cursor") ?? null;
    try {
      return c.json(await kv(c).kvList(ns, prefix, limit, cursor, now()));
    } catch (err) {
      // The store owns the cursor format; a RangeError here means a bad cursor.
      if (err instanceof RangeError && cursor !== null) {
        throw badRequest(`Invalid cursor: pass back the cursor of the previous page`);
      }
      throw err;
    }
  });

  app.all("/:ns/:key{.+}", (c) => {
    throw methodNotAllowed(c.req.method, "GET, HEAD, PUT, DELETE");
  });
  app.all("/:ns", (c) => {
    throw methodNotAllowed(c.req.method, "GET, HEAD");
  });
  app.all("*", () => {
    throw new KvApiError("not_found", "Unknown KV route: use /{ns} or /{ns}/{key}");
  });

  return app;
}

/** The KV part of a store, as one caller sees it. */
type KvSpace = Pick<RelayStore, "kvGet" | "kvSet" | "kvDelete" | "kvList" | "kvWatch">;

/** `store`'s KV with every namespace behind `prefix`, which callers never see. */
function scopedKv(store: RelayStore, prefix: string): KvSpace {
  return {
    kvGet: (ns, key, now) => store.kvGet(prefix + ns, key, now),
    kvSet: (ns, key, value, o, now) => store.kvSet(prefix + ns, key, value, o, now),
    kvDelete: (ns, key, o, now) => store.kvDelete(prefix + ns, key, o, now),
    kvList: (ns, p, limit, cursor, now) => store.kvList(prefix + ns, p, limit, cursor, now),
    kvWatch(ns, match, signal) {
      // subscribed now, not at the first read: a watch misses nothing after it answers
      const inner = store.kvWatch(prefix + ns, match, signal)[Symbol.asyncIterator]();
      return {
        [Symbol.asyncIterator]: () => ({
          next: async () => {
            const r = await inner.next();
            return r.done ? r : { done: false, value: { ...r.value, ns } };
          },
        }),
      };
    },
  };
}

/** A write's precondition. */
type WriteCondition =
  | { kind: "none" }
  | { kind: "absent" }
  | { kind: "exists" }
  | { kind: "version"; version: string };

/** How many times an unconditional PUT re-reads when a racing write gets in first. */
const PUT_ATTEMPTS = 5;

/**
 * Writes, telling whether the entry was created (201) or replaced (200).
 * Without a condition the store's own read-check-write says whether it
 * created the key, so `created` is exact; `If-Match: *` re-reads up to
 * {@link PUT_ATTEMPTS} times when a racing write gets in first.
 */
async function putEntry(
  store: KvSpace,
  ns: string,
  key: string,
  value: Uint8Array,
  ttlMs: number | undefined,
  cond: WriteCondition,
  now: Date,
): Promise<{ version: string; created: boolean }> {
  const set = async (extra: { ifVersion?: string; ifAbsent?: boolean }) => {
    const res = await store.kvSet(ns, key, value, { ttlMs, ...extra }, now);
    return res.ok ? res.version : null;
  };
  const failed = (message: string) => new KvApiError("precondition_failed", message);
  if (cond.kind === "version") {
    const version = await set({ ifVersion: cond.version });
    if (version === null) throw failed(versionMismatch(ns, key));
    return { version, created: false };
  }
  if (cond.kind === "absent") {
    const version = await set({ ifAbsent: true });
    if (version === null) throw failed(`KV key "${printable(key)}" in "${ns}" already exists`);
    return { version, created: true };
  }
  if (cond.kind === "exists") {
    for (let attempt = 0; attempt < PUT_ATTEMPTS; attempt++) {
      const current = await currentVersion(store, ns, key, now);
      if (current === null) throw failed(`KV key "${printable(key)}" in "${ns}" does not exist`);
      const version = await set({ ifVersion: current });
      if (version !== null) return { version, created: false };
    }
    throw failed(versionMismatch(ns, key));
  }
  // unconditional: one read and one atomic write in the store, which says whether it created
  const res = await store.kvSet(ns, key, value, { ttlMs }, now);
  if (!res.ok) throw new Error(`Unconditional KV write to "${key}" failed`);
  return { version: res.version, created: res.created === true };
}

/** The version of a live entry, read from a listing so the value is not loaded. */
async function currentVersion(
  store: KvSpace,
  ns: string,
  key: string,
  now: Date,
): Promise<string | null> {
  const page = await store.kvList(ns, key, 1, null, now);
  const first = page.entries[0];
  return first !== undefined && first.key === key ? first.version : null;
}

function writeCondition(
  ifMatch: string | undefined,
  ifNoneMatch: string | undefined,
): WriteCondition {
  if (ifMatch !== undefined && ifNoneMatch !== undefined) {
    throw badRequest("Use either If-Match or If-None-Match, not both");
  }
  if (ifNoneMatch !== undefined) {
    if (ifNoneMatch.trim() !== "*") throw badRequest('If-None-Match on PUT takes only "*"');
    return { kind: "absent" };
  }
  const m = parseIfMatch(ifMatch);
  if (m === undefined) return { kind: "none" };
  return m === "*" ? { kind: "exists" } : { kind: "version", version: m };
}

/** One version, quoted or not, or `*`; undefined when the header is absent. */
function parseIfMatch(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const v = header.trim();
  if (v === "*") return v;
  const m = /^"([^"]{1,128})"$|^([^",\s]{1,128})$/.exec(v);
  if (m === null) throw badRequest(`Invalid If-Match "${v.slice(0, 64)}": give one version`);
  return m[1] ?? m[2];
}

/**
 * Reads a request body of at most `limit` bytes. Refuses a larger one with 413
 * from its Content-Length, or, without one, as soon as the count passes the
 * limit — the body is never buffered whole.
 */
async function readBody(req: Request, limit: number): Promise<Uint8Array> {
  const tooLarge = () => new KvApiError("too_large", `KV values are limited to ${limit} bytes`);
  const length = req.headers.get("Content-Length");
  if (length !== null) {
    if (!/^[0-9]{1,16}$/.test(length.trim())) throw badRequest("Invalid Content-Length");
    if (Number(length) > limit) throw tooLarge();
  }
  if (req.body === null) return new Uint8Array(0);
  if (length !== null) {
    // the length is known and within the limit: the runtime collects the body (no JS stream)
    try {
      return await req.bytes();
    } catch (err) {
      throw new KvApiError("bad_request", "The request body could not be read", {}, err);
    }
  }
  const reader = req.body.getReader();
  const parts: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    let chunk: ReadableStreamReadResult<Uint8Array>;
    try {
      chunk = await reader.read();
    } catch (err) {
      throw new KvApiError("bad_request", "The request body could not be read", {}, err);
    }
    const { done, value } = chunk;
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel("too large");
      throw tooLarge();
    }
    parts.push(value);
  }
  return parts.length === 1 ? parts[0] : concat(parts);
}

/** The SSE stream of a watch; subscribes before answering. */
function watchResponse(
  c: Context,
  store: KvSpace,
  ns: string,
  match: { key: string } | { prefix: string },
  heartbeatMs: number,
  onWatch?: (c: Context, watch: Closable) => void,
): Response {
  const headers = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",
  };
  // HEAD gets the headers only: a stream nobody reads would never end.
  if (c.req.method === "HEAD") return new Response(null, { headers });
  const encoder = new TextEncoder();
  const stop = new AbortController();
  const events = store.kvWatch(ns, match, stop.signal)[Symbol.asyncIterator]();
  let timer: ReturnType<typeof setInterval> | undefined;
  let closed = false;
  const ended: (() => void)[] = [];
  const finish = () => {
    if (closed) return;
    closed = true;
    clearInterval(timer);
    stop.abort();
    for (const fn of ended) fn();
  };
  let end = (_why: string) => {};
  const body = new ReadableStream<Uint8Array>({
    start(ctrl) {
      end = (why) => {
        if (closed) return;
        ctrl.enqueue(encoder.encode(`event: end\ndata: ${JSON.stringify({ message: why })}\n\n`));
        finish();
        ctrl.close();
      };
      ctrl.enqueue(encoder.encode(": watching\n\n"));
      timer = setInterval(() => {
        // A client that reads nothing gets no more heartbeats queued for it.
        if (!closed && (ctrl.desiredSize ?? 0) > 0) ctrl.enqueue(encoder.encode(": heartbeat\n\n"));
      }, heartbeatMs);
    },
    // Pull-driven: a slow client leaves events in the store's bounded queue.
    async pull(ctrl) {
      const next = await events.next();
      if (closed) return;
      if (next.done) {
        const data = { message: "The relay ended this watch: read again, then watch again" };
        ctrl.enqueue(encoder.encode(`event: end\ndata: ${JSON.stringify(data)}\n\n`));
        finish();
        ctrl.close();
        return;
      }
      ctrl.enqueue(encoder.encode(sseEvent(next.value)));
    },
    cancel() {
      finish();
    },
  }, { highWaterMark: 1 });
  onWatch?.(c, {
    close: () => end("Access to this watch was revoked"),
    onClose: (fn) => ended.push(fn),
  });
  return new Response(body, { headers });
}

/** Something long-lived that can be ended, and says when it ended. */
export interface Closable {
  close(): void;
  onClose(fn: () => void): void;
}

function sseEvent(e: KvEvent): string {
  const data = { type: e.type, ns: e.ns, key: e.key, version: e.version, expiresAt: e.expiresAt };
  return `event: ${e.type}\ndata: ${JSON.stringify(data)}\n\n`;
}

function watchParam(c: Context): boolean {
  const w = c.req.query("watch");
  if (w === undefined || w === "0" || w === "false") return false;
  if (w === "1" || w === "true") return true;
  throw badRequest(`Invalid watch "${w.slice(0, 16)}": use watch=1`);
}

/** The namespace and key of an entry route, validated. */
function entryTarget(c: Context): { ns: string; key: string } {
  const ns = nsParam(c);
  const key = c.req.param("key") ?? "";
  checkKeyText(key, "key", false);
  return { ns, key };
}

function nsParam(c: Context): string {
  // Hono leaves a malformed %-escape undecoded; refuse it rather than guess.
  try {
    decodeURIComponent(new URL(c.req.url).pathname);
  } catch {
    throw badRequest("Malformed percent-encoding in the URL path");
  }
  const ns = c.req.param("ns") ?? "";
  if (!KV_NS_RE.test(ns)) {
    throw badRequest(
      `Invalid namespace "${
        printable(ns)
      }": use 1-64 letters, digits, "_", "." or "-", starting with a letter or digit`,
    );
  }
  return ns;
}

function checkKeyText(s: string, what: "key" | "prefix", emptyOk: boolean): void {
  const bytes = new TextEncoder().encode(s).byteLength;
  if ((!emptyOk && bytes === 0) || bytes > KV_MAX_KEY_BYTES || UNPRINTABLE_RE.test(s)) {
    throw badRequest(
      `Invalid ${what} "${printable(s)}": use ${
        emptyOk ? 0 : 1
      }-${KV_MAX_KEY_BYTES} bytes of printable text`,
    );
  }
}

/** Echoes a name in a message without its control characters, shortened. */
function printable(s: string): string {
  const short = s.length > 64 ? `${s.slice(0, 64)}…` : s;
  return short.replace(new RegExp(UNPRINTABLE_RE.source, "gu"), "?");
}

function etag(version: string): string {
  return `"${version}"`;
}

function notFound(ns: string, key: string): KvApiError {
  return new KvApiError("not_found", `No KV key "${printable(key)}" in "${ns}"`);
}

function versionMismatch(ns: string, key: string): string {
  return `KV key "${printable(key)}" in "${ns}" is not at the given version`;
}

function methodNotAllowed(method: string, allow: string): KvApiError {
  return new KvApiError("method_not_allowed", `${method} is not allowed here: use ${allow}`, {
    Allow: allow,
  });
}
