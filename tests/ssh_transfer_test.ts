/**
 * The SSH gateway as people use ssh: OpenSSH's own `sftp`, `scp` (SFTP mode
 * and legacy `-O`), `rsync -e ssh`, and `ssh -L` / `ssh -W` to a node, with
 * per-run keys, through a real relay to a real node.
 */
import assert from "node:assert/strict";
import { ADMIN_TOKEN, type RelayWithNode, relayWithNode } from "./relay_helpers.ts";
import { CwHome } from "./helpers.ts";

const MiB = 1024 * 1024;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(cmd: string, args: string[], opts: { stdin?: string; cwd?: string } = {}) {
  const env = Deno.env.toObject();
  delete env.SSH_AUTH_SOCK; // only the keys a test names
  const child = new Deno.Command(cmd, {
    args,
    cwd: opts.cwd,
    env,
    clearEnv: true,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(opts.stdin ?? "")).catch(() => {});
  await w.close().catch(() => {});
  const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
  const out = await child.output();
  clearTimeout(timer);
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) } as Run;
}

async function sha256(path: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return new Uint8Array(digest).toHex();
}

async function randomFile(path: string, bytes: number): Promise<void> {
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  const block = new Uint8Array(MiB);
  for (let left = bytes; left > 0; left -= block.byteLength) {
    for (let i = 0; i < block.byteLength; i += 65536) {
      crypto.getRandomValues(block.subarray(i, i + 65536));
    }
    await f.write(block.subarray(0, Math.min(left, block.byteLength)));
  }
  f.close();
}

/** A relay, node box-1 (forwarding to its loopback allowed by the node), a key, pinned host key. */
class Rig implements AsyncDisposable {
  node!: CwHome;
  relay!: RelayWithNode;
  dir!: string;
  key!: string;
  port!: number;
  knownHosts!: string;

  static async start(): Promise<Rig> {
    const r = new Rig();
    r.node = new CwHome();
    await Deno.mkdir(r.node.home, { recursive: true, mode: 0o700 });
    await Deno.writeTextFile(
      `${r.node.home}/config.json`,
      JSON.stringify({ forwarding: "loopback" }),
    );
    r.relay = await relayWithNode(r.node, "box-1");
    r.dir = await Deno.makeTempDir({ prefix: "cw-transfer-" });
    r.key = `${r.dir}/id_ed25519`;
    const kg = await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", r.key]);
    assert.equal(kg.code, 0, kg.stderr);
    await r.node.ok(["ssh-key", "add", `${r.key}.pub`]);
    const info = await r.api("GET", "/api/v1/info");
    r.port = info.ssh.port;
    r.knownHosts = `${r.dir}/known_hosts`;
    await Deno.writeTextFile(r.knownHosts, `[127.0.0.1]:${r.port} ${info.ssh.hostKey}\n`);
    return r;
  }

  async api(method: string, path: string, body?: unknown, token = ADMIN_TOKEN) {
    const res = await fetch(`${this.relay.relay.url}${path}`, {
      method,
      client: this.relay.client,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }

  /** Options every OpenSSH client here takes (then -p/-P PORT). */
  opts(key = this.key): string[] {
    return [
      "-F",
      "/dev/null",
      "-o",
      "BatchMode=yes",
      "-o",
      `UserKnownHostsFile=${this.knownHosts}`,
      "-o",
      "StrictHostKeyChecking=yes",
      "-o",
      "IdentitiesOnly=yes",
      "-o",
      "LogLevel=ERROR",
      "-o",
      "ConnectTimeout=10",
      "-i",
      key,
    ];
  }

  ssh(args: string[], stdin = "", key = this.key) {
    return run("ssh", [...this.opts(key), "-p", String(this.port), ...args], { stdin });
  }

  sftp(batch: string, key = this.key) {
    return run("sftp", [...this.opts(key), "-P", String(this.port), "-b", "-", "box-1@127.0.0.1"], {
      stdin: batch,
      cwd: this.dir,
    });
  }

  scp(args: string[]) {
    return run("scp", [...this.opts(), "-P", String(this.port), ...args], { cwd: this.dir });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.relay?.[Symbol.asyncDispose]();
    await this.node?.[Symbol.asyncDispose]();
    if (this.dir) await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/** A tree of files with modes, for -r copies. */
async function makeTree(root: string): Promise<void> {
  await Deno.mkdir(`${root}/a/b`, { recursive: true });
  await Deno.writeTextFile(`${root}/top.txt`, "top\n");
  await Deno.writeTextFile(`${root}/a/mid.sh`, "#!/bin/sh\necho mid\n", { mode: 0o755 });
  await randomFile(`${root}/a/b/blob.bin`, 3 * MiB + 17);
  await Deno.writeFile(`${root}/a/b/empty`, new Uint8Array(0));
}

async function sameTree(a: string, b: string, modes = true): Promise<void> {
  for (const rel of ["top.txt", "a/mid.sh", "a/b/blob.bin", "a/b/empty"]) {
    assert.equal(await sha256(`${b}/${rel}`), await sha256(`${a}/${rel}`), rel);
  }
  if (modes) {
    assert.equal((await Deno.stat(`${b}/a/mid.sh`)).mode! & 0o777, 0o755, "mode kept");
  }
}

Deno.test("ssh transfers: sftp (with resume), scp both modes and rsync, byte-exact, 50 MiB and a tree", async () => {
  await using rig = await Rig.start();
  const home = Deno.env.get("HOME") ?? "/root"; // the node's user: its home is where sftp starts
  const remote = `${home}/.cw-transfer-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await randomFile(`${rig.dir}/big.bin`, 50 * MiB);
    const big = await sha256(`${rig.dir}/big.bin`);
    await makeTree(`${rig.dir}/tree`);

    // sftp: put, get, a directory tree, and resumes (reput, reget)
    const put = await rig.sftp(`mkdir ${remote}\nput big.bin ${remote}/big.bin\npwd\n`);
    assert.equal(put.code, 0, put.stderr);
    assert.match(put.stdout, new RegExp(`Remote working directory: ${home}\\n`), "starts at home");
    assert.equal(await sha256(`${remote}/big.bin`), big);
    const get = await rig.sftp(`get ${remote}/big.bin got.bin\nput -r tree ${remote}/tree\n`);
    assert.equal(get.code, 0, get.stderr);
    assert.equal(await sha256(`${rig.dir}/got.bin`), big);
    await sameTree(`${rig.dir}/tree`, `${remote}/tree`, false);
    await Deno.truncate(`${rig.dir}/got.bin`, 20 * MiB + 3);
    const reget = await rig.sftp(`reget ${remote}/big.bin got.bin\n`);
    assert.equal(reget.code, 0, reget.stderr);
    assert.equal(await sha256(`${rig.dir}/got.bin`), big, "reget finished the file");
    await Deno.truncate(`${remote}/big.bin`, 7 * MiB);
    const reput = await rig.sftp(`reput big.bin ${remote}/big.bin\n`);
    assert.equal(reput.code, 0, reput.stderr);
    assert.equal(await sha256(`${remote}/big.bin`), big, "reput finished the file");
    // an error of the SFTP server is an error, not a crash
    const missing = await rig.sftp(`get ${remote}/no-such-file x\n`);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /not found|No such file/i);

    // scp: SFTP mode (the default) and the legacy protocol, files and -r, modes with -p
    for (const mode of [[], ["-O"]]) {
      const tag = mode.length ? "legacy" : "sftp";
      const up = await rig.scp([
        ...mode,
        "-p",
        "big.bin",
        `box-1@127.0.0.1:${remote}/scp-${tag}.bin`,
      ]);
      assert.equal(up.code, 0, `${tag}: ${up.stderr}`);
      assert.equal(await sha256(`${remote}/scp-${tag}.bin`), big, tag);
      const down = await rig.scp([
        ...mode,
        `box-1@127.0.0.1:${remote}/scp-${tag}.bin`,
        `back-${tag}.bin`,
      ]);
      assert.equal(down.code, 0, `${tag}: ${down.stderr}`);
      assert.equal(await sha256(`${rig.dir}/back-${tag}.bin`), big, tag);
      const tree = await rig.scp([
        ...mode,
        "-r",
        "-p",
        "tree",
        `box-1@127.0.0.1:${remote}/scp-tree-${tag}`,
      ]);
      assert.equal(tree.code, 0, `${tag}: ${tree.stderr}`);
      await sameTree(`${rig.dir}/tree`, `${remote}/scp-tree-${tag}`);
    }

    // rsync over ssh: a tree up, then back, then an update of one file only
    const e = ["ssh", ...rig.opts(), "-p", String(rig.port)].join(" ");
    const up = await run("rsync", ["-a", "-e", e, "tree/", `box-1@127.0.0.1:${remote}/rsync/`], {
      cwd: rig.dir,
    });
    assert.equal(up.code, 0, up.stderr);
    await sameTree(`${rig.dir}/tree`, `${remote}/rsync`);
    const back = await run("rsync", [
      "-a",
      "-e",
      e,
      `box-1@127.0.0.1:${remote}/rsync/`,
      "rsync-back/",
    ], {
      cwd: rig.dir,
    });
    assert.equal(back.code, 0, back.stderr);
    await sameTree(`${rig.dir}/tree`, `${rig.dir}/rsync-back`);

    // every SFTP session is audited
    const audit = await (await fetch(`${rig.relay.relay.url}/api/v1/audit`, {
      client: rig.relay.client,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    })).text();
    const entries = audit.trim().split("\n").map((l) => JSON.parse(l));
    const sftpEnds = entries.filter((x) => x.event === "ssh_end" && x.subsystem === "sftp");
    assert.ok(sftpEnds.length >= 5, "an ssh_end per SFTP session");
    assert.ok(sftpEnds.some((x) => x.bytesIn > 50 * MiB), "with the bytes it carried");
  } finally {
    await Deno.remove(remote, { recursive: true }).catch(() => {});
  }
});

Deno.test("ssh -L and -W: off until the network and the node allow it; read-only users neither write nor forward", async () => {
  await using rig = await Rig.start();
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => new Response(`page for ${new URL(req.url).pathname}\n`),
  );
  const web = server.addr.port;
  const request = "GET /hello HTTP/1.0\r\nHost: x\r\n\r\n";

  // off by default: the relay's network setting refuses it
  const off = await rig.ssh(["-W", `127.0.0.1:${web}`, "box-1@127.0.0.1"], request);
  assert.equal(off.code, 255);
  assert.match(off.stderr, /open failed|prohibited|forwarding failed/i);

  await rig.api("PUT", "/api/v1/networks/default", { allowForwarding: true });
  const on = await rig.ssh(["-W", `127.0.0.1:${web}`, "box-1@127.0.0.1"], request);
  assert.equal(on.code, 0, on.stderr);
  assert.match(on.stdout, /^HTTP\/1\.[01] 200/);
  assert.match(on.stdout, /page for \/hello/);

  // ssh -L: curl through a forward (a unix socket on this side: no port to race for)
  const sock = `${rig.dir}/fwd.sock`;
  const ssh = new Deno.Command("ssh", {
    args: [
      ...rig.opts(),
      "-p",
      String(rig.port),
      "-N",
      "-o",
      "ExitOnForwardFailure=yes",
      "-L",
      `${sock}:127.0.0.1:${web}`,
      "box-1@127.0.0.1",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  try {
    for (let i = 0; i < 200 && !(await Deno.stat(sock).then(() => true, () => false)); i++) {
      await new Promise((r) => setTimeout(r, 25));
    }
    for (let i = 0; i < 3; i++) {
      const curl = await run("curl", ["-sS", "--unix-socket", sock, `http://x/n${i}`]);
      assert.equal(curl.code, 0, curl.stderr);
      assert.equal(curl.stdout, `page for /n${i}\n`);
    }
  } finally {
    ssh.kill("SIGTERM");
    await ssh.status;
    await ssh.stderr.cancel().catch(() => {});
  }

  // remote forwarding stays refused, clearly
  const remote = await rig.ssh(
    ["-N", "-o", "ExitOnForwardFailure=yes", "-R", `0:127.0.0.1:${web}`, "box-1@127.0.0.1"],
  );
  assert.equal(remote.code, 255);
  assert.match(remote.stderr, /remote port forwarding failed/i);

  // the node allows its loopback only
  const far = await rig.ssh(["-W", "192.0.2.1:80", "box-1@127.0.0.1"], request);
  assert.equal(far.code, 255);
  assert.match(far.stderr, /open failed|prohibited|forwarding failed/i);
  // a closed port: refused by the node, cleanly
  const closed = await rig.ssh(["-W", "127.0.0.1:1", "box-1@127.0.0.1"], request);
  assert.equal(closed.code, 255);

  // a read-only user: reads by SFTP, no writes, no forwarding
  const user = await rig.api("POST", "/api/v1/users", { name: "viewer", readOnly: true });
  const home = Deno.env.get("HOME") ?? "/root";
  const probe = `${home}/.cw-ro-${crypto.randomUUID().slice(0, 8)}`;
  await Deno.writeTextFile(probe, "readable\n");
  try {
    // a password login with the read-only user's token is that principal
    const ro = await runAsk(rig, user.token, `get ${probe} ro-copy\nput ro-copy ${probe}.new\n`);
    assert.notEqual(ro.code, 0, "the write fails");
    assert.equal(await Deno.readTextFile(`${rig.dir}/ro-copy`), "readable\n", "the read worked");
    assert.match(ro.stderr, /Permission denied|denied/i);
    assert.equal(await Deno.stat(`${probe}.new`).then(() => true, () => false), false);
    const roFwd = await runSshAsk(rig, user.token, ["-W", `127.0.0.1:${web}`]);
    assert.equal(roFwd.code, 255);
  } finally {
    await Deno.remove(probe).catch(() => {});
  }

  // audited: forwards and refusals
  const audit = await (await fetch(`${rig.relay.relay.url}/api/v1/audit`, {
    client: rig.relay.client,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
  })).text();
  const events = audit.trim().split("\n").map((l) => JSON.parse(l));
  assert.ok(events.some((x) => x.event === "forward_start" && x.to === `127.0.0.1:${web}`));
  assert.ok(events.some((x) => x.event === "forward_end" && x.bytesOut > 0));
  assert.ok(events.some((x) => x.event === "forward_refused" && /network/.test(x.reason)));
  assert.ok(events.some((x) => x.event === "forward_refused" && /loopback/.test(x.reason)));
  assert.ok(events.some((x) => x.event === "forward_refused" && /read-only/.test(x.reason)));
  assert.ok(events.some((x) => x.event === "network_set" && x.allowForwarding === true));
});

/** `sftp -b -` logging in with a password (the token) through SSH_ASKPASS, never argv. */
async function runAsk(rig: Rig, token: string, batch: string): Promise<Run> {
  return await withAskpass(
    rig,
    token,
    (opts) =>
      run("sftp", [...opts, "-P", String(rig.port), "-b", "-", "box-1@127.0.0.1"], {
        stdin: batch,
        cwd: rig.dir,
      }),
  );
}

async function runSshAsk(rig: Rig, token: string, args: string[]): Promise<Run> {
  return await withAskpass(
    rig,
    token,
    (opts) =>
      run("ssh", [...opts, "-p", String(rig.port), ...args, "box-1@127.0.0.1"], {
        stdin: "GET / HTTP/1.0\r\n\r\n",
      }),
  );
}

async function withAskpass(
  rig: Rig,
  token: string,
  fn: (opts: string[]) => Promise<Run>,
): Promise<Run> {
  const askpass = `${rig.dir}/askpass`;
  await Deno.writeTextFile(askpass, `#!/bin/sh\ncat ${rig.dir}/token\n`, { mode: 0o700 });
  await Deno.writeTextFile(`${rig.dir}/token`, `${token}\n`, { mode: 0o600 });
  const prev = { a: Deno.env.get("SSH_ASKPASS"), r: Deno.env.get("SSH_ASKPASS_REQUIRE") };
  Deno.env.set("SSH_ASKPASS", askpass);
  Deno.env.set("SSH_ASKPASS_REQUIRE", "force");
  try {
    return await fn([
      "-F",
      "/dev/null",
      // first: sftp -b asks ssh for batch mode, which would skip the password
      "-o",
      "BatchMode=no",
      "-o",
      `UserKnownHostsFile=${rig.knownHosts}`,
      "-o",
      "StrictHostKeyChecking=yes",
      "-o",
      "PubkeyAuthentication=no",
      "-o",
      "PreferredAuthentications=password",
      "-o",
      "NumberOfPasswordPrompts=1",
      "-o",
      "LogLevel=ERROR",
    ]);
  } finally {
    if (prev.a === undefined) Deno.env.delete("SSH_ASKPASS");
    else Deno.env.set("SSH_ASKPASS", prev.a);
    if (prev.r === undefined) Deno.env.delete("SSH_ASKPASS_REQUIRE");
    else Deno.env.set("SSH_ASKPASS_REQUIRE", prev.r);
  }
}

/** RSS of a process in KiB (ps: /proc/PID needs more than the tests' permissions). */
async function rssKiB(pid: number): Promise<number> {
  const out = await new Deno.Command("ps", { args: ["-o", "rss=", "-p", String(pid)] }).output();
  return Number(new TextDecoder().decode(out.stdout).trim());
}

/** One SFTP packet: length, type, then the body. */
function packet(type: number, ...parts: Uint8Array[]): Uint8Array {
  const len = 1 + parts.reduce((n, p) => n + p.byteLength, 0);
  const out = new Uint8Array(4 + len);
  new DataView(out.buffer).setUint32(0, len);
  out[4] = type;
  let at = 5;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}
const u32 = (n: number) => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
};
const u64 = (n: number) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
};
const sshString = (s: Uint8Array) => new Uint8Array([...u32(s.byteLength), ...s]);

Deno.test("ssh sftp: a client that asks for 64 MiB and stops reading holds relay and node memory bounded", async () => {
  await using rig = await Rig.start();
  const file = `${rig.dir}/big.bin`;
  await randomFile(file, 64 * MiB);
  const relayPid = rig.relay.relay.pid;
  const nodePid = rig.node.nodePid()!;
  // one SFTP session first: the code paths it warms are not what is measured
  assert.equal((await rig.sftp(`get ${file} warm.bin\n`)).code, 0);
  const before = { relay: await rssKiB(relayPid), node: await rssKiB(nodePid) };
  // INIT, OPEN (sftp-server's first handle is the 4 bytes of index 0), then 2,048 READs of 32 KiB
  const reads: Uint8Array[] = [];
  for (let i = 0; i < 2048; i++) {
    reads.push(packet(5, u32(10 + i), sshString(u32(0)), u64(i * 32 * 1024), u32(32 * 1024)));
  }
  const requests = [
    packet(1, u32(3)),
    packet(3, u32(2), sshString(new TextEncoder().encode(file)), u32(1), u32(0)),
    ...reads,
  ];
  const env = Deno.env.toObject();
  delete env.SSH_AUTH_SOCK;
  const ssh = new Deno.Command("ssh", {
    args: [...rig.opts(), "-p", String(rig.port), "-s", "box-1@127.0.0.1", "sftp"],
    env,
    clearEnv: true,
    stdin: "piped",
    stdout: "piped", // never read: the stalled reader
    stderr: "null",
  }).spawn();
  try {
    const w = ssh.stdin.getWriter();
    for (const r of requests) await w.write(r);
    // the answers pile up wherever the path lets them; sample while they would
    let peak = { relay: 0, node: 0 };
    for (let i = 0; i < 12; i++) {
      await new Promise((r) => setTimeout(r, 250));
      peak = {
        relay: Math.max(peak.relay, await rssKiB(relayPid)),
        node: Math.max(peak.node, await rssKiB(nodePid)),
      };
    }
    const growth = {
      relay: (peak.relay - before.relay) / 1024,
      node: (peak.node - before.node) / 1024,
    };
    console.log(
      `64 MiB asked, nothing read: relay +${growth.relay.toFixed(1)} MiB, node +${
        growth.node.toFixed(1)
      } MiB`,
    );
    // holding the answers would be 64 MiB; the windows on the way hold a few hundred KiB
    assert.ok(growth.relay < 16, `relay grew ${growth.relay.toFixed(1)} MiB`);
    assert.ok(growth.node < 16, `node grew ${growth.node.toFixed(1)} MiB`);
    await w.close().catch(() => {});
  } finally {
    ssh.kill("SIGKILL");
    await ssh.status;
    await ssh.stdout.cancel().catch(() => {});
  }
  // the node ends its sftp-server with the session
  await waitForGone(nodePid);
});

/** Waits until the node has no sftp-server child left. */
async function waitForGone(nodePid: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const out = await new Deno.Command("pgrep", {
      args: ["-P", String(nodePid), "-f", "sftp-server"],
    })
      .output();
    if (new TextDecoder().decode(out.stdout).trim() === "") return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error("the node's sftp-server outlived its session");
}
