/**
 * The relay's audit log on its own: bounded and rotated, readable by time,
 * followed across a rotation, private, and robust to a torn last line.
 */
import assert from "node:assert/strict";
import {
  AUDIT_MAX_FIELD,
  AUDIT_MAX_FOLLOWERS,
  AuditLog,
  formatAuditEntry,
} from "../relay/audit.ts";
import { createRelay } from "../relay/server.ts";
import { openKvStore } from "../relay/kv_store.ts";
import { hashSecret } from "../shared/secrets.ts";
import { CwHome, within } from "./helpers.ts";

Deno.test("audit log: rotated at its bound, read by time, followed across a rotation", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cw-audit-test-" });
  try {
    const path = `${dir}/audit.log`;
    let clock = Date.parse("2026-12-01T00:00:00Z");
    const log = new AuditLog(path, { maxBytes: 4096, now: () => new Date(clock) });
    const follower = new AuditLog(path);
    const stop = new AbortController();
    const seen: string[] = [];
    const tail = (async () => {
      for await (const e of follower.tail(stop.signal, 20)) seen.push(String(e.n));
    })();
    for (let n = 0; n < 200; n++) {
      clock += 1000;
      log.record({ event: "remote_op", principal: "user:ana", network: "x", n, node: "dev-1" });
    }
    // bounded: the live file and one rotated file, each within the bound
    for (const f of [path, `${path}.1`]) {
      const st = await Deno.stat(f);
      assert.ok(st.size <= 4096, `${f} is ${st.size} bytes`);
      assert.equal(st.mode! & 0o777, 0o600);
    }
    const all = log.read();
    assert.ok(all.length > 20 && all.length < 200, `${all.length} entries kept`);
    assert.equal(all.at(-1)!.n, 199, "the newest entries are kept");
    const since = log.read({ since: new Date(clock - 9_500) });
    assert.deepEqual(since.map((e) => e.n), [190, 191, 192, 193, 194, 195, 196, 197, 198, 199]);
    assert.equal(log.read({ limit: 3 }).length, 3);
    // the follower saw the latest entries in order, across rotations
    await within(
      (async () => {
        while (!seen.includes("199")) await new Promise((r) => setTimeout(r, 10));
      })(),
      5_000,
      "the follower to see the last entry",
    );
    const nums = seen.map(Number);
    assert.deepEqual(nums, [...nums].sort((a, b) => a - b), "in order");
    stop.abort();
    await tail;
    // a torn last line (a crash mid-write) is skipped, not fatal
    await Deno.writeTextFile(path, '{"time":"2026-12-01T00:00:00Z","event":"link_u', {
      append: true,
    });
    assert.equal(log.read().at(-1)!.n, 199);
    // long fields are cut; control characters never reach a terminal
    const e = log.record({
      event: "refused",
      principal: "user:x",
      network: null,
      reason: `\x1b]0;pwned\x07${"y".repeat(1000)}`,
    });
    assert.ok(String(e.reason).length <= AUDIT_MAX_FIELD + 1);
    assert.doesNotMatch(formatAuditEntry(e), /\p{Cc}/u);
    log.close();
    follower.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cw relay audit --follow on a data dir prints new entries as they come", async () => {
  const home = new CwHome();
  const dataDir = `${home.root}/relay`;
  await Deno.mkdir(dataDir, { recursive: true, mode: 0o700 });
  const { CW_ARGV } = await import("./helpers.ts");
  const [cmd, ...pre] = CW_ARGV;
  const child = new Deno.Command(cmd, {
    args: [...pre, "relay", "audit", "--follow", "--json", "--data-dir", dataDir],
    env: home.env(),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  try {
    // an admin change on the same data dir, by another process
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let out = "";
    const added = await home.run(["relay", "user", "add", "ana", "--data-dir", dataDir]);
    assert.equal(added.code, 0, added.stderr);
    assert.match(added.stdout, /^ana\.cwu_/);
    await within(
      (async () => {
        while (!out.includes("user_added")) {
          const { value, done } = await reader.read();
          if (done) throw new Error(`audit --follow ended: ${out}`);
          out += value;
        }
      })(),
      15_000,
      "cw relay audit --follow to print the new entry",
    );
    const entry = JSON.parse(out.trim().split("\n").find((l) => l.includes("user_added"))!);
    assert.equal(entry.user, "ana");
    assert.equal(entry.principal, "admin");
    assert.ok(!out.includes(added.stdout.trim().split(".cwu_")[1]), "no token in the log");
    await reader.cancel();
  } finally {
    try {
      child.kill("SIGINT");
    } catch { /* gone */ }
    await child.status;
    await child.stderr.cancel().catch(() => {});
    await home[Symbol.asyncDispose]();
  }
});

Deno.test("GET /api/v1/audit?follow=1 streams new entries; followers are bounded", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cw-audit-api-" });
  await using store = await openKvStore(":memory:");
  const audit = new AuditLog(`${dir}/audit.log`);
  using relay = createRelay({
    store,
    audit,
    logger: { info() {}, warn() {}, error() {} },
    baseUrl: "https://relay.test",
    authMode: "token",
    adminTokenHash: await hashSecret("cwa_admin"),
  });
  const follow = () =>
    relay.app.request("/api/v1/audit?follow=1", { headers: { authorization: "Bearer cwa_admin" } });
  try {
    const res = await follow();
    assert.equal(res.status, 200);
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    audit.record({ event: "invite_created", principal: "admin", network: "default", invite: "x" });
    let text = "";
    while (!text.includes("invite_created")) {
      text += (await within(reader.read(), 5_000, "an entry")).value;
    }
    assert.equal(JSON.parse(text.trim().split("\n").at(-1)!).invite, "x");
    // up to AUDIT_MAX_FOLLOWERS at once; the next is refused as one JSON error
    const more = await Promise.all(Array.from({ length: AUDIT_MAX_FOLLOWERS - 1 }, follow));
    const refused = await follow();
    assert.equal(refused.status, 429);
    assert.equal((await refused.json()).error.code, "rate_limited");
    await reader.cancel();
    for (const r of more) await r.body?.cancel();
    // a follower that left makes room
    const again = await follow();
    assert.equal(again.status, 200);
    await again.body?.cancel();
  } finally {
    audit.close();
    await Deno.remove(dir, { recursive: true });
  }
});
