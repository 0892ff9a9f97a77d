/**
 * Secrets on the command line and on the wire: `cw setup`, `cw server add`
 * and the relay's admin commands take secrets from a file, stdin or the
 * environment, refuse to send them in clear text to another host unless told
 * `--insecure`, and the files that hold them are 0600. Real cw processes, a
 * real relay and a real node; a plain HTTP server on this machine's own
 * non-loopback address stands in for "another host" and counts what reaches it.
 */
import assert from "node:assert/strict";
import { CwHome, waitFor } from "./helpers.ts";
import { invite, RelayProcess } from "./relay_helpers.ts";
import { isCleartextRemote } from "../shared/net.ts";

/** An IPv4 address of this machine that is not loopback, or null. */
function ownAddress(): string | null {
  return Deno.networkInterfaces().find((i) => i.family === "IPv4" && !/^127\./.test(i.address))
    ?.address ?? null;
}

/** A plain HTTP server on a non-loopback address that records every request. */
class Trap implements AsyncDisposable {
  readonly requests: { method: string; path: string; body: string }[] = [];
  readonly url: string;
  #server: Deno.HttpServer<Deno.NetAddr>;

  constructor(hostname: string) {
    this.#server = Deno.serve({ hostname, port: 0, onListen: () => {} }, async (req) => {
      this.requests.push({
        method: req.method,
        path: new URL(req.url).pathname,
        body: await req.text(),
      });
      return Response.json(
        { error: { code: "invite_invalid", message: "trap: this invite is unknown" } },
        { status: 403 },
      );
    });
    this.url = `http://${hostname}:${this.#server.addr.port}`;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#server.shutdown();
  }
}

/** A temporary directory removed on dispose. */
async function tempDir(): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix: "cw-secrets-test-" });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true }).catch(() => {});
    },
  };
}

/** Permission bits of a file, as octal text ("600"). */
function mode(path: string): string {
  return (Deno.statSync(path).mode! & 0o777).toString(8);
}

/** A relay without TLS on 127.0.0.1 (allowed there), stopped on dispose. */
async function plainRelay(dir: string, env: Record<string, string> = {}): Promise<RelayProcess> {
  const relay = await RelayProcess.start(`${dir}/relay`, null, { env });
  assert.match(relay.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  return relay;
}

/** An invite from a relay without TLS. */
async function plainInvite(relay: RelayProcess): Promise<string> {
  using client = Deno.createHttpClient({});
  return await invite(relay, client);
}

const SETUP_REFUSED = (origin: string) =>
  `cw: Refusing to send the invite in clear text to ${origin}: use an https:// URL, or add --insecure if the network to the relay is private\n`;

Deno.test("clear text is allowed only to loopback: 127.0.0.0/8, ::1, localhost", () => {
  const allowed = [
    "http://127.0.0.1:8080",
    "http://127.1.2.3",
    "ws://[::1]:9100/",
    "http://localhost:1",
    "ws://LOCALHOST:1",
    "https://example.com",
    "wss://10.1.2.3:9",
  ];
  const refused = [
    "http://example.com:1",
    "ws://10.1.2.3:9",
    "http://127.example.com",
    "http://[::2]:1",
    "ws://0.0.0.0:9",
    "http://localhost.example.com",
  ];
  for (const u of allowed) assert.equal(isCleartextRemote(new URL(u)), false, u);
  for (const u of refused) assert.equal(isCleartextRemote(new URL(u)), true, u);
});

Deno.test("setup refuses plain http:// to another host without dialling it; --insecure lets it through", async () => {
  await using home = new CwHome();
  await using tmp = await tempDir();
  const inviteFile = `${tmp.path}/invite`;
  await Deno.writeTextFile(inviteFile, "cwi_from-a-file\n");

  const example = await home.run(
    ["setup", "--relay-url", "http://example.com:1", "--invite-file", inviteFile],
  );
  assert.equal(example.code, 2, example.stderr);
  assert.equal(example.stderr, SETUP_REFUSED("http://example.com:1"));
  assert.equal(home.nodePid(), null, "no node was started");

  const address = ownAddress();
  if (address === null) {
    console.log("no non-loopback IPv4 address: the --insecure half is skipped");
    return;
  }
  await using trap = new Trap(address);
  // refused whatever the source of the invite
  const refused = await home.run(
    ["setup", "--relay-url", trap.url, "--invite", "-", "--name", "n1"],
    { stdin: "cwi_from-stdin\n" },
  );
  assert.equal(refused.code, 2, refused.stderr);
  assert.equal(refused.stderr, SETUP_REFUSED(trap.url));
  assert.equal(trap.requests.length, 0, "nothing reached the host");

  // --insecure: sent, in the clear, to that host (which refuses the invite)
  const insecure = await home.run(
    ["setup", "--relay-url", trap.url, "--invite", "-", "--name", "n1", "--insecure"],
    { stdin: "cwi_from-stdin\nsecond line ignored\n" },
  );
  assert.equal(insecure.code, 1, insecure.stderr);
  assert.doesNotMatch(insecure.stderr, /Refusing/);
  assert.equal(insecure.stderr, "cw: trap: this invite is unknown\n");
  assert.equal(trap.requests.length, 1);
  assert.equal(trap.requests[0].path, "/api/v1/register");
  assert.equal(JSON.parse(trap.requests[0].body).invite, "cwi_from-stdin");
});

Deno.test("setup takes the invite from stdin, a file or CW_INVITE; a relay.json that would leak is refused on read", async () => {
  await using tmp = await tempDir();
  await using relay = await plainRelay(tmp.path);
  await using home = new CwHome();

  // loopback http:// is accepted; the invite comes from stdin
  const first = await plainInvite(relay);
  const viaStdin = await home.run(
    ["setup", "--relay-url", relay.url, "--invite", "-", "--name", "n1"],
    { stdin: `  ${first}  \n` },
  );
  assert.equal(viaStdin.code, 0, viaStdin.stderr);
  assert.match(viaStdin.stderr, /Registered as "n1" and connected/);
  const relayJson = `${home.home}/relay.json`;
  assert.equal(mode(relayJson), "600");
  assert.equal(mode(home.home), "700");
  assert.equal(JSON.parse(await Deno.readTextFile(relayJson)).insecure, false);
  // the invite was spent: it really was sent
  const again = await home.run(
    ["setup", "--relay-url", relay.url, "--invite", "-", "--name", "n1"],
    { stdin: first },
  );
  assert.equal(again.code, 1);
  assert.match(again.stderr, /invite is unknown, used up or expired/);

  // from a file (re-registering the same name), then from the environment
  const inviteFile = `${tmp.path}/invite`;
  await Deno.writeTextFile(inviteFile, `${await plainInvite(relay)}\n`, { mode: 0o600 });
  await home.ok(["setup", "--relay-url", relay.url, "--invite-file", inviteFile, "--name", "n1"]);
  const viaEnv = await home.run(["setup", "--relay-url", relay.url, "--name", "n1"], {
    env: { CW_INVITE: await plainInvite(relay) },
  });
  assert.equal(viaEnv.code, 0, viaEnv.stderr);
  assert.match(await home.ok(["nodes"]), /^n1\s+default\s+online/m);

  // command-line mistakes: one line, exit 2
  const mistakes: [string[], string | undefined, RegExp][] = [
    [["--invite", "-"], "", /^cw: Found no invite in stdin \(--invite -\)\n$/],
    [["--invite", "-"], "\n\n", /^cw: Found no invite in stdin \(--invite -\)\n$/],
    [
      ["--invite", "-"],
      "x".repeat(70_000),
      /^cw: The first line of stdin .* is longer than 64 KiB\n$/,
    ],
    [["--invite", "-"], "cwi_a b\n", /^cw: The invite in stdin .* holds spaces or control/],
    [
      ["--invite", "x", "--invite-file", inviteFile],
      undefined,
      /^cw: Give --invite or --invite-file, not both\n$/,
    ],
    [
      [],
      undefined,
      /^cw: Missing the invite: give --invite-file FILE, --invite - \(stdin\) or CW_INVITE\n$/,
    ],
  ];
  for (const [flags, stdin, expected] of mistakes) {
    const r = await home.run(["setup", "--relay-url", relay.url, "--name", "n1", ...flags], {
      stdin,
    });
    assert.equal(r.code, 2, `${flags.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, expected);
  }
  const noFile = await home.run(
    ["setup", "--relay-url", relay.url, "--invite-file", `${tmp.path}/none`],
  );
  assert.equal(noFile.code, 1);
  assert.match(noFile.stderr, /^cw: Cannot read --invite-file .*\/none: /);

  // a relay.json that points at another host over plain http (edited by hand, or by an
  // older cw) is refused by the client, and the node does not link with it
  const address = ownAddress();
  if (address === null) return;
  await using trap = new Trap(address);
  const config = JSON.parse(await Deno.readTextFile(relayJson));
  await Deno.writeTextFile(relayJson, JSON.stringify({ ...config, url: trap.url }));
  const nodes = await home.run(["nodes"]);
  assert.equal(nodes.code, 1);
  assert.equal(
    nodes.stderr,
    `cw: Refusing to send the node credential in clear text to ${trap.url}: run cw setup again with an https:// URL (or --insecure if the network to the relay is private)\n`,
  );
  const remote = await home.run(["list", "n1"]);
  assert.equal(remote.code, 1);
  assert.match(remote.stderr, /^cw: Refusing to send the node credential in clear text/);
  await home.ok(["stop"]);
  await home.ok(["list"]); // a new node reads the edited relay.json
  await waitFor(
    "the node to refuse the link",
    async () => (await Deno.readTextFile(`${home.home}/node.log`)).includes("relay link: Refusing"),
  );
  assert.equal(trap.requests.length, 0, "the credential never reached the host");
});

Deno.test("server add refuses ws:// to another host unless --insecure; the token comes from stdin, a file or CW_TOKEN", async () => {
  await using tmp = await tempDir();
  await using node = new CwHome();
  await using client = new CwHome();
  const servers = `${client.home}/servers.json`;

  const refused = await client.run(["server", "add", "x", "ws://10.1.2.3:9", "--token", "t"]);
  assert.equal(refused.code, 2);
  assert.equal(
    refused.stderr,
    "cw: Refusing to send the token in clear text to ws://10.1.2.3:9: use a wss:// URL (cw node --listen with --tls-cert/--tls-key), or add --insecure if the network to it is private\n",
  );
  await assert.rejects(Deno.stat(servers), Deno.errors.NotFound);
  await client.ok(["server", "add", "x", "ws://10.1.2.3:9", "--token", "t", "--insecure"]);
  assert.equal(mode(servers), "600");
  const saved = JSON.parse(await Deno.readTextFile(servers)).servers;
  assert.deepEqual(saved, [
    { name: "x", url: "ws://10.1.2.3:9/", token: "t", caCert: null, insecure: true },
  ]);
  // without the flag on disk (an older cw saved it, or a hand edit), it is not used
  await Deno.writeTextFile(
    servers,
    JSON.stringify({ servers: [{ ...saved[0], insecure: undefined }] }),
  );
  const readBack = await client.run(["--server", "x", "list"]);
  assert.equal(readBack.code, 1);
  assert.equal(
    readBack.stderr,
    'cw: Refusing to send the token of server "x" in clear text to ws://10.1.2.3:9: add it again with a wss:// URL (or --insecure if the network to it is private)\n',
  );
  await client.ok(["server", "remove", "x"]);

  // a real node listening on loopback without TLS (allowed there)
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  await Deno.mkdir(node.home, { recursive: true, mode: 0o700 });
  await Deno.writeTextFile(
    `${node.home}/config.json`,
    JSON.stringify({ listen: `127.0.0.1:${port}` }),
  );
  await node.ok(["list"]);
  const token = (await node.ok(["node", "token"])).trim();
  assert.equal(mode(`${node.home}/node.token`), "600");
  const url = `ws://127.0.0.1:${port}/`;
  const id = await node.launch(["sleep", "30"]);

  const tokenFile = `${tmp.path}/token`;
  await Deno.writeTextFile(tokenFile, `${token}\n`, { mode: 0o600 });
  const ways: [string, string[], { stdin?: string; env?: Record<string, string> }][] = [
    ["stdin", ["--token", "-"], { stdin: `${token}\n` }],
    ["file", ["--token-file", tokenFile], {}],
    ["env", [], { env: { CW_TOKEN: token } }],
  ];
  for (const [name, flags, opts] of ways) {
    const add = await client.run(["server", "add", name, url, ...flags], opts);
    assert.equal(add.code, 0, `${name}: ${add.stderr}`);
    await waitFor(`the node through the server saved from ${name}`, async () => {
      const r = await client.run(["--server", name, "list", "--json"]);
      return r.code === 0 && JSON.parse(r.stdout)[0]?.id === id;
    });
  }
  const stored = JSON.parse(await Deno.readTextFile(servers)).servers as { token: string }[];
  assert.deepEqual(stored.map((s) => s.token), [token, token, token]);
  assert.equal(mode(servers), "600");

  const mistakes: [string[], string | undefined, number, RegExp][] = [
    [["--token", "-"], "", 2, /^cw: Found no token in stdin \(--token -\)\n$/],
    [
      [],
      undefined,
      2,
      /^cw: Missing the token: give --token-file FILE, --token - \(stdin\) or CW_TOKEN/,
    ],
    [
      ["--token-file", `${tmp.path}/none`],
      undefined,
      1,
      /^cw: Cannot read --token-file .*\/none: /,
    ],
    [
      ["--token", "-", "--token-file", tokenFile],
      "x\n",
      2,
      /^cw: Give --token or --token-file, not both\n$/,
    ],
  ];
  for (const [flags, stdin, code, expected] of mistakes) {
    const r = await client.run(["server", "add", "bad", url, ...flags], { stdin });
    assert.equal(r.code, code, `${flags.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, expected);
  }
});

Deno.test("relay admin: the admin token from a file or stdin, never in clear text to another host; revoke by id; relay.kv* are 0600", async () => {
  await using tmp = await tempDir();
  await using home = new CwHome();
  // no admin token in the environment: the relay generates one into its data dir
  const relay = await plainRelay(tmp.path, { CW_RELAY_ADMIN_TOKEN: "" });
  const dataDir = relay.dataDir;
  const tokenFile = `${dataDir}/admin.token`;
  try {
    assert.equal(mode(dataDir), "700");
    assert.equal(mode(tokenFile), "600");
    const api = ["--relay-url", relay.url];
    const noEnv = { CW_RELAY_ADMIN_TOKEN: "" };

    const fromFile = await home.run(["relay", "invite", ...api, "--admin-token-file", tokenFile], {
      env: noEnv,
    });
    assert.equal(fromFile.code, 0, fromFile.stderr);
    assert.match(fromFile.stdout, /^cwi_\S+\n$/);
    const fromStdin = await home.run(["relay", "invite", ...api, "--admin-token", "-"], {
      env: noEnv,
      stdin: await Deno.readTextFile(tokenFile),
    });
    assert.equal(fromStdin.code, 0, fromStdin.stderr);

    const missing = await home.run(["relay", "invite", ...api], { env: noEnv });
    assert.equal(missing.code, 2);
    assert.equal(
      missing.stderr,
      "cw relay invite: --relay-url needs the admin token: --admin-token-file FILE, --admin-token - (stdin) or CW_RELAY_ADMIN_TOKEN\n",
    );
    const cleartext = await home.run(
      ["relay", "invite", "--relay-url", "http://10.1.2.3:9", "--admin-token-file", tokenFile],
    );
    assert.equal(cleartext.code, 2);
    assert.equal(
      cleartext.stderr,
      "cw relay invite: Refusing to send the admin token in clear text to http://10.1.2.3:9: use an https:// URL, or add --insecure if the network to the relay is private\n",
    );

    // the listed id revokes an invite without its token on the command line
    const listed = await home.run(
      ["relay", "invite", ...api, "--admin-token-file", tokenFile, "--list", "--json"],
    );
    assert.equal(listed.code, 0, listed.stderr);
    const ids = (JSON.parse(listed.stdout) as { id: string }[]).map((i) => i.id);
    assert.equal(ids.length, 2);
    const revoke = await home.run(
      ["relay", "invite", ...api, "--admin-token-file", tokenFile, "--revoke", ids[0]],
    );
    assert.equal(revoke.code, 0, revoke.stderr);

    // the KV files, with the relay running and after its writes
    const kvFiles = [...Deno.readDirSync(dataDir)].map((e) => e.name).filter((n) =>
      n.startsWith("relay.kv")
    ).sort();
    assert.deepEqual(kvFiles, ["relay.kv", "relay.kv-shm", "relay.kv-wal"]);
    for (const f of kvFiles) assert.equal(mode(`${dataDir}/${f}`), "600", f);
  } finally {
    await relay.stop();
  }

  // straight on the data dir: a file left 0644 by an older relay is narrowed, and the id revokes
  Deno.chmodSync(`${dataDir}/relay.kv`, 0o644);
  const dir = ["--data-dir", dataDir];
  const listed = await home.run(["relay", "invite", ...dir, "--list", "--json"]);
  assert.equal(listed.code, 0, listed.stderr);
  assert.equal(mode(`${dataDir}/relay.kv`), "600");
  const [left] = JSON.parse(listed.stdout) as { id: string }[];
  const revoke = await home.run(["relay", "invite", ...dir, "--revoke", left.id]);
  assert.equal(revoke.code, 0, revoke.stderr);
  assert.equal(revoke.stderr, "Invite revoked.\n");
  const none = await home.run(["relay", "invite", ...dir, "--list", "--json"]);
  assert.deepEqual(JSON.parse(none.stdout), []);
});
