/**
 * The node daemon's life: its data directory, auto-start, stop, crash
 * recovery (lost sessions, stale files, corrupt metadata), bounded logs, and
 * a protocol peer sending garbage.
 */
import assert from "node:assert/strict";
import { CW_ARGV, CwHome, waitFor, within } from "./helpers.ts";
import type { SessionInfo } from "../shared/protocol.ts";
import {
  encodeJson,
  FrameDecoder,
  FrameKind,
  PROTOCOL_MAGIC,
  PROTOCOL_VERSION,
} from "../shared/protocol.ts";

async function listJson(home: CwHome): Promise<SessionInfo[]> {
  return JSON.parse(await home.ok(["list", "--json"]));
}

function alive(pid: number): boolean {
  try {
    Deno.kill(pid, "SIGCONT");
    return true;
  } catch {
    return false;
  }
}

/** Reaps a killed node: it was started detached, so init reaps it; wait till gone. */
function gone(pid: number): Promise<boolean> {
  return waitFor(`pid ${pid} to exit`, () => !alive(pid) || isZombie(pid));
}

/** `ps -o FIELD= -p PID` (Deno may not read /proc without --allow-all). */
function ps(pid: number, field: string): string {
  const out = new Deno.Command("ps", {
    args: ["-o", `${field}=`, "-p", String(pid)],
    stdout: "piped",
    stderr: "null",
  })
    .outputSync();
  return new TextDecoder().decode(out.stdout).trim();
}

function isZombie(pid: number): boolean {
  const state = ps(pid, "stat");
  return state === "" || state.startsWith("Z");
}

Deno.test("data dir 0700, socket 0600, node auto-started in its own session and stopped", async () => {
  await using home = new CwHome();
  assert.equal((await home.run(["stop"])).stderr, "No node was running.\n");
  await home.ok(["list"]);
  const pid = home.nodePid()!;
  assert.ok(pid > 0);
  assert.equal((await Deno.stat(home.home)).mode! & 0o777, 0o700);
  assert.equal((await Deno.stat(`${home.home}/node.sock`)).mode! & 0o777, 0o600);
  assert.equal((await Deno.stat(`${home.home}/node.pid`)).mode! & 0o777, 0o600);
  // its own session: the terminal that started it can go away
  assert.equal(Number(ps(pid, "sid")), pid, "session id is the node's pid");

  const marker = `${home.root}/hup`;
  const id = await home.launch([
    "sh",
    "-c",
    `trap 'echo hup > ${marker}; exit 0' HUP; echo ready; while :; do sleep 0.05; done`,
  ]);
  await waitFor("ready", async () => (await home.ok(["logs", String(id)])).includes("ready"));
  const r = await home.run(["stop"]);
  assert.equal(r.code, 0);
  assert.match(r.stderr, new RegExp(`Stopped the node \\(pid ${pid}\\)`));
  assert.equal(await Deno.readTextFile(marker), "hup\n", "sessions get SIGHUP");
  await gone(pid);
  await assert.rejects(Deno.stat(`${home.home}/node.sock`));
  // metadata was flushed: the next node knows how the session ended
  const [s] = await listJson(home);
  assert.equal(s.status, "exited");
  assert.equal(s.exitCode, 0);
});

Deno.test("refuses a data dir that others may write or that belongs to someone else", async () => {
  await using home = new CwHome();
  await Deno.mkdir(home.home, { mode: 0o700 });
  await Deno.chmod(home.home, 0o777);
  const r = await home.run(["list"]);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /^cw: Refusing to use .*writable by group or others \(mode 777\); run chmod 700/,
  );
  const node = await home.run(["node"]);
  assert.equal(node.code, 1);
  assert.match(node.stderr, /Refusing to use/);
  await Deno.chmod(home.home, 0o700);
  if (Deno.uid() === 0) {
    await Deno.chown(home.home, 65534, 65534);
    const other = await home.run(["list"]);
    assert.equal(other.code, 1);
    assert.match(other.stderr, /belongs to uid 65534, not to this user/);
    await Deno.chown(home.home, 0, 0);
  }
});

Deno.test("a second node on the same home is refused; two homes never meet", async () => {
  await using a = new CwHome();
  await using b = new CwHome();
  await a.launch(["sleep", "30"], ["--name", "in-a"]);
  const second = await a.run(["node"], { timeoutMs: 10_000 });
  assert.equal(second.code, 1);
  assert.match(second.stderr, /A node is already running for .* \(pid \d+\)/);
  await b.launch(["sleep", "30"], ["--name", "in-b"]);
  assert.deepEqual((await listJson(a)).map((s) => s.name), ["in-a"]);
  assert.deepEqual((await listJson(b)).map((s) => s.name), ["in-b"]);
  assert.notEqual(a.nodePid(), b.nodePid());
});

Deno.test("node killed with SIGKILL: sessions become lost, logs stay, ids continue, stale files replaced", async () => {
  await using home = new CwHome();
  const id = await home.launch(["sh", "-c", "echo survived-output; sleep 300"]);
  await waitFor(
    "output",
    async () => (await home.ok(["logs", String(id)])).includes("survived-output"),
  );
  const done = await home.launch(["sh", "-c", "exit 3"]);
  await home.run(["wait", String(done)]);
  const pid = home.nodePid()!;
  Deno.kill(pid, "SIGKILL");
  await gone(pid);
  // the crashed node left its socket and pid file behind
  await Deno.stat(`${home.home}/node.sock`);
  await Deno.stat(`${home.home}/node.pid`);

  const sessions = await listJson(home); // starts a new node
  assert.notEqual(home.nodePid(), pid);
  assert.equal(sessions[0].status, "lost");
  assert.equal(sessions[0].pid, null);
  assert.ok(sessions[0].endedAt);
  assert.equal(sessions[1].status, "exited");
  assert.equal(sessions[1].exitCode, 3);
  assert.equal(await home.ok(["logs", String(id)]), "survived-output\n");
  assert.equal((await home.run(["logs", String(id), "--follow"])).stdout, "survived-output\n");
  assert.equal((await home.run(["wait", String(id)])).code, 255);
  const attach = await home.run(["attach", String(id)]);
  assert.equal(attach.code, 1);
  assert.match(attach.stderr, /has been lost/);
  assert.equal(await home.launch(["true"]), 3, "ids are never reused");
});

Deno.test("node SIGKILLed under a local attach: attach exits 255, the lost session reports its log size", async () => {
  await using home = new CwHome();
  // 3 MB of output in short lines, then the session waits
  const id = await home.launch([
    "sh",
    "-c",
    "head -c 3000000 /dev/zero | tr '\\0' x | fold -w 99; echo; echo printed-all; sleep 300",
  ]);
  const dir = `${home.home}/sessions/${id}`;
  const onDisk = () =>
    ["output.log", "output.log.1"].reduce((n, f) => {
      try {
        return n + Deno.statSync(`${dir}/${f}`).size;
      } catch {
        return n;
      }
    }, 0);
  await waitFor("the whole output in the log", async () =>
    onDisk() > 3_000_000 &&
    (await home.ok(["logs", String(id), "--tail", "1"])).includes("printed-all"), 20_000);

  // attach with a pipe for stdin (no terminal); its history replay shows it is attached
  const [cmd, ...pre] = CW_ARGV;
  const attach = new Deno.Command(cmd, {
    args: [...pre, "attach", String(id)],
    env: home.env(),
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let shown = "";
  const reading = (async () => {
    for await (const chunk of attach.stdout.pipeThrough(new TextDecoderStream())) {
      shown = (shown + chunk).slice(-1000);
    }
  })();
  const stderr = new Response(attach.stderr).text();
  await waitFor("the attach to replay the history", () => shown.includes("printed-all"));
  const pid = home.nodePid()!;
  Deno.kill(pid, "SIGKILL");
  const status = await within(attach.status, 10_000, "attach to end after its node died");
  await reading;
  assert.equal(status.code, 255, await stderr);
  assert.equal(
    (await stderr).trim(),
    `cw: lost the connection to the node while attached to session ${id}`,
  );
  await attach.stdin.close().catch(() => {});
  await gone(pid);

  const [lost] = await listJson(home); // starts a new node
  assert.equal(lost.status, "lost");
  const size = onDisk();
  assert.ok(size > 3_000_000, `log holds ${size} bytes`);
  assert.equal(lost.outputBytes, size);
  const shownByStatus = JSON.parse(await home.ok(["status", String(id), "--json"]));
  assert.equal(shownByStatus.outputBytes, size);
  // and again after a restart: the fix is saved, not recomputed from a 0
  await home.ok(["stop"]);
  assert.equal((await listJson(home))[0].outputBytes, size);
});

Deno.test("corrupt metadata is set aside with a warning, never a crash", async () => {
  await using home = new CwHome();
  const a = await home.launch(["true"]);
  const b = await home.launch(["true"]);
  await home.run(["wait", String(a), String(b)]);
  await home.ok(["stop"]);
  await Deno.writeTextFile(`${home.home}/sessions/${a}/meta.json`, "{ not json");
  await Deno.writeTextFile(`${home.home}/state.json`, "garbage");
  const sessions = await listJson(home);
  assert.deepEqual(sessions.map((s) => s.id), [b]);
  const log = await Deno.readTextFile(`${home.home}/node.log`);
  assert.match(
    log,
    /WARN .*sessions\/1\/meta\.json is corrupt; moved it to .*meta\.json\.corrupt-\d+/,
  );
  const aside = [...Deno.readDirSync(`${home.home}/sessions/${a}`)].map((e) => e.name);
  assert.ok(aside.some((n) => n.startsWith("meta.json.corrupt-")), aside.join());
  assert.equal(await home.launch(["true"]), 3, "the damaged id is not reused");
});

Deno.test("session logs are bounded in bytes by the configured cap", async () => {
  await using home = new CwHome();
  await Deno.mkdir(home.home, { mode: 0o700 });
  await Deno.writeTextFile(
    `${home.home}/config.json`,
    JSON.stringify({ sessionLogBytes: "64KiB", sessionRingBytes: "16KiB" }),
  );
  const id = await home.launch([
    "sh",
    "-c",
    "i=0; while [ $i -lt 20000 ]; do echo line-$i; i=$((i+1)); done",
  ]);
  assert.equal((await home.run(["wait", String(id)])).code, 0);
  let onDisk = 0;
  for (const e of Deno.readDirSync(`${home.home}/sessions/${id}`)) {
    if (e.name.startsWith("output.log")) {
      onDisk += (await Deno.stat(`${home.home}/sessions/${id}/${e.name}`)).size;
    }
  }
  const total = Array.from({ length: 20000 }, (_, i) => `line-${i}\r\n`).join("").length;
  const [s] = await listJson(home);
  assert.equal(s.outputBytes, total);
  assert.ok(onDisk <= 64 * 1024, `log holds ${onDisk} bytes`);
  assert.ok(onDisk >= 32 * 1024, `log keeps the newest half at least (${onDisk})`);
  const logs = await home.ok(["logs", String(id)]);
  assert.ok(logs.endsWith("line-19998\nline-19999\n"));
  assert.equal(await home.ok(["logs", String(id), "--tail", "1"]), "line-19999\n");

  await Deno.writeTextFile(`${home.home}/config.json`, JSON.stringify({ sessionLogBytes: "lots" }));
  await home.ok(["stop"]);
  const bad = await home.run(["list"]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^cw: The node failed to start: Invalid sessionLogBytes "lots"/);
  assert.match(await Deno.readTextFile(`${home.home}/node.log`), /Invalid sessionLogBytes "lots"/);
});

/** Opens a raw protocol connection to the node. */
async function raw(home: CwHome): Promise<Deno.UnixConn> {
  return await Deno.connect({ transport: "unix", path: `${home.home}/node.sock` });
}

async function readFrames(
  conn: Deno.UnixConn,
): Promise<{ kind: number; value?: Record<string, unknown> }[]> {
  const decoder = new FrameDecoder();
  const frames = [];
  const buf = new Uint8Array(65536);
  while (true) {
    const n = await conn.read(buf).catch(() => null);
    if (n === null) break;
    for (const f of decoder.push(buf.slice(0, n))) {
      frames.push("value" in f ? { kind: f.kind, value: f.value } : { kind: f.kind });
    }
  }
  conn.close();
  return frames;
}

Deno.test("garbage, oversized and unknown frames close only that connection", async () => {
  await using home = new CwHome();
  const id = await home.launch(["sh", "-c", "echo one; read x; echo two-$x"]);
  await waitFor("one", async () => (await home.ok(["logs", String(id)])).includes("one"));
  const following = home.run(["logs", String(id), "--follow"]);

  const hello = encodeJson(FrameKind.HELLO, {
    magic: PROTOCOL_MAGIC,
    version: PROTOCOL_VERSION,
    agent: "test",
  });
  const cases: [Uint8Array[], string][] = [
    [[new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n")], "protocol_error"],
    [[Uint8Array.of(0, 0, 0, 1, 0x42, 0)], "protocol_error"],
    [[Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0x05)], "frame_too_large"],
    [
      [encodeJson(FrameKind.HELLO, { magic: PROTOCOL_MAGIC, version: 999, agent: "x" })],
      "unsupported_version",
    ],
    [[hello, encodeJson(FrameKind.REQUEST, { op: "explode" })], "bad_request"],
    [[hello, encodeJson(FrameKind.REQUEST, { op: "launch", argv: "not-a-list" })], "bad_request"],
    [[hello, Uint8Array.of(0, 0, 0, 2, FrameKind.REQUEST, 0x7b, 0x7b)], "protocol_error"],
  ];
  for (const [writes, code] of cases) {
    const conn = await raw(home);
    for (const w of writes) await conn.write(w);
    const frames = await readFrames(conn);
    const error = frames.find((f) => f.kind === FrameKind.ERROR);
    assert.equal(error?.value?.code, code, JSON.stringify(frames));
  }
  // a peer that connects and says nothing, and one that hangs up mid-frame
  const silent = await raw(home);
  const half = await raw(home);
  await half.write(Uint8Array.of(0, 0, 1));
  half.close();

  await home.ok(["send", String(id), "ok"]);
  const r = await following;
  assert.equal(r.stdout, "one\nok\ntwo-ok\n", "another stream was not disturbed");
  assert.equal((await listJson(home)).length, 1);
  silent.close();
});
