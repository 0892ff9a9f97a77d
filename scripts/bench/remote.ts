/**
 * Remote benchmark (issue 5): keystroke echo and output throughput through
 * `cw attach dev-1:N` via a relay on loopback (TLS), beside local
 * `cw attach N` on the same node and a bare PTY, measured by the standalone
 * bench's own code (measure.ts, terminal.ts); and the round trip of
 * `cw list dev-1` beside `cw list`. Prints a table with PASS/MISS per target
 * and writes `bench-results/remote.json`.
 *
 * One node (a real daemon, `cw setup` as dev-1) is both the target and the
 * client's home, so local and remote paths reach the same sessions.
 */
import { localDialer } from "../../client/local.ts";
import { NodeClient } from "../../client/node_client.ts";
import { Targets } from "../../client/targets.ts";
import { checkHello, FramedConn, helloFrame } from "../../shared/framed.ts";
import { FrameKind } from "../../shared/protocol.ts";
import { loadRelayConfig } from "../../shared/relay_config.ts";
import { wsDuplex } from "../../shared/ws_duplex.ts";
import { CW_ARGV, CwHome } from "../../tests/helpers.ts";
import { makeCerts, type TestCerts } from "../../tests/relay_helpers.ts";
import {
  cpuSeconds,
  fmtMiB,
  fmtMs,
  interruptible,
  loadAverage,
  machineInfo,
  outerEnv,
  pollUntil,
  progress,
  rssKiB,
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
  timed,
} from "./measure.ts";
import { ADMIN_TOKEN, BenchRelay } from "./relay_process.ts";
import { Terminal } from "./terminal.ts";

const NODE = "dev-1";
const FILE_BYTES = 50 * MIB;
const ECHO_WARMUP = 100;
const ECHO_SAMPLES = 1000;
/** Echo runs per path, interleaved; the median run's p50 and p99 are judged. */
const ECHO_ROUNDS = 3;
const THROUGHPUT_RUNS = 5;
/**
 * Redraw program: like the echo program, but each keystroke is answered by
 * {@link REDRAW_BYTES} of filler before the letter (a TUI repainting).
 */
const REDRAW_BYTES = 4000;
const REDRAW_SCRIPT = `stty raw -echo && printf '%s%s' RE ADY && ` +
  `f=$(printf '%${REDRAW_BYTES}s' '' | tr ' ' .) && ` +
  `while c=$(dd bs=1 count=1 2>/dev/null); do printf '%s%s' "$f" "$c"; done`;
const REDRAW_WARMUP = 20;
const REDRAW_SAMPLES = 200;
const LIST_RUNS = 20;
const STARTUP_RUNS = 10;
/** Bound of each step of a hand-made remote request. */
const STEP_TIMEOUT_MS = 10_000;
const COLS = 200;
/** Output kept to explain a failed run, in characters. */
const TAIL_CHARS = 4096;
const ROWS = 50;

const TARGETS = {
  echoAddedP50Ms: 1,
  throughputMiBs: 50,
  listMs: 20,
  /** `cw list dev-1` as a whole process through a loopback relay (the install issue). */
  listCliMs: 60,
};

type Path = "bare" | "local" | "remote";
const PATHS: Path[] = ["bare", "local", "remote"];
const LABEL: Record<Path, string> = {
  bare: "bare PTY",
  local: "cw attach N (local)",
  remote: `cw attach ${NODE}:N (relay)`,
};

/** Everything started here, torn down on any exit. */
class RemoteRig implements AsyncDisposable {
  readonly root = Deno.makeTempDirSync({ prefix: "cw-bench-remote-" });
  readonly file = `${this.root}/output.txt`;
  readonly home = new CwHome();
  relay: BenchRelay | null = null;

  /** A terminal running `argv` with the node's CW_HOME; disposed by the caller. */
  terminal(argv: string[]): Terminal {
    const [file, ...args] = argv;
    return new Terminal(file, args, {
      cols: COLS,
      rows: ROWS,
      env: outerEnv({ CW_HOME: this.home.home }),
      cwd: this.root,
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    const steps = [
      () => this.home[Symbol.asyncDispose](), // cw stop, then the directory
      async () => void await this.relay?.stop(),
      () => Deno.remove(this.root, { recursive: true }),
    ];
    for (const step of steps) {
      try {
        await step();
      } catch (err) {
        console.error(`bench: remote clean-up failed: ${(err as Error)?.stack ?? err}`);
      }
    }
  }
}

/** Starts the relay and registers the rig's node as dev-1; resolves once it is online. */
async function setUp(rig: RemoteRig, certs: TestCerts): Promise<BenchRelay> {
  const relay = rig.relay = await BenchRelay.start(`${rig.root}/relay`, certs);
  const client = Deno.createHttpClient({ caCerts: [Deno.readTextFileSync(certs.ca)] });
  try {
    const res = await fetch(`${relay.url}/api/v1/invites`, {
      method: "POST",
      client,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ uses: 1 }),
      signal: AbortSignal.timeout(10_000),
    });
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
        const r = await fetch(`${relay.url}/api/v1/nodes`, {
          client,
          headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
          signal: AbortSignal.timeout(10_000),
        });
        const { nodes } = await r.json() as { nodes: { name: string; online: boolean }[] };
        return nodes.some((n) => n.name === NODE && n.online);
      },
      15_000,
      50,
    );
  } finally {
    client.close();
  }
  return relay;
}

// ---------------------------------------------------------------- echo and throughput

interface IoResults {
  echo: Record<Path, EchoResult[]>;
  redraw: Record<Path, EchoResult[]>;
  throughput: Record<
    Path,
    { runs: ThroughputRun[]; failures: string[]; median: ThroughputRun | null }
  >;
  relay: { rssBeforeKiB: number; rssAfterKiB: number; cpuSecondsInRemoteRuns: number };
}

async function measureIo(rig: RemoteRig, relay: BenchRelay): Promise<IoResults> {
  const home = rig.home;
  /** Runs `measure` in a bench terminal on `program`, started as a session unless bare. */
  const under = async <T>(path: Path, program: string[], measure: (t: Terminal) => Promise<T>) => {
    if (path === "bare") {
      await using term = rig.terminal(program);
      return await measure(term);
    }
    const id = String(await home.launch(program));
    try {
      await using term = rig.terminal([
        ...CW_ARGV,
        "attach",
        path === "remote" ? `${NODE}:${id}` : id,
      ]);
      // the last output, to tell why `cw attach` ended if it does
      let tail = "";
      const latin1 = new TextDecoder("latin1");
      term.tap = (chunk) => tail = (tail + latin1.decode(chunk)).slice(-TAIL_CHARS);
      try {
        return await measure(term);
      } catch (err) {
        throw new Error((err as Error).message, { cause: tail });
      }
    } finally {
      await home.run(["kill", id]); // it may have ended already
    }
  };
  let relayCpu = 0;
  const remoteCpu = async <T>(path: Path, fn: () => Promise<T>): Promise<T> => {
    if (path !== "remote") return await fn();
    const cpu0 = await cpuSeconds(relay.pid);
    try {
      return await fn();
    } finally {
      relayCpu += await cpuSeconds(relay.pid) - cpu0;
    }
  };

  const echo = { bare: [], local: [], remote: [] } as Record<Path, EchoResult[]>;
  for (let round = 0; round < ECHO_ROUNDS; round++) {
    for (const path of PATHS) {
      const r = await under(path, ["sh", "-c", ECHO_SCRIPT], async (term) => {
        await term.expectText(READY, { timeoutMs: 20_000 });
        await term.settle(200, 3000);
        return await measureEcho(term, ECHO_WARMUP, ECHO_SAMPLES);
      });
      echo[path].push(r);
      progress(`echo ${LABEL[path]} round ${round + 1}: p50 ${fmtMs(r.p50Ms)}`);
    }
  }

  // not in the brief: a keystroke answered by a screenful, as an agent's UI redraws
  const redraw = { bare: [], local: [], remote: [] } as Record<Path, EchoResult[]>;
  for (const path of PATHS) {
    const r = await under(path, ["sh", "-c", REDRAW_SCRIPT], async (term) => {
      await term.expectText(READY, { timeoutMs: 20_000 });
      await term.settle(200, 3000);
      return await measureEcho(term, REDRAW_WARMUP, REDRAW_SAMPLES);
    });
    redraw[path].push(r);
    progress(`redraw ${LABEL[path]}: p50 ${fmtMs(r.p50Ms)}`);
  }

  const rssBeforeKiB = await rssKiB(relay.pid);
  const catProgram = ["sh", "-c", CAT_SCRIPT, "sh", rig.file];
  const runs = { bare: [], local: [], remote: [] } as Record<Path, ThroughputRun[]>;
  const failures = { bare: [], local: [], remote: [] } as Record<Path, string[]>;
  for (let i = 0; i < THROUGHPUT_RUNS; i++) {
    for (const path of PATHS) {
      try {
        const run = await remoteCpu(
          path,
          () => under(path, catProgram, (term) => measureThroughput(term, FILE_BYTES)),
        );
        runs[path].push(run);
        progress(`throughput ${LABEL[path]} run ${i + 1}: ${run.mibPerS.toFixed(1)} MiB/s`);
      } catch (err) {
        // a run that breaks is a result too: count it, keep its reason, go on
        const why = failureReason(err);
        failures[path].push(why);
        progress(`throughput ${LABEL[path]} run ${i + 1} FAILED: ${why}`);
      }
    }
  }
  const rssAfterKiB = await rssKiB(relay.pid);
  const throughput = {} as IoResults["throughput"];
  for (const path of PATHS) {
    const sorted = [...runs[path]].sort((a, b) => a.mibPerS - b.mibPerS);
    throughput[path] = {
      runs: runs[path],
      failures: failures[path],
      median: sorted.length ? sorted[Math.floor(sorted.length / 2)] : null,
    };
  }
  return {
    echo,
    redraw,
    throughput,
    relay: { rssBeforeKiB, rssAfterKiB, cpuSecondsInRemoteRuns: relayCpu },
  };
}

/** The gist of a failed run: the program's uncaught error if it printed one, else ours. */
function failureReason(err: unknown): string {
  const output = typeof (err as Error)?.cause === "string" ? (err as Error).cause as string : "";
  // deno prints an uncaught error in colour
  const uncaught = /Uncaught (\w*Error: [^\r\n]*)/.exec(
    output.replaceAll("\x1b", "").replace(/\[[0-9;]*m/g, ""),
  );
  return (uncaught?.[1] ?? ((err as Error)?.message ?? String(err)).split("\n")[0]).slice(0, 160);
}

/** The run whose p50 is the median of the rounds. */
function medianRun(runs: EchoResult[]): EchoResult {
  return [...runs].sort((a, b) => a.p50Ms - b.p50Ms)[Math.floor(runs.length / 2)];
}

// ---------------------------------------------------------------- list

interface ListResults {
  sessions: number;
  remoteCliP50Ms: number;
  /** The same through scripts/cw (the bundled client). */
  remoteShimP50Ms: number;
  localCliP50Ms: number;
  startupP50Ms: number;
  remoteRequestP50Ms: number;
  /** The remote request in its steps, as client/targets.ts does them. */
  remoteSteps: { openP50Ms: number; helloP50Ms: number; listP50Ms: number };
  localRequestP50Ms: number;
  runs: number;
}

/**
 * The steps of one remote list, timed apart: the WebSocket to the relay (TLS
 * handshake, upgrade, authentication), the HELLO exchange (the relay opens a
 * stream on the node's link), the list request.
 */
async function remoteListSteps(home: string): Promise<ListResults["remoteSteps"]> {
  const config = loadRelayConfig(home)!;
  const url = new URL(`/api/v1/nodes/${NODE}/connect`, config.url);
  url.protocol = "wss:";
  const steps = { open: [] as number[], hello: [] as number[], list: [] as number[] };
  for (let i = 0; i < LIST_RUNS; i++) {
    const client = Deno.createHttpClient({ caCerts: [config.caCert!] });
    try {
      let t = performance.now();
      const ws = new WebSocket(
        url,
        {
          headers: { authorization: `Bearer ${config.credential}` },
          client,
        } as unknown as string[],
      );
      await withTimeout(
        new Promise((resolve, reject) => {
          ws.addEventListener("open", resolve, { once: true });
          ws.addEventListener("error", () => reject(new Error("WebSocket refused")), {
            once: true,
          });
        }),
        STEP_TIMEOUT_MS,
        "the WebSocket to open",
      ).catch((err) => {
        ws.close();
        throw err;
      });
      steps.open.push(performance.now() - t);
      const conn = new FramedConn(wsDuplex(ws));
      try {
        t = performance.now();
        await conn.sendJson(FrameKind.HELLO, helloFrame());
        checkHello(await withTimeout(conn.next(), STEP_TIMEOUT_MS, "HELLO"));
        steps.hello.push(performance.now() - t);
        t = performance.now();
        await conn.sendJson(FrameKind.REQUEST, { op: "list" });
        const frame = await withTimeout(conn.next(), STEP_TIMEOUT_MS, "the list");
        if (frame?.kind !== FrameKind.RESPONSE) throw new Error("list: no response");
        steps.list.push(performance.now() - t);
      } finally {
        conn.close();
      }
    } finally {
      client.close();
    }
  }
  return {
    openP50Ms: percentile(steps.open, 50),
    helloP50Ms: percentile(steps.hello, 50),
    listP50Ms: percentile(steps.list, 50),
  };
}

async function measureList(rig: RemoteRig): Promise<ListResults> {
  const home = rig.home;
  const cli = async (args: string[], runs: number) => {
    const times: number[] = [];
    let out = "";
    for (let i = 0; i < runs; i++) {
      const { ms, value } = await timed(() => home.ok(args));
      times.push(ms);
      out = value;
    }
    return { p50: percentile(times, 50), out };
  };
  const inProcess = async (client: NodeClient) => {
    const times: number[] = [];
    for (let i = 0; i < LIST_RUNS; i++) {
      times.push((await timed(() => client.request({ op: "list" }))).ms);
    }
    return percentile(times, 50);
  };
  const remote = await cli(["list", NODE, "--json"], LIST_RUNS);
  const local = await cli(["list", "--json"], LIST_RUNS);
  if (remote.out !== local.out) {
    throw new Error(`cw list ${NODE} and cw list differ:\n${remote.out}\n${local.out}`);
  }
  const startup = await cli(["--version"], STARTUP_RUNS);
  // the same through the launcher users run (scripts/cw: the bundled client)
  const shim = new URL("../cw", import.meta.url).pathname;
  const shimTimes: number[] = [];
  for (let i = 0; i < LIST_RUNS + 1; i++) {
    const { ms } = await timed(async () => {
      const out = await new Deno.Command(shim, {
        args: ["list", NODE, "--json"],
        env: home.env(),
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (!out.success) throw new Error(`scripts/cw list ${NODE} failed`);
    });
    if (i > 0) shimTimes.push(ms); // the first may make the bundle
  }
  // what the CLI does, without its start-up: dial (a new TLS WebSocket through
  // the relay, or the unix socket), HELLO, list
  const remoteRequestP50Ms = await inProcess(new Targets(home.home, null, false).client(NODE));
  const localRequestP50Ms = await inProcess(new NodeClient(localDialer(home.home, false)));
  const remoteSteps = await remoteListSteps(home.home);
  return {
    remoteSteps,
    sessions: (JSON.parse(local.out) as unknown[]).length,
    remoteCliP50Ms: remote.p50,
    remoteShimP50Ms: percentile(shimTimes, 50),
    localCliP50Ms: local.p50,
    startupP50Ms: startup.p50,
    remoteRequestP50Ms,
    localRequestP50Ms,
    runs: LIST_RUNS,
  };
}

// ---------------------------------------------------------------- report

function judge(io: IoResults, list: ListResults): Target[] {
  const local = medianRun(io.echo.local);
  const remote = medianRun(io.echo.remote);
  const added = remote.p50Ms - local.p50Ms;
  const remoteTput = io.throughput.remote;
  const tput = remoteTput.median?.mibPerS ?? 0;
  const failed = remoteTput.failures.length;
  const skipped = remoteTput.runs.reduce((n, r) => n + r.bytesSkipped, 0);
  const localTput = io.throughput.local.median?.mibPerS;
  return [
    {
      name: `relay adds ≤ ${TARGETS.echoAddedP50Ms} ms to echo p50`,
      value: `+${fmtMs(added)} (${fmtMs(remote.p50Ms)} vs ${fmtMs(local.p50Ms)} local)`,
      pass: added <= TARGETS.echoAddedP50Ms,
    },
    {
      name: `remote throughput ≥ ${TARGETS.throughputMiBs} MiB/s`,
      value: (remoteTput.median ? `${tput.toFixed(1)} MiB/s` : "no run finished") +
        ` (local ${localTput?.toFixed(1) ?? "—"})` +
        (failed ? `; ${failed} of ${THROUGHPUT_RUNS} runs failed: ${remoteTput.failures[0]}` : ""),
      pass: failed === 0 && tput >= TARGETS.throughputMiBs,
    },
    {
      // not one of the brief's targets: a rate only counts if the bytes arrived
      name: "remote attach shows every byte (extra check)",
      value: `${fmtMiB(skipped)} skipped in ${remoteTput.runs.length} finished runs`,
      pass: skipped === 0 && failed === 0,
    },
    {
      name: `cw list ${NODE} ≤ ${TARGETS.listCliMs} ms (CLI wall)`,
      value: `${fmtMs(list.remoteShimP50Ms)} with scripts/cw; ${
        fmtMs(list.remoteCliP50Ms)
      } as deno run main.ts (start-up alone ${fmtMs(list.startupP50Ms)})`,
      pass: list.remoteShimP50Ms <= TARGETS.listCliMs,
    },
    {
      name: `list ${NODE} ≤ ${TARGETS.listMs} ms in-process (without CLI start-up)`,
      value: fmtMs(list.remoteRequestP50Ms),
      pass: list.remoteRequestP50Ms <= TARGETS.listMs,
    },
  ];
}

function report(head: string, io: IoResults, list: ListResults, targets: Target[]): string {
  const kib = (n: number) => `${(n / 1024).toFixed(1)} MiB`;
  return [
    head,
    "",
    `Keystroke echo round trip (${ECHO_ROUNDS} interleaved runs per path of ${ECHO_SAMPLES} ` +
    `samples after ${ECHO_WARMUP} warm-up; the run with the median p50 shown)`,
    table(
      ["path", "p50", "p99", "max", "extra text", "p50 of each run"],
      PATHS.map((p) => {
        const m = medianRun(io.echo[p]);
        return [
          LABEL[p],
          fmtMs(m.p50Ms),
          fmtMs(m.p99Ms),
          fmtMs(m.maxMs),
          String(m.extraOutput),
          io.echo[p].map((r) => fmtMs(r.p50Ms)).join(" / "),
        ];
      }),
    ),
    "",
    `Redraw round trip (extra, not a target): a keystroke answered by ${REDRAW_BYTES} B ` +
    `of filler, then the letter (${REDRAW_SAMPLES} samples after ${REDRAW_WARMUP} warm-up; ` +
    "each reply runs dd and printf, the same on every path)",
    table(
      ["path", "p50", "p99", "max"],
      PATHS.map((p) => {
        const m = io.redraw[p][0];
        return [LABEL[p], fmtMs(m.p50Ms), fmtMs(m.p99Ms), fmtMs(m.maxMs)];
      }),
    ),
    "",
    `Output throughput: cat of ${fmtMiB(FILE_BYTES)} of base64 text ` +
    `(${THROUGHPUT_RUNS} interleaved runs per path; median of those that finished; MiB/s)`,
    table(
      ["path", "MiB/s", "time", "received", "skipped", "runs", "failed"],
      PATHS.map((p) => {
        const m = io.throughput[p].median;
        return [
          LABEL[p],
          m ? m.mibPerS.toFixed(1) : "—",
          m ? `${m.seconds.toFixed(2)} s` : "—",
          m ? fmtMiB(m.bytesReceived) : "—",
          m ? fmtMiB(m.bytesSkipped) : "—",
          io.throughput[p].runs.map((r) => r.mibPerS.toFixed(1)).join(" / ") || "—",
          `${io.throughput[p].failures.length} of ${THROUGHPUT_RUNS}`,
        ];
      }),
    ),
    ...PATHS.flatMap((p) =>
      [...new Set(io.throughput[p].failures)].map((f) => `  ${LABEL[p]} failed: ${f}`)
    ),
    `  relay RSS ${kib(io.relay.rssBeforeKiB)} before the throughput runs, ` +
    `${kib(io.relay.rssAfterKiB)} after; relay CPU ${
      io.relay.cpuSecondsInRemoteRuns.toFixed(1)
    } s for ${THROUGHPUT_RUNS} × ${fmtMiB(FILE_BYTES)} remote`,
    "",
    `Control commands (p50 of ${list.runs} runs; ${list.sessions} sessions on the node)`,
    table(["what", "p50", "notes"], [
      [`cw list ${NODE}`, fmtMs(list.remoteCliP50Ms), "wall time of the CLI process, from source"],
      [`scripts/cw list ${NODE}`, fmtMs(list.remoteShimP50Ms), "the bundled client"],
      ["cw list", fmtMs(list.localCliP50Ms), "the same, over the local socket"],
      ["cw --version", fmtMs(list.startupP50Ms), "process start-up floor, no node contact"],
      [
        `list ${NODE} in-process`,
        fmtMs(list.remoteRequestP50Ms),
        "new TLS WebSocket through the relay + HELLO + list",
      ],
      [
        "  its steps",
        `${fmtMs(list.remoteSteps.openP50Ms)} + ${fmtMs(list.remoteSteps.helloP50Ms)} + ` +
        fmtMs(list.remoteSteps.listP50Ms),
        "WebSocket open + HELLO (relay opens a link stream) + list, timed apart",
      ],
      ["list in-process (local)", fmtMs(list.localRequestP50Ms), "unix socket + HELLO + list"],
    ]),
    "",
    "Targets",
    targetsTable(targets),
  ].join("\n");
}

/** Runs the remote benchmark, prints its report and writes `bench-results/remote.json`. */
export async function runRemoteBench(): Promise<void> {
  const started = performance.now();
  const loadAtStart = await loadAverage();
  await using rig = new RemoteRig();
  const { io, list } = await interruptible(async () => {
    const certs = await makeCerts(`${rig.root}/certs`);
    progress(`writing ${fmtMiB(FILE_BYTES)} to ${rig.file}`);
    await writeTextFile(rig.file, FILE_BYTES);
    const relay = await setUp(rig, certs);
    progress(`relay ${relay.url} (pid ${relay.pid}); node ${NODE} online`);
    const io = await measureIo(rig, relay);
    const list = await measureList(rig);
    return { io, list };
  });
  const loadAtEnd = await loadAverage();
  const machine = { ...await machineInfo(), loadAtStart, loadAtEnd };
  const head = `cw remote benchmark — ${machine.cpu}, ${machine.cores} cores, ` +
    `Linux ${machine.kernel}, deno ${machine.deno}, load ${loadAtStart} at start, ` +
    `${loadAtEnd} at end; relay on loopback with TLS`;
  const targets = judge(io, list);
  console.log(report(head, io, list, targets));
  const seconds = (performance.now() - started) / 1000;
  const file = writeResults("remote", {
    generatedAt: new Date().toISOString(),
    seconds,
    machine,
    settings: {
      node: NODE,
      fileBytes: FILE_BYTES,
      echoWarmup: ECHO_WARMUP,
      echoSamples: ECHO_SAMPLES,
      echoRounds: ECHO_ROUNDS,
      redraw: { bytes: REDRAW_BYTES, warmup: REDRAW_WARMUP, samples: REDRAW_SAMPLES },
      throughputRuns: THROUGHPUT_RUNS,
      listRuns: LIST_RUNS,
      terminal: { cols: COLS, rows: ROWS },
    },
    echo: io.echo,
    redraw: io.redraw,
    throughput: io.throughput,
    relayDuringThroughput: io.relay,
    list,
    targets,
  });
  console.log(`\nWrote ${file} (${seconds.toFixed(0)} s)`);
}
