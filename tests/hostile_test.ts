/**
 * Hostile peers against real processes: every listener of the relay and of
 * the node under a lowered descriptor limit (`prlimit --nofile=256`), idle
 * floods past that limit from many addresses, and malformed, truncated, empty
 * and oversized messages on every WebSocket route from authenticated peers.
 * The processes must stay up, legitimate clients must be served, and the
 * sessions must keep running. `CW_HEAVY=1` makes the floods larger.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { CW_ARGV, CwHome, pushInput, stalled, waitFor, within } from "./helpers.ts";
import { checkHello, FramedConn, helloFrame } from "../shared/framed.ts";
import { wsDuplex } from "../shared/ws_duplex.ts";
import { PTY_INPUT_MAX } from "../node/limits.ts";
import {
  ADMIN_TOKEN,
  caClient,
  invite,
  makeCerts,
  RelayProcess,
  setupNode,
  type TestCerts,
  waitOnline,
} from "./relay_helpers.ts";
import { type ClientWebSocket, connectWebSocket } from "../shared/ws_client.ts";
import { encodeMux, MUX_MAX_DATA, MuxType } from "../shared/mux.ts";
import { concat } from "../shared/bytes.ts";
import {
  encodeFrame,
  encodeJson,
  FrameKind,
  MAX_FRAME_PAYLOAD,
  PROTOCOL_MAGIC,
  PROTOCOL_VERSION,
} from "../shared/protocol.ts";

const HEAVY = Deno.env.get("CW_HEAVY") === "1";
/** The descriptor limit every server here runs under. */
const NOFILE = 256;
const enc = new TextEncoder();

const prlimit = await new Deno.Command("prlimit", { args: ["--version"], stdout: "null" })
  .output().then((o) => o.success, () => false);
const WRAP = ["prlimit", `--nofile=${NOFILE}`, "--"];

/** A foreground `cw node --listen` under the lowered limit. */
class NodeProcess implements AsyncDisposable {
  readonly wsUrl: string;
  readonly pid: number;
  #child: Deno.ChildProcess;
  #text: { value: string };
  #done: Promise<void>;
  #home: string;

  private constructor(
    home: string,
    child: Deno.ChildProcess,
    wsUrl: string,
    text: { value: string },
    done: Promise<void>,
  ) {
    this.#home = home;
    this.#child = child;
    this.wsUrl = wsUrl;
    this.pid = child.pid;
    this.#text = text;
    this.#done = done;
  }

  static async start(home: CwHome): Promise<NodeProcess> {
    const [cmd, ...args] = [...WRAP, ...CW_ARGV, "node", "--listen", "127.0.0.1:0"];
    const child = new Deno.Command(cmd, {
      args,
      env: home.env(),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const text = { value: "" };
    const pump = async (s: ReadableStream<Uint8Array>) => {
      for await (const chunk of s.pipeThrough(new TextDecoderStream())) text.value += chunk;
    };
    const done = Promise.all([pump(child.stdout), pump(child.stderr)]).then(() => {});
    // not a terminal, so the node logs only to its file: its lines of this pid say where it is
    const wsUrl = await waitFor("the node to start", () => {
      let log = "";
      try {
        log = Deno.readTextFileSync(`${home.home}/node.log`);
      } catch { /* not yet */ }
      const m = new RegExp(
        `serving the node protocol on (\\S+)\\n.*pid ${child.pid} serving`,
      ).exec(log);
      return m?.[1];
    }, 20_000);
    return new NodeProcess(home.home, child, wsUrl, text, done);
  }

  /** What it printed, and its log. */
  get output(): string {
    let log = "";
    try {
      log = Deno.readTextFileSync(`${this.#home}/node.log`);
    } catch { /* none */ }
    return this.#text.value + log;
  }

  alive(): boolean {
    try {
      Deno.kill(this.pid, "SIGCONT");
      return true;
    } catch {
      return false;
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#child.kill("SIGTERM");
    } catch { /* gone */ }
    const timer = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 10_000);
    await this.#child.status;
    clearTimeout(timer);
    await this.#done;
  }
}

/** Idle TCP connections from 127.0.0.2…; `held()` counts those the server kept. */
async function flood(
  port: number,
  addresses: number,
  perAddress: number,
): Promise<{ held(): number; opened: number; close(): void }> {
  const sockets: net.Socket[] = [];
  let open = 0;
  await Promise.all(
    Array.from({ length: addresses }, (_, a) =>
      (async () => {
        for (let i = 0; i < perAddress; i++) {
          await new Promise<void>((resolve) => {
            const s = net.connect({ host: "127.0.0.1", port, localAddress: `127.0.0.${a + 2}` });
            s.on("connect", () => {
              open++;
              s.on("close", () => open--);
              resolve();
            });
            s.on("error", () => resolve());
            sockets.push(s);
          });
        }
      })()),
  );
  const opened = open;
  // the server closes what it refuses at once; and a connection that has sat a second
  // without its handshake gives way to a newcomer (shared/guarded_listener.ts)
  await new Promise((r) => setTimeout(r, 1100));
  return {
    opened,
    held: () => open,
    close: () => sockets.forEach((s) => s.destroy()),
  };
}

/** Idle connections to a unix socket. */
async function floodUnix(path: string, count: number): Promise<{ close(): void }> {
  const conns: Deno.UnixConn[] = [];
  for (let i = 0; i < count; i++) {
    try {
      conns.push(await Deno.connect({ transport: "unix", path }));
    } catch {
      break;
    }
  }
  return { close: () => conns.forEach((c) => c.close()) };
}

/** The first line an SSH server sends. */
async function sshBanner(port: number): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const buf = new Uint8Array(256);
    const n = await within(conn.read(buf), 5000, "the SSH banner");
    return new TextDecoder().decode(buf.subarray(0, n ?? 0)).split("\r\n")[0];
  } finally {
    conn.close();
  }
}

async function healthz(relay: RelayProcess, client: Deno.HttpClient): Promise<number> {
  const t0 = performance.now();
  const res = await within(fetch(`${relay.url}/healthz`, { client }), 5000, "/healthz");
  assert.equal(res.status, 200);
  await res.body?.cancel();
  return performance.now() - t0;
}

/** A process's resident size (ps: Deno cannot read another process's /proc). */
function rssKiB(pid: number): number {
  const out = new Deno.Command("ps", { args: ["-o", "rss=", "-p", String(pid)] }).outputSync();
  return Number(new TextDecoder().decode(out.stdout).trim());
}

function processAlive(pid: number): boolean {
  try {
    Deno.kill(pid, "SIGCONT");
    return true;
  } catch {
    return false;
  }
}

async function sshPort(relay: RelayProcess, client: Deno.HttpClient): Promise<number> {
  const res = await fetch(`${relay.url}/api/v1/info`, {
    client,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  return (await res.json()).ssh.port;
}

Deno.test({
  name: "hostile: idle floods past nofile=256 on every listener; processes and sessions survive",
  ignore: !prlimit,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const tmp = await Deno.makeTempDir({ prefix: "cw-hostile-" });
    const certs = await makeCerts(`${tmp}/pki`);
    const client = caClient(certs);
    await using home = new CwHome();
    try {
      await using relay = await RelayProcess.start(`${tmp}/relay`, certs, { wrap: WRAP });
      await using node = await NodeProcess.start(home);
      await setupNode(home, relay, certs, "dev-1", await invite(relay, client));
      await waitOnline(home, "dev-1");
      const session = await home.launch(["sh", "-c", "while :; do echo tick; sleep 0.1; done"]);
      const outputBytes = async () =>
        (JSON.parse(await home.ok(["status", String(session), "--json"])) as {
          outputBytes: number;
        }).outputBytes;
      const ssh = await sshPort(relay, client);
      const nodePort = Number(new URL(node.wsUrl).port);
      const token = (await home.ok(["node", "token"])).trim();
      await home.ok(["server", "add", "direct", node.wsUrl, "--token", token]);
      const attackers = HEAVY ? 60 : 12;
      const per = HEAVY ? 40 : 30; // 360 (heavy: 2400) connections per listener, past 256

      // 1. relay HTTPS
      let f = await flood(relay.port, attackers, per);
      console.log(`relay https: ${f.opened} connected, ${f.held()} held`);
      assert.ok(f.held() < NOFILE, `the relay held ${f.held()} idle connections`);
      const during = await healthz(relay, client);
      assert.match(await home.ok(["list", "dev-1"]), /tick|sh/);
      f.close();
      console.log(`  /healthz during the flood: ${during.toFixed(1)} ms`);

      // 2. relay SSH gateway
      f = await flood(ssh, attackers, per);
      console.log(`relay ssh: ${f.opened} connected, ${f.held()} held`);
      assert.match(await sshBanner(ssh), /^SSH-2\.0-/);
      f.close();

      // 3. the node's direct WebSocket listener
      f = await flood(nodePort, attackers, per);
      console.log(`node listen: ${f.opened} connected, ${f.held()} held`);
      assert.match(await home.ok(["--server", "direct", "list"]), /sh/);
      f.close();

      // 4. the node's unix socket (its owner only: no addresses to tell apart)
      const u = await floodUnix(`${home.home}/node.sock`, NOFILE + 100);
      u.close();

      // after: every process is up, every listener serves, the session kept running
      assert.ok(processAlive(relay.pid), "the relay died");
      assert.ok(node.alive(), "the node died");
      await waitFor("the node to serve again", async () => (await home.run(["list"])).code === 0);
      await healthz(relay, client);
      assert.match(await sshBanner(ssh), /^SSH-2\.0-/);
      assert.match(await home.ok(["--server", "direct", "list"]), /sh/);
      await waitOnline(home, "dev-1");
      const before = await outputBytes();
      await waitFor("the session to go on", async () => await outputBytes() > before);
      assert.doesNotMatch(node.output, /uncaught|unhandled/i);
      const stopped = await relay.stop();
      assert.doesNotMatch(stopped.output, /uncaught|unhandled/i);
    } finally {
      client.close();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  },
});

/** One request over a node-protocol WebSocket (HELLO, REQUEST); the answer frame. */
async function remoteRequest(
  url: URL,
  token: string,
  certs: TestCerts | null,
  request: Record<string, unknown>,
) {
  const ws = await connectWebSocket(url, {
    headers: { authorization: `Bearer ${token}` },
    caCerts: certs ? [Deno.readTextFileSync(certs.ca)] : undefined,
  });
  const conn = new FramedConn(wsDuplex(ws as unknown as WebSocket));
  try {
    await conn.sendJson(FrameKind.HELLO, helloFrame());
    checkHello(await conn.next());
    await conn.sendJson(FrameKind.REQUEST, request);
    return await within(conn.next(), 5_000, `an answer to ${request.op}`);
  } finally {
    conn.close();
  }
}

/** Sends each payload on a fresh authenticated WebSocket; waits for the close or 2 s. */
async function hammer(
  url: URL,
  headers: Record<string, string>,
  certs: TestCerts | null,
  payloads: (Uint8Array | string)[],
  prelude: Uint8Array[] = [],
): Promise<void> {
  for (const p of payloads) {
    const ws: ClientWebSocket = await connectWebSocket(url, {
      headers,
      caCerts: certs ? [Deno.readTextFileSync(certs.ca)] : undefined,
    });
    const closed = new Promise<void>((r) => ws.addEventListener("close", () => r()));
    for (const m of prelude) ws.send(m);
    ws.send(p);
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([closed, new Promise((r) => timer = setTimeout(r, 2000))]);
    clearTimeout(timer);
    ws.close();
  }
}

const json = (v: unknown) => enc.encode(JSON.stringify(v));
const u32 = (n: number) => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
};

/** Link frames that break shared/mux.ts in every way, one kind at a time. */
function badLinkFrames(): (Uint8Array | string)[] {
  return [
    new Uint8Array(0),
    new Uint8Array([MuxType.OPEN]),
    new Uint8Array([0, 0, 0, 0, 0]),
    new Uint8Array([0x7f, 0, 0, 0, 1]),
    "text on a binary link",
    encodeMux(MuxType.OPEN, 2, enc.encode("not json")),
    encodeMux(MuxType.OPEN, 2, json(null)),
    encodeMux(MuxType.OPEN, 2, json([1, 2])),
    encodeMux(MuxType.OPEN, 2, json({ kind: 7 })),
    encodeMux(MuxType.OPEN, 1, json({ kind: "node" })), // the relay's parity
    encodeMux(MuxType.OPEN, 0, json({ kind: "node" })),
    encodeMux(MuxType.OPEN, 2, new Uint8Array(70 * 1024)),
    encodeMux(MuxType.DATA, 99, enc.encode("to nowhere")),
    encodeMux(MuxType.DATA, 2, new Uint8Array(MUX_MAX_DATA + 1)),
    encodeMux(MuxType.WINDOW, 2, new Uint8Array(3)),
    encodeMux(MuxType.WINDOW, 3, u32(0xffffffff)),
    encodeMux(MuxType.CLOSE, 5, enc.encode("payload")),
    encodeMux(MuxType.CLOSE, 0xffffffff),
    encodeMux(MuxType.PING, 0, new Uint8Array(65)),
    encodeMux(MuxType.PONG, 7, new Uint8Array(64)),
    encodeMux(MuxType.GOAWAY, 0, enc.encode("{")),
    encodeMux(MuxType.GOAWAY, 0, json({ reason: { x: 1 }, message: [] })),
    encodeMux(MuxType.CONTROL, 0, json(null)),
    encodeMux(MuxType.CONTROL, 0, json({ type: "status", sessions: 1e308, version: {} })),
    encodeMux(MuxType.CONTROL, 0, enc.encode("[".repeat(60_000))),
    new Uint8Array(2 * 1024 * 1024),
  ];
}

/** Node protocol frames that break shared/protocol.ts, after and instead of HELLO. */
function badProtocolFrames(): (Uint8Array | string)[] {
  const hello = encodeJson(FrameKind.HELLO, {
    magic: PROTOCOL_MAGIC,
    version: PROTOCOL_VERSION,
    client: "hostile",
  });
  const header = (len: number, kind: number) => {
    const b = new Uint8Array(5);
    new DataView(b.buffer).setUint32(0, len);
    b[4] = kind;
    return b;
  };
  return [
    new Uint8Array(0),
    new Uint8Array([0, 0]),
    header(0xffffffff, FrameKind.DATA),
    header(MAX_FRAME_PAYLOAD + 1, FrameKind.DATA),
    header(0, 0),
    header(0, 0xee),
    encodeFrame(FrameKind.HELLO, enc.encode("not json")),
    encodeJson(FrameKind.HELLO, null),
    encodeJson(FrameKind.HELLO, { magic: "xx", version: 99 }),
    encodeJson(FrameKind.HELLO, { magic: PROTOCOL_MAGIC, version: "1" }),
    "text instead of frames",
    concat([hello, encodeFrame(FrameKind.REQUEST, enc.encode("{"))]),
    concat([hello, encodeJson(FrameKind.REQUEST, null)]),
    concat([hello, encodeJson(FrameKind.REQUEST, { op: "no_such_op" })]),
    concat([hello, encodeJson(FrameKind.REQUEST, { op: "attach", session: { $: 1 } })]),
    concat([hello, encodeJson(FrameKind.REQUEST, { op: "launch", argv: "sh -c 'rm -rf /'" })]),
    concat([hello, encodeJson(FrameKind.REQUEST, { op: "send", session: "1", data: "%%%" })]),
    concat([hello, encodeJson(FrameKind.REQUEST, { op: "list", tag: "x".repeat(200_000) })]),
    concat([hello, encodeFrame(FrameKind.DATA, new Uint8Array(10))]),
    concat([hello, encodeFrame(FrameKind.PING, new Uint8Array(65))]),
    concat([hello, header(10, FrameKind.REQUEST)]), // truncated
  ];
}

Deno.test({
  name: "hostile: malformed messages on every WebSocket route leave relay and node serving",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const tmp = await Deno.makeTempDir({ prefix: "cw-hostile-" });
    const certs = await makeCerts(`${tmp}/pki`);
    const client = caClient(certs);
    await using alpha = new CwHome();
    await using mallory = new CwHome();
    try {
      await using relay = await RelayProcess.start(`${tmp}/relay`, certs, {
        extra: ["--ssh-listen", "off"],
      });
      await setupNode(alpha, relay, certs, "alpha", await invite(relay, client));
      await setupNode(mallory, relay, certs, "mallory", await invite(relay, client));
      await waitOnline(alpha, "alpha");
      const session = await alpha.launch(["sh", "-c", "while :; do echo tick; sleep 0.1; done"]);
      // mallory's own node steps aside: its credential is the attacker's
      const credential = JSON.parse(Deno.readTextFileSync(`${mallory.home}/relay.json`))
        .credential as string;
      await mallory.ok(["stop"]);
      const base = new URL(relay.url);
      const wss = (path: string) => new URL(path, `wss://${base.host}`);

      // the link route, as a registered node
      await hammer(
        wss("/node/connect"),
        { authorization: `Bearer ${credential}` },
        certs,
        badLinkFrames(),
      );
      // a storm of OPENs past the stream cap on one link
      await hammer(
        wss("/node/connect"),
        { authorization: `Bearer ${credential}` },
        certs,
        [encodeMux(MuxType.OPEN, 4098, json({ kind: "node" }))],
        Array.from(
          { length: 1100 },
          (_, i) => encodeMux(MuxType.OPEN, 2 + 2 * i, json({ kind: "x" })),
        ),
      );
      // client streams to a node, through the relay, as a node and as the admin
      for (const token of [credential, ADMIN_TOKEN]) {
        await hammer(
          wss("/api/v1/nodes/alpha/connect"),
          { authorization: `Bearer ${token}` },
          certs,
          badProtocolFrames(),
        );
      }
      await healthz(relay, client);
      assert.match(await alpha.ok(["list", "alpha"]), /sh/);

      // another node's credential (or even the admin's) cannot stop alpha or relink it
      for (const token of [credential, ADMIN_TOKEN]) {
        for (const op of ["shutdown", "relay_reload"]) {
          const answer = await remoteRequest(wss("/api/v1/nodes/alpha/connect"), token, certs, {
            op,
          });
          assert.equal(answer?.kind, FrameKind.ERROR, `${op}: ${JSON.stringify(answer)}`);
          assert.equal((answer as { value: Record<string, unknown> }).value.code, "forbidden");
        }
      }
      assert.match(await alpha.ok(["list", "alpha"]), /sh/);

      // oversized messages in parallel: Deno would hold each (up to 64 MiB) whole in memory;
      // the front lets no client get more than one largest message ahead of the server
      const before = rssKiB(relay.pid);
      const big = await Promise.all(Array.from({ length: HEAVY ? 16 : 6 }, async () => {
        const ws = await connectWebSocket(wss("/api/v1/nodes/alpha/connect"), {
          headers: { authorization: `Bearer ${credential}` },
          caCerts: [Deno.readTextFileSync(certs.ca)],
        });
        ws.send(new Uint8Array(48 * 1024 * 1024));
        return ws;
      }));
      await new Promise((r) => setTimeout(r, 3000));
      const under = rssKiB(relay.pid);
      big.forEach((ws) => ws.close());
      console.log(`relay RSS: ${before >> 10} MiB before, ${under >> 10} MiB under big messages`);
      assert.ok(under - before < 64 * 1024, `relay grew ${(under - before) >> 10} MiB`);
      await healthz(relay, client);

      // the node's direct listener
      const listenHome = alpha;
      const nodeToken = (await listenHome.ok(["node", "token"])).trim();
      await listenHome.ok(["stop"]);
      await using direct = await NodeProcess.start(listenHome);
      await hammer(
        new URL(direct.wsUrl),
        { authorization: `Bearer ${nodeToken}` },
        null,
        badProtocolFrames(),
      );
      const stop = await remoteRequest(new URL(direct.wsUrl), nodeToken, null, { op: "shutdown" });
      assert.equal((stop as { value: Record<string, unknown> }).value.code, "forbidden");
      assert.ok(direct.alive(), "the node died");
      assert.match(await listenHome.ok(["list"]), new RegExp(`\\b${session}\\b`));
      assert.ok(processAlive(relay.pid), "the relay died");
      const stopped = await relay.stop();
      assert.doesNotMatch(stopped.output, /uncaught|unhandled/i);
      assert.doesNotMatch(direct.output, /uncaught|unhandled/i);
    } finally {
      client.close();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "hostile: an input flood through the relay is held back end to end, never queued",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const tmp = await Deno.makeTempDir({ prefix: "cw-hostile-" });
    const certs = await makeCerts(`${tmp}/pki`);
    const client = caClient(certs);
    await using alpha = new CwHome();
    try {
      await using relay = await RelayProcess.start(`${tmp}/relay`, certs, {
        extra: ["--ssh-listen", "off"],
      });
      await setupNode(alpha, relay, certs, "alpha", await invite(relay, client));
      await waitOnline(alpha, "alpha");
      const sleeper = await alpha.launch(["sleep", "600"]);
      const before = { relay: rssKiB(relay.pid), node: rssKiB(alpha.nodePid()!) };
      // a remote attach, as `cw attach alpha:N` opens it, whose writer never stops
      const ws = await connectWebSocket(
        new URL("/api/v1/nodes/alpha/connect", relay.url.replace(/^https/, "wss")),
        {
          headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
          caCerts: [Deno.readTextFileSync(certs.ca)],
        },
      );
      const conn = new FramedConn(wsDuplex(ws as unknown as WebSocket));
      await conn.sendJson(FrameKind.HELLO, helloFrame());
      checkHello(await conn.next());
      await conn.sendJson(FrameKind.REQUEST, { op: "attach", session: String(sleeper) });
      assert.equal((await conn.next())?.kind, FrameKind.RESPONSE);
      const writer = pushInput(conn, 64 * 1024 * 1024);
      const sent = await stalled(writer.state);
      const under = { relay: rssKiB(relay.pid), node: rssKiB(alpha.nodePid()!) };
      console.log(
        `held back after ${(sent / 1048576).toFixed(1)} MiB; relay RSS ${before.relay >> 10} → ` +
          `${under.relay >> 10} MiB, node ${before.node >> 10} → ${under.node >> 10} MiB`,
      );
      // the PTY's bound, the mux window, the front's window, and the sockets' own buffers
      assert.ok(sent < PTY_INPUT_MAX + 16 * 1024 * 1024, `${sent} bytes taken`);
      assert.ok(under.relay - before.relay < 64 * 1024, "the relay grew by 64 MiB or more");
      assert.ok(under.node - before.node < 64 * 1024, "the node grew by 64 MiB or more");
      // held back, not cut off; and a one-shot send says what is wrong
      assert.equal(writer.state.done, false, "the writer was disconnected");
      const blocked = await alpha.run(["send", `alpha:${sleeper}`, "hello"]);
      assert.equal(blocked.code, 1);
      assert.match(blocked.stderr, /is not reading its input/);
      // (a writer stuck in a full socket cannot send its close frame: the relay's stop cuts it)
      conn.close();
      assert.match(await alpha.ok(["list", "alpha"]), /sleep/);
      await alpha.ok(["kill", String(sleeper)]);
    } finally {
      client.close();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  },
});
