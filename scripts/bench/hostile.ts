/**
 * Hostile benchmark (issue 8): how the relay and a node hold up against
 * idle-connection floods at this machine's descriptor limit (20000 here).
 * For each listener — the relay's HTTPS and SSH ports and the node's direct
 * WebSocket port — it opens idle TCP connections from many loopback
 * addresses (127.0.x.y) until the server holds no more, and reports how many
 * it held, the latency of a legitimate request from 127.0.0.1 while they are
 * held (`/healthz`, `cw list dev-1`, the SSH banner, `cw --server direct list`)
 * beside the same request before the flood, and the relay's and the node's
 * RSS before, under and after each flood. Prints PASS/MISS per target and
 * writes `bench-results/hostile.json`.
 */
import net from "node:net";
import { CwHome } from "../../tests/helpers.ts";
import { makeCerts } from "../../tests/relay_helpers.ts";
import {
  fmtMs,
  interruptible,
  loadAverage,
  machineInfo,
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
} from "./common.ts";
import { ADMIN_TOKEN, BenchRelay, openFileLimit } from "./relay_process.ts";

const NODE = "dev-1";
/** Connections tried per flood (the server's caps decide how many it holds). */
const FLOOD_CONNECTIONS = 9000;
/** Connections per source address (above every per-address cap: most are refused). */
const PER_ADDRESS = 40;
/** Legitimate requests timed before and during each flood. */
const PROBES = 5;

const TARGETS = {
  deaths: 0,
  growthKiB: 64 * 1024,
  probeMs: 1000,
};

interface FloodResult {
  listener: string;
  tried: number;
  held: number;
  probeBeforeMs: number[];
  probeDuringMs: number[];
  relayKiB: { before: number; under: number; after: number };
  nodeKiB: { before: number; under: number; after: number };
}

/**
 * Connections the server holds on `port`, as the kernel sees them (`ss`): a
 * client cannot tell a held connection from one waiting in the accept queue.
 */
async function establishedOn(port: number): Promise<number> {
  const out = await output("ss", ["-Htn", "state", "established", `( sport = :${port} )`]);
  return out === "?" ? -1 : out.split("\n").filter((l) => l.trim()).length;
}

/** Opens idle connections from 127.0.x.y. */
async function flood(port: number, count: number): Promise<{ close(): void }> {
  const sockets: net.Socket[] = [];
  const addresses = Math.ceil(count / PER_ADDRESS);
  const one = (local: string) =>
    new Promise<void>((resolve) => {
      const s = net.connect({ host: "127.0.0.1", port, localAddress: local });
      s.on("connect", () => resolve());
      s.on("error", () => resolve());
      sockets.push(s);
    });
  // 64 addresses at a time, their connections one after another
  for (let a = 0; a < addresses; a += 64) {
    await Promise.all(
      Array.from({ length: Math.min(64, addresses - a) }, async (_, i) => {
        const n = a + i + 2;
        const local = `127.0.${n >> 8}.${n & 255 || 1}`;
        for (let k = 0; k < PER_ADDRESS; k++) await one(local);
      }),
    );
  }
  // refused ones are closed at once; a stale handshake gives way after a second
  await sleep(1500);
  return { close: () => sockets.forEach((s) => s.destroy()) };
}

async function timeProbe(probe: () => Promise<void>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < PROBES; i++) {
    const t0 = performance.now();
    await withTimeout(probe(), 10_000, "a legitimate request");
    out.push(performance.now() - t0);
  }
  return out;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function sshBanner(port: number): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const n = await conn.read(new Uint8Array(256));
    if (!n) throw new Error("no SSH banner");
  } finally {
    conn.close();
  }
}

function alive(pid: number): boolean {
  try {
    Deno.kill(pid, "SIGCONT");
    return true;
  } catch {
    return false;
  }
}

/** Runs the hostile part of the report. */
export async function runHostileBench(): Promise<void> {
  const started = performance.now();
  const loadAtStart = await loadAverage();
  const root = Deno.makeTempDirSync({ prefix: "cw-bench-hostile-" });
  await using home = new CwHome();
  let relay: BenchRelay | null = null;
  try {
    const results = await interruptible(async () => {
      const certs = await makeCerts(`${root}/certs`);
      relay = await BenchRelay.start(`${root}/relay`, certs);
      const client = Deno.createHttpClient({ caCerts: [Deno.readTextFileSync(certs.ca)] });
      const api = (path: string, init: RequestInit = {}) =>
        fetch(`${relay!.url}${path}`, {
          client,
          ...init,
          headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...(init.headers ?? {}) },
          signal: AbortSignal.timeout(10_000),
        });
      // the node also serves its direct WebSocket port
      Deno.mkdirSync(home.home, { recursive: true, mode: 0o700 });
      Deno.writeTextFileSync(`${home.home}/config.json`, JSON.stringify({ listen: "127.0.0.1:0" }));
      const inv = await (await api("/api/v1/invites", {
        method: "POST",
        body: JSON.stringify({ uses: 1 }),
        headers: { "content-type": "application/json" },
      })).json();
      await home.ok([
        "setup",
        "--relay-url",
        relay.url,
        "--invite-file",
        await (async () => {
          const f = `${root}/invite`;
          await Deno.writeTextFile(f, inv.token, { mode: 0o600 });
          return f;
        })(),
        "--name",
        NODE,
        "--ca-cert",
        certs.ca,
      ]);
      await pollUntil(
        `${NODE} online`,
        async () => {
          const { nodes } = await (await api("/api/v1/nodes")).json();
          return nodes.some((n: { name: string; online: boolean }) => n.name === NODE && n.online);
        },
        15_000,
        50,
      );
      const nodePid = home.nodePid()!;
      const log = Deno.readTextFileSync(`${home.home}/node.log`);
      const wsUrl = [...log.matchAll(/serving the node protocol on (\S+)/g)].at(-1)![1];
      await home.ok(["node", "token"]); // made on first use
      await home.ok(["server", "add", "direct", wsUrl, "--token-file", `${home.home}/node.token`]);
      const sshPort = (await (await api("/api/v1/info")).json()).ssh.port as number;
      const limits = {
        relay: await openFileLimit(relay.pid),
        node: await openFileLimit(nodePid),
      };
      progress(`relay pid ${relay.pid} nofile ${limits.relay.soft}; node pid ${nodePid}`);

      const healthz = async () => {
        const r = await fetch(`${relay!.url}/healthz`, { client });
        await r.body?.cancel();
        if (r.status !== 200) throw new Error(`/healthz ${r.status}`);
      };
      const listDev1 = async () => void await home.ok(["list", NODE]);
      const listDirect = async () => void await home.ok(["--server", "direct", "list"]);
      const floods: [string, number, () => Promise<void>][] = [
        ["relay https (/healthz)", relay.port, healthz],
        ["relay https (cw list dev-1)", relay.port, listDev1],
        ["relay ssh (banner)", sshPort, () => sshBanner(sshPort)],
        ["node listen (cw --server list)", Number(new URL(wsUrl).port), listDirect],
      ];
      const out: FloodResult[] = [];
      for (const [listener, port, probe] of floods) {
        progress(`flooding ${listener} with ${FLOOD_CONNECTIONS} idle connections`);
        const probeBeforeMs = await timeProbe(probe);
        const before = { relay: await rssKiB(relay.pid), node: await rssKiB(nodePid) };
        const f = await flood(port, FLOOD_CONNECTIONS);
        const held = await establishedOn(port);
        const probeDuringMs = await timeProbe(probe);
        const under = { relay: await rssKiB(relay.pid), node: await rssKiB(nodePid) };
        f.close();
        await sleep(2000);
        const after = { relay: await rssKiB(relay.pid), node: await rssKiB(nodePid) };
        out.push({
          listener,
          tried: FLOOD_CONNECTIONS,
          held,
          probeBeforeMs,
          probeDuringMs,
          relayKiB: { before: before.relay, under: under.relay, after: after.relay },
          nodeKiB: { before: before.node, under: under.node, after: after.node },
        });
      }
      client.close();
      return {
        floods: out,
        limits,
        deaths: (alive(relay.pid) ? 0 : 1) + (alive(nodePid) ? 0 : 1),
      };
    });
    const loadAtEnd = await loadAverage();
    const machine = { ...await machineInfo(), loadAtStart, loadAtEnd };
    const mib = (k: number) => `${(k / 1024).toFixed(1)}`;
    const rows = results.floods.map((r) => [
      r.listener,
      `${r.held}/${r.tried}`,
      fmtMs(median(r.probeBeforeMs)),
      fmtMs(median(r.probeDuringMs)),
      `${mib(r.relayKiB.before)} → ${mib(r.relayKiB.under)} → ${mib(r.relayKiB.after)}`,
      `${mib(r.nodeKiB.before)} → ${mib(r.nodeKiB.under)} → ${mib(r.nodeKiB.after)}`,
    ]);
    const worstGrowth = Math.max(
      ...results.floods.flatMap((r) => [
        r.relayKiB.under - r.relayKiB.before,
        r.nodeKiB.under - r.nodeKiB.before,
      ]),
    );
    const worstProbe = Math.max(...results.floods.map((r) => Math.max(...r.probeDuringMs)));
    const targets: Target[] = [
      {
        name: "process deaths",
        value: String(results.deaths),
        pass: results.deaths === TARGETS.deaths,
      },
      {
        name: "memory growth under a flood ≤ 64 MiB",
        value: `${(worstGrowth / 1024).toFixed(1)} MiB (worst)`,
        pass: worstGrowth <= TARGETS.growthKiB,
      },
      {
        name: "legitimate request during a flood ≤ 1 s",
        value: `${fmtMs(worstProbe)} (slowest of ${PROBES} per flood)`,
        pass: worstProbe <= TARGETS.probeMs,
      },
    ];
    console.log(
      `cw hostile benchmark — ${machine.cpu}, ${machine.cores} cores, load ${loadAtStart} at ` +
        `start, ${loadAtEnd} at end; relay nofile ${results.limits.relay.soft}, node nofile ` +
        `${results.limits.node.soft}; idle floods from ${
          Math.ceil(FLOOD_CONNECTIONS / PER_ADDRESS)
        } loopback addresses\n`,
    );
    console.log(
      table(
        [
          "listener (probe)",
          "held/tried",
          "probe before",
          "probe during",
          "relay RSS MiB before → under → after",
          "node RSS MiB",
        ],
        rows,
      ),
    );
    console.log("\n" + targetsTable(targets));
    const seconds = (performance.now() - started) / 1000;
    const file = writeResults("hostile", {
      generatedAt: new Date().toISOString(),
      seconds,
      machine,
      settings: { floodConnections: FLOOD_CONNECTIONS, perAddress: PER_ADDRESS, probes: PROBES },
      ...results,
      targets,
    });
    console.log(`\nWrote ${file} (${seconds.toFixed(0)} s)`);
  } finally {
    await (relay as BenchRelay | null)?.stop();
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
}
