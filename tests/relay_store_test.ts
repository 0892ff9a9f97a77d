/**
 * Conformance suite for {@link RelayStore}: every implementation must pass it
 * (plug another one into {@link storeConformance}). Then the KV HTTP API,
 * driven in-process through `app.request`, mounted as the relay mounts it.
 */
import assert from "node:assert/strict";
import { Hono } from "hono";
import { kvApi } from "../relay/kv_api.ts";
import { openKvStore } from "../relay/kv_store.ts";
import { dropPgSchema, openPgStore } from "../relay/store_pg.ts";
import { testPostgres, testSchema, withSchema } from "./postgres.ts";
import type { InviteRecord, KvEvent, NodeRecord, RelayStore } from "../relay/store.ts";
import type { AuditEntry } from "../shared/api.ts";

const MiB = 1024 * 1024;
const T0 = new Date("2030-01-01T00:00:00.000Z");
const at = (ms: number) => new Date(T0.getTime() + ms);
const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

/** An implementation under test: opens a store kept in `dir`, again after a close. */
interface StoreImpl {
  name: string;
  open(dir: string): Promise<RelayStore>;
  /** Removes what `open(dir)` kept outside `dir`. */
  cleanup?(dir: string): Promise<void>;
}

function node(name: string, credentialHash: string): NodeRecord {
  return {
    name,
    network: "default",
    credentialHash,
    createdAt: T0.toISOString(),
    revokedAt: null,
    lastSeenAt: null,
    lastAddr: null,
    version: null,
  };
}

function invite(tokenHash: string, usesLeft = 1, ttlMs = 24 * 3600_000): InviteRecord {
  return {
    tokenHash,
    network: "default",
    usesLeft,
    createdAt: T0.toISOString(),
    expiresAt: at(ttlMs).toISOString(),
  };
}

function randomBytes(n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

/** Collects `n` events from a watch, failing after `ms`. */
async function take(iter: AsyncIterable<KvEvent>, n: number, ms = 5000): Promise<KvEvent[]> {
  const out: KvEvent[] = [];
  const it = iter[Symbol.asyncIterator]();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`only ${out.length}/${n} events`)), ms);
  });
  try {
    while (out.length < n) {
      const r = await Promise.race([it.next(), timeout]);
      if (r.done) break;
      out.push(r.value);
    }
  } finally {
    clearTimeout(timer);
  }
  return out;
}

/** Registers the conformance tests for one implementation. */
export function storeConformance(impl: StoreImpl): void {
  const test = (name: string, fn: (store: RelayStore, dir: string) => Promise<void>) =>
    Deno.test(`${impl.name}: ${name}`, async () => {
      const dir = await Deno.makeTempDir({ prefix: "cw-store-" });
      try {
        await using store = await impl.open(dir);
        await fn(store, dir);
      } finally {
        await impl.cleanup?.(dir);
        await Deno.remove(dir, { recursive: true });
      }
    });

  test("register consumes an invite and stores the node", async (store) => {
    await store.createInvite(invite("inv", 2));
    const r = await store.register("inv", node("dev-1", "c1"), T0);
    assert.deepEqual(r, { ok: true, node: node("dev-1", "c1") });
    assert.deepEqual(await store.getNode("dev-1"), node("dev-1", "c1"));
    assert.equal((await store.listInvites(T0))[0].usesLeft, 1);
    assert.equal((await store.register("inv", node("dev-2", "c2"), T0)).ok, true);
    assert.deepEqual(await store.listInvites(T0), [], "a used-up invite is gone");
    assert.equal(await store.revokeInvite("inv"), false);
    assert.deepEqual(
      (await store.listNodes()).map((n) => n.name),
      ["dev-1", "dev-2"],
    );
  });

  test("a 1-use invite raced by 20 registrations registers exactly one", async (store) => {
    await store.createInvite(invite("race"));
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => store.register("race", node(`n${i}`, `c${i}`), T0)),
    );
    const ok = results.filter((r) => r.ok);
    assert.equal(ok.length, 1);
    assert.ok(results.every((r) => r.ok || r.reason === "invite_invalid"));
    assert.equal((await store.listNodes()).length, 1);
  });

  test("a 5-use invite raced by 20 registrations registers exactly five", async (store) => {
    await store.createInvite(invite("race5", 5));
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => store.register("race5", node(`n${i}`, `c${i}`), T0)),
    );
    assert.equal(results.filter((r) => r.ok).length, 5);
    assert.equal((await store.listNodes()).length, 5);
  });

  test("one name raced by 10 credentials goes to exactly one", async (store) => {
    await store.createInvite(invite("many", 100));
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) => store.register("many", node("same", `c${i}`), T0)),
    );
    assert.equal(results.filter((r) => r.ok).length, 1);
    assert.equal(results.filter((r) => !r.ok && r.reason === "name_taken").length, 9);
    assert.equal((await store.listInvites(T0))[0].usesLeft, 99);
  });

  test("expired, used-up, unknown and revoked invites are invalid", async (store) => {
    await store.createInvite(invite("short", 3, 1000));
    await store.createInvite(invite("empty", 0));
    await store.createInvite(invite("revoked", 3));
    assert.equal(await store.revokeInvite("revoked"), true);
    const bad = { ok: false, reason: "invite_invalid" };
    assert.deepEqual(await store.register("short", node("a", "c"), at(1000)), bad);
    assert.deepEqual(await store.register("empty", node("a", "c"), T0), bad);
    assert.deepEqual(await store.register("nope", node("a", "c"), T0), bad);
    assert.deepEqual(await store.register("revoked", node("a", "c"), T0), bad);
    assert.deepEqual(await store.register("x".repeat(5000), node("a", "c"), T0), bad);
    assert.equal((await store.register("short", node("a", "c"), at(999))).ok, true);
    assert.deepEqual(
      (await store.listInvites(at(1000))).map((i) => i.tokenHash),
      [],
      "expired and used-up invites are not listed",
    );
    assert.equal(await store.getNode("b"), null);
  });

  test("a held name is taken for another credential, not for its own", async (store) => {
    await store.createInvite(invite("inv", 10));
    assert.equal((await store.register("inv", node("dev", "c1"), T0)).ok, true);
    assert.deepEqual(await store.register("inv", node("dev", "c2"), T0), {
      ok: false,
      reason: "name_taken",
    });
    assert.equal((await store.getNode("dev"))?.credentialHash, "c1");
    assert.equal((await store.register("inv", node("dev", "c1"), T0)).ok, true, "re-register");
    assert.equal((await store.listInvites(T0))[0].usesLeft, 8, "failed attempts use nothing");
  });

  test("a revoked node's name can be registered again", async (store) => {
    await store.createInvite(invite("inv", 10));
    await store.register("inv", node("dev", "c1"), T0);
    await store.putNode({ ...node("dev", "c1"), revokedAt: T0.toISOString() });
    assert.equal((await store.getNode("dev"))?.revokedAt, T0.toISOString());
    const r = await store.register("inv", node("dev", "c2"), T0);
    assert.deepEqual(r, { ok: true, node: node("dev", "c2") });
    assert.deepEqual(await store.getNode("dev"), node("dev", "c2"));
  });

  test("nodes and SSH keys are put, listed and removed", async (store) => {
    await store.putNode(node("b", "1"));
    await store.putNode({ ...node("a", "2"), lastSeenAt: T0.toISOString(), version: "0.1" });
    assert.deepEqual((await store.listNodes()).map((n) => n.name), ["a", "b"]);
    assert.equal((await store.getNode("a"))?.version, "0.1");
    assert.equal(await store.getNode("zzz"), null);
    const key = {
      fingerprint: "SHA256:abc",
      line: "ssh-ed25519 AAAA x",
      network: "team",
      addedBy: "node:a",
      addedAt: "t",
    };
    await store.addSshKey(key);
    assert.deepEqual(await store.listSshKeys(), [key]);
    assert.equal(await store.removeSshKey("SHA256:abc"), true);
    assert.equal(await store.removeSshKey("SHA256:abc"), false);
    assert.deepEqual(await store.listSshKeys(), []);
  });

  test("users are put and read; an invite's network is the registered node's", async (store) => {
    const user = {
      name: "ana",
      network: "team",
      readOnly: true,
      tokenHash: "h",
      createdAt: T0.toISOString(),
      expiresAt: null,
      revokedAt: null,
    };
    await store.putUser(user);
    assert.deepEqual(await store.getUser("ana"), user);
    assert.deepEqual(await store.listUsers(), [user]);
    assert.equal(await store.getUser("bob"), null);
    await store.createInvite({ ...invite("inv-team"), network: "team" });
    const res = await store.register("inv-team", node("n1", "c"), T0);
    assert.equal(res.ok && res.node.network, "team");
    assert.equal((await store.getNode("n1"))?.network, "team");
  });

  test("the auth version moves on with every bump", async (store) => {
    const v0 = await store.authVersion();
    await store.bumpAuthVersion();
    await store.bumpAuthVersion();
    assert.equal(await store.authVersion(), v0 + 2n);
  });

  test("KV values round-trip: text, binary, empty, 1 MiB", async (store) => {
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    const big = randomBytes(MiB);
    const cases: [string, Uint8Array][] = [
      ["text", enc("hello")],
      ["binary", all],
      ["empty", new Uint8Array(0)],
      ["big/1mib", big],
      ["16k", randomBytes(16 * 1024)],
      ["16k+1", randomBytes(16 * 1024 + 1)],
      ["one-chunk-boundary", randomBytes(60 * 1024)],
      ["view", big.subarray(100, 200)],
      ["big-view", big.subarray(1, 70_001)],
      ["üñí/ködé €", enc("ü")],
      ["with\u0000nul", enc("odd")],
    ];
    for (const [key, value] of cases) {
      const w = await store.kvSet("ns", key, value, {}, T0);
      assert.ok(w.ok);
      const r = await store.kvGet("ns", key, T0);
      assert.ok(r, key);
      assert.deepEqual(r.value, value, key);
      assert.equal(r.version, w.version);
      assert.equal(r.expiresAt, null);
    }
    assert.equal(await store.kvGet("other", "text", T0), null, "namespaces are separate");
    await assert.rejects(store.kvSet("ns", "too-big", new Uint8Array(MiB + 1), {}, T0), RangeError);
    await assert.rejects(store.kvSet("ns", "\uD800", enc("x"), {}, T0), RangeError);
    assert.equal(await store.kvGet("ns", "\uD800", T0), null);
    assert.equal(await store.kvGet("ns", "k".repeat(10_000), T0), null);
  });

  test("a 1 MiB value read while it is overwritten is never torn", async (store) => {
    const fill = (b: number) => new Uint8Array(MiB).fill(b);
    await store.kvSet("ns", "k", fill(0), {}, T0);
    let writing = true;
    const writer = (async () => {
      for (let i = 1; i <= 15; i++) await store.kvSet("ns", "k", fill(i), {}, T0);
      writing = false;
    })();
    let reads = 0;
    while (writing) {
      const r = await store.kvGet("ns", "k", T0);
      assert.ok(r);
      assert.equal(r.value.length, MiB);
      assert.ok(r.value.every((b) => b === r.value[0]), "one write's bytes only");
      reads++;
    }
    await writer;
    assert.ok(reads > 0);
    assert.equal((await store.kvGet("ns", "k", T0))?.value[0], 15);
  });

  test("KV entries expire at their TTL, everywhere", async (store) => {
    const w = await store.kvSet("ns", "t", enc("v"), { ttlMs: 1000 }, T0);
    assert.ok(w.ok);
    const r = await store.kvGet("ns", "t", at(999));
    assert.equal(r?.expiresAt, at(1000).toISOString());
    assert.equal(await store.kvGet("ns", "t", at(1000)), null);
    assert.deepEqual((await store.kvList("ns", "", 10, null, at(999))).entries.length, 1);
    assert.deepEqual((await store.kvList("ns", "", 10, null, at(1000))).entries, []);
    assert.deepEqual(await store.kvDelete("ns", "t", {}, at(1000)), {
      ok: false,
      reason: "not_found",
    });
    assert.deepEqual(
      await store.kvSet("ns", "t", enc("x"), { ifVersion: w.version }, at(1000)),
      { ok: false, reason: "not_found" },
      "an expired entry has no version to match",
    );
    const again = await store.kvSet("ns", "t", enc("new"), { ifAbsent: true }, at(1000));
    assert.ok(again.ok, "an expired entry counts as absent");
    assert.equal(dec((await store.kvGet("ns", "t", at(5000)))!.value), "new");
    assert.equal((await store.kvGet("ns", "t", at(5000)))!.expiresAt, null);
    await assert.rejects(store.kvSet("ns", "t", enc("x"), { ttlMs: 0 }, T0), RangeError);
    await assert.rejects(store.kvSet("ns", "t", enc("x"), { ttlMs: NaN }, T0), RangeError);
  });

  test("compare-and-set: versions change on every write; stale ones conflict", async (store) => {
    const v1 = await store.kvSet("ns", "k", enc("1"), {}, T0);
    assert.ok(v1.ok);
    const v2 = await store.kvSet("ns", "k", enc("2"), { ifVersion: v1.version }, T0);
    assert.ok(v2.ok);
    assert.notEqual(v2.version, v1.version);
    assert.deepEqual(await store.kvSet("ns", "k", enc("3"), { ifVersion: v1.version }, T0), {
      ok: false,
      reason: "conflict",
    });
    assert.deepEqual(await store.kvSet("ns", "k", enc("3"), { ifVersion: "garbage" }, T0), {
      ok: false,
      reason: "conflict",
    });
    assert.deepEqual(await store.kvDelete("ns", "k", { ifVersion: v1.version }, T0), {
      ok: false,
      reason: "conflict",
    });
    assert.equal(dec((await store.kvGet("ns", "k", T0))!.value), "2");
    assert.deepEqual(await store.kvSet("ns", "missing", enc("x"), { ifVersion: v1.version }, T0), {
      ok: false,
      reason: "not_found",
    });
    assert.deepEqual(await store.kvDelete("ns", "k", { ifVersion: v2.version }, T0), {
      ok: true,
      version: v2.version,
    });
    assert.equal(await store.kvGet("ns", "k", T0), null);
    assert.deepEqual(await store.kvDelete("ns", "k", {}, T0), { ok: false, reason: "not_found" });
  });

  test("10 concurrent compare-and-sets from one version: one wins", async (store) => {
    const v = await store.kvSet("ns", "ctr", enc("0"), {}, T0);
    assert.ok(v.ok);
    const results = await Promise.all(
      Array.from(
        { length: 10 },
        (_, i) => store.kvSet("ns", "ctr", enc(`${i}`), { ifVersion: v.version }, T0),
      ),
    );
    assert.equal(results.filter((r) => r.ok).length, 1);
  });

  test("200 concurrent writes to 50 keys: each read sees the last write and its version", async (store) => {
    // writes that arrive together are committed together (one transaction): none may be
    // lost, two writes of one key never share a commit, and `created` stays exact
    const writes = await Promise.all(
      Array.from({ length: 200 }, (_, i) => store.kvSet("g", `k${i % 50}`, enc(`v${i}`), {}, T0)),
    );
    assert.ok(writes.every((w) => w.ok));
    assert.equal(writes.filter((w) => w.ok && w.created).length, 50);
    const versions = new Set<string>();
    for (let k = 0; k < 50; k++) {
      const mine: { version: string; i: number }[] = writes.flatMap((w, i) =>
        w.ok && i % 50 === k ? [{ version: w.version, i }] : []
      );
      const perKey = new Set(mine.map((m) => m.version));
      assert.equal(perKey.size, 4, `four writes of k${k}, four versions`);
      const got = await store.kvGet("g", `k${k}`, T0);
      const last = mine.find((m) => m.version === got!.version);
      assert.ok(last, `k${k}: the version read is one of its writes`);
      assert.equal(new TextDecoder().decode(got!.value), `v${last.i}`);
      versions.add(got!.version);
    }
    // a delete and a conditional write see what the group commits left
    const k0 = await store.kvGet("g", "k0", T0);
    assert.deepEqual(await store.kvDelete("g", "k0", { ifVersion: "0".repeat(20) }, T0), {
      ok: false,
      reason: "conflict",
    });
    assert.ok((await store.kvDelete("g", "k0", { ifVersion: k0!.version }, T0)).ok);
    assert.equal(await store.kvGet("g", "k0", T0), null);
    const again = await store.kvSet("g", "k0", enc("back"), { ifAbsent: true }, T0);
    assert.ok(again.ok && again.created);
  });

  test("ifAbsent creates once", async (store) => {
    assert.ok((await store.kvSet("ns", "k", enc("a"), { ifAbsent: true }, T0)).ok);
    assert.deepEqual(await store.kvSet("ns", "k", enc("b"), { ifAbsent: true }, T0), {
      ok: false,
      reason: "conflict",
    });
    const racers = await Promise.all(
      Array.from({ length: 10 }, () => store.kvSet("ns", "r", enc("x"), { ifAbsent: true }, T0)),
    );
    assert.equal(racers.filter((r) => r.ok).length, 1);
  });

  test("listing pages through 250 keys in order, by prefix", async (store) => {
    const keys = Array.from({ length: 250 }, (_, i) => `job/${String(i).padStart(3, "0")}`);
    await Promise.all(keys.map((k) => store.kvSet("ns", k, enc(k), {}, T0)));
    await store.kvSet("ns", "jo", enc("x"), {}, T0);
    await store.kvSet("ns", "joc", enc("x"), {}, T0);
    await store.kvSet("ns", "job0", enc("x"), {}, T0);
    await store.kvSet("ns", "job/expiring", enc("x"), { ttlMs: 10 }, T0);
    await store.kvSet("other", "job/999", enc("x"), {}, T0);
    const seen: string[] = [];
    let cursor: string | null = null;
    const sizes: number[] = [];
    do {
      const page = await store.kvList("ns", "job/", 100, cursor, at(10));
      sizes.push(page.entries.length);
      for (const e of page.entries) {
        seen.push(e.key);
        assert.equal(e.size, e.key.length);
        assert.equal(e.expiresAt, null);
      }
      cursor = page.cursor;
    } while (cursor !== null);
    assert.deepEqual(sizes, [100, 100, 50]);
    assert.deepEqual(seen, keys);
    const exact = await store.kvList("ns", "job/", 250, null, at(10));
    assert.equal(exact.entries.length, 250);
    assert.equal(exact.cursor, null, "no cursor when nothing follows");
    const all = await store.kvList("ns", "", 1000, null, at(0));
    assert.deepEqual(all.entries.slice(0, 2).map((e) => e.key), ["jo", "job/000"]);
    assert.equal(all.entries.at(-1)?.key, "joc");
    assert.equal(all.entries.length, 254);
    await assert.rejects(store.kvList("ns", "", 0, null, T0), RangeError);
    await assert.rejects(store.kvList("ns", "", 1001, null, T0), RangeError);
    await assert.rejects(store.kvList("ns", "", 10, "!!not a cursor!!", T0), RangeError);
    assert.deepEqual(await store.kvList("nothing", "", 10, null, T0), {
      entries: [],
      cursor: null,
    });
  });

  test("watch a key and a prefix", async (store) => {
    const stop = new AbortController();
    const keyWatch = store.kvWatch("ns", { key: "a/1" }, stop.signal);
    const prefixWatch = store.kvWatch("ns", { prefix: "a/" }, stop.signal);
    const v1 = await store.kvSet("ns", "a/1", enc("x"), { ttlMs: 5000 }, T0);
    await store.kvSet("ns", "a/2", enc("y"), {}, T0);
    await store.kvSet("ns", "b/1", enc("z"), {}, T0);
    await store.kvSet("other", "a/1", enc("z"), {}, T0);
    await store.kvDelete("ns", "a/1", {}, T0);
    assert.ok(v1.ok);
    assert.deepEqual(await take(keyWatch, 2), [
      { type: "set", ns: "ns", key: "a/1", version: v1.version, expiresAt: at(5000).toISOString() },
      { type: "delete", ns: "ns", key: "a/1", version: null, expiresAt: null },
    ]);
    const seen = await take(prefixWatch, 3);
    assert.deepEqual(seen.map((e) => `${e.type} ${e.key}`), ["set a/1", "set a/2", "delete a/1"]);
    stop.abort();
    assert.deepEqual(await take(keyWatch, 1), [], "the watch ends when its signal aborts");
    const late = store.kvWatch("ns", { prefix: "" }, stop.signal);
    assert.deepEqual(await take(late, 1), [], "an aborted signal ends it at once");
  });

  test("a watcher that falls 1000 events behind is ended, not silently skipped", async (store) => {
    const stop = new AbortController();
    const w = store.kvWatch("ns", { prefix: "" }, stop.signal);
    // a store may announce changes after its writes return (PostgreSQL's NOTIFY): a second
    // watcher, read as events come, says when all 1001 reached this process
    const pace = take(store.kvWatch("ns", { prefix: "" }, stop.signal), 1001, 20_000);
    for (let i = 0; i < 1001; i++) await store.kvSet("ns", `k${i}`, enc(""), {}, T0);
    assert.equal((await pace).length, 1001);
    const got = await take(w, 2000);
    assert.equal(got.length, 1000, "what was queued is delivered, then it ends");
    assert.equal(got[0].key, "k0");
    stop.abort();
  });

  test("a shared value is made once, by the first of racing callers", async (store) => {
    let made = 0;
    const got = await Promise.all(
      Array.from({ length: 10 }, (_, i) => store.sharedValue("host-key", () => `v${i}${made++}`)),
    );
    assert.equal(new Set(got).size, 1, "every caller gets the same value");
    assert.equal(await store.sharedValue("host-key", () => "other"), got[0]);
    await assert.rejects(store.sharedValue("\uD800", () => "x"), RangeError);
  });

  test("links: claimed, taken over by another replica, released, expiring with the lease", async (store) => {
    const now = new Date();
    const later = (ms: number) => new Date(now.getTime() + ms);
    assert.deepEqual(
      await store.heartbeat({ id: "ra", peerUrl: "https://a" }, 3000, now),
      new Set(),
    );
    await store.heartbeat({ id: "rb", peerUrl: "https://b" }, 3000, now);
    await store.claimLink("n1", "ra", "L1", now);
    await store.claimLink("n2", "ra", "L2", now);
    assert.deepEqual(
      await store.heartbeat({ id: "ra", peerUrl: "https://a" }, 3000, now),
      new Set(["L1", "L2"]),
    );
    const l1 = await store.getLink("n1", now);
    assert.equal(l1?.replica, "ra");
    assert.equal(l1?.peerUrl, "https://a");
    assert.equal(l1?.linkId, "L1");
    // the node reconnected to rb: rb's claim wins, ra's heartbeat no longer lists it
    await store.claimLink("n1", "rb", "L3", now);
    assert.equal((await store.getLink("n1", now))?.peerUrl, "https://b");
    assert.deepEqual(
      await store.heartbeat({ id: "ra", peerUrl: "https://a" }, 3000, now),
      new Set(["L2"]),
    );
    await store.releaseLink("n1", "L1"); // ra's late release of its old link changes nothing
    assert.equal((await store.getLink("n1", now))?.linkId, "L3");
    assert.deepEqual((await store.listLinks(now)).map((l) => `${l.node}@${l.replica}`).sort(), [
      "n1@rb",
      "n2@ra",
    ]);
    // ra stops renewing: its links are not held once its lease ends
    await store.heartbeat({ id: "rb", peerUrl: "https://b" }, 10_000, now);
    assert.equal(await store.getLink("n2", later(3000)), null);
    assert.deepEqual((await store.listLinks(later(3000))).map((l) => l.node), ["n1"]);
    await store.releaseLink("n1", "L3");
    assert.equal(await store.getLink("n1", now), null);
    await store.leave("ra");
    assert.equal(await store.getLink("n2", now), null);
    assert.equal(await store.getLink("\uD800", now), null);
  });

  test("everything persists across close and reopen", async (store, dir) => {
    const big = randomBytes(MiB);
    await store.createInvite(invite("inv", 3));
    await store.register("inv", node("dev", "c"), T0);
    const w = await store.kvSet("ns", "big", big, { ttlMs: 60_000 }, T0);
    await store.kvSet("ns", "small", enc("s"), {}, T0);
    await store[Symbol.asyncDispose]();
    await using again = await impl.open(dir);
    assert.deepEqual(await again.getNode("dev"), node("dev", "c"));
    assert.equal((await again.listInvites(T0))[0].usesLeft, 2);
    const r = await again.kvGet("ns", "big", T0);
    assert.ok(r && w.ok);
    assert.deepEqual(r.value, big);
    assert.equal(r.version, w.version);
    assert.equal(r.expiresAt, at(60_000).toISOString());
    assert.equal(dec((await again.kvGet("ns", "small", T0))!.value), "s");
  });
}

storeConformance({ name: "deno kv store", open: (dir) => openKvStore(`${dir}/relay.kv`) });

const pg = await testPostgres();
if ("url" in pg) {
  const urlFor = (dir: string) => withSchema(pg.url, testSchema(dir));
  storeConformance({
    name: "postgres store",
    open: (dir) => openPgStore(urlFor(dir)),
    cleanup: (dir) => dropPgSchema(urlFor(dir)),
  });
  // what only a shared store can show: replicas, each with its own connection
  Deno.test("postgres store: three handles on one store see one another", async () => {
    const url = withSchema(pg.url, testSchema(`shared-${crypto.randomUUID()}`));
    const [a, b, c] = await Promise.all([openPgStore(url), openPgStore(url), openPgStore(url)]);
    try {
      const stop = new AbortController();
      const watch = c.kvWatch("ns", { prefix: "job/" }, stop.signal);
      const w = await a.kvSet("ns", "job/1", enc("from a"), {}, T0);
      assert.ok(w.ok);
      assert.deepEqual(await take(watch, 1), [
        { type: "set", ns: "ns", key: "job/1", version: w.version, expiresAt: null },
      ]);
      assert.equal(dec((await b.kvGet("ns", "job/1", T0))!.value), "from a");
      stop.abort();
      await a.createInvite(invite("one-use"));
      const raced = await Promise.all(
        [a, b, c].flatMap((s, i) =>
          Array.from({ length: 5 }, (_, j) => s.register("one-use", node(`n${i}${j}`, "c"), T0))
        ),
      );
      assert.equal(raced.filter((r) => r.ok).length, 1, "one use registers exactly one node");
      assert.equal((await b.listNodes()).length, 1);
      const v0 = await c.authVersion();
      await b.bumpAuthVersion();
      assert.equal(await a.authVersion(), v0 + 1n);
      // one audit log: appended on a, read on b, followed on c
      const heard: string[] = [];
      const done = Promise.withResolvers<void>();
      const unwatch = c.audit!.watchAudit((e) => {
        heard.push(e.event);
        if (heard.length === 2) done.resolve();
      });
      const entry = (event: string, time: string) =>
        ({ time, event, principal: "admin", network: null }) as unknown as AuditEntry;
      await a.audit!.appendAudit([
        entry("one", "2030-01-01T00:00:01Z"),
        entry("two", "2030-01-01T00:00:02Z"),
      ]);
      await done.promise;
      unwatch();
      assert.deepEqual(heard, ["one", "two"]);
      assert.deepEqual((await b.audit!.readAudit("", 10)).map((e) => e.event), ["one", "two"]);
      assert.deepEqual((await b.audit!.readAudit("2030-01-01T00:00:02Z", 10)).map((e) => e.event), [
        "two",
      ]);
      assert.deepEqual(
        (await b.audit!.readAudit("", 1)).map((e) => e.event),
        ["two"],
        "the latest",
      );
    } finally {
      await Promise.all([a, b, c].map((s) => s[Symbol.asyncDispose]()));
      await dropPgSchema(url);
    }
  });
} else {
  Deno.test({ name: `postgres store: SKIPPED (${pg.skip})`, ignore: true, fn() {} });
}

// ---------------------------------------------------------------------------
// The KV HTTP API.

/** A clock the test moves. */
class Clock {
  ms = T0.getTime();
  now = () => new Date(this.ms);
}

/** kvApi over a fresh store, mounted at /api/v1/kv as the relay does. */
function apiTest(
  name: string,
  fn: (t: {
    request: (path: string, init?: RequestInit) => Promise<Response>;
    clock: Clock;
    ops: string[];
    store: RelayStore;
  }) => Promise<void>,
) {
  Deno.test(`kv api: ${name}`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "cw-kvapi-" });
    try {
      await using store = await openKvStore(`${dir}/relay.kv`);
      const clock = new Clock();
      const ops: string[] = [];
      const app = new Hono();
      app.route(
        "/api/v1/kv",
        kvApi(store, { now: clock.now, onOp: (op) => ops.push(op), heartbeatMs: 50 }),
      );
      const request = (path: string, init?: RequestInit) =>
        Promise.resolve(app.request(`/api/v1/kv${path}`, init));
      await fn({ request, clock, ops, store });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

async function errorOf(res: Response): Promise<{ status: number; code: string }> {
  assert.match(res.headers.get("Content-Type") ?? "", /application\/json/);
  const body = await res.json();
  assert.equal(typeof body.error.message, "string");
  return { status: res.status, code: body.error.code };
}

apiTest("PUT, GET, DELETE with statuses and headers", async ({ request, ops }) => {
  const put = await request("/ns/greeting", { method: "PUT", body: "hello" });
  assert.equal(put.status, 201);
  const { version, expiresAt } = await put.json();
  assert.equal(put.headers.get("ETag"), `"${version}"`);
  assert.equal(expiresAt, null);

  const get = await request("/ns/greeting");
  assert.equal(get.status, 200);
  assert.equal(get.headers.get("Content-Type"), "application/octet-stream");
  assert.equal(get.headers.get("ETag"), `"${version}"`);
  assert.equal(get.headers.get("X-Expires-At"), null);
  assert.equal(await get.text(), "hello");

  const again = await request("/ns/greeting", { method: "PUT", body: "bye" });
  assert.equal(again.status, 200, "a replacement is 200");
  await again.body?.cancel();

  const head = await request("/ns/greeting", { method: "HEAD" });
  assert.equal(head.status, 200);
  assert.equal(await head.text(), "");

  const del = await request("/ns/greeting", { method: "DELETE" });
  assert.equal(del.status, 204);
  assert.deepEqual(await errorOf(await request("/ns/greeting")), {
    status: 404,
    code: "not_found",
  });
  assert.deepEqual(await errorOf(await request("/ns/greeting", { method: "DELETE" })), {
    status: 404,
    code: "not_found",
  });
  assert.deepEqual(ops, ["set", "get", "set", "get", "delete", "get", "delete"]);
});

apiTest("binary and 1 MiB bodies round-trip", async ({ request }) => {
  const big = randomBytes(MiB);
  const put = await request("/ns/big", { method: "PUT", body: big });
  assert.equal(put.status, 201);
  await put.body?.cancel();
  const get = await request("/ns/big");
  assert.deepEqual(new Uint8Array(await get.arrayBuffer()), big);
});

apiTest("If-Match and If-None-Match", async ({ request }) => {
  const first = await request("/ns/k", {
    method: "PUT",
    body: "1",
    headers: { "If-None-Match": "*" },
  });
  assert.equal(first.status, 201);
  const v1 = (await first.json()).version;
  const exists = await request("/ns/k", {
    method: "PUT",
    body: "x",
    headers: { "If-None-Match": "*" },
  });
  assert.deepEqual(await errorOf(exists), { status: 412, code: "precondition_failed" });

  const cas = await request("/ns/k", { method: "PUT", body: "2", headers: { "If-Match": v1 } });
  assert.equal(cas.status, 200);
  const v2 = (await cas.json()).version;
  const stale = await request("/ns/k", {
    method: "PUT",
    body: "3",
    headers: { "If-Match": `"${v1}"` },
  });
  assert.deepEqual(await errorOf(stale), { status: 412, code: "precondition_failed" });
  const quoted = await request("/ns/k", {
    method: "PUT",
    body: "3",
    headers: { "If-Match": `"${v2}"` },
  });
  assert.equal(quoted.status, 200, "the ETag, quoted, works as If-Match");
  await quoted.body?.cancel();

  const star = await request("/ns/missing", {
    method: "PUT",
    body: "x",
    headers: { "If-Match": "*" },
  });
  assert.deepEqual(await errorOf(star), { status: 412, code: "precondition_failed" });
  const missing = await request("/ns/missing", {
    method: "PUT",
    body: "x",
    headers: { "If-Match": v1 },
  });
  assert.deepEqual(await errorOf(missing), { status: 412, code: "precondition_failed" });
  const starOk = await request("/ns/k", { method: "PUT", body: "4", headers: { "If-Match": "*" } });
  assert.equal(starOk.status, 200);
  const v4 = (await starOk.json()).version;

  const delStale = await request("/ns/k", { method: "DELETE", headers: { "If-Match": v2 } });
  assert.deepEqual(await errorOf(delStale), { status: 412, code: "precondition_failed" });
  const delOk = await request("/ns/k", { method: "DELETE", headers: { "If-Match": `"${v4}"` } });
  assert.equal(delOk.status, 204);

  const both = await request("/ns/k", {
    method: "PUT",
    body: "x",
    headers: { "If-Match": "*", "If-None-Match": "*" },
  });
  assert.deepEqual(await errorOf(both), { status: 400, code: "bad_request" });
  const list = await request("/ns/k", {
    method: "PUT",
    body: "x",
    headers: { "If-Match": "a, b" },
  });
  assert.deepEqual(await errorOf(list), { status: 400, code: "bad_request" });
});

apiTest("?ttl sets an expiry; the entry is gone after it", async ({ request, clock }) => {
  const put = await request("/ns/t?ttl=30", { method: "PUT", body: "v" });
  assert.equal(put.status, 201);
  const expiresAt = new Date(clock.ms + 30_000).toISOString();
  assert.equal((await put.json()).expiresAt, expiresAt);
  const get = await request("/ns/t");
  assert.equal(get.headers.get("X-Expires-At"), expiresAt);
  await get.body?.cancel();
  clock.ms += 30_000;
  assert.equal((await errorOf(await request("/ns/t"))).status, 404);
  const listed = await (await request("/ns")).json();
  assert.deepEqual(listed, { entries: [], cursor: null });
  const recreated = await request("/ns/t", { method: "PUT", body: "v" });
  assert.equal(recreated.status, 201, "re-creating an expired key is a creation");
  await recreated.body?.cancel();
  for (const ttl of ["0", "-1", "1.5", "abc", "", "999999999999"]) {
    const bad = await request(`/ns/t?ttl=${ttl}`, { method: "PUT", body: "v" });
    assert.deepEqual(await errorOf(bad), { status: 400, code: "bad_request" }, `ttl=${ttl}`);
  }
});

apiTest("bodies over 1 MiB get 413 without being buffered", async ({ request }) => {
  const exact = await request("/ns/exact", { method: "PUT", body: new Uint8Array(MiB) });
  assert.equal(exact.status, 201);
  await exact.body?.cancel();

  const declared = await request("/ns/big", { method: "PUT", body: new Uint8Array(MiB + 1) });
  assert.deepEqual(await errorOf(declared), { status: 413, code: "too_large" });

  // Streamed, no Content-Length, endless: the handler must stop reading.
  let produced = 0;
  let cancelled = false;
  const endless = new ReadableStream<Uint8Array>({
    pull(ctrl) {
      produced += 64 * 1024;
      ctrl.enqueue(new Uint8Array(64 * 1024));
    },
    cancel() {
      cancelled = true;
    },
  });
  const streamed = await request("/ns/big", {
    method: "PUT",
    body: endless,
    // @ts-ignore: `duplex` is required for a streamed request body but not in RequestInit's type
    duplex: "half",
  });
  assert.deepEqual(await errorOf(streamed), { status: 413, code: "too_large" });
  assert.ok(cancelled, "the body stream was cancelled");
  assert.ok(produced <= MiB + 4 * 64 * 1024, `read ${produced} bytes`);

  let n = 0;
  const justOver = new ReadableStream<Uint8Array>({
    pull(ctrl) {
      if (n === MiB + 1) return ctrl.close();
      const size = Math.min(7000, MiB + 1 - n);
      n += size;
      ctrl.enqueue(new Uint8Array(size));
    },
  });
  const over = await request("/ns/big", {
    method: "PUT",
    body: justOver,
    // @ts-ignore: as above
    duplex: "half",
  });
  assert.deepEqual(await errorOf(over), { status: 413, code: "too_large" });
  assert.equal((await errorOf(await request("/ns/big"))).status, 404, "nothing was stored");
});

apiTest("names are validated; keys may hold slashes and any printable text", async (t) => {
  const { request } = t;
  const bad = [
    "/-ns/k",
    `/${"n".repeat(65)}/k`,
    "/n%20s/k",
    "/ns/a%01b",
    "/ns/a%7Fb",
    "/ns/%E2%80%AEevil",
    `/ns/${"k".repeat(513)}`,
    `/ns/${"é".repeat(257)}`,
    "/ns/%ZZ",
    "/ns/%E2%82",
  ];
  for (const path of bad) {
    const res = await request(path, { method: "PUT", body: "x" });
    assert.deepEqual(await errorOf(res), { status: 400, code: "bad_request" }, path);
  }
  const ok = await request(`/n.s_-1/${"k".repeat(512)}`, { method: "PUT", body: "x" });
  assert.equal(ok.status, 201);
  await ok.body?.cancel();

  const slash = await request("/ns/a/b/c", { method: "PUT", body: "raw slashes" });
  assert.equal(slash.status, 201);
  await slash.body?.cancel();
  assert.equal(await (await request("/ns/a%2Fb%2Fc")).text(), "raw slashes", "%2F is the same");
  const key = "dir/../x y?#%€😀";
  const odd = await request(`/ns/${encodeURIComponent(key)}`, { method: "PUT", body: "odd" });
  assert.equal(odd.status, 201);
  await odd.body?.cancel();
  const listed = await (await request(`/ns?prefix=${encodeURIComponent("dir/")}`)).json();
  assert.deepEqual(listed.entries.map((e: { key: string }) => e.key), [key]);
  assert.equal(await t.store.kvGet("ns", key, t.clock.now()).then((e) => dec(e!.value)), "odd");
});

apiTest("listing pages with a cursor", async ({ request }) => {
  for (let i = 0; i < 25; i++) {
    const r = await request(`/ns/item${String(i).padStart(2, "0")}`, { method: "PUT", body: "v" });
    await r.body?.cancel();
  }
  const first = await request("/ns?prefix=item&limit=10");
  assert.equal(first.status, 200);
  const page1 = await first.json();
  assert.equal(page1.entries.length, 10);
  assert.deepEqual(Object.keys(page1.entries[0]).sort(), ["expiresAt", "key", "size", "version"]);
  assert.equal(page1.entries[0].size, 1);
  const keys: string[] = page1.entries.map((e: { key: string }) => e.key);
  let cursor = page1.cursor;
  while (cursor !== null) {
    const page = await (await request(
      `/ns?prefix=item&limit=10&cursor=${encodeURIComponent(cursor)}`,
    )).json();
    keys.push(...page.entries.map((e: { key: string }) => e.key));
    cursor = page.cursor;
  }
  assert.equal(keys.length, 25);
  assert.deepEqual(keys, [...keys].sort());
  assert.equal((await (await request("/ns")).json()).entries.length, 25, "default limit 100");
  for (const q of ["limit=0", "limit=1001", "limit=x", "cursor=***", "prefix=%01", "watch=maybe"]) {
    assert.deepEqual(await errorOf(await request(`/ns?${q}`)), {
      status: 400,
      code: "bad_request",
    }, q);
  }
});

apiTest("wrong methods get 405, unknown routes 404, all as JSON", async ({ request }) => {
  const post = await request("/ns/k", { method: "POST", body: "x" });
  assert.equal(post.headers.get("Allow"), "GET, HEAD, PUT, DELETE");
  assert.deepEqual(await errorOf(post), { status: 405, code: "method_not_allowed" });
  const putNs = await request("/ns", { method: "PUT", body: "x" });
  assert.equal(putNs.headers.get("Allow"), "GET, HEAD");
  assert.deepEqual(await errorOf(putNs), { status: 405, code: "method_not_allowed" });
  assert.deepEqual(await errorOf(await request("/")), { status: 404, code: "not_found" });
  assert.deepEqual(await errorOf(await request("/ns/")), { status: 404, code: "not_found" });
});

/** Reads SSE frames from a response body. */
class SseReader {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #buf = "";
  #decoder = new TextDecoder();

  constructor(res: Response) {
    this.#reader = res.body!.getReader();
  }

  /** The next frame (event or comment), e.g. `event: set\ndata: {...}`. */
  async next(ms = 5000): Promise<string | null> {
    const deadline = Date.now() + ms;
    for (;;) {
      const end = this.#buf.indexOf("\n\n");
      if (end >= 0) {
        const frame = this.#buf.slice(0, end);
        this.#buf = this.#buf.slice(end + 2);
        return frame;
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const r = await Promise.race([
        this.#reader.read(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error("no SSE frame in time")),
            deadline - Date.now(),
          );
        }),
      ]).finally(() => clearTimeout(timer));
      if (r.done) return null;
      this.#buf += this.#decoder.decode(r.value, { stream: true });
    }
  }

  /** The next event frame, skipping heartbeats, parsed. */
  async event(): Promise<{ event: string; data: Record<string, unknown> } | null> {
    for (;;) {
      const frame = await this.next();
      if (frame === null) return null;
      if (frame.startsWith(":")) continue;
      const event = /^event: (.*)$/m.exec(frame)![1];
      const data = JSON.parse(/^data: (.*)$/m.exec(frame)![1]);
      return { event, data };
    }
  }

  cancel(): Promise<void> {
    return this.#reader.cancel();
  }
}

apiTest("watch a key and a prefix as Server-Sent Events", async ({ request, ops, clock }) => {
  const keyRes = await request("/ns/jobs%2F1?watch=1");
  assert.equal(keyRes.status, 200);
  assert.match(keyRes.headers.get("Content-Type")!, /^text\/event-stream/);
  const keyWatch = new SseReader(keyRes);
  assert.equal(await keyWatch.next(), ": watching");
  const prefixWatch = new SseReader(await request("/ns?prefix=jobs%2F&watch=1"));
  assert.equal(await prefixWatch.next(), ": watching");

  const put = await (await request("/ns/jobs/1?ttl=5", { method: "PUT", body: "x" })).json();
  await (await request("/ns/jobs/2", { method: "PUT", body: "y" })).body?.cancel();
  await (await request("/ns/other", { method: "PUT", body: "z" })).body?.cancel();
  await request("/ns/jobs/1", { method: "DELETE" });

  assert.deepEqual(await keyWatch.event(), {
    event: "set",
    data: {
      type: "set",
      ns: "ns",
      key: "jobs/1",
      version: put.version,
      expiresAt: new Date(clock.ms + 5000).toISOString(),
    },
  });
  assert.deepEqual(await keyWatch.event(), {
    event: "delete",
    data: { type: "delete", ns: "ns", key: "jobs/1", version: null, expiresAt: null },
  });
  const seen = [];
  for (let i = 0; i < 3; i++) {
    const e = await prefixWatch.event();
    seen.push(`${e?.event} ${e?.data.key}`);
  }
  assert.deepEqual(seen, ["set jobs/1", "set jobs/2", "delete jobs/1"]);

  const head = await request("/ns/jobs%2F1?watch=1", { method: "HEAD" });
  assert.equal(head.status, 200);
  assert.match(head.headers.get("Content-Type")!, /^text\/event-stream/);
  assert.equal(await head.text(), "");

  let frame;
  do frame = await keyWatch.next(); while (frame !== ": heartbeat");
  await keyWatch.cancel();
  await prefixWatch.cancel();
  assert.equal(ops.filter((o) => o === "watch").length, 3, "two watches and a HEAD");
});

apiTest("a watch ends with an end event when the store closes", async ({ request, store }) => {
  const watch = new SseReader(await request("/ns?watch=1"));
  assert.equal(await watch.next(), ": watching");
  await store[Symbol.asyncDispose]();
  assert.equal((await watch.event())?.event, "end");
  assert.equal(await watch.next(), null, "then the stream closes");
});
