// JSON answers are read field by field in the assertions.
// deno-lint-ignore-file no-explicit-any
/**
 * Networks, principals and the audit log, against a real relay (TLS), real
 * nodes, the real `ssh` client and the real CLI:
 *
 * - the authorization matrix, principal × operation, every cell asserted;
 * - revocation cuts a live attach, KV watch and SSH session;
 * - an audit entry for each kind of event, none holding a secret;
 * - `cw login` makes a machine without a node a client of its network;
 * - a node refuses what a read-only principal may not do even when its
 *   relay lets it through (a relay played by the test).
 */
import assert from "node:assert/strict";
import { loadRelayConfig } from "../shared/relay_config.ts";
import { connectWebSocket } from "../shared/ws_client.ts";
import { wsDuplex } from "../shared/ws_duplex.ts";
import { FrameKind, type Request } from "../shared/protocol.ts";
import { FramedConn } from "../shared/framed.ts";
import { NodeClient } from "../client/node_client.ts";
import { CwError } from "../shared/errors.ts";
import { Mux } from "../shared/mux.ts";
import { CW_SHELL, CwHome, waitFor, within } from "./helpers.ts";
import {
  ADMIN_TOKEN,
  caClient,
  makeCerts,
  RelayProcess,
  setupNode,
  type TestCerts,
  waitOnline,
} from "./relay_helpers.ts";

const X = "team-x";
const Y = "team-y";
const enc = new TextEncoder();
const dec = new TextDecoder();

/** A relay with node nx in network X and node ny in network Y, both real and online. */
class Rig implements AsyncDisposable {
  dir!: string;
  certs!: TestCerts;
  relay!: RelayProcess;
  client!: Deno.HttpClient;
  nx!: CwHome;
  ny!: CwHome;
  sshPort = 0;
  #keys = 0;
  #addrs = 0;

  /** A fresh client address for X-Forwarded-For. */
  addr(): string {
    const n = ++this.#addrs;
    return `10.9.${(n >> 8) & 255}.${n & 255}`;
  }

  static async create(): Promise<Rig> {
    const rig = new Rig();
    rig.dir = await Deno.makeTempDir({ prefix: "cw-networks-test-" });
    rig.certs = await makeCerts(`${rig.dir}/pki`);
    // behind a "proxy" on loopback, so each request can come from an address of its own
    // (X-Forwarded-For): the matrix makes more failed logins than one address may
    rig.relay = await RelayProcess.start(`${rig.dir}/relay`, rig.certs, {
      extra: ["--behind-proxy", "127.0.0.1"],
    });
    rig.client = caClient(rig.certs);
    rig.sshPort = (await rig.api(ADMIN_TOKEN, "GET", "/api/v1/info")).json.ssh.port;
    const bin = `${rig.dir}/bin`;
    await Deno.mkdir(bin);
    await Deno.writeTextFile(`${bin}/cw`, `#!/bin/sh\nexec ${CW_SHELL} "$@"\n`, { mode: 0o755 });
    const node = async (name: string, network: string) => {
      const home = new CwHome();
      await home.ok(["list"], { env: { PATH: `${bin}:${Deno.env.get("PATH")}` } });
      const inv = await rig.api(ADMIN_TOKEN, "POST", "/api/v1/invites", { uses: 1, network });
      assert.equal(inv.status, 201, inv.text);
      assert.equal(inv.json.network, network);
      await setupNode(home, rig.relay, rig.certs, name, inv.json.token);
      await waitOnline(home, name);
      return home;
    };
    [rig.nx, rig.ny] = await Promise.all([node("nx", X), node("ny", Y)]);
    return rig;
  }

  credential(home: CwHome): string {
    return loadRelayConfig(home.home)!.credential;
  }

  async api(
    token: string | null,
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<{ status: number; text: string; json: any }> {
    const res = await fetch(new URL(path, this.relay.url), {
      method,
      client: this.client,
      headers: {
        "x-forwarded-for": this.addr(),
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body !== undefined && typeof body !== "string"
          ? { "content-type": "application/json" }
          : {}),
        ...headers,
      },
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let json: any = null;
    try {
      json = JSON.parse(text);
    } catch { /* not JSON */ }
    return { status: res.status, text, json };
  }

  /** A node protocol client reaching `node` through the relay with `token`. */
  nodeClient(token: string, node: string): NodeClient {
    const url = new URL(`/api/v1/nodes/${node}/connect`, this.relay.url);
    url.protocol = "wss:";
    const ca = Deno.readTextFileSync(this.certs.ca);
    return new NodeClient(async () =>
      wsDuplex(
        await connectWebSocket(url, {
          headers: { authorization: `Bearer ${token}`, "x-forwarded-for": this.addr() },
          caCerts: [ca],
        }) as unknown as WebSocket,
      )
    );
  }

  /** One node protocol request: its answer, or the error code. */
  async call(token: string, node: string, req: Request): Promise<string> {
    try {
      const { conn } = await this.nodeClient(token, node).stream(req);
      conn.close();
      return "ok";
    } catch (err) {
      return (err as CwError).code ?? String(err);
    }
  }

  async keygen(): Promise<{ path: string; line: string }> {
    const path = `${this.dir}/key${++this.#keys}`;
    const out = await new Deno.Command("ssh-keygen", {
      args: ["-q", "-t", "ed25519", "-N", "", "-C", `k${this.#keys}`, "-f", path],
      stdout: "null",
      stderr: "null",
    }).output();
    assert.ok(out.success, "ssh-keygen");
    return { path, line: (await Deno.readTextFile(`${path}.pub`)).trim() };
  }

  /** `ssh NODE@relay COMMAND` with a key or a password (SSH_ASKPASS); never waits on a prompt. */
  ssh(
    node: string,
    command: string,
    auth: { key: string } | { password: string },
  ): Deno.ChildProcess {
    const askpass = `${this.dir}/askpass`;
    Deno.writeTextFileSync(askpass, '#!/bin/sh\nprintf "%s\\n" "$CW_TEST_PASSWORD"\n', {
      mode: 0o700,
    });
    const env = Deno.env.toObject();
    delete env.SSH_AUTH_SOCK;
    const args = [
      "-F",
      "/dev/null",
      "-o",
      `UserKnownHostsFile=${this.dir}/known_hosts`,
      "-o",
      "StrictHostKeyChecking=accept-new",
      "-o",
      "IdentitiesOnly=yes",
      "-o",
      "ConnectTimeout=10",
      "-o",
      "LogLevel=ERROR",
      "-o",
      "NumberOfPasswordPrompts=1",
    ];
    if ("key" in auth) {
      args.push("-o", "BatchMode=yes", "-o", "PasswordAuthentication=no", "-i", auth.key);
    } else {
      args.push("-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password");
      Object.assign(env, {
        SSH_ASKPASS: askpass,
        SSH_ASKPASS_REQUIRE: "force",
        CW_TEST_PASSWORD: auth.password,
      });
    }
    args.push("-p", String(this.sshPort), `${node}@127.0.0.1`, command);
    return new Deno.Command("ssh", { args, env, stdin: "null", stdout: "piped", stderr: "piped" })
      .spawn();
  }

  async sshRun(
    node: string,
    command: string,
    auth: { key: string } | { password: string },
  ): Promise<{ code: number; stdout: string; stderr: string }> {
    const child = this.ssh(node, command, auth);
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 20_000);
    const out = await child.output();
    clearTimeout(timer);
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  }

  async auditText(): Promise<string> {
    return (await this.api(ADMIN_TOKEN, "GET", "/api/v1/audit")).text;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.nx?.[Symbol.asyncDispose]();
    await this.ny?.[Symbol.asyncDispose]();
    await this.relay?.stop();
    this.client?.close();
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/** The principals of the matrix. */
type Who = "admin" | "nodeX" | "nodeY" | "userX" | "readerX" | "revoked" | "expired" | "unknown";

Deno.test("networks: principal × operation, every cell", async () => {
  await using rig = await Rig.create();
  const user = async (name: string, body: Record<string, unknown>) => {
    const r = await rig.api(ADMIN_TOKEN, "POST", "/api/v1/users", { name, ...body });
    assert.equal(r.status, 201, r.text);
    assert.match(r.json.token, new RegExp(`^${name}\\.cwu_`));
    return r.json.token as string;
  };
  const tokens: Record<Who, string> = {
    admin: ADMIN_TOKEN,
    nodeX: rig.credential(rig.nx),
    nodeY: rig.credential(rig.ny),
    userX: await user("ana", { network: X }),
    readerX: await user("rita", { network: X, readOnly: true }),
    revoked: await user("gone", { network: X }),
    expired: await user("brief", { network: X, ttlSeconds: 1 }),
    unknown: `ghost.cwu_${"A".repeat(43)}`,
  };
  assert.equal((await rig.api(ADMIN_TOKEN, "DELETE", "/api/v1/users/gone")).status, 204);
  // a name that is in use cannot be added again; a revoked one can be re-issued later
  assert.equal((await rig.api(ADMIN_TOKEN, "POST", "/api/v1/users", { name: "ana" })).status, 409);
  await waitFor(
    "the 1 s user token to expire",
    async () => (await rig.api(tokens.expired, "GET", "/api/v1/whoami")).status === 401,
    5_000,
  );
  const everyone = Object.keys(tokens) as Who[];
  const dead: Who[] = ["revoked", "expired", "unknown"];

  // whoami says who each is
  for (
    const [who, kind, network, readOnly] of [
      ["admin", "admin", null, false],
      ["nodeX", "node", X, false],
      ["nodeY", "node", Y, false],
      ["userX", "user", X, false],
      ["readerX", "user", X, true],
    ] as const
  ) {
    const r = await rig.api(tokens[who], "GET", "/api/v1/whoami");
    assert.equal(r.status, 200, `${who}: ${r.text}`);
    assert.deepEqual(
      [r.json.kind, r.json.network, r.json.readOnly],
      [kind, network, readOnly],
      who,
    );
  }

  // unknown, revoked and expired: the same 401 everywhere, with the same body
  const refusedBody = (await rig.api(tokens.unknown, "GET", "/api/v1/nodes")).text;
  for (const who of dead) {
    for (
      const [method, path] of [
        ["GET", "/api/v1/nodes"],
        ["GET", "/api/v1/info"],
        ["GET", "/api/v1/kv/shared/k"],
        ["PUT", "/api/v1/kv/shared/k"],
        ["POST", "/api/v1/ssh-keys"],
        ["POST", "/api/v1/invites"],
        ["GET", "/api/v1/audit"],
        ["DELETE", "/api/v1/nodes/nx"],
      ]
    ) {
      const r = await rig.api(tokens[who], method, path, method === "GET" ? undefined : "{}");
      assert.equal(r.status, 401, `${who} ${method} ${path}: ${r.text}`);
      if (path === "/api/v1/nodes") assert.equal(r.text, refusedBody, `${who}: same body`);
    }
  }

  // ---- nodes list: each sees its own network; the admin sees all, with the network named
  const nodesOf = async (who: Who) => {
    const r = await rig.api(tokens[who], "GET", "/api/v1/nodes");
    return r.status === 200
      ? r.json.nodes.map((n: { name: string; network: string }) => `${n.name}@${n.network}`).sort()
        .join(",")
      : r.status;
  };
  const expectNodes: Record<Who, string | number> = {
    admin: `nx@${X},ny@${Y}`,
    nodeX: `nx@${X}`,
    nodeY: `ny@${Y}`,
    userX: `nx@${X}`,
    readerX: `nx@${X}`,
    revoked: 401,
    expired: 401,
    unknown: 401,
  };
  for (const who of everyone) {
    assert.deepEqual(await nodesOf(who), expectNodes[who], `nodes: ${who}`);
  }

  // ---- the node protocol on nx, through the relay
  const sleeper = await rig.nx.launch(["sleep", "600"]);
  const target = String(sleeper);
  const ops: { name: string; req: () => Promise<Request> | Request; writes: boolean }[] = [
    { name: "list", req: () => ({ op: "list" }), writes: false },
    { name: "status", req: () => ({ op: "status", session: target }), writes: false },
    { name: "logs", req: () => ({ op: "logs", session: target }), writes: false },
    {
      name: "attach read-only",
      req: () => ({ op: "attach", session: target, readOnly: true }),
      writes: false,
    },
    { name: "attach writable", req: () => ({ op: "attach", session: target }), writes: true },
    {
      name: "launch",
      req: () => ({ op: "launch", argv: ["true"], inheritNodeEnv: true } as Request),
      writes: true,
    },
    {
      name: "send",
      req: () => ({ op: "send", session: target, data: enc.encode("x").toBase64() }),
      writes: true,
    },
    {
      name: "kill",
      req: async () => ({ op: "kill", sessions: [String(await rig.nx.launch(["sleep", "600"]))] }),
      writes: true,
    },
    { name: "shutdown", req: () => ({ op: "shutdown" }), writes: true },
    { name: "relay_reload", req: () => ({ op: "relay_reload" }), writes: true },
  ];
  for (const op of ops) {
    for (const who of everyone) {
      const got = await rig.call(tokens[who], "nx", await op.req());
      let want: string;
      if (dead.includes(who)) want = "unauthorized";
      else if (who === "nodeY") want = "not_found"; // another network: as if nx did not exist
      else if (op.name === "shutdown" || op.name === "relay_reload") want = "forbidden";
      else if (who === "readerX" && op.writes) want = "forbidden";
      else want = "ok";
      assert.equal(got, want, `${op.name} on nx by ${who}`);
    }
  }
  // X's principals do not reach ny either; the answer is that of a node that does not exist
  for (const who of ["nodeX", "userX", "readerX"] as const) {
    assert.equal(await rig.call(tokens[who], "ny", { op: "list" }), "not_found", `ny by ${who}`);
  }
  const unknownNode = await rig.nodeClient(tokens.userX, "nosuch").request({ op: "list" })
    .catch((e) => e.message);
  const foreignNode = await rig.nodeClient(tokens.userX, "ny").request({ op: "list" })
    .catch((e) => e.message);
  assert.equal(foreignNode.replace('"ny"', '"nosuch"'), unknownNode);
  assert.equal(await rig.call(tokens.admin, "ny", { op: "list" }), "ok");
  // the node is still up and its sessions with it
  assert.match(await rig.nx.ok(["list"]), new RegExp(`^\\s*${sleeper}\\s`, "m"));

  // ---- SSH: keys belong to the network of who added them; passwords are credentials
  const keyOf: Partial<Record<Who, { path: string; line: string }>> = {};
  for (const who of everyone) {
    const key = await rig.keygen();
    // the admin names the network a key is for; anyone else adds into their own
    const path = who === "admin" ? `/api/v1/ssh-keys?network=${X}` : "/api/v1/ssh-keys";
    const r = await rig.api(tokens[who], "POST", path, { key: key.line });
    const want = dead.includes(who) ? 401 : who === "readerX" ? 403 : 201;
    assert.equal(r.status, want, `ssh-key add by ${who}: ${r.text}`);
    if (want === 201) keyOf[who] = key;
  }
  const sshWant = (who: Who, node: "nx" | "ny", how: "key" | "password") =>
    dead.includes(who) || who === "readerX"
      ? "refused"
      : (who === "admin" && how === "password") || (node === "nx") === (who !== "nodeY")
      ? "in"
      : "refused";
  for (const node of ["nx", "ny"] as const) {
    for (const who of everyone) {
      for (const how of ["key", "password"] as const) {
        if (how === "key" && !keyOf[who]) continue;
        const r = await rig.sshRun(
          node,
          "echo in-$0",
          how === "key" ? { key: keyOf[who]!.path } : { password: tokens[who] },
        );
        const got = r.code === 0 && r.stdout.startsWith("in-") ? "in" : "refused";
        assert.equal(got, sshWant(who, node, how), `ssh ${node} by ${who} (${how}): ${r.stderr}`);
        if (who === "nodeY" && node === "nx") {
          // as for a node that does not exist
          assert.match(r.stderr, /Unknown node "nx"/, `foreign node message: ${r.stderr}`);
        }
        if (who === "readerX") assert.doesNotMatch(r.stdout, /in-/);
      }
    }
  }
  // key lists and removal stay in the network
  const fpOf = async (who: Who) =>
    (await rig.api(tokens[who], "GET", "/api/v1/ssh-keys")).json.keys.map((
      k: { network: string },
    ) => k.network);
  assert.deepEqual([...new Set(await fpOf("nodeY"))], [Y]);
  assert.deepEqual([...new Set(await fpOf("readerX"))], [X]);
  const xKey = (await rig.api(tokens.nodeX, "GET", "/api/v1/ssh-keys")).json.keys[0].fingerprint;
  const del = (who: Who) =>
    rig.api(tokens[who], "DELETE", `/api/v1/ssh-keys/${encodeURIComponent(xKey)}`);
  assert.equal((await del("nodeY")).status, 404, "another network's key: as no key");
  assert.equal((await del("readerX")).status, 403);
  for (const who of dead) assert.equal((await del(who)).status, 401);
  assert.equal((await del("userX")).status, 204, "a writer of the network removes its keys");

  // ---- KV: a network's namespaces are its own
  const kv = (who: Who, method: string, path: string, body?: string, extra = "") =>
    rig.api(tokens[who], method, `/api/v1/kv/${path}${extra}`, body);
  assert.equal((await kv("userX", "PUT", "shared/k", "x-value")).status, 201);
  assert.equal((await kv("nodeY", "PUT", "shared/k", "y-value")).status, 201, "Y's own key");
  const getK = async (who: Who, extra = "") => {
    const r = await kv(who, "GET", "shared/k", undefined, extra);
    return r.status === 200 ? r.text : r.status;
  };
  assert.equal(await getK("nodeX"), "x-value");
  assert.equal(await getK("userX"), "x-value");
  assert.equal(await getK("readerX"), "x-value");
  assert.equal(await getK("nodeY"), "y-value");
  assert.equal(await getK("admin"), 404, "the admin reads the default network unless it names one");
  assert.equal(await getK("admin", `?network=${X}`), "x-value");
  assert.equal(await getK("admin", `?network=${Y}`), "y-value");
  for (const who of dead) assert.equal(await getK(who), 401);
  // a principal's ?network= is ignored: it never leaves its network
  assert.equal(await getK("nodeY", `?network=${X}`), "y-value");
  const writes: Record<Who, number> = {
    admin: 201,
    nodeX: 200,
    nodeY: 201,
    userX: 200,
    readerX: 403,
    revoked: 401,
    expired: 401,
    unknown: 401,
  };
  for (const who of everyone) {
    const r = await kv(who, "PUT", `own/${who}`, "v");
    assert.equal(r.status, writes[who] === 200 ? 201 : writes[who], `kv set by ${who}: ${r.text}`);
    const d = await kv(who, "DELETE", `own/${who}`);
    const wantDelete = writes[who] === 403 ? 403 : writes[who] === 401 ? 401 : 204;
    assert.equal(d.status, wantDelete, `kv delete by ${who}`);
  }
  const listOf = async (who: Who) => {
    const r = await kv(who, "GET", "shared");
    return r.status === 200
      ? r.json.entries.map((e: { key: string }) => e.key).join(",")
      : r.status;
  };
  for (const who of everyone) {
    assert.deepEqual(await listOf(who), dead.includes(who) ? 401 : who === "admin" ? "" : "k", who);
  }
  // watches see their own network's changes only
  const watch = await fetch(new URL("/api/v1/kv/shared/k?watch=1", rig.relay.url), {
    client: rig.client,
    headers: { authorization: `Bearer ${tokens.readerX}` },
  });
  assert.equal(watch.status, 200);
  const events = watch.body!.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  const nextEvent = async () => {
    while (!/event: \w+\ndata: .*\n\n/.test(seen)) {
      const { value, done } = await within(events.read(), 5_000, "a KV watch event");
      if (done) throw new Error("the watch ended");
      seen += value;
    }
    const m = /event: \w+\ndata: (.*)\n\n/.exec(seen)!;
    seen = seen.slice(m.index + m[0].length);
    return JSON.parse(m[1]);
  };
  assert.equal((await kv("nodeY", "PUT", "shared/k", "y2")).status, 200);
  const xSet = await kv("userX", "PUT", "shared/k", "x2");
  const first = await nextEvent();
  assert.equal(first.version, xSet.json.version, "the first event is X's write, not Y's");
  assert.equal(first.ns, "shared");
  for (const who of dead) {
    assert.equal((await kv(who, "GET", "shared/k", undefined, "?watch=1")).status, 401);
  }
  await events.cancel();

  // ---- admin-only: invites, users, revocation, audit, metrics
  for (const who of everyone) {
    const want = who === "admin" ? null : dead.includes(who) ? 401 : 403;
    for (
      const [method, path, body] of [
        ["POST", "/api/v1/invites", { uses: 1, network: X }],
        ["GET", "/api/v1/invites", undefined],
        ["POST", "/api/v1/users", { name: `u-${who}`, network: X }],
        ["GET", "/api/v1/users", undefined],
        ["GET", "/api/v1/audit", undefined],
        ["GET", "/metrics", undefined],
        ["DELETE", "/api/v1/users/nobody", undefined],
      ] as const
    ) {
      const r = await rig.api(tokens[who], method, path, body);
      if (want === null) assert.ok(r.status < 300 || r.status === 404, `${who} ${path}: ${r.text}`);
      else assert.equal(r.status, want, `${method} ${path} by ${who}: ${r.text}`);
    }
  }
  // revocation of a node: X's user cannot, the admin can (last: nx goes away)
  assert.equal((await rig.api(tokens.userX, "DELETE", "/api/v1/nodes/ny")).status, 403);
  assert.equal((await rig.api(tokens.nodeX, "DELETE", "/api/v1/nodes/ny")).status, 403);

  // ---- the audit log: one entry per kind of event, no secret anywhere in it
  const audit = await rig.auditText();
  const entries = audit.trim().split("\n").map((l) => JSON.parse(l));
  for (
    const kind of [
      "link_up",
      "remote_op",
      "stream_end",
      "refused",
      "ssh_start",
      "ssh_end",
      "ssh_login_failed",
      "auth_failed",
      "invite_created",
      "node_registered",
      "user_added",
      "user_revoked",
      "key_added",
      "key_removed",
    ]
  ) {
    assert.ok(entries.some((e) => e.event === kind), `an audit entry of kind ${kind}`);
  }
  const launch = entries.find((e) => e.event === "remote_op" && e.op === "launch" && e.ok);
  assert.ok(launch, "a remote launch is audited");
  assert.equal(launch.node, "nx");
  assert.equal(launch.network, X);
  assert.match(launch.principal, /^(admin|node:nx|user:ana)$/);
  assert.match(String(launch.session), /^\d+$/);
  const attachEnd = entries.find((e) => e.event === "stream_end" && e.op === "attach");
  assert.ok(typeof attachEnd?.bytesOut === "number" && "readOnly" in attachEnd);
  const sshEnd = entries.find((e) => e.event === "ssh_end" && e.exitCode === 0);
  assert.ok(sshEnd, "an SSH session's end is audited with its exit status");
  assert.ok(entries.every((e) => typeof e.time === "string" && "principal" in e));
  const file = await Deno.readTextFile(`${rig.relay.dataDir}/audit.log`);
  assert.equal((await Deno.stat(`${rig.relay.dataDir}/audit.log`)).mode! & 0o777, 0o600);
  for (const [who, secret] of Object.entries(tokens)) {
    const part = secret.slice(secret.indexOf("_") + 1);
    assert.ok(!file.includes(part), `the audit log holds ${who}'s secret`);
  }
  // the CLI reads the same log, on the data dir and through the API
  const cli = new CwHome();
  try {
    const local = await cli.ok(["relay", "audit", "--data-dir", rig.relay.dataDir, "--json"]);
    assert.ok(local.split("\n").filter(Boolean).length >= entries.length);
    const remote = await cli.ok([
      "relay",
      "audit",
      "--since",
      "1h",
      "--relay-url",
      rig.relay.url,
      "--ca-cert",
      rig.certs.ca,
    ], { env: { CW_RELAY_ADMIN_TOKEN: ADMIN_TOKEN } });
    assert.match(remote, /user_added\s+admin network=team-x/);
  } finally {
    await cli[Symbol.asyncDispose]();
  }
});

Deno.test("networks: revoking a user, key or node cuts its attach, KV watch and SSH session", async () => {
  await using rig = await Rig.create();
  const add = async (name: string) =>
    (await rig.api(ADMIN_TOKEN, "POST", "/api/v1/users", { name, network: X })).json.token;
  const token = await add("carl");
  const session = String(await rig.nx.launch(["sh", "-c", "while :; do date; sleep 0.05; done"]));
  const key = await rig.keygen();
  assert.equal(
    (await rig.api(token, "POST", "/api/v1/ssh-keys", { key: key.line })).status,
    201,
  );

  // live: an attach streaming output, a KV watch, an SSH session by password and one by key
  /** A read-only attach by `t`: resolves with the time its stream ends. */
  const attachUntilCut = async (t: string) => {
    const { conn } = await rig.nodeClient(t, "nx").stream({
      op: "attach",
      session,
      readOnly: true,
    });
    const ended = (async () => {
      for (;;) {
        const f = await conn.next().catch(() => null);
        if (!f || f.kind === FrameKind.ERROR) return performance.now();
      }
    })();
    return { ended };
  };
  const attachEnded = (await attachUntilCut(token)).ended;
  const watch = await fetch(new URL("/api/v1/kv/ns/key?watch=1", rig.relay.url), {
    client: rig.client,
    headers: { authorization: `Bearer ${token}` },
  });
  const watchEnded = (async () => {
    try {
      for await (const _ of watch.body!) { /* heartbeats */ }
    } catch { /* cut */ }
    return performance.now();
  })();
  const sshPw = rig.ssh("nx", "echo up; sleep 600", { password: token });
  const sshKey = rig.ssh("nx", "echo up; sleep 600", { key: key.path });
  for (const child of [sshPw, sshKey]) {
    const reader = child.stdout.getReader();
    const { value } = await within(reader.read(), 15_000, "the SSH session to start");
    assert.equal(dec.decode(value), "up\n");
    reader.releaseLock();
  }
  const sshEnded = (child: Deno.ChildProcess) => child.status.then(() => performance.now());
  const [pwEnded, keyEnded] = [sshEnded(sshPw), sshEnded(sshKey)];

  const t0 = performance.now();
  assert.equal((await rig.api(ADMIN_TOKEN, "DELETE", "/api/v1/users/carl")).status, 204);
  const times = await within(
    Promise.all([attachEnded, watchEnded, pwEnded]),
    5_000,
    "the revoked user's connections to close",
  );
  console.log(
    `cut after revoking a user: attach ${Math.round(times[0] - t0)} ms, KV watch ${
      Math.round(times[1] - t0)
    } ms, SSH ${Math.round(times[2] - t0)} ms`,
  );
  // the key the user added is the network's, not the user's: it lives on until removed
  const fp = (await rig.api(ADMIN_TOKEN, "GET", "/api/v1/ssh-keys")).json.keys[0].fingerprint;
  const t1 = performance.now();
  assert.equal(
    (await rig.api(ADMIN_TOKEN, "DELETE", `/api/v1/ssh-keys/${encodeURIComponent(fp)}`)).status,
    204,
  );
  const keyTime = await within(keyEnded, 5_000, "the removed key's SSH session to end");
  console.log(`cut after removing a key: SSH ${Math.round(keyTime - t1)} ms`);
  await sshPw.stdout.cancel().catch(() => {});
  await sshKey.stdout.cancel().catch(() => {});
  await sshPw.stderr.cancel().catch(() => {});
  await sshKey.stderr.cancel().catch(() => {});

  // the same user revoked through the data dir by another process: cut too
  const token2 = await add("dora");
  const ended2 = (await attachUntilCut(token2)).ended;
  const cli = new CwHome();
  try {
    const t2 = performance.now();
    await cli.ok(["relay", "user", "revoke", "dora", "--data-dir", rig.relay.dataDir]);
    const at = await within(ended2, 5_000, "a data-dir revocation to cut the attach");
    console.log(`cut after a data-dir revocation: attach ${Math.round(at - t2)} ms`);
  } finally {
    await cli[Symbol.asyncDispose]();
  }
  const entries = (await rig.auditText()).trim().split("\n").map((l) => JSON.parse(l));
  assert.ok(entries.some((e) => e.event === "user_revoked" && e.user === "dora"));

  // a key taken out of the data dir's authorized_keys ends its open session as well
  const owner = await rig.keygen();
  const keysFile = `${rig.relay.dataDir}/authorized_keys`;
  await Deno.writeTextFile(keysFile, `${owner.line}\n`);
  const sshOwner = rig.ssh("nx", "echo up; sleep 600", { key: owner.path });
  const reader = sshOwner.stdout.getReader();
  const { value } = await within(reader.read(), 15_000, "the authorized_keys session to start");
  assert.equal(dec.decode(value), "up\n");
  reader.releaseLock();
  const t3 = performance.now();
  await Deno.writeTextFile(keysFile, "# nobody\n");
  await within(sshOwner.status, 5_000, "the session of a key removed from authorized_keys to end");
  console.log(
    `cut after removing a key from authorized_keys: ${Math.round(performance.now() - t3)} ms`,
  );
  await sshOwner.stdout.cancel().catch(() => {});
  await sshOwner.stderr.cancel().catch(() => {});
});

Deno.test("networks: cw login makes a machine without a node a client of its network", async () => {
  await using rig = await Rig.create();
  const token = (await rig.api(ADMIN_TOKEN, "POST", "/api/v1/users", { name: "lee", network: X }))
    .json.token;
  const reader = (await rig.api(ADMIN_TOKEN, "POST", "/api/v1/users", {
    name: "rey",
    network: X,
    readOnly: true,
  })).json.token;
  const laptop = new CwHome();
  try {
    await Deno.writeTextFile(`${laptop.root}/token`, `${token}\n`);
    const login = await laptop.run([
      "login",
      "--relay-url",
      rig.relay.url,
      "--token-file",
      `${laptop.root}/token`,
      "--ca-cert",
      rig.certs.ca,
    ]);
    assert.equal(login.code, 0, login.stderr);
    assert.match(login.stderr, /Logged in to .* as user "lee" of network "team-x"/);
    assert.equal((await Deno.stat(`${laptop.home}/login.json`)).mode! & 0o777, 0o600);
    assert.ok(!(await Deno.readTextFile(`${laptop.home}/login.json`)).includes('\n  "token": ""'));
    // nodes, sessions, attach, kv — no node runs on this machine
    assert.match(await laptop.ok(["nodes"]), /^nx\s+team-x\s+online/m);
    assert.doesNotMatch(await laptop.ok(["nodes"]), /^ny/m);
    const id =
      (await laptop.ok(["launch", "nx", "--", "sh", "-c", "echo hello-from-nx; sleep 600"]))
        .trim();
    assert.match(id, /^nx:\d+$/);
    await waitFor(
      "the session's output",
      async () => (await laptop.run(["logs", id])).stdout.includes("hello-from-nx"),
      10_000,
    );
    assert.match(await laptop.ok(["list", "nx"]), new RegExp(`^\\s*${id.slice(3)}\\s`, "m"));
    assert.equal(laptop.nodePid(), null, "no node was started on the laptop");
    assert.equal((await laptop.ok(["kv", "set", "greeting", "hi"])).trim().length > 0, true);
    assert.equal(await laptop.ok(["kv", "get", "greeting"]), "hi");
    const foreign = await laptop.run(["list", "ny"]);
    assert.equal(foreign.code, 1);
    assert.match(foreign.stderr, /Unknown node "ny"/);
    const stop = await laptop.run(["kill", "--all", "nx"]);
    assert.equal(stop.code, 0, stop.stderr);

    // read-only: reads work, writes are refused with one clear line
    await laptop.ok(["logout"]);
    assert.equal((await laptop.run(["nodes"])).code, 1);
    const again = await laptop.run([
      "login",
      "--relay-url",
      rig.relay.url,
      "--token",
      "-",
      "--ca-cert",
      rig.certs.ca,
    ], { stdin: `${reader}\n` });
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, /\(read-only\)/);
    assert.match(await laptop.ok(["list", "nx"]), /ID/);
    for (
      const args of [
        ["launch", "nx", "--", "true"],
        ["kv", "set", "k", "v"],
        ["kill", "--all", "nx"],
      ]
    ) {
      const r = await laptop.run(args);
      assert.equal(r.code, 1, `${args.join(" ")}: ${r.stdout}`);
      assert.match(r.stderr, /read-only/, args.join(" "));
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    }
    const bad = await laptop.run([
      "login",
      "--relay-url",
      rig.relay.url,
      "--token",
      "-",
      "--ca-cert",
      rig.certs.ca,
    ], { stdin: `rey.cwu_${"B".repeat(43)}\n` });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /Invalid credential/);
  } finally {
    await laptop[Symbol.asyncDispose]();
  }
});

Deno.test("networks: the node refuses what the relay vouches a read-only principal may not do", async () => {
  // a relay played by the test: it links the node, then opens streams naming principals
  const home = new CwHome();
  const links = Promise.withResolvers<Mux>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    if (new URL(req.url).pathname !== "/node/connect") return new Response(null, { status: 404 });
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.addEventListener("open", () => links.resolve(new Mux(socket, {}, { role: "accept" })));
    return response;
  });
  try {
    // the node links at start to the relay its data dir names (loopback: plain ws is allowed)
    const url = `http://127.0.0.1:${server.addr.port}`;
    await Deno.mkdir(home.home, { recursive: true, mode: 0o700 });
    await Deno.writeTextFile(
      `${home.home}/relay.json`,
      JSON.stringify({ url, name: "solo", credential: "solo.cwn_x", caCert: null }),
      { mode: 0o600 },
    );
    const id = String(await home.launch(["sleep", "600"]));
    const mux = await within(links.promise, 15_000, "the node's link");
    const ask = async (principal: Record<string, unknown> | null, req: Request) => {
      const stream = mux.open({ kind: "node", ...(principal ? { principal } : {}) });
      const conn = new FramedConn(stream);
      await conn.sendJson(FrameKind.HELLO, { magic: "cw", version: 1 });
      await conn.next();
      await conn.sendJson(FrameKind.REQUEST, req);
      const f = await within(conn.next(), 5_000, "the node's answer");
      conn.close();
      return f?.kind === FrameKind.ERROR ? f.value.code : "ok";
    };
    const reader = { id: "user:rita", network: "x", readOnly: true };
    const writer = { id: "user:ana", network: "x", readOnly: false };
    assert.equal(await ask(reader, { op: "list" }), "ok");
    assert.equal(await ask(reader, { op: "attach", session: id, readOnly: true }), "ok");
    assert.equal(await ask(reader, { op: "attach", session: id }), "forbidden");
    assert.equal(
      await ask(reader, { op: "send", session: id, data: enc.encode("x").toBase64() }),
      "forbidden",
    );
    assert.equal(await ask(reader, { op: "kill", sessions: [id] }), "forbidden");
    assert.equal(await ask(writer, { op: "shutdown" }), "forbidden");
    assert.equal(await ask(null, { op: "shutdown" }), "forbidden");
    // a malformed principal reads as read-only, never as more
    assert.equal(
      await ask({ id: "x", readOnly: "no" }, { op: "kill", sessions: [id] }),
      "forbidden",
    );
    assert.equal(await ask(writer, { op: "status", session: id }), "ok");
    const log = await Deno.readTextFile(`${home.home}/node.log`);
    assert.match(log, /refused kill from user:rita through the relay/);
    assert.match(log, /remote attach session "\d+" by user:rita/);
    assert.match(await home.ok(["list"]), new RegExp(`^\\s*${id}\\s`, "m"));
  } finally {
    await home[Symbol.asyncDispose]();
    await server.shutdown();
  }
});
