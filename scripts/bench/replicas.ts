/**
 * Replicas benchmark (issue 13): three `cw relay` replicas on one private
 * PostgreSQL (scripts/postgres.sh), each holding `--nodes` simulated node
 * links (node/link.ts's real RelayLink, as in bench/relay.ts, each told all
 * three addresses), measured in one run:
 *
 * - each replica's RSS per idle link;
 * - after `kill -9` of one replica, the time until every one of its nodes is
 *   linked to another (the survivors' `cw_relay_connected_nodes`);
 * - KV PUT+GET at 16 clients spread over the replicas, beside one relay on
 *   Deno KV (the default store) in the same run;
 * - keystroke echo p50 of a remote attach forwarded between replicas, beside
 *   the same attach served by the replica holding the node's link.
 *
 * Prints a table with PASS/MISS per target and writes `bench-results/replicas.json`.
 */
import { fileURLToPath } from "node:url";
import { RelayLink } from "../../node/link.ts";
import { raiseFdLimit } from "../../shared/libc.ts";
import { CW_ARGV, CwHome } from "../../tests/helpers.ts";
import { makeCerts, type TestCerts } from "../../tests/relay_helpers.ts";
import {
  cpuSeconds,
  fmtMs,
  interruptible,
  loadAverage,
  machineInfo,
  outerEnv,
  pollUntil,
  progress,
  sleep,
  table,
  type Target,
  targetsTable,
  writeResults,
} from "./common.ts";
import { ECHO_SCRIPT, type EchoResult, measureEcho, READY } from "./measure.ts";
import {
  api,
  connectedNodes,
  kvLoad,
  type KvRun,
  registerNodes,
  sameBytes,
  silent,
  steadyRss,
} from "./relay.ts";
import { ADMIN_TOKEN, BenchRelay } from "./relay_process.ts";
import { Terminal } from "./terminal.ts";

/** Simulated node links per replica, as in the issue. */
export const DEFAULT_LINKS_PER_REPLICA = 3000;
const REPLICAS = 3;
/** Links left alone before memory is read (status reports and pings go by). */
const SETTLE_MS = 15_000;
const CONNECT_TIMEOUT_MS = 300_000;
const FAILOVER_TIMEOUT_MS = 120_000;
const KV_ROUNDS = 3;
const ECHO_ROUNDS = 3;
const ECHO_WARMUP = 100;
const ECHO_SAMPLES = 500;
const NODE = "dev-1";

const TARGETS = {
  /** Forwarding between replicas adds at most this to the echo p50. */
  forwardAddedP50Ms: 0.5,
  /** Every node of a killed replica back within (the failure clause). */
  failoverSeconds: 5,
};

const SCRIPT = fileURLToPath(new URL("../postgres.sh", import.meta.url));

/** Everything started here, torn down on any exit. */
class Rig implements AsyncDisposable {
  readonly root = Deno.makeTempDirSync({ prefix: "cw-bench-replicas-" });
  replicas: (BenchRelay | null)[] = [];
  single: BenchRelay | null = null;
  links: RelayLink[] = [];
  clients: Deno.HttpClient[] = [];
  homes: CwHome[] = [];
  pgDir: string | null = null;

  client(certs: TestCerts): Deno.HttpClient {
    const c = Deno.createHttpClient({ caCerts: [Deno.readTextFileSync(certs.ca)] });
    this.clients.push(c);
    return c;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    const steps = [
      async () => void await Promise.all(this.links.map((l) => l.stop())),
      async () => void await Promise.all(this.homes.map((h) => h[Symbol.asyncDispose]())),
      async () => void await Promise.all(this.replicas.map((r) => r?.stop())),
      async () => void await this.single?.stop(),
      () => Promise.resolve(this.clients.forEach((c) => c.close())),
      async () => {
        if (this.pgDir) {
          await new Deno.Command("bash", { args: [SCRIPT, "stop", this.pgDir], stdin: "null" })
            .output();
        }
      },
      () => Deno.remove(this.root, { recursive: true }),
    ];
    for (const step of steps) {
      try {
        await step();
      } catch (err) {
        console.error(`bench: replicas clean-up failed: ${(err as Error)?.stack ?? err}`);
      }
    }
  }
}

async function startPostgres(rig: Rig): Promise<string> {
  const given = Deno.env.get("CW_TEST_POSTGRES_URL");
  const base = given ?? await (async () => {
    rig.pgDir = `${rig.root}/pg`;
    const out = await new Deno.Command("bash", {
      args: [SCRIPT, "start", rig.pgDir],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(`PostgreSQL did not start: ${new TextDecoder().decode(out.stderr)}`);
    }
    return new TextDecoder().decode(out.stdout).trim();
  })();
  const url = new URL(base);
  url.searchParams.set("schema", `bench_${crypto.randomUUID().slice(0, 8)}`);
  return url.toString();
}

interface LinkResults {
  perReplica: {
    rssBeforeKiB: number;
    rssWithLinksKiB: number;
    links: number;
    perLinkKiB: number;
  }[];
  registerSeconds: number;
  connectSeconds: number;
}

interface FailoverResults {
  nodesMoved: number;
  /** kill -9 → every node linked to a survivor, in seconds. */
  allBackSeconds: number;
  halfBackSeconds: number;
  /** CPU the surviving replicas spent meanwhile, and this process (the simulated nodes' side). */
  survivorsCpuSeconds: number[];
  simulatedNodesCpuSeconds: number;
}

interface KvResults {
  cluster: KvRun;
  single: KvRun;
  rounds: { cluster: KvRun[]; single: KvRun[] };
}

interface EchoResults {
  direct: EchoResult[];
  forwarded: EchoResult[];
  addedP50Ms: number;
}

async function measureLinks(
  rig: Rig,
  certs: TestCerts,
  client: Deno.HttpClient,
  perReplica: number,
): Promise<LinkResults> {
  const relays = rig.replicas as BenchRelay[];
  const t0 = performance.now();
  const creds = await registerNodes(relays[0], client, perReplica * REPLICAS);
  const registerSeconds = (performance.now() - t0) / 1000;
  progress(`registered ${creds.length} nodes (one store) in ${registerSeconds.toFixed(1)} s`);
  const before = await Promise.all(relays.map((r) => steadyRss(r.pid)));
  // links already there (the echo part's node): counted apart
  const base = await Promise.all(relays.map((r) => connectedNodes(r, client)));
  const caCert = Deno.readTextFileSync(certs.ca);
  const t1 = performance.now();
  creds.forEach(({ name, credential }, i) => {
    const home = i % REPLICAS;
    // each node knows every replica: its own first, then the others in turn
    const urls = Array.from({ length: REPLICAS }, (_, k) => relays[(home + k) % REPLICAS].url);
    rig.links.push(
      new RelayLink({ url: urls[0], urls: urls.slice(1), name, credential, caCert }, {
        logger: silent,
        serve: (stream) => stream.close(),
        sessions: () => 0,
        dialback: () => {},
      }),
    );
  });
  await pollUntil(
    `${creds.length} links to connect`,
    async () =>
      // a link that failed once tries the next address: count them on any replica
      (await Promise.all(relays.map((r) => connectedNodes(r, client)))).reduce(
        (a, b) => a + b,
        0,
      ) ===
        base.reduce((a, b) => a + b, 0) + creds.length,
    CONNECT_TIMEOUT_MS,
    200,
  );
  const connectSeconds = (performance.now() - t1) / 1000;
  progress(`${creds.length} links up in ${connectSeconds.toFixed(1)} s; settling`);
  await sleep(SETTLE_MS);
  const after = await Promise.all(relays.map((r) => steadyRss(r.pid)));
  const held = await Promise.all(relays.map((r) => connectedNodes(r, client)));
  return {
    perReplica: relays.map((_, i) => ({
      rssBeforeKiB: before[i],
      rssWithLinksKiB: after[i],
      links: held[i] - base[i],
      perLinkKiB: (after[i] - before[i]) / Math.max(1, held[i] - base[i]),
    })),
    registerSeconds,
    connectSeconds,
  };
}

async function measureFailover(rig: Rig, client: Deno.HttpClient): Promise<FailoverResults> {
  const [victim, ...survivors] = rig.replicas as BenchRelay[];
  const total =
    (await Promise.all((rig.replicas as BenchRelay[]).map((r) => connectedNodes(r, client))))
      .reduce((a, b) => a + b, 0);
  const moving = await connectedNodes(victim, client);
  const cpu0 = await Promise.all([
    ...survivors.map((r) => cpuSeconds(r.pid)),
    cpuSeconds(Deno.pid),
  ]);
  const t0 = performance.now();
  await victim.kill();
  rig.replicas[0] = null;
  const seen: { half?: number; all?: number } = {};
  await pollUntil(
    `${moving} nodes to move`,
    async () => {
      const n = (await Promise.all(survivors.map((r) => connectedNodes(r, client).catch(() => 0))))
        .reduce((a, b) => a + b, 0);
      const t = (performance.now() - t0) / 1000;
      if (n >= total - moving / 2) seen.half ??= t;
      if (n >= total) seen.all ??= t;
      return n >= total;
    },
    FAILOVER_TIMEOUT_MS,
    50,
  );
  progress(
    `kill -9 of a replica: its ${moving} nodes back on the others in ${seen.all!.toFixed(2)} s`,
  );
  const cpu1 = await Promise.all([
    ...survivors.map((r) => cpuSeconds(r.pid)),
    cpuSeconds(Deno.pid),
  ]);
  return {
    nodesMoved: moving,
    allBackSeconds: seen.all!,
    halfBackSeconds: seen.half!,
    survivorsCpuSeconds: cpu1.slice(0, -1).map((c, i) => c - cpu0[i]),
    simulatedNodesCpuSeconds: cpu1.at(-1)! - cpu0.at(-1)!,
  };
}

async function measureKv(
  rig: Rig,
  certs: TestCerts,
  replicas: BenchRelay[],
): Promise<KvResults> {
  const single = rig.single!;
  const run = (targets: BenchRelay[]) => {
    const pool = Array.from({ length: 16 }, () => rig.client(certs));
    return kvLoad(async (c, key, value) => {
      const relay = targets[c % targets.length];
      const url = `${relay.url}/api/v1/kv/bench/${encodeURIComponent(key)}`;
      const headers = { authorization: `Bearer ${ADMIN_TOKEN}` };
      const put = await fetch(url, {
        method: "PUT",
        client: pool[c],
        headers,
        body: value,
        signal: AbortSignal.timeout(10_000),
      });
      await put.body?.cancel();
      if (put.status !== 200 && put.status !== 201) throw new Error(`KV PUT: ${put.status}`);
      const get = await fetch(url, {
        client: pool[c],
        headers,
        signal: AbortSignal.timeout(10_000),
      });
      const body = new Uint8Array(await get.arrayBuffer());
      if (get.status !== 200 || !sameBytes(body, value)) throw new Error(`KV GET: ${get.status}`);
    });
  };
  const cluster: KvRun[] = [];
  const one: KvRun[] = [];
  for (let round = 0; round < KV_ROUNDS; round++) {
    cluster.push(await run(replicas));
    one.push(await run([single]));
    progress(
      `KV round ${round + 1}: replicas on PostgreSQL ${
        (cluster[round].pairsPerS * 2).toFixed(0)
      } ops/s, ` +
        `one relay on Deno KV ${(one[round].pairsPerS * 2).toFixed(0)} ops/s`,
    );
  }
  const median = (runs: KvRun[]) =>
    [...runs].sort((a, b) => a.pairsPerS - b.pairsPerS)[Math.floor(runs.length / 2)];
  return { cluster: median(cluster), single: median(one), rounds: { cluster, single: one } };
}

/** Echo through the replica holding the node's link, and through another that forwards. */
async function measureEcho2(
  rig: Rig,
  certs: TestCerts,
  client: Deno.HttpClient,
  holder: BenchRelay,
  other: BenchRelay,
): Promise<EchoResults> {
  const node = new CwHome();
  rig.homes.push(node);
  const linkedBefore = await connectedNodes(holder, client);
  const inv = await api(holder, client, "POST", "/api/v1/invites", {
    token: ADMIN_TOKEN,
    body: { uses: 1 },
    expect: 201,
  });
  await node.ok([
    "setup",
    "--relay-url",
    holder.url,
    "--invite",
    String(inv.token),
    "--name",
    NODE,
    "--ca-cert",
    certs.ca,
  ]);
  const laptop = async (relay: BenchRelay, name: string) => {
    const made = await api(relay, client, "POST", "/api/v1/users", {
      token: ADMIN_TOKEN,
      body: { name },
      expect: 201,
    });
    const home = new CwHome();
    rig.homes.push(home);
    await home.ok(["login", "--relay-url", relay.url, "--token", "-", "--ca-cert", certs.ca], {
      stdin: `${made.token}\n`,
    });
    return home;
  };
  const direct = await laptop(holder, "direct");
  const forwarded = await laptop(other, "forwarded");
  const out = { direct: [] as EchoResult[], forwarded: [] as EchoResult[] };
  for (let round = 0; round < ECHO_ROUNDS; round++) {
    for (const [path, home] of [["direct", direct], ["forwarded", forwarded]] as const) {
      const id = String(await node.launch(["sh", "-c", ECHO_SCRIPT]));
      try {
        await using term = new Terminal(CW_ARGV[0], [
          ...CW_ARGV.slice(1),
          "attach",
          `${NODE}:${id}`,
        ], {
          cols: 120,
          rows: 40,
          env: outerEnv({ CW_HOME: home.home }),
          cwd: rig.root,
        });
        await term.expectText(READY, { timeoutMs: 20_000 });
        await term.settle(200, 3000);
        const r = await measureEcho(term, ECHO_WARMUP, ECHO_SAMPLES);
        out[path].push(r);
        progress(`echo ${path} round ${round + 1}: p50 ${fmtMs(r.p50Ms)}`);
      } finally {
        await node.run(["kill", id]);
      }
    }
  }
  // its node knows one replica only: not a part of the links and failover measured next
  await node.ok(["stop"]);
  await pollUntil(
    "dev-1 to leave",
    async () => await connectedNodes(holder, client) === linkedBefore,
    10_000,
    50,
  );
  const med = (rs: EchoResult[]) => [...rs].map((r) => r.p50Ms).sort((a, b) => a - b)[1];
  return { ...out, addedP50Ms: med(out.forwarded) - med(out.direct) };
}

export async function runReplicasBench(perReplica = DEFAULT_LINKS_PER_REPLICA): Promise<void> {
  const fds = raiseFdLimit();
  const machine = await machineInfo();
  const load0 = await loadAverage();
  await using rig = new Rig();
  const storeUrl = await startPostgres(rig);
  const certs = await makeCerts(`${rig.root}/pki`);
  const client = rig.client(certs);
  const started = performance.now();
  progress(`replicas bench: ${REPLICAS} replicas × ${perReplica} links (fd limit ${fds.limit})`);
  for (let i = 0; i < REPLICAS; i++) {
    rig.replicas.push(
      await BenchRelay.start(`${rig.root}/replica-${i}`, certs, {
        env: { CW_RELAY_STORE: storeUrl },
        // this process registers the simulated nodes as a proxy would (bench/relay.ts)
        extra: ["--peer-ca", certs.ca, "--behind-proxy", "127.0.0.1"],
      }),
    );
  }
  rig.single = await BenchRelay.start(`${rig.root}/single`, certs);
  const replicas = rig.replicas as BenchRelay[];

  // memory first, on fresh replicas; echo and KV then run beside the idle links
  const links = await interruptible(() => measureLinks(rig, certs, client, perReplica));
  const echo = await interruptible(() =>
    measureEcho2(rig, certs, client, replicas[0], replicas[1])
  );
  const kv = await interruptible(() => measureKv(rig, certs, replicas));
  const failover = await interruptible(() => measureFailover(rig, client));

  const targets: Target[] = [
    {
      name: "echo p50 added by forwarding between replicas",
      value: `${fmtMs(echo.addedP50Ms)} (target ≤ ${TARGETS.forwardAddedP50Ms} ms)`,
      pass: echo.addedP50Ms <= TARGETS.forwardAddedP50Ms,
    },
    {
      name: `every node of a killed replica back (${failover.nodesMoved} nodes)`,
      value: `${failover.allBackSeconds.toFixed(2)} s (target ≤ ${TARGETS.failoverSeconds} s)`,
      pass: failover.allBackSeconds <= TARGETS.failoverSeconds,
    },
  ];
  const head =
    `cw replicas bench — ${new Date().toISOString()} — ${machine.cpu} ×${machine.cores}, ` +
    `load ${load0}`;
  const lines = [
    head,
    "",
    targetsTable(targets),
    "",
    table(
      ["replica", "links", "RSS before", "RSS with links", "per idle link"],
      links.perReplica.map(
        (r, i) => [
          String.fromCharCode(65 + i),
          String(r.links),
          `${(r.rssBeforeKiB / 1024).toFixed(1)} MiB`,
          `${(r.rssWithLinksKiB / 1024).toFixed(1)} MiB`,
          `${r.perLinkKiB.toFixed(1)} KiB`,
        ],
      ),
    ),
    `${perReplica * REPLICAS} links: registered in ${links.registerSeconds.toFixed(1)} s, ` +
    `linked in ${links.connectSeconds.toFixed(1)} s`,
    `failover: half of the killed replica's nodes back in ${
      failover.halfBackSeconds.toFixed(2)
    } s, ` +
    `all in ${failover.allBackSeconds.toFixed(2)} s; meanwhile CPU ` +
    `${failover.survivorsCpuSeconds.map((c) => c.toFixed(1)).join(" + ")} s in the surviving ` +
    `replicas, ${failover.simulatedNodesCpuSeconds.toFixed(1)} s in the simulated nodes (2 cores)`,
    "",
    table(["KV PUT+GET, 16 clients", "ops/s", "p50 pair", "p99 pair"], [
      [
        "3 replicas on PostgreSQL",
        (kv.cluster.pairsPerS * 2).toFixed(0),
        fmtMs(kv.cluster.p50Ms),
        fmtMs(kv.cluster.p99Ms),
      ],
      [
        "1 relay on Deno KV",
        (kv.single.pairsPerS * 2).toFixed(0),
        fmtMs(kv.single.p50Ms),
        fmtMs(kv.single.p99Ms),
      ],
    ]),
    "",
    table(["echo (cw attach dev-1:N)", "p50 per round", "p99 per round"], [
      [
        "replica holding the link",
        echo.direct.map((r) => fmtMs(r.p50Ms)).join(" / "),
        echo.direct.map((r) => fmtMs(r.p99Ms)).join(" / "),
      ],
      [
        "forwarded by another",
        echo.forwarded.map((r) => fmtMs(r.p50Ms)).join(" / "),
        echo.forwarded.map((r) => fmtMs(r.p99Ms)).join(" / "),
      ],
    ]),
    "",
    `(${((performance.now() - started) / 1000).toFixed(0)} s)`,
  ];
  console.log(lines.join("\n"));
  writeResults("replicas", { machine, perReplica, links, failover, kv, echo, targets });
}
