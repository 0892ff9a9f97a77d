/**
 * One scenario suite, three transports: every session command run through
 * the real CLI against a node reached over its local unix socket, over its
 * direct WebSocket listener (`cw --server s1 …`, TLS from a per-run CA), and
 * through a real relay (`cw list dev-1`, `cw attach dev-1:3`). The same
 * assertions hold for each; where a transport adds its own failure modes
 * (a node offline, a revoked node, a wrong token, a relay restart in the
 * middle of an attach) those follow the suite.
 *
 * Each transport's processes (relay, nodes) are started once, on first use,
 * shared by its tests and stopped by its last test — so every test here opts
 * out of the per-test resource sanitizers.
 */
import assert from "node:assert/strict";
import type { SessionInfo } from "../shared/protocol.ts";
import { CW_SHELL, CwHome, shellQuote, stable, Tmux, waitFor } from "./helpers.ts";
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

type Home = CwHome;

// ---------------------------------------------------------------- transports

/** The homes of one transport: where `cw` is typed, and the node's own. */
interface Homes {
  /** The CW_HOME the client commands run in. */
  client: Home;
  /** The CW_HOME of the node the commands reach (the same one for local). */
  node: Home;
}

/**
 * How the suite reaches a node, and how commands name it there. Set-up is
 * lazy and happens once; disposing stops every process it started.
 */
interface Transport extends AsyncDisposable {
  readonly name: string;
  /** Words before the command: `--server s1`. */
  readonly global: string[];
  /** The node argument of `list`, `launch`, `kill --tag`, `wait --tag`: `dev-1`. */
  readonly node: string[];
  /** How a session is named: `3`, `dev-1:3`. */
  ref(session: number | string): string;
  /** Sets everything up on first call; the homes. */
  ready(): Promise<Homes>;
}

/**
 * What to undo if the test process exits without running a transport's
 * teardown (a `--filter` run): kill its processes, remove its directories.
 * Synchronous, so that it can run in `unload`; a teardown releases it.
 */
class ExitGuard {
  static #all = new Set<ExitGuard>();
  static {
    globalThis.addEventListener("unload", () => {
      for (const guard of ExitGuard.#all) guard.#run();
    });
  }
  #undo: (() => void)[] = [];

  constructor() {
    ExitGuard.#all.add(this);
  }

  /** A process, by a function that gives its current pid. */
  pid(pid: () => number | null): void {
    this.#undo.push(() => {
      const p = pid();
      if (p !== null) Deno.kill(p, "SIGKILL");
    });
  }

  /** A home: its node (if running) and its directory. */
  home(home: Home): void {
    this.pid(() => home.nodePid());
    this.dir(home.root);
  }

  /** A directory. */
  dir(path: string): void {
    this.#undo.push(() => Deno.removeSync(path, { recursive: true }));
  }

  /** The teardown ran: nothing to undo. */
  release(): void {
    ExitGuard.#all.delete(this);
  }

  #run(): void {
    for (const undo of this.#undo) {
      try {
        undo();
      } catch { /* already gone */ }
    }
  }
}

/** Binds 127.0.0.1:0, reads the port the kernel gave, and frees it. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Runs `setup` once; later calls share its result (or its failure). */
function once<T>(setup: () => Promise<T>): () => Promise<T> {
  let p: Promise<T> | null = null;
  return () => p ??= setup();
}

/** The node over its unix socket, in the home the commands run in. */
class LocalTransport implements Transport {
  readonly name = "local";
  readonly global: string[] = [];
  readonly node: string[] = [];
  #home: Home | null = null;

  ref(session: number | string): string {
    return String(session);
  }

  #guard = new ExitGuard();

  ready = once(() => {
    const home = this.#home = new CwHome();
    this.#guard.home(home);
    return Promise.resolve({ client: home, node: home });
  });

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#home?.[Symbol.asyncDispose]();
    this.#guard.release();
  }
}

/** Everything the direct transport set up. */
interface DirectState extends Homes {
  certs: TestCerts;
  url: string;
  token: string;
  tmp: string;
}

/**
 * A node listening on `wss://127.0.0.1:PORT/` (config.json: listen, tlsCert,
 * tlsKey), saved in another home with `cw server add s1 … --ca-cert CA`.
 */
class DirectTransport implements Transport {
  readonly name = "direct";
  readonly global = ["--server", "s1"];
  readonly node: string[] = [];
  #state: DirectState | null = null;
  #guard = new ExitGuard();

  ref(session: number | string): string {
    return String(session);
  }

  /** The set-up (after {@link ready}). */
  get state(): DirectState {
    assert.ok(this.#state, "the direct transport is not set up");
    return this.#state;
  }

  ready = once(async () => {
    const tmp = await Deno.makeTempDir({ prefix: "cw-direct-" });
    this.#guard.dir(tmp);
    const certs = await makeCerts(`${tmp}/pki`);
    const node = new CwHome();
    const client = new CwHome();
    this.#guard.home(node);
    this.#guard.home(client);
    this.#state = { node, client, certs, tmp, url: "", token: "" };
    const port = freePort();
    await Deno.mkdir(node.home, { recursive: true, mode: 0o700 });
    await Deno.writeTextFile(
      `${node.home}/config.json`,
      JSON.stringify({ listen: `127.0.0.1:${port}`, tlsCert: certs.cert, tlsKey: certs.key }),
    );
    await node.ok(["list"]); // starts the node, which reads config.json
    const token = (await node.ok(["node", "token"])).trim();
    const url = `wss://127.0.0.1:${port}/`;
    Object.assign(this.#state, { url, token });
    await client.ok(["server", "add", "s1", url, "--token", token, "--ca-cert", certs.ca]);
    // the unix socket answers before the WebSocket listener is up
    await waitFor("the direct listener", async () => {
      const r = await client.run(["--server", "s1", "list", "--json"]);
      return r.code === 0;
    });
    return { node, client };
  });

  async [Symbol.asyncDispose](): Promise<void> {
    if (!this.#state) return;
    await this.#state.client[Symbol.asyncDispose]();
    await this.#state.node[Symbol.asyncDispose]();
    await Deno.remove(this.#state.tmp, { recursive: true }).catch(() => {});
    this.#guard.release();
  }
}

/** Everything the relay transport set up. */
interface RelayState extends Homes {
  certs: TestCerts;
  relay: RelayProcess;
  http: Deno.HttpClient;
  tmp: string;
  /** Further nodes, by name. */
  extra: Map<string, Home>;
}

/**
 * A relay on 127.0.0.1 (TLS, per-run CA), node `dev-1` in one home and the
 * client in another ("laptop"), both registered with `cw setup`.
 */
class RelayTransport implements Transport {
  readonly name = "relay";
  readonly global: string[] = [];
  readonly node = ["dev-1"];
  #state: RelayState | null = null;
  #guard = new ExitGuard();

  ref(session: number | string): string {
    return `dev-1:${session}`;
  }

  /** The set-up (after {@link ready}). */
  get state(): RelayState {
    assert.ok(this.#state, "the relay transport is not set up");
    return this.#state;
  }

  ready = once(async () => {
    const tmp = await Deno.makeTempDir({ prefix: "cw-relay-tr-" });
    this.#guard.dir(tmp);
    const certs = await makeCerts(`${tmp}/pki`);
    const relay = await RelayProcess.start(`${tmp}/relay`, certs);
    this.#guard.pid(() => this.#state?.relay.pid ?? null);
    const node = new CwHome();
    const client = new CwHome();
    this.#guard.home(node);
    this.#guard.home(client);
    this.#state = {
      node,
      client,
      certs,
      relay,
      http: caClient(certs),
      tmp,
      extra: new Map(),
    };
    await setupNode(node, relay, certs, "dev-1", await invite(relay, this.#state.http));
    await setupNode(client, relay, certs, "laptop", await invite(relay, this.#state.http));
    await waitOnline(client, "dev-1");
    return { node, client };
  });

  /** Registers one more node (own home, `cw setup`) and waits until it is online. */
  async addNode(name: string): Promise<Home> {
    const s = this.state;
    const home = new CwHome();
    this.#guard.home(home);
    s.extra.set(name, home);
    await setupNode(home, s.relay, s.certs, name, await invite(s.relay, s.http));
    await waitOnline(s.client, name);
    return home;
  }

  /** Stops the relay gracefully and starts it again on the same port and data dir. */
  async restartRelay(): Promise<void> {
    const s = this.state;
    const port = s.relay.port;
    const stopped = await s.relay.stop();
    assert.equal(stopped.code, 0, stopped.output);
    s.relay = await RelayProcess.start(s.relay.dataDir, s.certs, { port });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    const s = this.#state;
    if (!s) return;
    for (const home of [s.client, s.node, ...s.extra.values()]) {
      await home[Symbol.asyncDispose]();
    }
    await s.relay.stop();
    s.http.close();
    await Deno.remove(s.tmp, { recursive: true }).catch(() => {});
    this.#guard.release();
  }
}

// ---------------------------------------------------------------- the client side

/** The CLI as the suite types it on one transport. */
class Cw {
  readonly t: Transport;
  readonly client: Home;
  readonly nodeHome: Home;

  constructor(t: Transport, homes: Homes) {
    this.t = t;
    this.client = homes.client;
    this.nodeHome = homes.node;
  }

  /** `cw [--server s1] ARGS` in the client's home. */
  run(args: string[], opts: Parameters<Home["run"]>[1] = {}) {
    return this.client.run([...this.t.global, ...args], opts);
  }

  /** The same, failing unless it exits 0; stdout. */
  ok(args: string[], opts: Parameters<Home["run"]>[1] = {}): Promise<string> {
    return this.client.ok([...this.t.global, ...args], opts);
  }

  /** `cw launch [NODE] OPTS -- ARGV`; checks what it prints and returns the id. */
  async launch(argv: string[], opts: string[] = []): Promise<number> {
    const r = await this.run(["launch", ...this.t.node, ...opts, "--", ...argv]);
    assert.equal(r.code, 0, r.stderr);
    const id = Number(/(\d+)\n$/.exec(r.stdout)?.[1]);
    assert.equal(r.stdout, `${this.t.ref(id)}\n`, "launch prints the session alone");
    assert.match(r.stderr, new RegExp(`^Launched session ${this.t.ref(id)}[ :]`));
    return id;
  }

  /** `cw list [NODE] --json ARGS`. */
  async list(args: string[] = []): Promise<SessionInfo[]> {
    return JSON.parse(await this.ok(["list", ...this.t.node, "--json", ...args]));
  }

  /** A session's record as `cw list` shows it. */
  async info(id: number): Promise<SessionInfo> {
    const s = (await this.list()).find((x) => x.id === id);
    assert.ok(s, `session ${id} is in cw list`);
    return s;
  }

  /** Waits until `cw logs REF` contains `text`; the log. */
  async logsContain(id: number, text: string, timeoutMs = 10_000): Promise<string> {
    let last = "";
    try {
      return await waitFor(`session ${id}'s log to contain ${JSON.stringify(text)}`, async () => {
        last = await this.ok(["logs", this.t.ref(id)]);
        return last.includes(text) ? last : null;
      }, timeoutMs);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n--- log ---\n${last.slice(-2000)}`);
    }
  }
}

// ---------------------------------------------------------------- tmux

const BASH = ["bash", "--norc", "--noprofile"];

/** A pane running bash whose PATH has a `cw` that runs this checkout in `home`. */
async function startPane(tmux: Tmux, home: Home, name: string): Promise<void> {
  const bin = `${home.root}/bin`;
  await Deno.mkdir(bin, { recursive: true });
  await Deno.writeTextFile(`${bin}/cw`, `#!/bin/sh\nexec ${CW_SHELL} "$@"\n`, { mode: 0o755 });
  const path = `${bin}:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}`;
  const shell = ["env", `PATH=${path}`, "PS1=pane$ ", ...BASH].map(shellQuote).join(" ");
  await tmux.start(name, shell, 100, 30, { CW_HOME: home.home, HISTFILE: "" });
  await tmux.waitFor(name, "pane$");
}

// ---------------------------------------------------------------- the suite

/** Shared state spans tests: the sanitizers would see it as a leak. */
const SHARED = { sanitizeOps: false, sanitizeResources: false } as const;

/** Registers the shared scenarios for one transport. */
function scenarios(t: Transport): void {
  const test = (name: string, fn: (cw: Cw) => Promise<void>) =>
    Deno.test({
      name: `${t.name}: ${name}`,
      ...SHARED,
      fn: async () => fn(new Cw(t, await t.ready())),
    });

  test("launch prints the session; list and list --json are the node's own", async (cw) => {
    const id = await cw.launch(["sleep", "300"], ["--name", "lst-a", "--tag", "lst"]);
    const other = await cw.launch(["sh", "-c", "exit 3"], ["--tag", "lst", "--tag", "x"]);
    assert.ok(other > id);
    await cw.run(["wait", cw.t.ref(other)]);

    const remote = await cw.list(["--tag", "lst"]);
    assert.deepEqual(remote.map((s) => s.id), [id, other]);
    assert.equal(remote[0].name, "lst-a");
    assert.deepEqual(remote[0].argv, ["sleep", "300"]);
    assert.deepEqual(remote[1].tags, ["lst", "x"]);
    assert.equal(remote[1].exitCode, 3);
    // --json through this transport is exactly what the node says locally
    const local = JSON.parse(await cw.nodeHome.ok(["list", "--json", "--tag", "lst"]));
    assert.deepEqual(stable(remote), stable(local));
    assert.deepEqual(
      (await cw.list(["--tag", "lst", "--status", "running"])).map((s) => s.id),
      [id],
    );

    const table = await cw.ok(["list", ...cw.t.node, "--tag", "lst"]);
    assert.match(table, /^ID\s+NAME\s+STATUS\s+EXIT\s+AGE\s+TAGS\s+COMMAND$/m);
    assert.match(
      table,
      new RegExp(`^${id}\\s+lst-a\\s+(?:working|waiting)\\s+-\\s+\\d+s\\s+lst\\s+sleep 300$`, "m"),
    );
    assert.match(
      table,
      new RegExp(`^${other}\\s+-\\s+exited\\s+3\\s+\\d+s\\s+lst,x\\s+sh -c 'exit 3'$`, "m"),
    );
    // the session refers to it by name too
    const s = JSON.parse(await cw.ok(["status", cw.t.ref("lst-a"), "--json"]));
    assert.equal(s.id, id);
    await cw.ok(["kill", cw.t.ref(id)]);
  });

  test("attach in a terminal: type, resize, detach, re-attach with history", async (cw) => {
    await using tmux = new Tmux(cw.client.root);
    const id = await cw.launch(BASH, ["--env", "PS1=sess$ ", "--env", "HISTFILE="]);
    await cw.logsContain(id, "sess$ ");
    const attachLine = ["cw", ...cw.t.global, "attach", cw.t.ref(id)].join(" ");

    await startPane(tmux, cw.client, "t");
    await tmux.typeLine("t", `${attachLine}; echo ATTACH-EXIT=$?`);
    await tmux.waitFor("t", "sess$");
    await tmux.typeLine("t", "echo hello-$((6*7))");
    await tmux.waitFor("t", /^hello-42$/m);

    const before = await tmux.size("t");
    await tmux.typeLine("t", "stty size; echo SIZE-$((1+1))");
    await tmux.waitFor("t", new RegExp(`^${before}\\s*\\nSIZE-2$`, "m"));
    await tmux.cmd("resize-window", "-t", "t", "-x", "120", "-y", "40");
    const after = await tmux.size("t");
    assert.equal(after, "40 120");
    // SIGWINCH travels client → transport → node → PTY: ask until it shows
    let asked = 0;
    await waitFor(`stty size to report ${after}`, async () => {
      await tmux.typeLine("t", `stty size; echo RESIZED-${++asked}-$((0))`);
      const pane = await tmux.waitFor("t", `RESIZED-${asked}-0`);
      return new RegExp(`^${after}\\s*\\nRESIZED-${asked}-0$`, "m").test(pane);
    });

    await tmux.keys("t", ["C-b", "d"]);
    await tmux.waitFor("t", `[detached from session ${id}]`);
    await tmux.waitFor("t", /^ATTACH-EXIT=0$/m);
    assert.equal((await cw.info(id)).status, "running");

    await tmux.clearPane("t");
    assert.ok(!(await tmux.capture("t")).includes("hello-42"));
    await tmux.typeLine("t", `${attachLine}; echo ATTACH-EXIT=$?`);
    await tmux.waitFor("t", /^hello-42$/m); // history replayed
    await tmux.typeLine("t", "exit 9");
    const pane = await tmux.waitFor("t", /^ATTACH-EXIT=9$/m);
    assert.match(pane, new RegExp(`\\[session ${id} exited with code 9\\]`));
  });

  test("logs --follow ends with the session; send text, --no-newline, --stdin", async (cw) => {
    const id = await cw.launch([
      "sh",
      "-c",
      'stty -echo; echo start; while read -r l; do [ "$l" = end ] && exit 0; echo "<$l>"; done',
    ]);
    await cw.logsContain(id, "start");
    const follow = cw.run(["logs", cw.t.ref(id), "--follow"]);
    await cw.ok(["send", cw.t.ref(id), "one", "two"]);
    await cw.ok(["send", cw.t.ref(id), "--no-newline", "par"]);
    await cw.ok(["send", cw.t.ref(id), "tial"]);
    await cw.ok(["send", cw.t.ref(id), "--stdin"], { stdin: "from stdin\nend\n" });
    const r = await follow;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "start\n<one two>\n<partial>\n<from stdin>\n");
    // an ended session: the log, then the end at once; the same as the node has
    const again = await cw.ok(["logs", cw.t.ref(id), "-f"]);
    assert.equal(again, r.stdout);
    assert.equal(await cw.nodeHome.ok(["logs", String(id)]), r.stdout);
    assert.equal(await cw.ok(["logs", cw.t.ref(id), "--tail", "1"]), "<from stdin>\n");
    const late = await cw.run(["send", cw.t.ref(id), "late"]);
    assert.equal(late.code, 1);
    assert.match(late.stderr, /has ended/);
  });

  test("watch follows and ends with the session's exit code", async (cw) => {
    const id = await cw.launch(["sh", "-c", "echo before; read x; echo after-$x; exit 4"]);
    await cw.logsContain(id, "before");
    const watching = cw.run(["watch", cw.t.ref(id)]);
    await cw.ok(["send", cw.t.ref(id), "go"]);
    const r = await watching;
    assert.equal(r.code, 4, r.stderr);
    assert.equal(r.stdout, "before\ngo\nafter-go\n");
    const done = await cw.run(["watch", cw.t.ref(id), "--tail", "1"]);
    assert.equal(done.code, 4);
    assert.equal(done.stdout, "after-go\n");
  });

  test("wait: exit codes 0 and 7, killed is 128+15, --tag, --timeout", async (cw) => {
    const zero = await cw.launch(["true"]);
    assert.equal((await cw.run(["wait", cw.t.ref(zero)])).code, 0);
    const seven = await cw.launch(["sh", "-c", "exit 7"]);
    assert.equal((await cw.run(["wait", cw.t.ref(seven)])).code, 7);
    assert.equal((await cw.run(["wait", cw.t.ref(zero), cw.t.ref(seven)])).code, 7);

    const slow = await cw.launch(["sleep", "300"], ["--tag", "wt"]);
    const timedOut = await cw.run(["wait", ...cw.t.node, "--tag", "wt", "--timeout", "0.3"]);
    assert.equal(timedOut.code, 124);
    const waiting = cw.run(["wait", cw.t.ref(slow)]);
    const byTag = cw.run(["wait", ...cw.t.node, "--tag", "wt"]);
    let settled = false;
    Promise.race([waiting, byTag]).finally(() => settled = true);
    // a wait on a running session blocks (if the kill below overtook it, it would still be 143)
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(settled, false, "wait returned while its session ran");
    await cw.ok(["kill", "--signal", "TERM", cw.t.ref(slow)]);
    assert.equal((await waiting).code, 128 + 15);
    assert.equal((await byTag).code, 128 + 15);
  });

  test("kill by id and by tag", async (cw) => {
    const one = await cw.launch(["sleep", "300"]);
    const r = await cw.run(["kill", cw.t.ref(one)]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`^Session ${one}: killed \\(SIG(HUP|TERM)\\)$`, "m"));
    assert.equal((await cw.info(one)).status, "killed");

    const a = await cw.launch(["sleep", "300"], ["--tag", "kt"]);
    const b = await cw.launch(["sleep", "300"], ["--tag", "kt"]);
    const c = await cw.launch(["sleep", "300"], ["--tag", "keep"]);
    const tagged = await cw.run(["kill", ...cw.t.node, "--tag", "kt", "--signal", "KILL"]);
    assert.equal(tagged.code, 0, tagged.stderr);
    for (const id of [a, b]) {
      const s = await cw.info(id);
      assert.equal(s.status, "killed");
      assert.equal(s.signal, "SIGKILL");
    }
    assert.equal((await cw.info(c)).status, "running");
    assert.match(
      (await cw.run(["kill", ...cw.t.node, "--tag", "kt"])).stderr,
      /No running sessions matched/,
    );
    await cw.ok(["kill", ...cw.t.node, "--tag", "keep"]);
    assert.equal((await cw.info(c)).status, "killed");
  });

  test("errors read exactly as locally: unknown session, bad name, missing command", async (cw) => {
    const ended = await cw.launch(["true"]);
    await cw.run(["wait", cw.t.ref(ended)]);
    const cases: { remote: string[]; local: string[]; code: number }[] = [];
    const add = (code: number, build: (ref: (s: string) => string, node: string[]) => string[]) =>
      cases.push({
        code,
        remote: [...cw.t.global, ...build((s) => cw.t.ref(s), cw.t.node)],
        local: build((s) => s, []),
      });
    for (const cmd of ["kill", "attach", "logs", "status", "wait", "watch"]) {
      add(1, (ref) => [cmd, ref("999")]);
    }
    add(1, (ref) => ["send", ref("999"), "x"]);
    add(1, (ref) => ["attach", ref(String(ended))]);
    add(1, (ref) => ["kill", ref(String(ended))]);
    add(1, (ref) => ["attach", ref("no-such-name")]);
    add(1, (_, node) => ["wait", ...node, "--tag", "no-such-tag"]);
    add(1, (_, node) => ["launch", ...node, "--name", "bad name", "--", "true"]);
    add(1, (_, node) => ["launch", ...node, "--name", "123", "--", "true"]);
    add(1, (_, node) => ["launch", ...node, "--", "no-such-command-xyz"]);
    add(2, (_, node) => ["launch", ...node, "--"]);
    add(2, (_, node) => ["launch", ...node, "--tag", "x", "--"]);
    add(2, (ref) => ["attach", ref("1"), ref("2")]);
    for (const { remote, local, code } of cases) {
      const r = await cw.client.run(remote);
      const l = await cw.nodeHome.run(local);
      const what = `cw ${remote.join(" ")}`;
      assert.equal(r.code, code, `${what}: ${r.stderr}`);
      assert.equal(r.stdout, "", what);
      assert.ok(r.stderr.startsWith("cw: "), `${what}: ${r.stderr}`);
      if (code === 1) assert.equal(r.stderr.split("\n").length, 2, `${what}: one line`);
      assert.deepEqual(r, l, `${what} differs from cw ${local.join(" ")}`);
    }
    const unknown = await cw.run(["kill", cw.t.ref("999")]);
    assert.equal(unknown.stderr, 'cw: Cannot find session "999"\n');
  });
}

// ---------------------------------------------------------------- run it three times

const local = new LocalTransport();
const direct = new DirectTransport();
const relay = new RelayTransport();

scenarios(local);
scenarios(direct);
scenarios(relay);

// ---------------------------------------------------------------- direct only

Deno.test({
  name: "direct: wrong token, rotated token, unknown server, CW_SERVER, no token in server list",
  ...SHARED,
  fn: async () => {
    const { client, node } = await direct.ready();
    const { url, certs, token } = direct.state;
    await client.ok(["server", "add", "bad", url, "--token", "cwt_wrong", "--ca-cert", certs.ca]);
    const bad = await client.run(["--server", "bad", "list"]);
    assert.equal(bad.code, 1);
    assert.equal(bad.stdout, "");
    assert.equal(bad.stderr.split("\n").length, 2, bad.stderr);
    assert.equal(
      bad.stderr,
      `cw: Cannot connect to server "bad" (${url}): Missing or invalid node token (HTTP 401)\n`,
    );

    // a server whose certificate this client does not trust
    await client.ok(["server", "add", "noca", url, "--token", token]);
    const noCa = await client.run(["--server", "noca", "list"]);
    assert.equal(noCa.code, 1);
    assert.equal(noCa.stderr.split("\n").length, 2, noCa.stderr);
    assert.match(noCa.stderr, /^cw: Cannot connect to server "noca" .*certificate/i);
    await client.ok(["server", "remove", "noca"]);

    const unknown = await client.run(["--server", "nope", "list"]);
    assert.equal(unknown.code, 1);
    assert.equal(unknown.stderr, 'cw: Unknown server "nope": see cw server list\n');

    // CW_SERVER is --server
    const viaEnv = await client.run(["list", "--json"], { env: { CW_SERVER: "s1" } });
    assert.equal(viaEnv.code, 0, viaEnv.stderr);
    assert.deepEqual(
      stable(JSON.parse(viaEnv.stdout)),
      stable(JSON.parse(await node.ok(["list", "--json"]))),
    );

    // a node prefix and --server do not mix
    const mixed = await client.run(["--server", "s1", "attach", "dev-1:3"]);
    assert.equal(mixed.code, 1);
    assert.match(mixed.stderr, /cannot be combined with --server s1/);

    // server list never shows a token
    const listed = await client.ok(["server", "list", "--json"]);
    assert.deepEqual(JSON.parse(listed), [
      { name: "s1", url, caCert: true },
      { name: "bad", url, caCert: true },
    ]);
    assert.ok(!listed.includes(token) && !(await client.ok(["server", "list"])).includes(token));

    // a rotated token locks the old one out at once; the new one works
    const rotated = (await node.ok(["node", "token", "--rotate"])).trim();
    assert.notEqual(rotated, token);
    const old = await client.run(["--server", "s1", "list"]);
    assert.equal(old.code, 1);
    assert.match(old.stderr, /Missing or invalid node token \(HTTP 401\)/);
    await client.ok(["server", "add", "s1", url, "--token", rotated, "--ca-cert", certs.ca]);
    await client.ok(["--server", "s1", "list"]);
    direct.state.token = rotated;
    await client.ok(["server", "remove", "bad"]);
  },
});

// ---------------------------------------------------------------- relay only

Deno.test({
  name: "relay: two nodes on one relay are addressed independently",
  ...SHARED,
  fn: async () => {
    const { client } = await relay.ready();
    const dev2 = await relay.addNode("dev-2");
    const cw = new Cw(relay, await relay.ready());
    const on1 = await cw.launch(["sleep", "300"], ["--name", "where", "--tag", "where"]);
    const r = await client.run([
      "launch",
      "dev-2",
      "--name",
      "where",
      "--tag",
      "where",
      "--",
      "sleep",
      "301",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const on2 = Number(/^dev-2:(\d+)\n$/.exec(r.stdout)?.[1]);
    assert.ok(on2 >= 1, r.stdout);

    const list1 = await cw.list(["--tag", "where"]);
    const list2 = JSON.parse(await client.ok(["list", "dev-2", "--json", "--tag", "where"]));
    assert.deepEqual(list1.map((s) => [s.id, s.argv.join(" ")]), [[on1, "sleep 300"]]);
    assert.deepEqual(list2.map((s: SessionInfo) => [s.id, s.argv.join(" ")]), [[on2, "sleep 301"]]);
    assert.deepEqual(
      stable(list2),
      stable(JSON.parse(await dev2.ok(["list", "--json", "--tag", "where"]))),
    );
    // the client's own node has none of them
    assert.deepEqual(JSON.parse(await client.ok(["list", "--json"])), []);
    // the same name on each node means that node's session
    const s2 = JSON.parse(await client.ok(["status", "dev-2:where", "--json"]));
    assert.deepEqual(s2.argv, ["sleep", "301"]);

    // killing by tag on dev-2 leaves dev-1 alone
    await client.ok(["kill", "dev-2", "--tag", "where"]);
    assert.equal(
      JSON.parse(await client.ok(["status", `dev-2:${on2}`, "--json"])).status,
      "killed",
    );
    assert.equal((await cw.info(on1)).status, "running");
    await cw.ok(["kill", relay.ref(on1)]);

    const unknown = await client.run(["list", "dev-nope"]);
    assert.equal(unknown.code, 1);
    assert.equal(unknown.stderr, 'cw: Unknown node "dev-nope"\n');
    const badNode = await client.run(["list", "bad node!"]);
    assert.equal(badNode.code, 1);
    assert.match(badNode.stderr, /^cw: Invalid node name "bad node!"\n$/);
    const badRef = await client.run(["attach", "bad node:3"]);
    assert.equal(badRef.code, 1);
    assert.match(badRef.stderr, /^cw: Invalid session "bad node:3"/);
  },
});

Deno.test({
  name: "relay: a node that stops is reported offline within 2 s",
  ...SHARED,
  fn: async () => {
    const { client } = await relay.ready();
    const dev2 = relay.state.extra.get("dev-2") ?? await relay.addNode("dev-2");
    await client.ok(["list", "dev-2"]);
    await dev2.ok(["stop"]);
    const t0 = performance.now();
    const r = await client.run(["list", "dev-2"]);
    const ms = performance.now() - t0;
    assert.equal(r.code, 1, r.stdout);
    assert.equal(r.stdout, "");
    assert.equal(r.stderr, 'cw: Node "dev-2" is offline\n');
    console.log(`cw list dev-2 on an offline node failed after ${ms.toFixed(0)} ms`);
    assert.ok(ms < 5000, `took ${ms.toFixed(0)} ms`);
    const attach = await client.run(["attach", "dev-2:1"]);
    assert.equal(attach.code, 1);
    assert.equal(attach.stderr, 'cw: Node "dev-2" is offline\n');

    // back: any local command starts the node again, and it relinks
    await dev2.ok(["list"]);
    await waitOnline(client, "dev-2");
    await client.ok(["list", "dev-2"]);
  },
});

Deno.test({
  name: "relay: attach resumes after a relay restart with no byte lost or repeated",
  ...SHARED,
  fn: async () => {
    const cw = new Cw(relay, await relay.ready());
    await using tmux = new Tmux(cw.client.root);
    const id = await cw.launch([
      "sh",
      "-c",
      'i=0; while [ $i -lt 100000 ]; do i=$((i+1)); echo "tick $i"; sleep 0.05; done',
    ]);
    // a person's terminal for input (raw mode, Ctrl+B d); the output goes to
    // files, byte for byte (--raw-history: the history as bytes, not a rendered
    // snapshot), and the reconnect notes to their own
    const outFile = `${cw.client.root}/attach.out`;
    const errFile = `${cw.client.root}/attach.err`;
    await startPane(tmux, cw.client, "t");
    await tmux.typeLine(
      "t",
      `cw attach --raw-history ${relay.ref(id)} >${outFile} 2>${errFile}; echo ATTACH-EXIT=$?`,
    );
    const read = (file: string) => Deno.readTextFile(file).catch(() => "");
    const lastTick = async () =>
      Number([...(await read(outFile)).matchAll(/tick (\d+)\r\n/g)].at(-1)?.[1] ?? 0);
    try {
      await waitFor("ticks through the relay", async () => await lastTick() >= 10, 15_000);
      const before = await lastTick();
      const t0 = performance.now();
      await relay.restartRelay();
      await waitFor("attach to say it reconnected", async () => {
        const notes = await read(errFile);
        if (/lost the connection/.test(notes)) throw new Error(`attach gave up:\n${notes}`);
        return /\breconnected\b/.test(notes);
      }, 30_000);
      const back = await lastTick();
      console.log(
        `relay restart: ${(performance.now() - t0).toFixed(0)} ms until attach resumed; ` +
          `ticks ${before} → ${back} meanwhile`,
      );
      await waitFor("ticks after the restart", async () => await lastTick() >= back + 10, 15_000);
      await tmux.keys("t", ["C-b", "d"]);
      await tmux.waitFor("t", /^ATTACH-EXIT=0$/m);
    } finally {
      await cw.ok(["kill", relay.ref(id)]);
    }
    const notes = await read(errFile);
    assert.match(notes, /connection lost; reconnecting/);
    assert.match(notes, new RegExp(`\\[detached from session ${id}\\]`));
    assert.doesNotMatch(notes, /skipped/);
    const text = await read(outFile);
    assert.doesNotMatch(text, /skipped/);
    // every tick exactly once, in order, across the restart
    const ticks = [...text.matchAll(/tick (\d+)\r\n/g)].map((m) => Number(m[1]));
    assert.ok(ticks.length >= 20, text);
    ticks.forEach((n, i) => assert.equal(n, i + 1, `tick ${i + 1} is followed by ${n}`));
    // and byte for byte what the session wrote
    const raw = await cw.nodeHome.ok(["logs", String(id), "--raw"]);
    assert.equal(text, raw.slice(0, text.length));
  },
});

Deno.test({
  name: "relay: a revoked node's sessions are unreachable with a clear error",
  ...SHARED,
  fn: async () => {
    const { client } = await relay.ready();
    const dev2 = relay.state.extra.get("dev-2") ?? await relay.addNode("dev-2");
    await waitOnline(client, "dev-2");
    const id = await dev2.launch(["sleep", "300"]);
    assert.equal(
      JSON.parse(await client.ok(["status", `dev-2:${id}`, "--json"])).status,
      "running",
    );
    const s = relay.state;
    const revoked = await client.run(
      ["relay", "nodes", "--revoke", "dev-2", "--relay-url", s.relay.url, "--ca-cert", s.certs.ca],
      { env: { CW_RELAY_ADMIN_TOKEN: ADMIN_TOKEN } },
    );
    assert.equal(revoked.code, 0, revoked.stderr);
    for (const args of [["list", "dev-2"], ["attach", `dev-2:${id}`], ["kill", `dev-2:${id}`]]) {
      const r = await client.run(args);
      assert.equal(r.code, 1, `cw ${args.join(" ")}`);
      assert.equal(r.stdout, "");
      assert.equal(r.stderr, 'cw: Node "dev-2" has been revoked\n', `cw ${args.join(" ")}`);
    }
    // the session itself lives on, on its machine
    assert.equal((await dev2.ok(["status", String(id), "--json"])).includes('"running"'), true);
    // and dev-1 is unaffected
    await client.ok(["list", "dev-1"]);
  },
});

// ---------------------------------------------------------------- teardown

for (const t of [local, direct, relay]) {
  Deno.test({
    name: `${t.name}: teardown stops every process`,
    ...SHARED,
    fn: async () => {
      await t[Symbol.asyncDispose]();
    },
  });
}
