/**
 * The relay's SSH gateway end to end, with the real OpenSSH client: a real
 * `cw relay` (TLS) on loopback, real nodes in their own CW_HOMEs set up with
 * `cw setup`, keys made with `ssh-keygen` per run, interactive sessions in
 * tmux panes. Where the guarantee is the relay's (dial-back tickets), a test
 * plays a node itself with the link protocol, so that a well-behaved node
 * cannot hide a relay that trusts too much.
 */
import assert from "node:assert/strict";
import { decodeDial, Dial, encodeDial } from "../shared/dialback.ts";
import { loadRelayConfig } from "../shared/relay_config.ts";
import { CW_SHELL, CwHome, shellQuote, Tmux, waitFor, within } from "./helpers.ts";
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

const enc = new TextEncoder();
const dec = new TextDecoder();

// ---------------------------------------------------------------- processes

/** What one finished process gave. */
interface Run {
  code: number;
  stdout: Uint8Array;
  stderr: string;
  /** Wall time, ms. */
  ms: number;
}

/**
 * Runs `cmd ARGS` to completion, feeding `stdin` (while reading the output,
 * so that large inputs cannot deadlock); killed after `timeoutMs`.
 */
async function run(
  cmd: string,
  args: string[],
  opts: { stdin?: string | Uint8Array; timeoutMs?: number; env?: Record<string, string> } = {},
): Promise<Run> {
  const started = performance.now();
  const child = new Deno.Command(cmd, {
    args,
    env: opts.env,
    stdin: opts.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }, opts.timeoutMs ?? 20_000);
  let writing = Promise.resolve();
  if (opts.stdin !== undefined) {
    const data = typeof opts.stdin === "string" ? enc.encode(opts.stdin) : opts.stdin;
    const w = child.stdin.getWriter();
    writing = w.write(data).then(() => w.close()).catch(() => {});
  }
  const out = await child.output();
  clearTimeout(timer);
  await writing;
  return {
    code: out.code,
    stdout: out.stdout,
    stderr: dec.decode(out.stderr),
    ms: performance.now() - started,
  };
}

/** Resident memory of a process in KiB (VmRSS; `cat`, as Deno's /proc access needs --allow-all). */
async function rssKiB(pid: number): Promise<number> {
  const status = dec.decode((await run("cat", [`/proc/${pid}/status`])).stdout);
  const kib = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1]);
  assert.ok(kib > 0, `RSS of ${pid}`);
  return kib;
}

/** CPU time a process has used, in clock ticks (utime + stime from /proc/PID/stat). */
async function cpuTicks(pid: number): Promise<number> {
  const stat = dec.decode((await run("cat", [`/proc/${pid}/stat`])).stdout);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

/** Pids of every descendant of `pid` with their command names. */
async function descendants(pid: number): Promise<{ pid: number; comm: string }[]> {
  const ps = await run("ps", ["-e", "-o", "pid=,ppid=,comm="]);
  const rows = dec.decode(ps.stdout).trim().split("\n").map((l) => {
    const [p, pp, ...comm] = l.trim().split(/\s+/);
    return { pid: Number(p), ppid: Number(pp), comm: comm.join(" ") };
  });
  const out: { pid: number; comm: string }[] = [];
  const walk = (parent: number) => {
    for (const r of rows.filter((r) => r.ppid === parent)) {
      out.push({ pid: r.pid, comm: r.comm });
      walk(r.pid);
    }
  };
  walk(pid);
  return out;
}

async function sha256(data: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

// ---------------------------------------------------------------- the rig

/** An ed25519 key pair made with ssh-keygen. */
interface KeyPair {
  path: string;
  pub: string;
}

/** Options of one `ssh` invocation. */
interface SshOptions {
  /** Identity file; null for none (password logins). */
  key?: string | null;
  /** StrictHostKeyChecking: accept-new by default. */
  strict?: "yes" | "accept-new" | "no";
  knownHosts?: string;
  /** Extra flags before the destination (-tt, -T, -o …). */
  flags?: string[];
  port?: number;
}

/**
 * A relay with TLS and an SSH gateway on loopback, nodes in their own homes
 * (each with a `cw` on its PATH), and a key pair for the gateway. Dispose it
 * to stop every node and relay and remove the files.
 */
class SshRig implements AsyncDisposable {
  readonly dir: string;
  readonly certs: TestCerts;
  readonly client: Deno.HttpClient;
  /** A directory with a `cw` script that runs this checkout. */
  readonly bin: string;
  readonly knownHosts: string;
  relay: RelayProcess;
  sshPort: number;
  readonly homes = new Map<string, CwHome>();
  #relays: RelayProcess[] = [];
  #keys = 0;

  private constructor(dir: string, certs: TestCerts, relay: RelayProcess, sshPort: number) {
    this.dir = dir;
    this.certs = certs;
    this.client = caClient(certs);
    this.bin = `${dir}/bin`;
    this.knownHosts = `${dir}/known_hosts`;
    this.relay = relay;
    this.sshPort = sshPort;
    this.#relays.push(relay);
  }

  /** Starts a relay; nodes come with {@link addNode}. */
  static async create(): Promise<SshRig> {
    const dir = await Deno.makeTempDir({ prefix: "cw-ssh-test-" });
    const certs = await makeCerts(`${dir}/pki`);
    const relay = await RelayProcess.start(`${dir}/relay`, certs);
    const rig = new SshRig(dir, certs, relay, 0);
    rig.sshPort = (await rig.info()).ssh.port;
    await Deno.mkdir(rig.bin);
    await Deno.writeTextFile(`${rig.bin}/cw`, `#!/bin/sh\nexec ${CW_SHELL} "$@"\n`, {
      mode: 0o755,
    });
    return rig;
  }

  /** GET /api/v1/info with the admin token. */
  async info(): Promise<{ ssh: { port: number; fingerprint: string; hostKey: string } }> {
    const res = await fetch(`${this.relay.url}/api/v1/info`, {
      client: this.client,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    assert.equal(res.status, 200);
    return await res.json();
  }

  /**
   * A node named `name` in a home of its own, registered and online; its
   * node process (and so its SSH sessions) has this rig's `cw` on PATH.
   */
  async addNode(name: string): Promise<CwHome> {
    const home = new CwHome();
    this.homes.set(name, home);
    // the first command starts the node: it inherits this PATH
    await home.ok(["list"], { env: { PATH: `${this.bin}:${Deno.env.get("PATH")}` } });
    await setupNode(home, this.relay, this.certs, name, await invite(this.relay, this.client));
    await waitOnline(home, name);
    return home;
  }

  /** The node credential saved by `cw setup` in `name`'s home. */
  credential(name: string): string {
    return loadRelayConfig(this.homes.get(name)!.home)!.credential;
  }

  /** Makes a fresh key pair. */
  async keygen(): Promise<KeyPair> {
    const path = `${this.dir}/key${++this.#keys}`;
    const r = await run("ssh-keygen", [
      "-q",
      "-t",
      "ed25519",
      "-N",
      "",
      "-C",
      `test${this.#keys}`,
      "-f",
      path,
    ]);
    assert.equal(r.code, 0, r.stderr);
    return { path, pub: `${path}.pub` };
  }

  /** argv of `ssh … NODE@127.0.0.1 [COMMAND]`. */
  sshArgs(node: string, command: string | null, opts: SshOptions = {}): string[] {
    const key = opts.key === undefined ? `${this.dir}/key1` : opts.key;
    return [
      "-F",
      "/dev/null",
      // first: for each -o, ssh takes the first value given
      ...(opts.flags ?? []),
      "-o",
      `BatchMode=${key === null ? "no" : "yes"}`,
      "-o",
      `UserKnownHostsFile=${opts.knownHosts ?? this.knownHosts}`,
      "-o",
      `StrictHostKeyChecking=${opts.strict ?? "accept-new"}`,
      "-o",
      "IdentitiesOnly=yes",
      "-o",
      "ConnectTimeout=10",
      "-o",
      "LogLevel=ERROR",
      ...(key === null
        ? ["-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password"]
        : ["-i", key]),
      "-p",
      String(opts.port ?? this.sshPort),
      `${node}@127.0.0.1`,
      ...(command === null ? [] : [command]),
    ];
  }

  /** Runs `ssh` to completion. */
  ssh(
    node: string,
    command: string | null,
    opts: SshOptions & {
      stdin?: string | Uint8Array;
      timeoutMs?: number;
      /** Logs in with this password (through SSH_ASKPASS) instead of a key. */
      password?: string;
    } = {},
  ): Promise<Run> {
    const env = sshEnv();
    let args = this.sshArgs(node, command, opts);
    if (opts.password !== undefined) {
      args = this.sshArgs(node, command, {
        ...opts,
        key: null,
        flags: ["-o", "NumberOfPasswordPrompts=1", ...(opts.flags ?? [])],
      });
      Object.assign(env, {
        SSH_ASKPASS: this.#askpass(),
        SSH_ASKPASS_REQUIRE: "force",
        CW_TEST_PASSWORD: opts.password,
      });
    }
    return run("ssh", args, { stdin: opts.stdin ?? "", timeoutMs: opts.timeoutMs, env });
  }

  /** A script that answers ssh's password prompt from CW_TEST_PASSWORD (not from argv). */
  #askpass(): string {
    const path = `${this.dir}/askpass`;
    Deno.writeTextFileSync(path, '#!/bin/sh\nprintf "%s\\n" "$CW_TEST_PASSWORD"\n', {
      mode: 0o700,
    });
    return path;
  }

  /** The same as one shell-quoted string, for tmux panes. */
  sshLine(node: string, command: string | null, opts: SshOptions = {}): string {
    return ["ssh", ...this.sshArgs(node, command, opts)].map(shellQuote).join(" ");
  }

  /** Restarts the relay on the same data dir and ports. */
  async restartRelay(): Promise<void> {
    await this.relay.stop();
    this.relay = await RelayProcess.start(this.relay.dataDir, this.certs, {
      port: this.relay.port,
      extra: ["--ssh-listen", `127.0.0.1:${this.sshPort}`],
    });
    this.#relays.push(this.relay);
    assert.equal((await this.info()).ssh.port, this.sshPort);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const home of this.homes.values()) await home[Symbol.asyncDispose]();
    for (const relay of this.#relays) await relay.stop();
    this.client.close();
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/** The environment for ssh: no agent, so only the keys a test names are offered. */
function sshEnv(): Record<string, string> {
  const env = Deno.env.toObject();
  delete env.SSH_AUTH_SOCK;
  return env;
}

/** Registers a key through the CLI, run in `home` (with its node credential). */
async function addKey(home: CwHome, key: KeyPair): Promise<void> {
  const out = await home.ok(["ssh-key", "add", key.pub]);
  assert.match(out, /^SHA256:/);
}

// ---------------------------------------------------------------- exec

Deno.test("ssh exec: output, stderr apart, exit codes, stdin, binary both ways", async () => {
  await using rig = await SshRig.create();
  const home = await rig.addNode("dev-1");
  await addKey(home, await rig.keygen());

  // output and exit 0; the host key is recorded on first use
  let r = await rig.ssh("dev-1", "echo hello from $(hostname)");
  assert.equal(r.code, 0, r.stderr);
  assert.equal(dec.decode(r.stdout), `hello from ${Deno.hostname()}\n`);
  assert.equal(r.stderr, "");

  // stdout and stderr kept apart; the exit code comes back
  r = await rig.ssh("dev-1", "echo out; echo err >&2; echo out2; exit 7");
  assert.equal(r.code, 7);
  assert.equal(dec.decode(r.stdout), "out\nout2\n");
  assert.equal(r.stderr, "err\n");

  // 130 from `exit 130`, and from a program killed by SIGINT (as a shell reports it)
  r = await rig.ssh("dev-1", "exit 130");
  assert.equal(r.code, 130);
  r = await rig.ssh("dev-1", "sh -c 'kill -INT $$'; exit $?");
  assert.equal(r.code, 130, r.stderr);
  // a command that itself dies of a signal: exit-signal, as sshd sends it (OpenSSH's
  // client then exits 255, with sshd too)
  r = await rig.ssh("dev-1", "kill -INT $$", { flags: ["-o", "LogLevel=DEBUG"] });
  assert.equal(r.code, 255);
  assert.match(r.stderr, /rtype exit-signal/);

  // stdin is piped through, EOF delivered
  r = await rig.ssh("dev-1", "cat; echo end", { stdin: "data\n" });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(dec.decode(r.stdout), "data\nend\n");
  r = await rig.ssh("dev-1", "wc -c", { stdin: "" });
  assert.equal(dec.decode(r.stdout).trim(), "0");

  // a few MB of binary, both ways, bit for bit
  const file = `${rig.dir}/blob`;
  const mk = await run("head", ["-c", String(5 * 1024 * 1024 + 123), "/dev/urandom"]);
  await Deno.writeFile(file, mk.stdout);
  const want = await sha256(mk.stdout);
  r = await rig.ssh("dev-1", "sha256sum", { stdin: mk.stdout, timeoutMs: 60_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(dec.decode(r.stdout).split(" ")[0], want);
  r = await rig.ssh("dev-1", `cat ${file}`, { timeoutMs: 60_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.byteLength, mk.stdout.byteLength);
  assert.equal(await sha256(r.stdout), want);

  // with a PTY (-tt): stdout and stderr share the terminal, the exit code still comes back
  r = await rig.ssh("dev-1", "echo on-tty; tty; exit 3", { flags: ["-tt"] });
  assert.equal(r.code, 3);
  assert.match(dec.decode(r.stdout), /on-tty\r\n\/dev\/pts\/\d+\r\n/);

  // `env` requests: LANG and LC_* pass, anything else is refused
  r = await rig.ssh("dev-1", 'echo "$LC_CW_TEST/$CW_NOT_ALLOWED/$LANG"', {
    flags: ["-o", "SetEnv=LC_CW_TEST=passed CW_NOT_ALLOWED=leaked LANG=C.UTF-8"],
  });
  assert.equal(dec.decode(r.stdout), "passed//C.UTF-8\n");

  // several sessions at once are independent
  const all = await Promise.all(
    [1, 2, 3, 4].map((i) => rig.ssh("dev-1", `sleep 0.3; echo n${i}; exit ${i}`)),
  );
  all.forEach((x, i) => {
    assert.equal(x.code, i + 1);
    assert.equal(dec.decode(x.stdout), `n${i + 1}\n`);
  });
});

// ---------------------------------------------------------------- interactive

/** Starts a pane that runs `ssh …`, then prints its exit code and stays open. */
async function sshPane(tmux: Tmux, name: string, sshLine: string, cols = 100, rows = 30) {
  const script = `${sshLine}; echo SSH-EXIT=$?; sleep 600`;
  await tmux.start(name, ["sh", "-c", script].map(shellQuote).join(" "), cols, rows);
}

Deno.test("ssh shell in a terminal: prompt, typing, resize, Ctrl-C, exit 42; cw attach over ssh", async () => {
  await using rig = await SshRig.create();
  const home = await rig.addNode("dev-1");
  await addKey(home, await rig.keygen());
  await using tmux = new Tmux(rig.dir);

  // an interactive login shell on the node, in a terminal
  await sshPane(tmux, "sh", rig.sshLine("dev-1", null, { flags: ["-tt"] }));
  await tmux.waitFor("sh", /[$#]$/m, 15_000);
  await tmux.typeLine("sh", "PS1='ssh-prompt$ '");
  await tmux.waitFor("sh", /^ssh-prompt\$$/m);
  await tmux.typeLine("sh", "echo typed-$((6*7)) $TERM");
  await tmux.waitFor("sh", /^typed-42 (screen|tmux)/m);
  await tmux.typeLine("sh", "stty size");
  await tmux.waitFor("sh", /^30 100$/m);

  // the terminal's size follows the window
  await tmux.cmd("resize-window", "-t", "sh", "-x", "120", "-y", "40");
  await tmux.typeLine("sh", "clear; stty size");
  await tmux.waitFor("sh", /^40 120$/m);

  // Ctrl-C interrupts a foreground program; the shell goes on
  await tmux.typeLine("sh", "clear; sleep 100; echo not-interrupted");
  await new Promise((r) => setTimeout(r, 300));
  const sent = performance.now();
  await tmux.keys("sh", ["C-c"]);
  await tmux.typeLine("sh", "echo back-$((40+2))");
  const screen = await tmux.waitFor("sh", /^back-42$/m, 5_000);
  assert.ok(performance.now() - sent < 5_000);
  assert.doesNotMatch(screen, /not-interrupted/);

  // `exit 42` ends the session and ssh exits 42
  await tmux.typeLine("sh", "exit 42");
  await tmux.waitFor("sh", /^SSH-EXIT=42$/m);

  // `ssh -t … cw attach N` reaches a running cw session on that node
  const id = await home.launch(["bash", "--norc", "--noprofile"], [
    "--env",
    "PS1=inside-cw$ ",
    "--env",
    "HISTFILE=",
  ]);
  await sshPane(tmux, "at", rig.sshLine("dev-1", `cw attach ${id}`, { flags: ["-t"] }));
  await tmux.waitFor("at", "inside-cw$", 15_000);
  await tmux.typeLine("at", "echo via-ssh-$((6*7))");
  await tmux.waitFor("at", /^via-ssh-42$/m);
  const logs = await home.ok(["logs", String(id)]);
  assert.match(logs, /via-ssh-42/);
  // Ctrl+B d detaches: cw attach exits 0, so does ssh; the session keeps running
  await tmux.keys("at", ["C-b", "d"]);
  await tmux.waitFor("at", /^SSH-EXIT=0$/m);
  const list = JSON.parse(await home.ok(["list", "--json"])) as { id: number; status: string }[];
  assert.equal(list.find((s) => s.id === id)?.status, "running");
});

// ---------------------------------------------------------------- auth

/** Asserts a refused session: one `cw: …` line on stderr, a non-zero exit, soon. */
function assertRefused(r: Run, message: RegExp, withinMs = 8_000): void {
  assert.notEqual(r.code, 0);
  assert.ok(r.ms < withinMs, `answered in ${r.ms.toFixed(0)} ms`);
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 1, `one line: ${JSON.stringify(r.stderr)}`);
  assert.match(lines[0], /^cw: /);
  assert.match(lines[0], message);
  assert.equal(r.stdout.byteLength, 0);
}

Deno.test("ssh auth: registered key, authorized_keys, passwords, refusals, stable host key", async () => {
  await using rig = await SshRig.create();
  const alpha = await rig.addNode("alpha");
  const beta = await rig.addNode("beta");
  const registered = await rig.keygen();
  const fromFile = await rig.keygen();
  const stranger = await rig.keygen();
  const denied = /Permission denied \(publickey,password\)/;

  // a key registered with `cw ssh-key add` (by any node) logs in to every node
  await addKey(alpha, registered);
  let r = await rig.ssh("alpha", "echo in-alpha", { key: registered.path });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(dec.decode(r.stdout), "in-alpha\n");
  r = await rig.ssh("beta", "echo in-beta", { key: registered.path });
  assert.equal(dec.decode(r.stdout), "in-beta\n");
  const listed = JSON.parse(await beta.ok(["ssh-key", "list", "--json"])) as {
    fingerprint: string;
  }[];
  const fp = (await run("ssh-keygen", ["-lf", registered.pub])).stdout;
  assert.deepEqual(listed.map((k) => k.fingerprint), [dec.decode(fp).split(" ")[1]]);

  // the data dir's authorized_keys: written after start, read on change
  r = await rig.ssh("alpha", "true", { key: fromFile.path });
  assert.equal(r.code, 255);
  assert.match(r.stderr, denied);
  await Deno.writeTextFile(
    `${rig.relay.dataDir}/authorized_keys`,
    `# keys of the team\n${await Deno.readTextFile(fromFile.pub)}`,
  );
  r = await rig.ssh("alpha", "echo from-file", { key: fromFile.path });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(dec.decode(r.stdout), "from-file\n");

  // a removed key no longer logs in, and its open sessions end with it
  const logins = async () =>
    (await Deno.readTextFile(`${rig.relay.dataDir}/relay.log`))
      .split(`with key ${listed[0].fingerprint}`).length;
  const before = await logins();
  const open = rig.ssh("alpha", "sleep 60", { key: registered.path, timeoutMs: 30_000 });
  await waitFor("the session to log in", async () => await logins() > before);
  await alpha.ok(["ssh-key", "remove", listed[0].fingerprint]);
  const cut = await within(open, 10_000, "the removed key's session to end");
  assert.notEqual(cut.code, 0);
  r = await rig.ssh("alpha", "true", { key: registered.path });
  assert.equal(r.code, 255);
  assert.match(r.stderr, denied);

  // a key nobody registered
  r = await rig.ssh("alpha", "echo no", { key: stranger.path });
  assert.equal(r.code, 255);
  assert.match(r.stderr, denied);
  assert.equal(r.stdout.byteLength, 0);

  // a password: a node credential (any node's) or the admin token; nothing else
  r = await rig.ssh("alpha", "echo by-credential", { password: rig.credential("beta") });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(dec.decode(r.stdout), "by-credential\n");
  r = await rig.ssh("beta", "echo by-admin", { password: ADMIN_TOKEN });
  assert.equal(dec.decode(r.stdout), "by-admin\n");
  r = await rig.ssh("alpha", "echo no", { password: `${rig.credential("beta")}x` });
  assert.equal(r.code, 255);
  assert.match(r.stderr, /Permission denied/);

  // an unknown node: one line, a non-zero exit, no hang
  r = await rig.ssh("nosuch", "echo no", { key: fromFile.path });
  assertRefused(r, /Unknown node "nosuch"/);
  r = await rig.ssh("nosuch", null, { key: fromFile.path, flags: ["-tt"] });
  assertRefused(r, /Unknown node "nosuch"/);

  // the host key survives a restart: the known_hosts written on first use still holds
  const info = await rig.info();
  const known = await Deno.readTextFile(rig.knownHosts);
  assert.ok(
    known.includes(`[127.0.0.1]:${rig.sshPort} ${info.ssh.hostKey}`),
    `${known} has ${info.ssh.hostKey}`,
  );
  const printed = dec.decode((await run("ssh-keygen", ["-lf", rig.knownHosts])).stdout);
  assert.ok(printed.includes(info.ssh.fingerprint), `${printed} has ${info.ssh.fingerprint}`);
  await rig.restartRelay();
  assert.deepEqual((await rig.info()).ssh, info.ssh);
  await waitOnline(alpha, "alpha", true, 20_000);
  r = await rig.ssh("alpha", "echo same-host", { key: fromFile.path, strict: "yes" });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(dec.decode(r.stdout), "same-host\n");
  // ... and pinning is real: another key for the same address is refused
  const other = `${rig.dir}/known_hosts_other`;
  const otherKey = (await Deno.readTextFile(stranger.pub)).split(" ").slice(0, 2).join(" ");
  await Deno.writeTextFile(other, `[127.0.0.1]:${rig.sshPort} ${otherKey}\n`);
  r = await rig.ssh("alpha", "echo no", { key: fromFile.path, strict: "yes", knownHosts: other });
  assert.equal(r.code, 255);
  assert.match(r.stderr, /Host key verification failed/);
  assert.equal(r.stdout.byteLength, 0);

  // a revoked node is refused, and so is its credential as a password
  const revokedCredential = rig.credential("beta");
  const res = await fetch(`${rig.relay.url}/api/v1/nodes/beta`, {
    method: "DELETE",
    client: rig.client,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  assert.equal(res.status, 204);
  r = await rig.ssh("beta", "echo no", { key: fromFile.path });
  assertRefused(r, /Unknown node "beta"/);
  r = await rig.ssh("alpha", "echo no", { password: revokedCredential });
  assert.equal(r.code, 255);
  assert.match(r.stderr, /Permission denied/);

  // an offline node: a clear message and a non-zero exit, not a hang
  await alpha.ok(["stop"]);
  await waitFor("alpha to be offline", async () => {
    const nodes = await fetch(`${rig.relay.url}/api/v1/nodes`, {
      client: rig.client,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    }).then((x) => x.json()) as { nodes: { name: string; online: boolean }[] };
    return nodes.nodes.find((n) => n.name === "alpha")?.online === false;
  });
  r = await rig.ssh("alpha", "echo no", { key: fromFile.path });
  assertRefused(r, /Node "alpha" is offline/);
  r = await rig.ssh("alpha", null, { key: fromFile.path, flags: ["-tt"] });
  assertRefused(r, /Node "alpha" is offline/);
});

// ---------------------------------------------------------------- dial-back tickets

/** GET /node/dialback as plain HTTP: the status and error code. */
async function dialbackStatus(
  rig: SshRig,
  headers: Record<string, string>,
): Promise<{ status: number; code: string }> {
  const res = await fetch(`${rig.relay.url}/node/dialback`, { client: rig.client, headers });
  const body = await res.json();
  return { status: res.status, code: body?.error?.code };
}

/** Next binary message on a dial-back socket. */
Deno.test("ssh dial-back: forged, replayed, foreign and late tickets are refused", async () => {
  await using rig = await SshRig.create();
  const key = await rig.keygen();
  await Deno.writeTextFile(
    `${rig.relay.dataDir}/authorized_keys`,
    await Deno.readTextFile(key.pub),
  );
  using fake = await FakeNode.register(rig, "fake");
  using other = await FakeNode.register(rig, "other");

  // forged: a valid credential with a made-up ticket, or none; the admin token is no node
  const forged = "cwt_" + "A".repeat(43);
  assert.deepEqual(await dialbackStatus(rig, fake.headers(forged)), {
    status: 403,
    code: "forbidden",
  });
  assert.equal(
    (await dialbackStatus(rig, { authorization: `Bearer ${fake.credential}` })).status,
    403,
  );
  assert.equal(await openSocket(rig, "/node/dialback", fake.headers(forged)), null);
  assert.equal((await dialbackStatus(rig, fake.headers(forged, ADMIN_TOKEN))).status, 403);
  assert.equal((await dialbackStatus(rig, fake.headers(forged, "fake.cwn_nope"))).status, 401);

  // a ticket presented by another node is refused (and spent): the user hears after 10 s
  const late = rig.ssh("fake", "echo never", { timeoutMs: 20_000 });
  const foreign = await fake.ticket();
  assert.equal((await dialbackStatus(rig, fake.headers(foreign, other.credential))).status, 403);
  assert.equal(await openSocket(rig, "/node/dialback", fake.headers(foreign)), null);

  // the real thing: the right node, the right ticket, once
  const session = rig.ssh("fake", "uname -a", { timeoutMs: 20_000 });
  const ticket = await fake.ticket();
  // START may arrive with the upgrade: listen before the socket opens
  let first!: (m: MessageEvent) => void;
  const message = new Promise<MessageEvent>((r) => first = r);
  const ws = await openSocket(rig, "/node/dialback", fake.headers(ticket), first);
  assert.ok(ws, "the ticket works once");
  const start = decodeDial(new Uint8Array((await within(message, 5_000, "START")).data));
  assert.equal(start.type, Dial.START);
  assert.deepEqual(JSON.parse(dec.decode(start.payload)), {
    command: "uname -a",
    pty: null,
    env: {},
  });
  ws.send(encodeDial(Dial.STDOUT, enc.encode("hello from the fake node\n")));
  ws.send(encodeDial(Dial.STDERR, enc.encode("and its stderr\n")));
  ws.send(encodeDial(Dial.EXIT, { code: 3, signal: null }));
  const r = await session;
  assert.equal(r.code, 3);
  assert.equal(dec.decode(r.stdout), "hello from the fake node\n");
  assert.equal(r.stderr, "and its stderr\n");

  // replayed: the same ticket again, by the same node or another
  assert.equal((await dialbackStatus(rig, fake.headers(ticket))).status, 403);
  assert.equal(await openSocket(rig, "/node/dialback", fake.headers(ticket)), null);
  assert.equal((await dialbackStatus(rig, fake.headers(ticket, other.credential))).status, 403);

  // the session whose ticket was spent by the wrong node: told within the bound
  const l = await late;
  assertRefused(l, /did not connect back within 10 s/, 15_000);
  assert.ok(l.ms >= 9_000);
});

// ---------------------------------------------------------------- backpressure

/**
 * Pids of the flood's programs (yes, grep, head) whose argv carries `token`,
 * wherever they are: an orphan leaves the node's process tree.
 */
async function marked(token: string): Promise<number[]> {
  const ps = dec.decode((await run("ps", ["-e", "-o", "pid=,comm=,args="])).stdout);
  return ps.trim().split("\n").map((l) => l.trim().split(/\s+/))
    .filter(([, comm, ...args]) => ["yes", "grep", "head"].includes(comm) && args.includes(token))
    .map(([pid]) => Number(pid));
}

Deno.test("ssh flood: a client that stops reading pauses its program; memory stays bounded", async () => {
  await using rig = await SshRig.create();
  const home = await rig.addNode("dev-1");
  await addKey(home, await rig.keygen());
  const nodePid = home.nodePid()!;
  const relayPid = rig.relay.pid;
  const token = `cw-flood-${crypto.randomUUID().slice(0, 8)}`;
  // warm both up (a session of each kind) before the baseline
  for (const flags of [[], ["-tt"]]) {
    const r = await rig.ssh("dev-1", "head -c 3000000 /dev/zero", { flags });
    assert.equal(r.code, 0, r.stderr);
  }
  const base = { relay: await rssKiB(relayPid), node: await rssKiB(nodePid) };
  const peak = { ...base };
  const sample = async () => {
    peak.relay = Math.max(peak.relay, await rssKiB(relayPid));
    peak.node = Math.max(peak.node, await rssKiB(nodePid));
  };
  /** 48 MiB of growth at most: a flood without flow control buffers hundreds. */
  const bounded = (what: string) => {
    for (const side of ["relay", "node"] as const) {
      const grew = (peak[side] - base[side]) / 1024;
      assert.ok(grew < 48, `${side} grew ${grew.toFixed(1)} MiB during ${what}`);
    }
  };

  for (const [what, flags] of [["pipes", []], ["a PTY", ["-tt"]]] as const) {
    // a client whose stdout nobody reads: ssh stops taking data, so must everything behind it
    const stalled = new Deno.Command("ssh", {
      // a pipeline that never ends by itself: only the client leaving may end it
      args: rig.sshArgs("dev-1", `yes ${token} | grep ${token}`, { flags: [...flags] }),
      env: sshEnv(),
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    try {
      const yes = await waitFor(
        "yes to run on the node",
        async () => (await descendants(nodePid)).find((p) => p.comm === "yes")?.pid,
      );
      assert.equal((await marked(token)).length, 2);
      const until = Date.now() + 3_000;
      while (Date.now() < until) {
        await sample();
        await new Promise((r) => setTimeout(r, 200));
      }
      // paused: unthrottled, yes would take a CPU for itself
      const before = await cpuTicks(yes);
      await new Promise((r) => setTimeout(r, 1_000));
      const used = await cpuTicks(yes) - before;
      assert.ok(used < 20, `yes used ${used} ticks in 1 s through ${what}: not paused`);
      bounded(`a stalled flood through ${what}`);

      // other sessions go on meanwhile
      const other = await rig.ssh("dev-1", "echo still-here", { timeoutMs: 5_000 });
      assert.equal(dec.decode(other.stdout), "still-here\n");
      assert.ok(other.ms < 3_000, `another session took ${other.ms.toFixed(0)} ms`);

      // the data that did come is the program's
      const reader = stalled.stdout.getReader();
      const { value } = await reader.read();
      assert.ok(
        dec.decode(value!).startsWith(`${token}\n`) ||
          dec.decode(value!).startsWith(`${token}\r\n`),
      );
      reader.releaseLock();
    } finally {
      try {
        stalled.kill("SIGKILL");
      } catch { /* exited */ }
      await stalled.stdout.cancel().catch(() => {});
      await stalled.status;
    }
    // the client went away: its program goes too
    await waitFor(
      `yes | grep to end after the client left (${what})`,
      async () => (await marked(token)).length === 0,
    );
  }

  // a reader that takes 1000 bytes and leaves: OpenSSH tells the server (eow@openssh.com), the
  // program gets SIGPIPE as under sshd, and the pipeline ends
  for (const command of [`yes ${token}`, `yes ${token} | head -c 200000000`]) {
    const line = rig.sshLine("dev-1", command);
    const r = await run("sh", ["-c", `${line} | head -c 1000 | wc -c`], {
      env: sshEnv(),
      timeoutMs: 15_000,
    });
    assert.equal(dec.decode(r.stdout).trim(), "1000", `${command}: ${r.stderr}`);
    assert.ok(r.ms < 5_000, `${command} | head took ${r.ms.toFixed(0)} ms`);
    await waitFor(
      `${command} to end after head left`,
      async () => (await marked(token)).length === 0,
    );
  }
  await sample();
  bounded("floods");
  console.log(
    `rss KiB: relay ${base.relay} -> peak ${peak.relay}; node ${base.node} -> peak ${peak.node}`,
  );
});
