/**
 * Transfer benchmark (issue 15): through the relay's SSH gateway to a real
 * node, beside OpenSSH's sshd on loopback, with the same OpenSSH clients in
 * the same run: `sftp` download and upload of 50 MiB; `ssh -L` throughput (curl
 * of a 50 MiB page) and added latency (p50 of 200 small requests over one
 * kept-alive connection) beside curl direct. Writes `bench-results/transfer.json`.
 */
import { makeCerts } from "../../tests/relay_helpers.ts";
import {
  fmtMs,
  loadAverage,
  machineInfo,
  progress,
  table,
  type Target,
  targetsTable,
  writeResults,
} from "./common.ts";
import { MIB, percentile } from "./measure.ts";
import { ADMIN_TOKEN } from "./relay_process.ts";
import { type Endpoint, ensureSshd, run, setUpRelay, SshRig, startSshd } from "./ssh.ts";

const FILE_BYTES = 50 * MIB;
const ROUNDS = 3;
const SMALL_REQUESTS = 200;
const TARGETS = { sftpOfSshd: 0.5 };

type Path = "sshd" | "cw";

export async function runTransferBench(): Promise<void> {
  const machine = await machineInfo();
  const load0 = await loadAverage();
  await using rig = new SshRig();
  const certs = await makeCerts(`${rig.root}/certs`);
  const kg = await run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", rig.key]);
  if (kg.code !== 0) throw new Error(`ssh-keygen: ${kg.stderr}`);
  const big = new Uint8Array(FILE_BYTES);
  for (let i = 0; i < big.byteLength; i += 65536) {
    crypto.getRandomValues(big.subarray(i, i + 65536));
  }
  await Deno.writeFile(`${rig.root}/big.bin`, big);
  // the node may forward to its loopback; its network allows it (below)
  await Deno.mkdir(rig.home.home, { recursive: true, mode: 0o700 });
  await Deno.writeTextFile(
    `${rig.home.home}/config.json`,
    JSON.stringify({ forwarding: "loopback" }),
  );
  const servers: Partial<Record<Path, Endpoint>> = {};
  const skipped = await ensureSshd();
  if (!skipped) servers.sshd = await startSshd(rig);
  servers.cw = await setUpRelay(rig, certs);
  const http = Deno.createHttpClient({ caCerts: [Deno.readTextFileSync(certs.ca)] });
  const put = await fetch(`${rig.relay!.url}/api/v1/networks/default`, {
    method: "PUT",
    client: http,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ allowForwarding: true }),
  });
  if (!put.ok) throw new Error(`network settings: ${put.status} ${await put.text()}`);
  http.close();

  // a web server on the node's loopback (this machine): a 50 MiB page and a small one
  await using web = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => new URL(req.url).pathname === "/big" ? new Response(big) : new Response("ok\n"),
  );
  const webPort = web.addr.port;

  const opts = (to: Endpoint) => [
    "-F",
    "/dev/null",
    "-o",
    "BatchMode=yes",
    "-o",
    `UserKnownHostsFile=${rig.root}/known_hosts`,
    "-o",
    "StrictHostKeyChecking=accept-new",
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    "LogLevel=ERROR",
    "-i",
    rig.key,
    "-P",
    String(to.port),
  ];
  const sftp = async (to: Endpoint, batch: string) => {
    const t0 = performance.now();
    const child = new Deno.Command("sftp", {
      args: [...opts(to), "-b", "-", `${to.user}@127.0.0.1`],
      cwd: rig.root,
      stdin: "piped",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(batch));
    await w.close();
    const out = await child.output();
    if (!out.success) throw new Error(`sftp: ${new TextDecoder().decode(out.stderr)}`);
    return performance.now() - t0;
  };
  const paths = Object.keys(servers) as Path[];
  const rate = (ms: number) => FILE_BYTES / MIB / (ms / 1000);
  const sftpDown: Record<string, number[]> = { sshd: [], cw: [] };
  const sftpUp: Record<string, number[]> = { sshd: [], cw: [] };
  for (let r = 0; r < ROUNDS; r++) {
    for (const p of paths) {
      const to = servers[p]!;
      sftpDown[p].push(rate(await sftp(to, `get ${rig.root}/big.bin ${rig.root}/down-${p}.bin\n`)));
      sftpUp[p].push(rate(await sftp(to, `put ${rig.root}/big.bin ${rig.root}/up-${p}.bin\n`)));
      progress(
        `sftp ${p} round ${r + 1}: down ${sftpDown[p].at(-1)!.toFixed(1)} MiB/s, up ${
          sftpUp[p].at(-1)!.toFixed(1)
        } MiB/s`,
      );
    }
  }

  // ssh -L to a unix socket here (no port to race for), curl through it
  const forward = async <T>(to: Endpoint, fn: (sock: string) => Promise<T>) => {
    const sock = `${rig.root}/fwd-${crypto.randomUUID().slice(0, 6)}.sock`;
    const child = new Deno.Command("ssh", {
      args: [
        ...opts(to).map((a) => a === "-P" ? "-p" : a),
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-L",
        `${sock}:127.0.0.1:${webPort}`,
        `${to.user}@127.0.0.1`,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      for (let i = 0; i < 400 && !(await Deno.stat(sock).then(() => true, () => false)); i++) {
        await new Promise((r) => setTimeout(r, 25));
      }
      return await fn(sock);
    } finally {
      child.kill("SIGTERM");
      await child.status;
    }
  };
  const curlBig = async (sock: string | null) => {
    const r = await run([
      "curl",
      "-sS",
      "-o",
      "/dev/null",
      "-w",
      "%{time_total} %{size_download}",
      ...(sock ? ["--unix-socket", sock, "http://x/big"] : [`http://127.0.0.1:${webPort}/big`]),
    ]);
    const [secs, size] = r.stdout.split(" ").map(Number);
    if (size !== FILE_BYTES) throw new Error(`curl got ${size} bytes: ${r.stderr}`);
    return FILE_BYTES / MIB / secs;
  };
  /** p50 of small requests over one kept-alive connection (HTTP/1.1), after the first. */
  const small = async (sock: string | null) => {
    const conn = sock
      ? await Deno.connect({ transport: "unix", path: sock })
      : await Deno.connect({ hostname: "127.0.0.1", port: webPort });
    const req = new TextEncoder().encode("GET /small HTTP/1.1\r\nHost: x\r\n\r\n");
    const buf = new Uint8Array(4096);
    const times: number[] = [];
    try {
      for (let i = 0; i <= SMALL_REQUESTS; i++) {
        const t = performance.now();
        await conn.write(req);
        let text = "";
        while (!text.endsWith("ok\n")) {
          const n = await conn.read(buf);
          if (n === null) throw new Error("the connection closed");
          text += new TextDecoder().decode(buf.subarray(0, n));
        }
        if (i > 0) times.push(performance.now() - t);
      }
    } finally {
      conn.close();
    }
    return percentile(times, 50);
  };
  const thr: Record<string, number[]> = { direct: [], sshd: [], cw: [] };
  const lat: Record<string, number[]> = { direct: [], sshd: [], cw: [] };
  for (let r = 0; r < ROUNDS; r++) {
    thr.direct.push(await curlBig(null));
    lat.direct.push(await small(null));
    for (const p of paths) {
      await forward(servers[p]!, async (sock) => {
        thr[p].push(await curlBig(sock));
        lat[p].push(await small(sock));
      });
    }
    progress(
      `-L round ${r + 1}: ${
        ["direct", ...paths].map((p) =>
          `${p} ${thr[p].at(-1)!.toFixed(0)} MiB/s, p50 ${fmtMs(lat[p].at(-1)!)}`
        ).join("; ")
      }`,
    );
  }
  const med = (xs: number[]) => percentile(xs, 50);
  const targets: Target[] = servers.sshd
    ? [
      {
        name: "sftp download, share of sshd's rate",
        value: `${(med(sftpDown.cw) / med(sftpDown.sshd) * 100).toFixed(0)} % (target ≥ ${
          TARGETS.sftpOfSshd * 100
        } %)`,
        pass: med(sftpDown.cw) >= TARGETS.sftpOfSshd * med(sftpDown.sshd),
      },
      {
        name: "sftp upload, share of sshd's rate",
        value: `${(med(sftpUp.cw) / med(sftpUp.sshd) * 100).toFixed(0)} % (target ≥ ${
          TARGETS.sftpOfSshd * 100
        } %)`,
        pass: med(sftpUp.cw) >= TARGETS.sftpOfSshd * med(sftpUp.sshd),
      },
    ]
    : [];
  const mibs = (xs: number[]) => xs.map((x) => x.toFixed(1)).join(" / ");
  console.log([
    `cw transfer bench — ${
      new Date().toISOString()
    } — ${machine.cpu} ×${machine.cores}, load ${load0}` +
    (skipped ? ` (sshd skipped: ${skipped})` : ""),
    "",
    targetsTable(targets),
    "",
    table(["50 MiB, MiB/s per round", "OpenSSH sshd", "cw relay → node"], [
      ["sftp get", mibs(sftpDown.sshd), mibs(sftpDown.cw)],
      ["sftp put", mibs(sftpUp.sshd), mibs(sftpUp.cw)],
      ["curl through ssh -L", mibs(thr.sshd), mibs(thr.cw)],
    ]),
    `curl direct (no forward): ${mibs(thr.direct)} MiB/s`,
    "",
    table(["small request p50 (kept-alive)", "direct", "sshd -L", "cw -L"], [
      [
        "per round",
        lat.direct.map(fmtMs).join(" / "),
        lat.sshd.map(fmtMs).join(" / "),
        lat.cw.map(fmtMs).join(" / "),
      ],
    ]),
  ].join("\n"));
  writeResults("transfer", {
    machine,
    sftpDown,
    sftpUp,
    throughput: thr,
    latency: lat,
    targets,
    skipped,
  });
}
