/**
 * Input floods and hostile dial-back peers, against real processes: a node
 * whose session never reads its input (the writer is held back, memory stays
 * within its named bound, other sessions go on, `cw send` says why it
 * fails); the SSH gateway with the real `ssh` client (stdin through the
 * dial-back is flow-controlled byte-exact; env requests are capped); a node
 * sending garbage on its own dial-back (the relay stays up); a relay sending
 * garbage to the node's dial-back code (the node's PTY worker stays up).
 * `CW_HEAVY=1` makes the floods larger.
 */
import assert from "node:assert/strict";
import ssh2 from "ssh2";
import { CW_SHELL, CwHome, pushInput, shellQuote, stalled, waitFor, within } from "./helpers.ts";
import {
  ADMIN_TOKEN,
  caClient,
  FakeNode,
  invite,
  makeCerts,
  openSocket,
  RelayProcess,
  setupNode,
  type TestCerts,
  waitOnline,
} from "./relay_helpers.ts";
import { checkHello, FramedConn, helloFrame } from "../shared/framed.ts";
import { FrameKind } from "../shared/protocol.ts";
import {
  decodeDial,
  Dial,
  DIALBACK_MAX_CHUNK,
  DIALBACK_WINDOW,
  dialCount,
  encodeDial,
} from "../shared/dialback.ts";
import type { Logger } from "../shared/logger.ts";
import { PTY_INPUT_MAX } from "../node/limits.ts";
import { PtyHost } from "../node/pty_host.ts";
import { runDialback } from "../node/ssh_session.ts";
import { SSH_MAX_ENV_VARS, SSH_MAX_SESSIONS } from "../relay/limits.ts";

const HEAVY = Deno.env.get("CW_HEAVY") === "1";
const MiB = 1024 * 1024;
const enc = new TextEncoder();
const dec = new TextDecoder();

// ---------------------------------------------------------------- processes

/** Runs a command to completion (killed after `timeoutMs`). */
async function run(
  cmd: string,
  args: string[],
  opts: { timeoutMs?: number; env?: Record<string, string> } = {},
): Promise<{ code: number; stdout: string; stderr: string; ms: number }> {
  const started = performance.now();
  const child = new Deno.Command(cmd, {
    args,
    env: opts.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }, opts.timeoutMs ?? 20_000);
  const out = await child.output();
  clearTimeout(timer);
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
    ms: performance.now() - started,
  };
}

/** Resident memory of a process in MiB (`cat`: Deno reads another's /proc only with --allow-all). */
async function rssMiB(pid: number): Promise<number> {
  const status = (await run("cat", [`/proc/${pid}/status`])).stdout;
  const kib = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1]);
  assert.ok(kib > 0, `RSS of ${pid}`);
  return kib / 1024;
}

/** Samples the RSS of some processes until stopped: the base, the peak and the last. */
class Rss {
  readonly base: Record<string, number> = {};
  readonly peak: Record<string, number> = {};
  #pids: Record<string, number>;
  #timer: ReturnType<typeof setInterval> | undefined;
  #sampling: Promise<unknown> = Promise.resolve();

  private constructor(pids: Record<string, number>) {
    this.#pids = pids;
  }

  /** Takes the baseline now and samples every 100 ms from then on. */
  static async watch(pids: Record<string, number>): Promise<Rss> {
    const rss = new Rss(pids);
    for (const [name, pid] of Object.entries(pids)) {
      rss.base[name] = rss.peak[name] = await rssMiB(pid);
    }
    rss.#timer = setInterval(() => {
      rss.#sampling = rss.#sampling.then(() => rss.sample()).catch(() => {});
    }, 100);
    return rss;
  }

  async sample(): Promise<void> {
    for (const [name, pid] of Object.entries(this.#pids)) {
      this.peak[name] = Math.max(this.peak[name], await rssMiB(pid));
    }
  }

  /** Stops sampling; throws if any process grew more than `maxMiB` over its base. */
  async check(what: string, maxMiB: number): Promise<string> {
    clearInterval(this.#timer);
    await this.#sampling;
    await this.sample();
    const lines: string[] = [];
    for (const name of Object.keys(this.#pids)) {
      const grew = this.peak[name] - this.base[name];
      lines.push(`${name} ${this.base[name].toFixed(0)} -> peak ${this.peak[name].toFixed(0)} MiB`);
      assert.ok(grew < maxMiB, `${name} grew ${grew.toFixed(1)} MiB during ${what}`);
    }
    const line = `rss during ${what}: ${lines.join("; ")}`;
    console.log(line);
    return line;
  }
}

// ---------------------------------------------------------------- (a) local input flood

/** An attach stream over the node's unix socket, as `cw attach` opens it. */
async function rawAttach(home: CwHome, session: number): Promise<FramedConn> {
  const conn = new FramedConn(
    await Deno.connect({ transport: "unix", path: `${home.home}/node.sock` }),
  );
  await conn.sendJson(FrameKind.HELLO, helloFrame());
  checkHello(await conn.next());
  await conn.sendJson(FrameKind.REQUEST, { op: "attach", session: String(session) });
  const res = await conn.next();
  assert.equal(res?.kind, FrameKind.RESPONSE, JSON.stringify(res));
  return conn;
}

/** The session's output so far. */
async function logs(home: CwHome, id: number): Promise<string> {
  return await home.ok(["logs", String(id)]);
}

Deno.test("input flood: a session that never reads holds its writer back; the node is unaffected", async () => {
  await using home = new CwHome();
  await home.ok(["list"]); // one node, started before the launches race to start it
  const sleepers = await Promise.all(
    Array.from({ length: HEAVY ? 4 : 1 }, () => home.launch(["sleep", "600"])),
  );
  const echo = await home.launch(["cat"]);
  const chatty = await home.launch(["sh", "-c", "yes cw-log-line | head -c 20000000"]);
  const nodePid = home.nodePid()!;
  const roundTrip = async (word: string) => {
    const t0 = performance.now();
    await home.ok(["send", String(echo), word]);
    // the terminal's echo, then cat's
    await waitFor(
      `${word} echoed`,
      async () => (await logs(home, echo)).includes(`${word}\n${word}\n`),
    );
    return performance.now() - t0;
  };
  await roundTrip("warm-up");
  const rss = await Rss.watch({ node: nodePid });

  // 64 MiB per writer (256 MiB each when heavy), several writers per session when heavy
  const total = (HEAVY ? 256 : 64) * MiB;
  const writers = await Promise.all(
    sleepers.flatMap((id) =>
      Array.from({ length: HEAVY ? 4 : 1 }, async () => {
        const conn = await rawAttach(home, id);
        return { conn, ...pushInput(conn, total) };
      })
    ),
  );
  const sent = await Promise.all(writers.map((w) => stalled(w.state)));
  const perSession = sent.reduce((a, b) => a + b, 0) / sleepers.length;
  console.log(
    `input taken from each writer before it was held back: ${
      sent.map((n) => (n / MiB).toFixed(2)).join(", ")
    } MiB (bound ${PTY_INPUT_MAX / MiB} MiB per session)`,
  );
  // the PTY holds the bound; the rest is one frame in hand and the socket's own buffers
  assert.ok(
    perSession < PTY_INPUT_MAX + 2 * MiB,
    `a session's writers pushed ${(perSession / MiB).toFixed(1)} MiB`,
  );

  // other sessions go on meanwhile, and a one-shot send says what is wrong
  const echoMs = await roundTrip("still-here");
  assert.ok(echoMs < 2_000, `another session's round trip took ${echoMs.toFixed(0)} ms`);
  const blocked = await home.run(["send", String(sleepers[0]), "hello"]);
  assert.equal(blocked.code, 1);
  assert.match(
    blocked.stderr,
    new RegExp(
      `^cw: Session ${sleepers[0]} is not reading its input \\([0-9.]+ MiB waiting\\)\\n$`,
    ),
  );
  await rss.check(`a ${total / MiB} MiB flood per writer`, 64);

  // a reader that leaves mid-answer is an INFO line, not a stack trace at ERROR
  await waitFor("the chatty session to end", async () => {
    const list = JSON.parse(await home.ok(["list", "--json"])) as { id: number; status: string }[];
    return list.find((s) => s.id === chatty)?.status === "exited";
  });
  for (let i = 0; i < 3; i++) {
    const head = await run("sh", ["-c", `${CW_SHELL} logs ${chatty} | head -c 10`], {
      env: home.env(),
    });
    assert.equal(head.stdout, "cw-log-lin");
  }

  // the writers leave: the node is fine, and the stuck input goes with its session
  for (const w of writers) w.conn.close();
  await within(Promise.all(writers.map((w) => w.finished)), 5_000, "the writers to end");
  assert.ok(
    (await roundTrip("after")) < 2_000,
    "a round trip after the writers left",
  );
  await home.ok(["kill", ...sleepers.map(String)]);
  assert.equal(JSON.parse(await home.ok(["list", "--json"])).length, sleepers.length + 2);
  console.log(`node rss after: ${(await rssMiB(nodePid)).toFixed(0)} MiB`);
  const log = await Deno.readTextFile(`${home.home}/node.log`);
  assert.doesNotMatch(log, /ERROR/, "writers and readers leaving are no errors");
  assert.match(log, /INFO logs: the client went away/);
});

// ---------------------------------------------------------------- (b), (c) the SSH gateway

/** What a {@link Gateway} is made of. */
interface GatewayParts {
  dir: string;
  certs: TestCerts;
  relay: RelayProcess;
  client: Deno.HttpClient;
  sshPort: number;
  /** The home of node "dev-1". */
  home: CwHome;
  /** A private key the gateway accepts (authorized_keys). */
  key: string;
}

/** A relay with a registered node "dev-1" and a key the gateway accepts. */
class Gateway implements AsyncDisposable, GatewayParts {
  readonly dir: string;
  readonly certs: TestCerts;
  readonly relay: RelayProcess;
  readonly client: Deno.HttpClient;
  readonly sshPort: number;
  readonly home: CwHome;
  readonly key: string;

  private constructor(p: GatewayParts) {
    this.dir = p.dir;
    this.certs = p.certs;
    this.relay = p.relay;
    this.client = p.client;
    this.sshPort = p.sshPort;
    this.home = p.home;
    this.key = p.key;
  }

  static async create(): Promise<Gateway> {
    const dir = await Deno.makeTempDir({ prefix: "cw-flood-test-" });
    const certs = await makeCerts(`${dir}/pki`);
    const relay = await RelayProcess.start(`${dir}/relay`, certs);
    const client = caClient(certs);
    const res = await fetch(`${relay.url}/api/v1/info`, {
      client,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    const sshPort = (await res.json()).ssh.port;
    const home = new CwHome();
    await home.ok(["list"]);
    await setupNode(home, relay, certs, "dev-1", await invite(relay, client));
    await waitOnline(home, "dev-1");
    const key = `${dir}/key`;
    const kg = await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key]);
    assert.equal(kg.code, 0, kg.stderr);
    await Deno.writeTextFile(
      `${relay.dataDir}/authorized_keys`,
      await Deno.readTextFile(`${key}.pub`),
    );
    return new Gateway({ dir, certs, relay, client, sshPort, home, key });
  }

  /** argv of `ssh … NODE@127.0.0.1 COMMAND`. */
  sshArgs(node: string, command: string, flags: string[] = []): string[] {
    return [
      "-F",
      "/dev/null",
      ...flags,
      "-o",
      "BatchMode=yes",
      "-o",
      `UserKnownHostsFile=${this.dir}/known_hosts`,
      "-o",
      "StrictHostKeyChecking=accept-new",
      "-o",
      "IdentitiesOnly=yes",
      "-o",
      "LogLevel=ERROR",
      "-i",
      this.key,
      "-p",
      String(this.sshPort),
      `${node}@127.0.0.1`,
      command,
    ];
  }

  /** Runs `INPUT | ssh … COMMAND` through sh (`input` is a shell pipeline or null). */
  ssh(
    node: string,
    command: string,
    input: string | null,
    flags: string[] = [],
    timeoutMs = 20_000,
  ) {
    const line = ["ssh", ...this.sshArgs(node, command, flags)].map(shellQuote).join(" ");
    const env = Deno.env.toObject();
    delete env.SSH_AUTH_SOCK;
    return run("sh", ["-c", input === null ? `${line} </dev/null` : `${input} | ${line}`], {
      env,
      timeoutMs,
    });
  }

  async healthz(): Promise<void> {
    const res = await within(
      fetch(`${this.relay.url}/healthz`, { client: this.client }),
      5_000,
      "/healthz",
    );
    assert.equal(res.status, 200);
    await res.body?.cancel();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.home[Symbol.asyncDispose]();
    await this.relay.stop();
    this.client.close();
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

Deno.test("ssh stdin flood: a program that reads late gets every byte; relay and node stay bounded", async () => {
  await using gw = await Gateway.create();
  const size = (HEAVY ? 200 : 50) * MiB;
  // warm both up with the same amount to a program that reads at once: what grows after
  // this baseline is input held for a program that does not read, not the allocator's high mark
  const warm = await gw.ssh("dev-1", "wc -c", `head -c ${size} /dev/zero`, [], 60_000);
  assert.equal(warm.stdout.trim(), String(size), warm.stderr);
  const rss = await Rss.watch({ relay: gw.relay.pid, node: gw.home.nodePid()! });

  const r = await gw.ssh("dev-1", "sleep 3; wc -c", `head -c ${size} /dev/zero`, [], 60_000);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), String(size), "byte-exact");
  assert.ok(r.ms >= 3_000);

  // a terminal that does not read: the client is held back until the program ends
  const t = await gw.ssh("dev-1", "sleep 3; echo done", `yes | head -c ${size}`, ["-tt"], 30_000);
  assert.match(t.stdout, /done/, t.stderr);
  await rss.check(`a ${size / MiB} MiB stdin flood`, 32);
  await gw.healthz();
});

// ssh2 ships no types
// deno-lint-ignore no-explicit-any
type Ssh2Client = any;

/** Opens an ssh2 connection with the gateway's key. */
function ssh2Connect(gw: Gateway, node: string): Promise<Ssh2Client> {
  return within(
    new Promise((resolve, reject) => {
      const c = new ssh2.Client();
      c.on("ready", () => resolve(c)).on("error", reject).connect({
        host: "127.0.0.1",
        port: gw.sshPort,
        username: node,
        privateKey: Deno.readTextFileSync(gw.key),
      });
    }),
    10_000,
    "an ssh2 connection",
  );
}

/** Runs `command` on one channel of `conn` with `env`; resolves with its stdout, or the error. */
function ssh2Exec(
  conn: Ssh2Client,
  command: string,
  env: Record<string, string> = {},
): Promise<{ out: string } | { error: Error }> {
  return new Promise((resolve) => {
    conn.exec(command, { env }, (err: Error | undefined, stream: Ssh2Client) => {
      if (err) return resolve({ error: err });
      let out = "";
      stream.on("data", (d: Uint8Array) => out += dec.decode(d));
      stream.stderr.on("data", () => {});
      stream.on("close", () => resolve({ out }));
    });
  });
}

/** `LC_FLOOD_` and letters: names on the gateway's allow-list (LC_[A-Z_]+). */
function floodName(i: number): string {
  let s = "";
  do {
    s += String.fromCharCode(65 + i % 26);
    i = Math.floor(i / 26);
  } while (i > 0);
  return `LC_FLOOD_${s}`;
}

Deno.test("ssh env and channel floods are capped; the relay stays bounded and up", async () => {
  await using gw = await Gateway.create();
  const conn = await ssh2Connect(gw, "dev-1");
  try {
    // big values (6,000 × 30 KB on one channel took the relay from 123 to 1,054 MiB before)
    const big: Record<string, string> = {};
    const value = "v".repeat(30_000);
    for (let i = 0; i < (HEAVY ? 6000 : 1000); i++) big[floodName(i)] = value;
    // many small ones: the first SSH_MAX_ENV_VARS are kept
    const many: Record<string, string> = {};
    for (let i = 0; i < 6000; i++) many[floodName(i)] = "C.UTF-8";
    const count = "env | grep -c '^LC_FLOOD_' || true";
    const flood = async () => {
      assert.deepEqual(await ssh2Exec(conn, count, big), { out: "0\n" }, "values too long");
      assert.deepEqual(await ssh2Exec(conn, count, many), { out: `${SSH_MAX_ENV_VARS}\n` });
    };
    // the first rounds set the allocator's high mark (measured: +13, +3, then +0-1 MiB a
    // round); more must not add to it, as 30 MB a round kept would
    await flood();
    await flood();
    const rss = await Rss.watch({ relay: gw.relay.pid });
    await flood();
    await flood();
    await rss.check("two more env floods", 32);

    // channels: SSH_MAX_SESSIONS at once on one connection, more are refused, and freed again
    const held = Array.from({ length: SSH_MAX_SESSIONS + 2 }, () => ssh2Exec(conn, "sleep 2"));
    const results = await within(Promise.all(held), 15_000, "the channels");
    const refused = results.filter((r) => "error" in r).length;
    assert.equal(refused, 2, JSON.stringify(results));
    assert.deepEqual(await ssh2Exec(conn, "echo again"), { out: "again\n" });
  } finally {
    conn.end();
  }
  await gw.healthz();
});

// ---------------------------------------------------------------- (c) garbage on a dial-back

/** Opens the dial-back of `ticket` as `fake` and reads its START. */
async function dialBack(gw: Gateway, fake: FakeNode, ticket: string): Promise<WebSocket> {
  // START may arrive with the upgrade: listen before the socket opens
  let first!: (m: MessageEvent) => void;
  const message = new Promise<MessageEvent>((r) => first = r);
  const ws = await openSocket(gw, "/node/dialback", fake.headers(ticket), first);
  assert.ok(ws, "the dial-back opens");
  const start = decodeDial(new Uint8Array((await within(message, 5_000, "START")).data));
  assert.equal(start.type, Dial.START);
  return ws;
}

function closed(ws: WebSocket): Promise<void> {
  if (ws.readyState === WebSocket.CLOSED) return Promise.resolve();
  return within(
    new Promise((r) => ws.addEventListener("close", () => r(), { once: true })),
    5_000,
    "the relay to close the dial-back",
  );
}

Deno.test("dial-back garbage from a node ends that session only; the relay stays up", async () => {
  await using gw = await Gateway.create();
  using fake = await FakeNode.register(gw, "fake");
  const cases: [string, (ws: WebSocket) => void][] = [
    ["empty", (ws) => ws.send(new Uint8Array(0))],
    ["text", (ws) => ws.send("hello")],
    ["EXIT not JSON", (ws) => ws.send(encodeDial(Dial.EXIT, enc.encode("{{")))],
    ["EXIT null", (ws) => ws.send(encodeDial(Dial.EXIT, enc.encode("null")))],
    ["EXIT empty", (ws) => ws.send(encodeDial(Dial.EXIT))],
    ["ERROR array", (ws) => ws.send(encodeDial(Dial.ERROR, enc.encode("[1,2]")))],
    // (larger messages are held back by the listener's front: shared/listener_limits.ts)
    ["STDOUT oversized", (ws) => {
      ws.send(encodeDial(Dial.STDOUT, new Uint8Array(DIALBACK_MAX_CHUNK + 1024)));
    }],
    ["STDIN_ACK of nothing sent", (ws) => ws.send(encodeDial(Dial.STDIN_ACK, 1000))],
    ["STDIN_ACK short", (ws) => ws.send(Uint8Array.of(Dial.STDIN_ACK, 1))],
  ];
  for (const [what, send] of cases) {
    const session = gw.ssh("fake", "anything", null, [], 15_000);
    const ws = await dialBack(gw, fake, await fake.ticket());
    send(ws);
    const r = await session;
    assert.equal(r.code, 1, `${what}: ${r.stderr}`);
    assert.match(r.stderr, /cw: the connection to node "fake" (failed|was lost)/, what);
    await closed(ws);
    await gw.healthz();
  }

  // odd but well-formed: what SSH cannot carry becomes an exit status; a message one safe line
  const odd: [Record<string, unknown>, number, number][] = [
    [{ code: 1e20, signal: null }, Dial.EXIT, 1],
    [{ code: 7, signal: "NOPE" }, Dial.EXIT, 7],
    [{ message: "\x1b]52;c;Zm9v\x07" + "m".repeat(100_000) }, Dial.ERROR, 1],
  ];
  for (const [payload, type, code] of odd) {
    const session = gw.ssh("fake", "anything", null, [], 15_000);
    const ws = await dialBack(gw, fake, await fake.ticket());
    ws.send(encodeDial(type, payload));
    const r = await session;
    assert.equal(r.code, code, JSON.stringify(payload).slice(0, 100));
    assert.ok(r.stderr.length < 2_000 && !r.stderr.includes("\x1b"), r.stderr.slice(0, 100));
    await gw.healthz();
  }

  // the real node on the same relay still works
  const ok = await gw.ssh("dev-1", "echo fine", null);
  assert.equal(ok.stdout, "fine\n", ok.stderr);
  const log = (await gw.relay.stop()).output;
  assert.match(log, /bad dial-back message/);
  assert.doesNotMatch(log, /uncaught|unhandled/);
});

// ---------------------------------------------------------------- the node's side, in process

/** A relay played by the test: serves /node/dialback and hands each socket to `script`. */
function fakeRelay(script: (ws: WebSocket) => void): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.binaryType = "arraybuffer";
    socket.addEventListener("open", () => script(socket), { once: true });
    return response;
  });
}

/** Every message until the node closes: STDOUT joined, EXIT, STDIN_ACK total. */
function collect(ws: WebSocket) {
  const got = { stdout: "", exit: null as Record<string, unknown> | null, acked: 0, code: 0 };
  ws.addEventListener("message", (e) => {
    const { type, payload } = decodeDial(new Uint8Array(e.data as ArrayBuffer));
    if (type === Dial.STDOUT || type === Dial.STDERR) {
      got.stdout += dec.decode(payload);
      ws.send(encodeDial(Dial.ACK, payload.byteLength));
    } else if (type === Dial.EXIT) got.exit = JSON.parse(dec.decode(payload));
    else if (type === Dial.STDIN_ACK) got.acked += dialCount(payload);
  });
  const done = new Promise<typeof got>((resolve) =>
    ws.addEventListener("close", (e) => resolve({ ...got, code: (e as CloseEvent).code }), {
      once: true,
    })
  );
  return { got, done };
}

Deno.test({
  name: "a relay's garbage on the node's dial-back ends that session only; the PTY worker lives",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const warnings: string[] = [];
    const logger: Logger = {
      info: () => {},
      warn: (m) => warnings.push(m),
      error: (m) => warnings.push(`ERROR ${m}`),
    };
    const pty = new PtyHost();
    await pty.ready();
    const start = (command: string | null, ptyReq: unknown = null) =>
      encodeDial(Dial.START, { command, pty: ptyReq, env: {} } as Record<string, unknown>);
    /** Runs one dial-back against a fake relay playing `script`; resolves with what it got. */
    const dial = async (what: string, script: (ws: WebSocket) => void) => {
      let result!: Promise<Awaited<ReturnType<typeof collect>["done"]>>;
      const server = fakeRelay((ws) => {
        result = collect(ws).done;
        script(ws);
      });
      const config = {
        url: `http://127.0.0.1:${server.addr.port}`,
        name: "n",
        credential: "c",
        caCert: null,
      };
      await within(runDialback(config, "t", pty, logger), 10_000, `the dial-back to end (${what})`);
      const got = await result;
      await server.shutdown();
      return got;
    };
    try {
      const bad: [string, (ws: WebSocket) => void][] = [
        ["empty", (ws) => ws.send(new Uint8Array(0))],
        ["START null", (ws) => ws.send(encodeDial(Dial.START, enc.encode("null")))],
        ["START a list", (ws) => ws.send(encodeDial(Dial.START, enc.encode("[1]")))],
        ["START command 5", (ws) => ws.send(start(5 as unknown as string))],
        ["START pty rows 0", (ws) => ws.send(start("true", { term: "x", cols: 80, rows: 0 }))],
        ["START env a string", (ws) => {
          ws.send(encodeDial(Dial.START, { command: "true", pty: null, env: "LANG=C" }));
        }],
        ["START twice", (ws) => {
          ws.send(start("sleep 5"));
          ws.send(start("sleep 5"));
        }],
        ["RESIZE not JSON", (ws) => {
          ws.send(start(null, { term: "xterm", cols: 80, rows: 24 }));
          ws.send(encodeDial(Dial.RESIZE, enc.encode("{")));
        }],
        ["ACK short", (ws) => {
          ws.send(start("sleep 5"));
          ws.send(Uint8Array.of(Dial.ACK, 0));
        }],
        ["STDIN oversized", (ws) => {
          ws.send(start("sleep 5"));
          ws.send(encodeDial(Dial.STDIN, new Uint8Array(DIALBACK_MAX_CHUNK + 1)));
        }],
        ["STDIN beyond the window", (ws) => {
          ws.send(start("sleep 5"));
          // a pipe takes 64 KiB itself
          for (let i = 0; i * DIALBACK_MAX_CHUNK <= DIALBACK_WINDOW + 3 * DIALBACK_MAX_CHUNK; i++) {
            ws.send(encodeDial(Dial.STDIN, new Uint8Array(DIALBACK_MAX_CHUNK)));
          }
        }],
      ];
      for (const [what, script] of bad) {
        const before = warnings.length;
        const got = await dial(what, script);
        assert.equal(got.code, 4008, `${what}: closed as a bad message`);
        assert.match(warnings.slice(before).join("\n"), /bad message/, what);
      }

      // odd sizes and signals are clamped or ignored, not fatal
      const odd = await dial("odd sizes", (ws) => {
        ws.send(start("sleep 0.3; stty size; sleep 0.3; stty size", {
          term: "xterm",
          cols: 1e9,
          rows: 1e9,
        }));
        setTimeout(() => {
          ws.send(encodeDial(Dial.RESIZE, { cols: 2 ** 40, rows: 5 }));
          ws.send(encodeDial(Dial.SIGNAL, { signal: "NOPE" }));
          ws.send(encodeDial(Dial.SIGNAL, { signal: ["x"] }));
        }, 450);
      });
      assert.deepEqual(odd.exit, { code: 0, signal: null });
      assert.match(odd.stdout, /10000 10000\r\n5 10000\r\n/);

      // stdin is acknowledged as the program takes it, byte-exact, pipes and PTY
      const size = 3 * MiB;
      for (const ptyReq of [null, { term: "xterm", cols: 80, rows: 24 }]) {
        const got = await dial(`stdin through ${ptyReq ? "a PTY" : "pipes"}`, (ws) => {
          // a terminal passes bytes unchanged only in raw mode: input waits for "ready".
          // It echoes them: Deno (2.9) resumes a PTY write that found the kernel full only
          // when the PTY has output too, so a silent reader would stall at ~200 KiB.
          const command = ptyReq
            ? `stty raw; echo ready; sleep 1; head -c ${size} | wc -c`
            : "sleep 1; wc -c";
          ws.send(start(command, ptyReq));
          let sent = 0;
          let acked = 0;
          const pushMore = () => {
            while (sent < size && sent - acked < DIALBACK_WINDOW) {
              const n = Math.min(DIALBACK_MAX_CHUNK, size - sent);
              ws.send(encodeDial(Dial.STDIN, new Uint8Array(n).fill(0x61)));
              sent += n;
            }
            if (sent === size && !ptyReq) ws.send(encodeDial(Dial.EOF));
          };
          let started = !ptyReq;
          ws.addEventListener("message", (e) => {
            const { type, payload } = decodeDial(new Uint8Array(e.data as ArrayBuffer));
            if (type === Dial.STDOUT && !started && dec.decode(payload).includes("ready")) {
              started = true;
              pushMore();
            }
            if (type !== Dial.STDIN_ACK) return;
            acked += dialCount(payload);
            if (sent < size) pushMore();
          });
          if (started) pushMore();
        });
        assert.deepEqual(got.exit, { code: 0, signal: null }, got.stdout);
        assert.match(got.stdout, new RegExp(`(^|a)${size}\\s*$`), got.stdout.slice(-200));
        assert.ok(got.acked >= size - 64 * 1024, `acknowledged ${got.acked} of ${size}`);
      }
      assert.ok(!warnings.some((w) => w.startsWith("ERROR")), warnings.join("\n"));
    } finally {
      pty.terminate();
    }
  },
});
