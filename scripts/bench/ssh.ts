/**
 * SSH benchmark (issue 4): the relay's SSH gateway (`ssh dev-1@relay`, with
 * the dial-back to a real node) beside a real OpenSSH `sshd` on loopback,
 * measured the same way with the same OpenSSH client: the time of
 * `ssh HOST true` (connect, authenticate, run, exit); keystroke echo in an
 * interactive PTY session (`ssh -tt` running `stty raw -echo; cat`, driven
 * from a PTY of the bench, by the standalone bench's measure.ts and
 * terminal.ts); and the throughput of `cat` of 50 MiB without a PTY (`ssh -T`,
 * output read by the bench) and with one (`ssh -tt`, output read from the
 * bench's PTY). Prints a table with PASS/MISS per target and writes
 * `bench-results/ssh.json`.
 *
 * The sshd runs as a child on a free high port with a config, host key and
 * authorized_keys of its own in a temporary directory. When /usr/sbin/sshd is
 * missing the bench installs Debian's `openssh-server`; if that fails, the
 * sshd columns are skipped with a message and the targets are not judged.
 */
import { shellQuote } from "../../tests/helpers.ts";
import { makeCerts, type TestCerts } from "../../tests/relay_helpers.ts";
import { CwHome } from "../../tests/helpers.ts";
import {
  fmtMiB,
  fmtMs,
  interruptible,
  loadAverage,
  machineInfo,
  outerEnv,
  output,
  pollUntil,
  progress,
  rssKiB,
  sleep,
  table,
  type Target,
  targetsTable,
  withTimeout,
  writeResults,
  writeTextFile,
} from "./common.ts";
import {
  CAT_SCRIPT,
  ECHO_SCRIPT,
  type EchoResult,
  measureEcho,
  measureThroughput,
  MIB,
  percentile,
  READY,
  type ThroughputRun,
} from "./measure.ts";
import { ADMIN_TOKEN, BenchRelay } from "./relay_process.ts";
import { Terminal } from "./terminal.ts";

const NODE = "dev-1";
const SSHD = "/usr/sbin/sshd";
const FILE_BYTES = 50 * MIB;
const CONNECT_WARMUP = 2;
const CONNECT_RUNS = 20;
const ECHO_WARMUP = 100;
const ECHO_SAMPLES = 1000;
/** Echo runs per server, interleaved; the run with the median p50 is judged. */
const ECHO_ROUNDS = 3;
const THROUGHPUT_RUNS = 5;
const COLS = 200;
const ROWS = 50;
/** Bound of one ssh process that should end by itself. */
const RUN_TIMEOUT_MS = 60_000;

const TARGETS = {
  connectOfSshd: 1.5,
  echoAddedP50Ms: 1,
  pipeOfSshd: 0.5,
  ptyOfSshd: 0.75,
};

type Server = "sshd" | "cw";
const LABEL: Record<Server, string> = {
  sshd: "OpenSSH sshd",
  cw: `cw relay → ${NODE}`,
};

/** Where one server listens and who logs in. */
export interface Endpoint {
  port: number;
  user: string;
}

/** Everything started here, torn down on any exit. */
export class SshRig implements AsyncDisposable {
  readonly root = Deno.makeTempDirSync({ prefix: "cw-bench-ssh-" });
  readonly file = `${this.root}/output.txt`;
  readonly key = `${this.root}/id_ed25519`;
  readonly home = new CwHome();
  relay: BenchRelay | null = null;
  sshd: Deno.ChildProcess | null = null;
  /** The last of sshd's log, to explain a failure. */
  sshdLog = "";

  /** argv of `ssh … USER@127.0.0.1 [COMMAND]` against `to`. */
  ssh(to: Endpoint, flags: string[], command: string | null): string[] {
    return [
      "ssh",
      "-F",
      "/dev/null",
      ...flags,
      "-o",
      "BatchMode=yes",
      "-o",
      `UserKnownHostsFile=${this.root}/known_hosts`,
      "-o",
      "StrictHostKeyChecking=accept-new",
      "-o",
      "IdentitiesOnly=yes",
      "-o",
      "LogLevel=ERROR",
      "-i",
      this.key,
      "-p",
      String(to.port),
      `${to.user}@127.0.0.1`,
      ...(command === null ? [] : [command]),
    ];
  }

  /** A bench terminal running `argv`. */
  terminal(argv: string[]): Terminal {
    const [file, ...args] = argv;
    return new Terminal(file, args, {
      cols: COLS,
      rows: ROWS,
      env: sshEnv(outerEnv({})),
      cwd: this.root,
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    const steps = [
      async () => {
        if (!this.sshd) return;
        try {
          this.sshd.kill("SIGTERM");
        } catch { /* gone */ }
        await withTimeout(this.sshd.status, 10_000, "sshd to stop").catch(() => {
          try {
            this.sshd?.kill("SIGKILL");
          } catch { /* gone */ }
        });
      },
      () => this.home[Symbol.asyncDispose](),
      async () => void await this.relay?.stop(),
      () => Deno.remove(this.root, { recursive: true }),
    ];
    for (const step of steps) {
      try {
        await step();
      } catch (err) {
        console.error(`bench: ssh clean-up failed: ${(err as Error)?.stack ?? err}`);
      }
    }
  }
}

/** The client's environment: no agent, so only the bench's key is offered. */
function sshEnv(env: Record<string, string> = Deno.env.toObject()): Record<string, string> {
  const copy = { ...env };
  delete copy.SSH_AUTH_SOCK;
  return copy;
}

/** Runs a command to completion (bounded); its exit code, stderr and wall time. */
export async function run(
  argv: string[],
  timeoutMs = RUN_TIMEOUT_MS,
): Promise<{ code: number; stdout: string; stderr: string; ms: number }> {
  const [cmd, ...args] = argv;
  const t0 = performance.now();
  const child = new Deno.Command(cmd, {
    args,
    env: sshEnv(),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }, timeoutMs);
  const out = await child.output();
  clearTimeout(timer);
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
    ms: performance.now() - t0,
  };
}

// ---------------------------------------------------------------- set-up

/** Starts the relay and registers the rig's node as dev-1; resolves once it is online. */
export async function setUpRelay(rig: SshRig, certs: TestCerts): Promise<Endpoint> {
  const relay = rig.relay = await BenchRelay.start(`${rig.root}/relay`, certs);
  const client = Deno.createHttpClient({ caCerts: [Deno.readTextFileSync(certs.ca)] });
  const api = (path: string, init: RequestInit = {}) =>
    fetch(`${relay.url}${path}`, {
      ...init,
      client,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      signal: AbortSignal.timeout(10_000),
    });
  try {
    const res = await api("/api/v1/invites", { method: "POST", body: JSON.stringify({ uses: 1 }) });
    if (res.status !== 201) throw new Error(`invite: ${res.status} ${await res.text()}`);
    const { token } = await res.json();
    await rig.home.ok([
      "setup",
      "--relay-url",
      relay.url,
      "--invite",
      token,
      "--name",
      NODE,
      "--ca-cert",
      certs.ca,
    ]);
    await pollUntil(
      `${NODE} to be online`,
      async () => {
        const { nodes } = await (await api("/api/v1/nodes")).json() as {
          nodes: { name: string; online: boolean }[];
        };
        return nodes.some((n) => n.name === NODE && n.online);
      },
      15_000,
      50,
    );
    // the data dir's authorized_keys: read by the gateway on change
    await Deno.copyFile(`${rig.key}.pub`, `${rig.root}/relay/authorized_keys`);
    const info = await (await api("/api/v1/info")).json() as { ssh: { port: number } };
    return { port: info.ssh.port, user: NODE };
  } finally {
    client.close();
  }
}

/** Installs openssh-server from Debian when sshd is missing; the reason if it cannot. */
export async function ensureSshd(): Promise<string | null> {
  const present = () => Deno.stat(SSHD).then((s) => s.isFile, () => false);
  if (await present()) return null;
  const root = (await output("id", ["-u"])) === "0";
  const apt = async (args: string[]) => {
    const argv = root ? ["apt-get", ...args] : ["sudo", "-n", "apt-get", ...args];
    const env = { ...Deno.env.toObject(), DEBIAN_FRONTEND: "noninteractive" };
    try {
      const out = await new Deno.Command(argv[0], {
        args: argv.slice(1),
        env,
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).output();
      return out.success ? "" : new TextDecoder().decode(out.stderr).trim().split("\n").at(-1)!;
    } catch (err) {
      return (err as Error).message;
    }
  };
  progress(`${SSHD} is missing: installing openssh-server from Debian`);
  const install = ["install", "-y", "-q", "--no-install-recommends", "openssh-server"];
  let why = await apt(install);
  if (why) {
    await apt(["update", "-q"]);
    why = await apt(install);
  }
  if (await present()) return null;
  return `cannot install openssh-server (${why || `no ${SSHD} after installing`})`;
}

/** A free TCP port on loopback (taken and released; fine for a bench). */
function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Runs sshd as a child with its own config, host key and authorized_keys. */
export async function startSshd(rig: SshRig): Promise<Endpoint> {
  const dir = `${rig.root}/sshd`;
  await Deno.mkdir(dir);
  const hostKey = `${dir}/ssh_host_ed25519_key`;
  const kg = await run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey]);
  if (kg.code !== 0) throw new Error(`ssh-keygen: ${kg.stderr}`);
  await Deno.copyFile(`${rig.key}.pub`, `${dir}/authorized_keys`);
  // privilege separation wants this directory even when unprivileged
  await Deno.mkdir("/run/sshd", { recursive: true }).catch(() => {});
  const user = await output("id", ["-un"]);
  for (let attempt = 1;; attempt++) {
    const port = freePort();
    const config = `${dir}/sshd_config`;
    await Deno.writeTextFile(
      config,
      [
        `Port ${port}`,
        "ListenAddress 127.0.0.1",
        `HostKey ${hostKey}`,
        `AuthorizedKeysFile ${dir}/authorized_keys`,
        `PidFile ${dir}/sshd.pid`,
        "UsePAM no",
        "StrictModes no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "AcceptEnv LANG LC_*",
        "PrintMotd no",
        "PrintLastLog no",
        // as Debian's default sshd_config: sftp and scp (transfer bench)
        "Subsystem sftp /usr/lib/openssh/sftp-server",
        "",
      ].join("\n"),
    );
    const child = new Deno.Command(SSHD, {
      args: ["-D", "-e", "-f", config],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    rig.sshd = child;
    const listening = Promise.withResolvers<void>();
    void (async () => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        rig.sshdLog = (rig.sshdLog + chunk).slice(-4096);
        if (rig.sshdLog.includes("Server listening")) listening.resolve();
      }
    })();
    const exited = child.status.then((s) => s.code);
    const outcome = await withTimeout(
      Promise.race([listening.promise.then(() => "up" as const), exited]),
      10_000,
      "sshd to listen",
    );
    if (outcome === "up") return { port, user };
    rig.sshd = null;
    if (attempt === 3) throw new Error(`sshd exited with ${outcome}:\n${rig.sshdLog}`);
  }
}

// ---------------------------------------------------------------- measurements

interface ConnectResult {
  p50Ms: number;
  p90Ms: number;
  minMs: number;
  runs: number;
}

/** Wall time of `ssh HOST true`, after a warm-up. */
async function measureConnect(rig: SshRig, to: Endpoint): Promise<ConnectResult> {
  const times: number[] = [];
  for (let i = 0; i < CONNECT_WARMUP + CONNECT_RUNS; i++) {
    const r = await run(rig.ssh(to, [], "true"));
    if (r.code !== 0) throw new Error(`ssh … true exited ${r.code}: ${r.stderr.trim()}`);
    if (i >= CONNECT_WARMUP) times.push(r.ms);
  }
  return {
    p50Ms: percentile(times, 50),
    p90Ms: percentile(times, 90),
    minMs: Math.min(...times),
    runs: times.length,
  };
}

/** Keystroke echo through `ssh -tt HOST 'stty raw -echo; cat'` in a bench PTY. */
async function measureSshEcho(rig: SshRig, to: Endpoint): Promise<EchoResult> {
  await using term = rig.terminal(rig.ssh(to, ["-tt"], ECHO_SCRIPT));
  await term.expectText(READY, { timeoutMs: 20_000 });
  await term.settle(200, 3000);
  return await measureEcho(term, ECHO_WARMUP, ECHO_SAMPLES);
}

/** `cat FILE` through `ssh -tt` into a bench PTY, timed from a newline to the end marker. */
async function measurePtyThroughput(rig: SshRig, to: Endpoint): Promise<ThroughputRun> {
  const command = ["sh", "-c", CAT_SCRIPT, "sh", rig.file].map(shellQuote).join(" ");
  await using term = rig.terminal(rig.ssh(to, ["-tt"], command));
  return await measureThroughput(term, FILE_BYTES);
}

/**
 * `cat FILE` through `ssh -T` (pipes, no PTY), its stdout read and dropped by
 * the bench: timed from the newline that starts it (once the session is up)
 * to the end of the output, so that the connection set-up is not counted.
 */
async function measurePipeThroughput(rig: SshRig, to: Endpoint): Promise<ThroughputRun> {
  const command = `printf '%s%s\\n' RE ADY >&2; read x; exec cat ${shellQuote(rig.file)}`;
  const [cmd, ...args] = rig.ssh(to, ["-T"], command);
  const child = new Deno.Command(cmd, {
    args,
    env: sshEnv(),
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }, RUN_TIMEOUT_MS);
  try {
    let stderr = "";
    const ready = Promise.withResolvers<void>();
    const errs = (async () => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        stderr = (stderr + chunk).slice(-2000);
        if (stderr.includes(READY)) ready.resolve();
      }
      ready.reject(new Error(`ssh -T ended before READY: ${stderr.trim()}`));
    })();
    await withTimeout(ready.promise, 20_000, "READY from ssh -T");
    const stdin = child.stdin.getWriter();
    const t0 = performance.now();
    await stdin.write(new TextEncoder().encode("\n"));
    let bytes = 0;
    for await (const chunk of child.stdout) bytes += chunk.byteLength;
    const seconds = (performance.now() - t0) / 1000;
    await stdin.close().catch(() => {});
    const status = await child.status;
    await errs;
    if (!status.success || bytes !== FILE_BYTES) {
      throw new Error(`ssh -T cat: exit ${status.code}, ${bytes} bytes: ${stderr.trim()}`);
    }
    return { seconds, mibPerS: FILE_BYTES / MIB / seconds, bytesReceived: bytes, bytesSkipped: 0 };
  } finally {
    clearTimeout(timer);
  }
}

/** The cipher the client and a server agree on (from `ssh -v`). */
async function cipherOf(rig: SshRig, to: Endpoint): Promise<string> {
  const r = await run(rig.ssh(to, ["-v"], "true"));
  return /kex: server->client cipher: (\S+) MAC: (\S+)/.exec(r.stderr)?.slice(1).join(" + ") ??
    "?";
}

interface ServerResults {
  cipher: string;
  connect: ConnectResult;
  echo: EchoResult[];
  pipe: ThroughputRun[];
  pty: ThroughputRun[];
}

function medianBy<T>(values: T[], key: (v: T) => number): T {
  return [...values].sort((a, b) => key(a) - key(b))[Math.floor(values.length / 2)];
}

async function measureAll(
  rig: SshRig,
  servers: Partial<Record<Server, Endpoint>>,
): Promise<Partial<Record<Server, ServerResults>>> {
  const list = (Object.keys(servers) as Server[]).map((s) => [s, servers[s]!] as const);
  const results: Partial<Record<Server, ServerResults>> = {};
  for (const [s, to] of list) {
    results[s] = {
      cipher: await cipherOf(rig, to),
      connect: { p50Ms: NaN, p90Ms: NaN, minMs: NaN, runs: 0 },
      echo: [],
      pipe: [],
      pty: [],
    };
  }
  // interleaved, so that a busy moment of the machine hits both
  for (const [s, to] of list) {
    results[s]!.connect = await measureConnect(rig, to);
    progress(`connect ${LABEL[s]}: p50 ${fmtMs(results[s]!.connect.p50Ms)}`);
  }
  for (let round = 0; round < ECHO_ROUNDS; round++) {
    for (const [s, to] of list) {
      const r = await measureSshEcho(rig, to);
      results[s]!.echo.push(r);
      progress(`echo ${LABEL[s]} round ${round + 1}: p50 ${fmtMs(r.p50Ms)}`);
    }
  }
  for (let i = 0; i < THROUGHPUT_RUNS; i++) {
    for (const [s, to] of list) {
      const pipe = await measurePipeThroughput(rig, to);
      results[s]!.pipe.push(pipe);
      const pty = await measurePtyThroughput(rig, to);
      results[s]!.pty.push(pty);
      progress(
        `throughput ${LABEL[s]} run ${i + 1}: ${pipe.mibPerS.toFixed(1)} MiB/s without a PTY, ` +
          `${pty.mibPerS.toFixed(1)} with one`,
      );
    }
  }
  return results;
}

// ---------------------------------------------------------------- report

function judge(results: Partial<Record<Server, ServerResults>>): Target[] {
  const cw = results.cw!;
  const sshd = results.sshd;
  const echo = (r: ServerResults) => medianBy(r.echo, (e) => e.p50Ms);
  const rate = (runs: ThroughputRun[]) => medianBy(runs, (t) => t.mibPerS).mibPerS;
  if (!sshd) {
    return [{ name: "beside sshd", value: "sshd unavailable: not judged", pass: false }];
  }
  const connect = cw.connect.p50Ms / sshd.connect.p50Ms;
  const added = echo(cw).p50Ms - echo(sshd).p50Ms;
  const pipe = rate(cw.pipe) / rate(sshd.pipe);
  const pty = rate(cw.pty) / rate(sshd.pty);
  return [
    {
      name: `connect ≤ ${TARGETS.connectOfSshd}× sshd (ssh HOST true, p50)`,
      value: `${connect.toFixed(2)}× (${fmtMs(cw.connect.p50Ms)} vs ${fmtMs(sshd.connect.p50Ms)})`,
      pass: connect <= TARGETS.connectOfSshd,
    },
    {
      name: `echo p50 ≤ ${TARGETS.echoAddedP50Ms} ms above sshd`,
      value: `${added >= 0 ? "+" : ""}${fmtMs(added)} (${fmtMs(echo(cw).p50Ms)} vs ${
        fmtMs(echo(sshd).p50Ms)
      })`,
      pass: added <= TARGETS.echoAddedP50Ms,
    },
    {
      name: `throughput without a PTY ≥ ${TARGETS.pipeOfSshd * 100} % of sshd`,
      value: `${(pipe * 100).toFixed(0)} % (${rate(cw.pipe).toFixed(1)} vs ${
        rate(sshd.pipe).toFixed(1)
      } MiB/s)`,
      pass: pipe >= TARGETS.pipeOfSshd,
    },
    {
      name: `throughput with a PTY ≥ ${TARGETS.ptyOfSshd * 100} % of sshd`,
      value: `${(pty * 100).toFixed(0)} % (${rate(cw.pty).toFixed(1)} vs ${
        rate(sshd.pty).toFixed(1)
      } MiB/s)`,
      pass: pty >= TARGETS.ptyOfSshd,
    },
  ];
}

function report(
  head: string,
  results: Partial<Record<Server, ServerResults>>,
  relayRss: { beforeKiB: number; afterKiB: number },
  skipped: string | null,
  targets: Target[],
): string {
  const servers = (["sshd", "cw"] as Server[]).filter((s) => results[s]);
  const rates = (runs: ThroughputRun[]) => runs.map((r) => r.mibPerS.toFixed(1)).join(" / ");
  return [
    head,
    ...(skipped ? ["", `sshd skipped: ${skipped}`] : []),
    "",
    `Same OpenSSH client for both; ssh HOST true ${CONNECT_RUNS} runs after ${CONNECT_WARMUP} ` +
    `warm-up; echo ${ECHO_ROUNDS} interleaved runs of ${ECHO_SAMPLES} keystrokes after ` +
    `${ECHO_WARMUP} warm-up (the run with the median p50 shown); cat of ${fmtMiB(FILE_BYTES)} ` +
    `of base64 text, ${THROUGHPUT_RUNS} interleaved runs (median)`,
    table(
      [
        "server",
        "cipher",
        "connect p50",
        "p90",
        "echo p50",
        "p99",
        "max",
        "cat -T MiB/s",
        "cat -tt MiB/s",
      ],
      servers.map((s) => {
        const r = results[s]!;
        const e = medianBy(r.echo, (x) => x.p50Ms);
        return [
          LABEL[s],
          r.cipher,
          fmtMs(r.connect.p50Ms),
          fmtMs(r.connect.p90Ms),
          fmtMs(e.p50Ms),
          fmtMs(e.p99Ms),
          fmtMs(e.maxMs),
          medianBy(r.pipe, (x) => x.mibPerS).mibPerS.toFixed(1),
          medianBy(r.pty, (x) => x.mibPerS).mibPerS.toFixed(1),
        ];
      }),
    ),
    "",
    "Each run",
    table(
      ["server", "echo p50 of each run", "cat -T MiB/s", "cat -tt MiB/s"],
      servers.map((s) => {
        const r = results[s]!;
        return [
          LABEL[s],
          r.echo.map((e) => fmtMs(e.p50Ms)).join(" / "),
          rates(r.pipe),
          rates(r.pty),
        ];
      }),
    ),
    `  relay RSS ${(relayRss.beforeKiB / 1024).toFixed(1)} MiB before, ` +
    `${(relayRss.afterKiB / 1024).toFixed(1)} MiB after the runs`,
    "",
    "Targets",
    targetsTable(targets),
  ].join("\n");
}

/** Runs the SSH benchmark, prints its report and writes `bench-results/ssh.json`. */
export async function runSshBench(): Promise<void> {
  const started = performance.now();
  const loadAtStart = await loadAverage();
  await using rig = new SshRig();
  const { results, relayRss, skipped } = await interruptible(async () => {
    const certs = await makeCerts(`${rig.root}/certs`);
    const kg = await run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", rig.key]);
    if (kg.code !== 0) throw new Error(`ssh-keygen: ${kg.stderr}`);
    progress(`writing ${fmtMiB(FILE_BYTES)} to ${rig.file}`);
    await writeTextFile(rig.file, FILE_BYTES);
    const servers: Partial<Record<Server, Endpoint>> = {};
    let skipped = await ensureSshd();
    if (!skipped) {
      try {
        servers.sshd = await startSshd(rig);
      } catch (err) {
        skipped = `sshd did not start: ${(err as Error).message.split("\n")[0]}`;
      }
    }
    if (skipped) progress(`sshd skipped: ${skipped}`);
    servers.cw = await setUpRelay(rig, certs);
    progress(
      `relay ${rig.relay!.url} (pid ${rig.relay!.pid}), gateway on ${servers.cw.port}` +
        (servers.sshd ? `; sshd on ${servers.sshd.port}` : ""),
    );
    await sleep(200);
    const beforeKiB = await rssKiB(rig.relay!.pid);
    const results = await measureAll(rig, servers);
    const afterKiB = await rssKiB(rig.relay!.pid);
    return { results, relayRss: { beforeKiB, afterKiB }, skipped };
  });
  const loadAtEnd = await loadAverage();
  const machine = {
    ...await machineInfo(),
    openssh: (await run(["ssh", "-V"])).stderr.trim(),
    loadAtStart,
    loadAtEnd,
  };
  const head = `cw SSH benchmark — ${machine.cpu}, ${machine.cores} cores, ` +
    `Linux ${machine.kernel}, deno ${machine.deno}, ${machine.openssh}, ` +
    `load ${loadAtStart} at start, ${loadAtEnd} at end; loopback`;
  const targets = judge(results);
  console.log(report(head, results, relayRss, skipped, targets));
  const seconds = (performance.now() - started) / 1000;
  const file = writeResults("ssh", {
    generatedAt: new Date().toISOString(),
    seconds,
    machine,
    settings: {
      node: NODE,
      fileBytes: FILE_BYTES,
      connectRuns: CONNECT_RUNS,
      echoWarmup: ECHO_WARMUP,
      echoSamples: ECHO_SAMPLES,
      echoRounds: ECHO_ROUNDS,
      throughputRuns: THROUGHPUT_RUNS,
      terminal: { cols: COLS, rows: ROWS },
    },
    sshdSkipped: skipped,
    results,
    relayRssKiB: relayRss,
    targets,
  });
  console.log(`\nWrote ${file} (${seconds.toFixed(0)} s)`);
}
