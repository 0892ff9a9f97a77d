/**
 * Relay replicas on one PostgreSQL (relay/cluster.ts), end to end: real
 * `cw relay` processes on loopback with TLS, a real node, the real CLI, the
 * real `ssh` client, a private PostgreSQL (tests/postgres.ts).
 */
import assert from "node:assert/strict";
import { dropPgSchema } from "../relay/store_pg.ts";
import { CW_SHELL, CwHome, shellQuote, Tmux, waitFor } from "./helpers.ts";
import { testPostgres, testSchema, withSchema } from "./postgres.ts";
import {
  ADMIN_TOKEN,
  caClient,
  invite,
  makeCerts,
  RelayProcess,
  type TestCerts,
  waitOnline,
} from "./relay_helpers.ts";

const pg = await testPostgres();
const SKIP = "url" in pg ? null : pg.skip;

/** A test that needs PostgreSQL: registered as ignored, with the reason, when none can start. */
function replicasTest(name: string, fn: () => Promise<void>): void {
  Deno.test({
    name: SKIP ? `replicas: SKIPPED (${SKIP})` : `replicas: ${name}`,
    ignore: SKIP !== null,
    fn,
  });
}

/** Replicas on one fresh schema; everything stopped and dropped on dispose. */
class Replicas implements AsyncDisposable {
  relays: RelayProcess[] = [];
  client!: Deno.HttpClient;
  certs!: TestCerts;
  storeUrl!: string;
  root!: string;

  static async start(n: number): Promise<Replicas> {
    const r = new Replicas();
    r.root = await Deno.makeTempDir({ prefix: "cw-replicas-" });
    r.storeUrl = withSchema((pg as { url: string }).url, testSchema(r.root));
    r.certs = await makeCerts(`${r.root}/pki`);
    r.client = caClient(r.certs);
    try {
      for (let i = 0; i < n; i++) r.relays.push(await r.#start(i));
    } catch (err) {
      await r[Symbol.asyncDispose]();
      throw err;
    }
    return r;
  }

  /** Starts replica `i` (again, after a kill: on the same ports). */
  async #start(i: number, ports?: { https: number; ssh: number }): Promise<RelayProcess> {
    return await RelayProcess.start(`${this.root}/relay-${i}`, this.certs, {
      port: ports?.https,
      // the URL carries a password: in the environment, never in argv
      env: { CW_RELAY_STORE: this.storeUrl },
      extra: [
        "--peer-ca",
        this.certs.ca,
        "--ssh-listen",
        `127.0.0.1:${ports?.ssh ?? 0}`,
      ],
    });
  }

  async api(i: number, method: string, path: string, body?: unknown, token = ADMIN_TOKEN) {
    const res = await fetch(`${this.relays[i].url}${path}`, {
      method,
      client: this.client,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : null };
  }

  async sshPort(i: number): Promise<number> {
    return (await this.api(i, "GET", "/api/v1/info")).json.ssh.port;
  }

  /** A laptop: a user logged in to replica `i`. */
  async laptop(i: number, name: string, readOnly = false): Promise<CwHome> {
    const made = await this.api(i, "POST", "/api/v1/users", { name, readOnly });
    assert.equal(made.status, 201, JSON.stringify(made.json));
    const home = new CwHome();
    await home.ok([
      "login",
      "--relay-url",
      this.relays[i].url,
      "--token",
      "-",
      "--ca-cert",
      this.certs.ca,
    ], {
      stdin: `${made.json.token}\n`,
    });
    return home;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const r of this.relays) await r.stop().catch(() => {});
    this.client?.close();
    await dropPgSchema(this.storeUrl).catch(() => {});
    await Deno.remove(this.root, { recursive: true }).catch(() => {});
  }
}

/** `cw setup` of `home`'s node on the relay addresses `urls` (comma-separated). */
async function setupNode(
  home: CwHome,
  urls: string,
  certs: TestCerts,
  name: string,
  token: string,
) {
  await home.ok([
    "setup",
    "--relay-url",
    urls,
    "--invite",
    token,
    "--name",
    name,
    "--ca-cert",
    certs.ca,
  ]);
}

/** A key pair for ssh, made with ssh-keygen. */
async function keygen(dir: string): Promise<string> {
  const path = `${dir}/id_ed25519`;
  const out = await new Deno.Command("ssh-keygen", {
    args: ["-q", "-t", "ed25519", "-N", "", "-f", path],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return path;
}

async function ssh(key: string, port: number, node: string, command: string, knownHosts: string) {
  const env = Deno.env.toObject();
  delete env.SSH_AUTH_SOCK;
  const out = await new Deno.Command("ssh", {
    args: [
      "-F",
      "/dev/null",
      "-o",
      "BatchMode=yes",
      "-o",
      `UserKnownHostsFile=${knownHosts}`,
      "-o",
      "StrictHostKeyChecking=yes",
      "-o",
      "IdentitiesOnly=yes",
      "-o",
      "ConnectTimeout=10",
      "-o",
      "LogLevel=ERROR",
      "-i",
      key,
      "-p",
      String(port),
      `${node}@127.0.0.1`,
      command,
    ],
    env,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function startPane(tmux: Tmux, home: CwHome, name: string): Promise<void> {
  const bin = `${home.root}/bin`;
  await Deno.mkdir(bin, { recursive: true });
  await Deno.writeTextFile(`${bin}/cw`, `#!/bin/sh\nexec ${CW_SHELL} "$@"\n`, { mode: 0o755 });
  const path = `${bin}:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}`;
  const shell = ["env", `PATH=${path}`, "PS1=pane$ ", "bash", "--norc", "--noprofile"]
    .map(shellQuote).join(" ");
  await tmux.start(name, shell, 100, 30, { CW_HOME: home.home, HISTFILE: "" });
  await tmux.waitFor(name, "pane$");
}

replicasTest(
  "a node on A is reached through B (attach) and C (ssh); KV, invites and revocations are shared",
  async () => {
    await using cluster = await Replicas.start(3);
    const [A, B, C] = cluster.relays;
    await using node = new CwHome();
    // the invite made on B registers on A: one store
    await setupNode(node, A.url, cluster.certs, "dev-1", await invite(B, cluster.client));
    await using laptop = await cluster.laptop(1, "ana");
    await waitOnline(laptop, "dev-1");

    // the replicas' own routes are closed to anyone without the peer secret
    for (const path of ["/peer/connect", "/peer/dialback"]) {
      for (const token of ["wrong", ADMIN_TOKEN]) {
        const res = await fetch(`${B.url}${path}`, {
          client: cluster.client,
          headers: { authorization: `Bearer ${token}`, "x-cw-node": "dev-1" },
        });
        assert.equal(res.status, 401, path);
        assert.equal((await res.json()).error.code, "unauthorized");
      }
    }

    // every replica presents one SSH host key
    const keys = await Promise.all([0, 1, 2].map((i) => cluster.api(i, "GET", "/api/v1/info")));
    assert.equal(new Set(keys.map((k) => k.json.ssh.hostKey)).size, 1);

    // ---- a session on the node, through B: launch, logs, attach with typing
    const id = (await laptop.ok([
      "launch",
      "dev-1",
      "--",
      "sh",
      "-c",
      'echo ready; read line; echo "got-$line"; sleep 600',
    ])).trim();
    assert.match(id, /^dev-1:\d+$/);
    await waitFor(
      "the session's output through B",
      async () => (await laptop.run(["logs", id])).stdout.includes("ready"),
      10_000,
    );
    await using tmux = new Tmux(laptop.root);
    await startPane(tmux, laptop, "t");
    await tmux.typeLine("t", `cw attach ${id}`);
    await tmux.waitFor("t", /ready/);
    await tmux.typeLine("t", "through-b");
    await tmux.waitFor("t", /got-through-b/);
    await tmux.keys("t", ["C-b", "d"]);
    await tmux.waitFor("t", /detached from session/);

    // ---- SSH through C, with the host key pinned from A
    const key = await keygen(laptop.root);
    await node.ok(["ssh-key", "add", `${key}.pub`]);
    const sshC = await cluster.sshPort(2);
    const knownHosts = `${laptop.root}/known_hosts`;
    await Deno.writeTextFile(knownHosts, `[127.0.0.1]:${sshC} ${keys[0].json.ssh.hostKey}\n`);
    const viaC = await ssh(key, sshC, "dev-1", "echo via-ssh-$((40+2)); exit 3", knownHosts);
    assert.equal(viaC.stdout, "via-ssh-42\n", viaC.stderr);
    assert.equal(viaC.code, 3);

    // ---- KV: a write on A is seen by a watcher on C
    const watch = await fetch(`${C.url}/api/v1/kv/jobs/build?watch=1`, {
      client: cluster.client,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    assert.equal(watch.status, 200);
    const reader = watch.body!.pipeThrough(new TextDecoderStream()).getReader();
    let seen = "";
    const sawWrite = (async () => {
      while (!seen.includes('"type":"set"')) {
        const { value, done } = await reader.read();
        if (done) break;
        seen += value;
      }
    })();
    // the watch is subscribed once its response started: write now
    const put = await fetch(`${A.url}/api/v1/kv/jobs/build`, {
      method: "PUT",
      client: cluster.client,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      body: "done-on-a",
    });
    assert.equal(put.status, 201);
    const { version } = await put.json();
    const event = `{"type":"set","ns":"jobs","key":"build","version":"${version}"`;
    await waitFor("the watcher on C to see A's write", () => seen.includes(event) || null, 5_000)
      .catch((err) => {
        throw new Error(`${err.message}; seen: ${seen}`);
      });
    await reader.cancel();
    await sawWrite.catch(() => {});

    // ---- a one-use invite raced on A, B and C registers exactly one node
    const once = await invite(A, cluster.client, 1);
    const raced = await Promise.all(cluster.relays.map((r, i) =>
      fetch(`${r.url}/api/v1/register`, {
        method: "POST",
        client: cluster.client,
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ name: `racer-${i}`, invite: once }),
      }).then(async (res) => ({ status: res.status, body: await res.text() }))
    ));
    assert.equal(raced.filter((r) => r.status === 201).length, 1, JSON.stringify(raced));
    assert.equal(raced.filter((r) => r.body.includes('"invite_invalid"')).length, 2);

    // ---- a revocation on B cuts a stream held on C within 1 s
    await using viewer = await cluster.laptop(2, "viewer");
    await using tmux2 = new Tmux(viewer.root);
    await startPane(tmux2, viewer, "v");
    await tmux2.typeLine("v", `cw attach ${id}; echo ATTACH-EXIT=$?`);
    await tmux2.waitFor("v", /got-through-b/);
    const t0 = performance.now();
    const revoked = await cluster.api(1, "DELETE", "/api/v1/users/viewer");
    assert.equal(revoked.status, 204);
    const pane = await tmux2.waitFor("v", /^ATTACH-EXIT=\d+$/m, 5_000);
    const ms = performance.now() - t0;
    console.log(`revocation on B cut the attach held on C after ${ms.toFixed(0)} ms`);
    assert.ok(ms < 1000, `the stream on C lived ${ms.toFixed(0)} ms after the revocation on B`);
    assert.match(pane, /cannot reconnect:[^\]]*Invalid credential/);
    assert.doesNotMatch(pane, /ATTACH-EXIT=0/);

    // ---- one audit log: what A, B and C recorded, read from any of them
    const log = await (await fetch(`${A.url}/api/v1/audit`, {
      client: cluster.client,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    })).text();
    const events = log.trim().split("\n").map((l) => JSON.parse(l));
    const has = (what: Record<string, unknown>) =>
      events.some((e) => Object.entries(what).every(([k, v]) => e[k] === v));
    assert.ok(has({ event: "link_up", node: "dev-1" }), "A's link_up");
    assert.ok(has({ event: "remote_op", op: "launch", principal: "user:ana" }), "B's launch");
    assert.ok(has({ event: "ssh_start", node: "dev-1" }), "C's SSH session");

    await laptop.ok(["kill", id]);
    await node.ok(["stop"]);
  },
);

replicasTest(
  "kill -9 of the replica holding a node: back through another within 5 s, attach resumes byte-exact",
  async () => {
    await using cluster = await Replicas.start(3);
    const [A, B] = cluster.relays;
    await using node = new CwHome();
    // the node knows two addresses of the relay: A first, then B
    await setupNode(
      node,
      `${A.url},${B.url}`,
      cluster.certs,
      "dev-1",
      await invite(A, cluster.client),
    );
    await using laptop = await cluster.laptop(2, "ana");
    await waitOnline(laptop, "dev-1");
    const id = (await laptop.ok([
      "launch",
      "dev-1",
      "--",
      "sh",
      "-c",
      'i=0; while [ $i -lt 100000 ]; do i=$((i+1)); echo "tick $i"; sleep 0.02; done',
    ])).trim();
    await using tmux = new Tmux(laptop.root);
    await startPane(tmux, laptop, "t");
    const outFile = `${laptop.root}/attach.out`;
    const errFile = `${laptop.root}/attach.err`;
    // through C, which forwards to A; output byte for byte to a file
    await tmux.typeLine(
      "t",
      `cw attach --raw-history ${id} >${outFile} 2>${errFile}; echo ATTACH-EXIT=$?`,
    );
    const read = (file: string) => Deno.readTextFile(file).catch(() => "");
    const lastTick = async () =>
      Number([...(await read(outFile)).matchAll(/tick (\d+)\r\n/g)].at(-1)?.[1] ?? 0);
    try {
      await waitFor("ticks through C", async () => await lastTick() >= 10, 15_000);
      const t0 = performance.now();
      await A.kill();
      await waitOnline(laptop, "dev-1", true, 10_000);
      // online through C again means the node relinked (to B): C's listing comes from the store
      let back = 0;
      await waitFor("the node to answer through C", async () => {
        const r = await laptop.run(["list", "dev-1"]);
        back = performance.now() - t0;
        return r.code === 0;
      }, 10_000);
      console.log(`kill -9 of A: dev-1 answered through C again after ${back.toFixed(0)} ms`);
      assert.ok(back < 5000, `the node was unreachable for ${back.toFixed(0)} ms`);
      await waitFor("attach to say it reconnected", async () => {
        const notes = await read(errFile);
        if (/cannot reconnect|lost the connection/.test(notes)) throw new Error(notes);
        return /\breconnected\b/.test(notes);
      }, 15_000);
      const resumedAt = await lastTick();
      await waitFor(
        "ticks after the failover",
        async () => await lastTick() >= resumedAt + 10,
        15_000,
      );
      await tmux.keys("t", ["C-b", "d"]);
      await tmux.waitFor("t", /^ATTACH-EXIT=0$/m);
    } finally {
      await laptop.run(["kill", id]);
      await node.run(["stop"]);
    }
    const text = await read(outFile);
    assert.doesNotMatch(text, /skipped/);
    const ticks = [...text.matchAll(/tick (\d+)\r\n/g)].map((m) => Number(m[1]));
    assert.ok(ticks.length >= 20, text);
    // every tick exactly once, in order, across the failover
    ticks.forEach((n, i) => assert.equal(n, i + 1, `tick ${i + 1} is followed by ${n}`));
  },
);

replicasTest("a bad or unreachable store is one clear line", async () => {
  await using home = new CwHome();
  const relay = (args: string[], env: Record<string, string> = {}) =>
    home.run(["relay", "--listen", "127.0.0.1:0", "--ssh-listen", "off", ...args], { env });
  const cases: [string[], Record<string, string>, RegExp][] = [
    [["--store", "postgres://u:secret@127.0.0.1:1/db"], {}, /Refusing a password in --store/],
    [["--store", "mysql://127.0.0.1/db"], {}, /Unknown store "mysql:"/],
    [[], { CW_RELAY_STORE: "postgres://u@127.0.0.1:1/db?schema=Bad-Name" }, /Invalid schema/],
    [
      [],
      { CW_RELAY_STORE: "postgres://u:pw@127.0.0.1:1/db" },
      /PostgreSQL store postgres:\/\/u:\*\*\*@127\.0\.0\.1:1\/db: /,
    ],
    [["--peer-url", "https://10.0.0.1"], {}, /--peer-url and --peer-ca are for replicas/],
  ];
  for (const [args, env, expected] of cases) {
    const r = await relay(args, env);
    assert.notEqual(r.code, 0, r.stderr);
    assert.match(r.stderr, expected);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.doesNotMatch(r.stderr, /secret|:pw@/, "no password in the message");
  }
});

/** A round-robin TCP balancer on 127.0.0.1 in front of `backends` (TLS passes through). */
function balancer(backends: number[]): { port: number; close(): void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.Conn>();
  let next = 0;
  void (async () => {
    for await (const client of listener) {
      const port = backends[next++ % backends.length];
      open.add(client);
      Deno.connect({ hostname: "127.0.0.1", port }).then((server) => {
        open.add(server);
        const end = () => {
          for (const c of [client, server]) {
            open.delete(c);
            try {
              c.close();
            } catch { /* closed */ }
          }
        };
        client.readable.pipeTo(server.writable).catch(() => {}).finally(end);
        server.readable.pipeTo(client.writable).catch(() => {}).finally(end);
      }, () => client.close());
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    close() {
      listener.close();
      for (const c of open) {
        try {
          c.close();
        } catch { /* closed */ }
      }
    },
  };
}

replicasTest(
  "behind one address, a node's SSH dial-back that lands on another replica is carried over",
  async () => {
    await using cluster = await Replicas.start(2);
    const lb = balancer(cluster.relays.map((r) => r.port));
    try {
      await using node = new CwHome();
      const url = `https://127.0.0.1:${lb.port}`;
      await setupNode(
        node,
        url,
        cluster.certs,
        "dev-1",
        await invite(cluster.relays[0], cluster.client),
      );
      await using laptop = await cluster.laptop(0, "ana");
      await waitOnline(laptop, "dev-1");
      const key = await keygen(laptop.root);
      await node.ok(["ssh-key", "add", `${key}.pub`]);
      const info = await cluster.api(0, "GET", "/api/v1/info");
      const knownHosts = `${laptop.root}/known_hosts`;
      await Deno.writeTextFile(
        knownHosts,
        `[127.0.0.1]:${info.json.ssh.port} ${info.json.ssh.hostKey}\n`,
      );
      // each session's dial-back is a new connection through the balancer: they alternate
      for (let i = 0; i < 4; i++) {
        const r = await ssh(key, info.json.ssh.port, "dev-1", `echo round-${i}`, knownHosts);
        assert.equal(r.stdout, `round-${i}\n`, r.stderr);
        assert.equal(r.code, 0);
      }
      const logs = await Promise.all(
        [0, 1].map((i) => Deno.readTextFile(`${cluster.root}/relay-${i}/relay.log`)),
      );
      assert.ok(
        logs.some((l) => /dial-back of dev-1 carried to replica/.test(l)),
        "a dial-back reached the other replica and was carried over",
      );
      await node.ok(["stop"]);
    } finally {
      lb.close();
    }
  },
);
