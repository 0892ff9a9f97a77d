/**
 * Relay benchmark (issue 3): the relay's memory and CPU with many idle node
 * links, how fast every node is back after a relay restart, and KV round trips
 * over HTTPS beside the same store in-process. Prints a table with PASS/MISS
 * per target and writes `bench-results/relay.json`.
 *
 * The nodes are simulated in this process: each is the node's own
 * {@link RelayLink} (node/link.ts — the real reconnect and heartbeat logic,
 * speaking the mux protocol), without a daemon or PTYs behind it.
 *
 * Registration is rate limited per client address (20/min, burst 10), so the
 * relay runs `--behind-proxy 127.0.0.1` and this process acts as that proxy:
 * each registration carries its own `X-Forwarded-For` address (from
 * 198.18.0.0/15, the range set aside for benchmarks). Node links and KV
 * requests carry no such header.
 */
import { RelayLink } from "../../node/link.ts";
import { openKvStore } from "../../relay/kv_store.ts";
import type { Logger } from "../../shared/logger.ts";
import { VERSION } from "../../shared/version.ts";
import { makeCerts, type TestCerts } from "../../tests/relay_helpers.ts";
import {
  cpuSeconds,
  fmtMs,
  interruptible,
  loadAverage,
  machineInfo,
  pollUntil,
  progress,
  rssKiB,
  sleep,
  table,
  type Target,
  targetsTable,
  writeResults,
} from "./common.ts";
import { percentile } from "./measure.ts";
import { ADMIN_TOKEN, BenchRelay, openFileLimit } from "./relay_process.ts";

/** Simulated nodes, as in the brief. */
export const DEFAULT_NODES = 2000;
/** Registrations in flight at once. */
const REGISTER_CONCURRENCY = 8;
/** Links left alone before memory is read: a status report (10 s) and pings (5 s) go by. */
const SETTLE_MS = 15_000;
/** RSS samples (median taken), one per second. */
const RSS_SAMPLES = 5;
/** Window over which idle CPU is read. */
const IDLE_CPU_MS = 10_000;
/** Bounds of the waits for links to come up. */
const CONNECT_TIMEOUT_MS = 120_000;
const RECONNECT_TIMEOUT_MS = 60_000;
/** KV: concurrent clients, value size, warm-up and measured time. */
const KV_CLIENTS = 16;
const KV_VALUE_BYTES = 256;
const KV_KEYS_PER_CLIENT = 64;
const KV_WARMUP_MS = 500;
const KV_MEASURE_MS = 3_000;
/** Rounds of each path, interleaved; the median round is reported. */
const KV_ROUNDS = 3;

const TARGETS = {
  rssPerLinkKiB: 100,
  reconnectS: 10,
  /** KV operations (a PUT+GET pair is two) per second over HTTPS at 16 clients. */
  kvOpsPerS: 5000,
};

export const silent: Logger = { info() {}, warn() {}, error() {} };

/** Memory and CPU of the relay with idle links. */
interface LinkResults {
  nodes: number;
  registerSeconds: number;
  connectSeconds: number;
  rssBeforeKiB: number;
  rssWithLinksKiB: number;
  perLinkKiB: number;
  idleCpuPercent: number;
  connectCpuSeconds: number;
}

/** The relay restart. */
interface RestartResults {
  stopSeconds: number;
  /** SIGTERM to the new relay listening. */
  downSeconds: number;
  /** New relay listening to this many links back, in seconds. */
  afterListen: { half: number; p90: number; all: number };
  /** SIGTERM to every link back. */
  totalSeconds: number;
  connectAttempts: number;
  cpuSeconds: number;
  rssAfterKiB: number;
  onlineInNodeList: number;
}

/** One KV run: PUT then GET of the same key, repeated. */
export interface KvRun {
  pairs: number;
  seconds: number;
  pairsPerS: number;
  p50Ms: number;
  p99Ms: number;
}

interface KvResults {
  /** The rounds with the median rate. */
  https: KvRun;
  /** The same with HTTP/1.1 clients (no h2). */
  http1: KvRun;
  inProcess: KvRun;
  rounds: { https: KvRun[]; http1: KvRun[]; inProcess: KvRun[] };
  overhead: number;
  relayCpuPercent: number;
}

/** Pieces torn down at the end, whatever happened. */
class RelayRig implements AsyncDisposable {
  readonly root = Deno.makeTempDirSync({ prefix: "cw-bench-relay-" });
  relay: BenchRelay | null = null;
  links: RelayLink[] = [];
  clients: Deno.HttpClient[] = [];

  async [Symbol.asyncDispose](): Promise<void> {
    const steps = [
      async () => {
        await Promise.all(this.links.map((l) => l.stop()));
        this.links = [];
      },
      async () => {
        await this.relay?.stop();
        this.relay = null;
      },
      () => Promise.resolve(this.clients.forEach((c) => c.close())),
      () => Deno.remove(this.root, { recursive: true }),
    ];
    for (const step of steps) {
      try {
        await step();
      } catch (err) {
        console.error(`bench: relay clean-up failed: ${(err as Error)?.stack ?? err}`);
      }
    }
  }

  /** An HTTP client trusting the bench CA, closed at the end. */
  client(certs: TestCerts, http2 = true): Deno.HttpClient {
    const c = Deno.createHttpClient({ caCerts: [Deno.readTextFileSync(certs.ca)], http2 });
    this.clients.push(c);
    return c;
  }
}

/** Calls the relay's API; throws unless the status is `expect`. */
export async function api(
  relay: BenchRelay,
  client: Deno.HttpClient,
  method: string,
  path: string,
  opts: { token?: string; body?: unknown; headers?: Record<string, string>; expect: number },
): Promise<Record<string, unknown>> {
  const res = await fetch(`${relay.url}${path}`, {
    method,
    client,
    headers: {
      ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
      ...(opts.body !== undefined ? { "content-type": "application/json" } : {}),
      ...opts.headers,
    },
    body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  if (res.status !== opts.expect) {
    throw new Error(`${method} ${path}: ${res.status} ${text.slice(0, 300)}`);
  }
  return text ? JSON.parse(text) : {};
}

/** Connected nodes, as the relay's /metrics says. */
export async function connectedNodes(relay: BenchRelay, client: Deno.HttpClient): Promise<number> {
  const res = await fetch(`${relay.url}/metrics`, {
    client,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  const m = /^cw_relay_connected_nodes (\d+)$/m.exec(text);
  if (!m) throw new Error(`No cw_relay_connected_nodes in /metrics (${res.status})`);
  return Number(m[1]);
}

/** Registers `count` nodes with one invite, each from its own forwarded address. */
export async function registerNodes(
  relay: BenchRelay,
  client: Deno.HttpClient,
  count: number,
): Promise<{ name: string; credential: string }[]> {
  const invite = await api(relay, client, "POST", "/api/v1/invites", {
    token: ADMIN_TOKEN,
    body: { uses: count, ttlSeconds: 3600 },
    expect: 201,
  });
  const out: { name: string; credential: string }[] = new Array(count);
  let next = 0;
  await Promise.all(Array.from({ length: REGISTER_CONCURRENCY }, async () => {
    while (next < count) {
      const i = next++;
      const name = `sim-${String(i).padStart(4, "0")}`;
      const res = await api(relay, client, "POST", "/api/v1/register", {
        body: { name, invite: invite.token, version: VERSION },
        headers: { "x-forwarded-for": `198.18.${i >> 8}.${i & 255}` },
        expect: 201,
      });
      out[i] = { name, credential: String(res.credential) };
    }
  }));
  return out;
}

/** Median RSS of `RSS_SAMPLES` readings a second apart. */
export async function steadyRss(pid: number): Promise<number> {
  const samples: number[] = [];
  for (let i = 0; i < RSS_SAMPLES; i++) {
    if (i > 0) await sleep(1000);
    samples.push(await rssKiB(pid));
  }
  return percentile(samples, 50);
}

async function measureLinks(
  rig: RelayRig,
  certs: TestCerts,
  client: Deno.HttpClient,
  nodes: number,
): Promise<LinkResults> {
  const relay = rig.relay!;
  const t0 = performance.now();
  const creds = await registerNodes(relay, client, nodes);
  const registerSeconds = (performance.now() - t0) / 1000;
  progress(`registered ${nodes} nodes in ${registerSeconds.toFixed(1)} s`);
  await sleep(3000);
  const rssBeforeKiB = await steadyRss(relay.pid);

  const caCert = Deno.readTextFileSync(certs.ca);
  const cpu0 = await cpuSeconds(relay.pid);
  const t1 = performance.now();
  for (const { name, credential } of creds) {
    rig.links.push(
      new RelayLink({ url: relay.url, name, credential, caCert }, {
        logger: silent,
        serve: (stream) => stream.close(),
        sessions: () => 0,
        dialback: () => {},
      }),
    );
  }
  await pollUntil(
    `${nodes} links to connect`,
    async () => await connectedNodes(relay, client) === nodes,
    CONNECT_TIMEOUT_MS,
    50,
  );
  const connectSeconds = (performance.now() - t1) / 1000;
  const connectCpuSeconds = await cpuSeconds(relay.pid) - cpu0;
  progress(`${nodes} links up in ${connectSeconds.toFixed(1)} s; settling`);

  await sleep(SETTLE_MS);
  const cpu1 = await cpuSeconds(relay.pid);
  const t2 = performance.now();
  await sleep(IDLE_CPU_MS);
  const idleCpuPercent = (await cpuSeconds(relay.pid) - cpu1) / ((performance.now() - t2) / 1000) *
    100;
  const rssWithLinksKiB = await steadyRss(relay.pid);
  const stillUp = await connectedNodes(relay, client);
  if (stillUp !== nodes) throw new Error(`Only ${stillUp} of ${nodes} links stayed up`);
  const perLinkKiB = (rssWithLinksKiB - rssBeforeKiB) / nodes;
  progress(
    `relay RSS ${rssBeforeKiB} → ${rssWithLinksKiB} KiB = ${perLinkKiB.toFixed(1)} KiB per link`,
  );
  return {
    nodes,
    registerSeconds,
    connectSeconds,
    rssBeforeKiB,
    rssWithLinksKiB,
    perLinkKiB,
    idleCpuPercent,
    connectCpuSeconds,
  };
}

async function measureRestart(
  rig: RelayRig,
  certs: TestCerts,
  client: Deno.HttpClient,
  nodes: number,
  extra: string[],
): Promise<RestartResults> {
  const old = rig.relay!;
  const attemptsBefore = rig.links.reduce((n, l) => n + l.status.attempts, 0);
  const t0 = performance.now();
  rig.relay = null;
  const code = await old.stop();
  const stopSeconds = (performance.now() - t0) / 1000;
  if (code !== 0) throw new Error(`The relay exited with ${code} on SIGTERM:\n${old.tail}`);
  const relay = rig.relay = await BenchRelay.start(`${rig.root}/relay`, certs, {
    port: old.port,
    extra,
  });
  const tListen = performance.now();
  const seen: { half?: number; p90?: number; all?: number } = {};
  await pollUntil(`${nodes} links to come back`, async () => {
    const n = await connectedNodes(relay, client).catch(() => 0);
    const t = (performance.now() - tListen) / 1000;
    if (n >= nodes / 2) seen.half ??= t;
    if (n >= nodes * 0.9) seen.p90 ??= t;
    if (n >= nodes) seen.all ??= t;
    return n >= nodes;
  }, RECONNECT_TIMEOUT_MS);
  const totalSeconds = (performance.now() - t0) / 1000;
  const cpu = await cpuSeconds(relay.pid);
  const listed = await api(relay, client, "GET", "/api/v1/nodes", {
    token: ADMIN_TOKEN,
    expect: 200,
  }) as { nodes: { online: boolean }[] };
  const onlineInNodeList = listed.nodes.filter((n) => n.online).length;
  const connectAttempts = rig.links.reduce((n, l) => n + l.status.attempts, 0) - attemptsBefore;
  progress(`all ${nodes} back ${seen.all!.toFixed(2)} s after the new relay listened`);
  await sleep(SETTLE_MS);
  return {
    stopSeconds,
    downSeconds: (tListen - t0) / 1000,
    afterListen: { half: seen.half!, p90: seen.p90!, all: seen.all! },
    totalSeconds,
    connectAttempts,
    cpuSeconds: cpu,
    rssAfterKiB: await steadyRss(relay.pid),
    onlineInNodeList,
  };
}

/** Runs `KV_CLIENTS` loops of PUT+GET for warm-up plus measured time. */
export async function kvLoad(
  pair: (client: number, key: string, value: Uint8Array<ArrayBuffer>) => Promise<void>,
): Promise<KvRun> {
  const times: number[] = [];
  const start = performance.now();
  const measureFrom = start + KV_WARMUP_MS;
  const end = measureFrom + KV_MEASURE_MS;
  await Promise.all(Array.from({ length: KV_CLIENTS }, async (_, c) => {
    const value = new Uint8Array(KV_VALUE_BYTES);
    for (let j = 0; performance.now() < end; j++) {
      crypto.getRandomValues(value.subarray(0, 16));
      const t = performance.now();
      await pair(c, `c${c}/k${j % KV_KEYS_PER_CLIENT}`, value);
      const done = performance.now();
      if (t >= measureFrom && done <= end) times.push(done - t);
    }
  }));
  const seconds = KV_MEASURE_MS / 1000;
  return {
    pairs: times.length,
    seconds,
    pairsPerS: times.length / seconds,
    p50Ms: percentile(times, 50),
    p99Ms: percentile(times, 99),
  };
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && a.every((x, i) => x === b[i]);
}

async function measureKv(
  rig: RelayRig,
  certs: TestCerts,
  client: Deno.HttpClient,
): Promise<KvResults> {
  const relay = rig.relay!;
  const [{ credential }] = await registerNodesNamed(relay, client, ["kv-bench"]);
  // a client (own connection) per worker, as 16 agents on different machines would be
  const clients = Array.from({ length: KV_CLIENTS }, () => rig.client(certs));
  const clientsH1 = Array.from({ length: KV_CLIENTS }, () => rig.client(certs, false));
  const auth = { authorization: `Bearer ${credential}` };
  await using store = await openKvStore(`${rig.root}/in-process.kv`);
  const https: KvRun[] = [];
  const http1: KvRun[] = [];
  const inProcess: KvRun[] = [];
  let relayCpu = 0;
  let httpsWall = 0;
  // rounds interleaved, so that drift in the machine's load hits both alike
  for (let round = 0; round < KV_ROUNDS; round++) {
    const cpu0 = await cpuSeconds(relay.pid);
    const t0 = performance.now();
    const overHttps = (pool: Deno.HttpClient[]) =>
      kvLoad(async (c, key, value) => {
        const url = `${relay.url}/api/v1/kv/bench/${encodeURIComponent(key)}`;
        const put = await fetch(url, {
          method: "PUT",
          client: pool[c],
          headers: auth,
          body: value,
          signal: AbortSignal.timeout(10_000),
        });
        await put.body?.cancel();
        if (put.status !== 200 && put.status !== 201) throw new Error(`KV PUT: ${put.status}`);
        const get = await fetch(url, {
          client: pool[c],
          headers: auth,
          signal: AbortSignal.timeout(10_000),
        });
        const body = new Uint8Array(await get.arrayBuffer());
        if (get.status !== 200 || !sameBytes(body, value)) throw new Error(`KV GET: ${get.status}`);
      });
    https.push(await overHttps(clients));
    httpsWall += (performance.now() - t0) / 1000;
    relayCpu += await cpuSeconds(relay.pid) - cpu0;
    http1.push(await overHttps(clientsH1));
    inProcess.push(
      await kvLoad(async (_c, key, value) => {
        const set = await store.kvSet("bench", key, value, {}, new Date());
        if (!set.ok) throw new Error(`kvSet: ${set.reason}`);
        const got = await store.kvGet("bench", key, new Date());
        if (!got || !sameBytes(got.value, value)) throw new Error("kvGet returned another value");
      }),
    );
    progress(
      `KV round ${round + 1}: HTTPS ${https[round].pairsPerS.toFixed(0)} PUT+GET/s ` +
        `(HTTP/1.1 ${http1[round].pairsPerS.toFixed(0)}), ` +
        `in-process ${inProcess[round].pairsPerS.toFixed(0)} set+get/s`,
    );
  }
  const median = (runs: KvRun[]) =>
    [...runs].sort((a, b) => a.pairsPerS - b.pairsPerS)[Math.floor(runs.length / 2)];
  return {
    https: median(https),
    http1: median(http1),
    inProcess: median(inProcess),
    rounds: { https, http1, inProcess },
    overhead: median(inProcess).pairsPerS / median(https).pairsPerS,
    relayCpuPercent: relayCpu / httpsWall * 100,
  };
}

async function registerNodesNamed(
  relay: BenchRelay,
  client: Deno.HttpClient,
  names: string[],
): Promise<{ name: string; credential: string }[]> {
  const invite = await api(relay, client, "POST", "/api/v1/invites", {
    token: ADMIN_TOKEN,
    body: { uses: names.length },
    expect: 201,
  });
  const out = [];
  for (const name of names) {
    const res = await api(relay, client, "POST", "/api/v1/register", {
      body: { name, invite: invite.token },
      headers: { "x-forwarded-for": "198.19.255.254" },
      expect: 201,
    });
    out.push({ name, credential: String(res.credential) });
  }
  return out;
}

// ---------------------------------------------------------------- report

function judge(links: LinkResults, restart: RestartResults, kv: KvResults): Target[] {
  return [
    {
      name: `KV ≥ ${TARGETS.kvOpsPerS} operations/s over HTTPS at ${KV_CLIENTS} clients`,
      value: `${(2 * kv.https.pairsPerS).toFixed(0)} ops/s (HTTP/1.1 clients ${
        (2 * kv.http1.pairsPerS).toFixed(0)
      }; in-process ${(2 * kv.inProcess.pairsPerS).toFixed(0)})`,
      pass: 2 * kv.https.pairsPerS >= TARGETS.kvOpsPerS,
    },
    {
      name: `relay RSS ≤ ${TARGETS.rssPerLinkKiB} KiB per idle node link`,
      value: `${links.perLinkKiB.toFixed(1)} KiB (${links.nodes} links)`,
      pass: links.perLinkKiB <= TARGETS.rssPerLinkKiB,
    },
    {
      name: `all ${links.nodes} back ≤ ${TARGETS.reconnectS} s after the relay restarts`,
      value: `${restart.afterListen.all.toFixed(2)} s after it listens ` +
        `(${restart.totalSeconds.toFixed(2)} s from SIGTERM)`,
      pass: restart.afterListen.all <= TARGETS.reconnectS,
    },
  ];
}

function report(
  head: string,
  links: LinkResults,
  restart: RestartResults,
  kv: KvResults,
  targets: Target[],
): string {
  const n = links.nodes;
  const mib = (kib: number) => `${(kib / 1024).toFixed(1)} MiB`;
  return [
    head,
    "",
    `Idle node links (${n} simulated nodes: node/link.ts RelayLink in the bench process, ` +
    "wss with TLS, no daemon)",
    table(["what", "value", "notes"], [
      [
        "register",
        `${links.registerSeconds.toFixed(1)} s`,
        `${n} × POST /api/v1/register, ${REGISTER_CONCURRENCY} at a time`,
      ],
      [
        "connect all",
        `${links.connectSeconds.toFixed(1)} s`,
        `${n} links opened at once; relay CPU ${links.connectCpuSeconds.toFixed(1)} s`,
      ],
      ["relay RSS before links", mib(links.rssBeforeKiB), "after registration, median of 5"],
      ["relay RSS with links", mib(links.rssWithLinksKiB), `after ${SETTLE_MS / 1000} s idle`],
      ["per link", `${links.perLinkKiB.toFixed(1)} KiB`, "(with − before) / links"],
      [
        "relay CPU, idle links",
        `${links.idleCpuPercent.toFixed(1)} %`,
        `of one core over ${IDLE_CPU_MS / 1000} s (pings every 5 s, status every 10 s)`,
      ],
    ]),
    "",
    "Relay restart (SIGTERM, start again on the same port)",
    table(["what", "value", "notes"], [
      ["old relay exits", `${restart.stopSeconds.toFixed(2)} s`, "GOAWAY relay_restarting sent"],
      ["new relay listens", `${restart.downSeconds.toFixed(2)} s`, "after SIGTERM (from source)"],
      [
        "50% / 90% / 100% back",
        `${restart.afterListen.half.toFixed(2)} / ${restart.afterListen.p90.toFixed(2)} / ` +
        `${restart.afterListen.all.toFixed(2)} s`,
        "after the new relay listens (/metrics polled every 25 ms)",
      ],
      ["all back from SIGTERM", `${restart.totalSeconds.toFixed(2)} s`, ""],
      [
        "connect attempts",
        String(restart.connectAttempts),
        `by ${n} links (immediate retry, then backoff capped at 1 s)`,
      ],
      [
        "new relay CPU to all back",
        `${restart.cpuSeconds.toFixed(1)} s`,
        "its start-up included",
      ],
      [
        "new relay RSS with links",
        mib(restart.rssAfterKiB),
        `online in /api/v1/nodes: ${restart.onlineInNodeList}`,
      ],
    ]),
    "",
    `KV: PUT then GET of a ${KV_VALUE_BYTES} B value, ${KV_CLIENTS} concurrent clients; ` +
    `${KV_ROUNDS} interleaved rounds per path of ${KV_MEASURE_MS / 1000} s after ` +
    `${KV_WARMUP_MS / 1000} s warm-up (median round shown)`,
    table(["path", "ops/s", "pairs/s", "p50", "p99", "rounds (pairs/s)", "notes"], [
      [
        "HTTPS (loopback)",
        (2 * kv.https.pairsPerS).toFixed(0),
        kv.https.pairsPerS.toFixed(0),
        fmtMs(kv.https.p50Ms),
        fmtMs(kv.https.p99Ms),
        kv.rounds.https.map((r) => r.pairsPerS.toFixed(0)).join(" / "),
        `a connection per client (h2), node credential; relay CPU ${
          kv.relayCpuPercent.toFixed(0)
        } %`,
      ],
      [
        "HTTPS, HTTP/1.1",
        (2 * kv.http1.pairsPerS).toFixed(0),
        kv.http1.pairsPerS.toFixed(0),
        fmtMs(kv.http1.p50Ms),
        fmtMs(kv.http1.p99Ms),
        kv.rounds.http1.map((r) => r.pairsPerS.toFixed(0)).join(" / "),
        "the same, clients without h2",
      ],
      [
        "Deno KV in-process",
        (2 * kv.inProcess.pairsPerS).toFixed(0),
        kv.inProcess.pairsPerS.toFixed(0),
        fmtMs(kv.inProcess.p50Ms),
        fmtMs(kv.inProcess.p99Ms),
        kv.rounds.inProcess.map((r) => r.pairsPerS.toFixed(0)).join(" / "),
        "openKvStore: kvSet + kvGet (group commit, write-through cache)",
      ],
    ]),
    `  overhead: in-process does ${kv.overhead.toFixed(1)}× the HTTPS rate ` +
    "(each request crosses the guarded front, TLS, h2 and Hono; authentication is a " +
    "cached hash lookup)",
    "",
    "Targets",
    targetsTable(targets),
  ].join("\n");
}

/** Runs the relay benchmark, prints its report and writes `bench-results/relay.json`. */
export async function runRelayBench(nodes = DEFAULT_NODES): Promise<void> {
  const started = performance.now();
  const loadAtStart = await loadAverage();
  const own = await openFileLimit(Deno.pid);
  if (own.soft !== "unlimited" && Number(own.soft) < nodes + 512) {
    throw new Error(
      `This process may open ${own.soft} files; ${nodes} links need more: run ulimit -n ${
        nodes + 1024
      } first`,
    );
  }
  await using rig = new RelayRig();
  const { relayLimit, links, restart, kv } = await interruptible(async () => {
    const certs = await makeCerts(`${rig.root}/certs`);
    const extra = ["--behind-proxy", "127.0.0.1"];
    rig.relay = await BenchRelay.start(`${rig.root}/relay`, certs, { extra });
    const relayLimit = await openFileLimit(rig.relay.pid);
    progress(
      `relay ${rig.relay.url} (pid ${rig.relay.pid}); open files: bench ${own.soft}, relay ${relayLimit.soft}`,
    );
    const client = rig.client(certs);
    const links = await measureLinks(rig, certs, client, nodes);
    const restart = await measureRestart(rig, certs, client, nodes, extra);
    progress("stopping the links");
    await Promise.all(rig.links.map((l) => l.stop()));
    rig.links = [];
    await pollUntil(
      "the links to close",
      async () => await connectedNodes(rig.relay!, client) === 0,
      30_000,
    );
    const kv = await measureKv(rig, certs, client);
    return { relayLimit, links, restart, kv };
  });
  const loadAtEnd = await loadAverage();

  const machine = { ...await machineInfo(), loadAtStart, loadAtEnd };
  const limits = { bench: own, relay: relayLimit };
  const head =
    `cw relay benchmark — ${machine.cpu}, ${machine.cores} cores, Linux ${machine.kernel}, ` +
    `deno ${machine.deno}, load ${loadAtStart} at start, ${loadAtEnd} at end; ` +
    `open files (soft): bench ${own.soft}, relay ${relayLimit.soft}`;
  const targets = judge(links, restart, kv);
  console.log(report(head, links, restart, kv, targets));
  const seconds = (performance.now() - started) / 1000;
  const file = writeResults("relay", {
    generatedAt: new Date().toISOString(),
    seconds,
    machine,
    openFileLimits: limits,
    settings: {
      nodes,
      registration: "--behind-proxy 127.0.0.1, a distinct X-Forwarded-For per registration",
      settleMs: SETTLE_MS,
      idleCpuMs: IDLE_CPU_MS,
      kv: {
        clients: KV_CLIENTS,
        valueBytes: KV_VALUE_BYTES,
        keysPerClient: KV_KEYS_PER_CLIENT,
        warmupMs: KV_WARMUP_MS,
        measureMs: KV_MEASURE_MS,
        rounds: KV_ROUNDS,
      },
    },
    links,
    restart,
    kv,
    targets,
  });
  console.log(`\nWrote ${file} (${seconds.toFixed(0)} s)`);
}
