/**
 * Browser logins on the relay (relay/web.ts): `cw web` makes a one-time link;
 * its code (once, for 2 minutes) becomes a session cookie (HttpOnly, Secure,
 * SameSite=Strict) carrying the principal that made it; cross-origin use of
 * the cookie — a state change or a WebSocket — is refused; sessions can be
 * listed and ended, and end with their principal. (The pages themselves are
 * not built yet.)
 */
import assert from "node:assert/strict";
import { CwHome, waitFor } from "./helpers.ts";
import { checkHello, FramedConn, helloFrame } from "../shared/framed.ts";
import { FrameKind } from "../shared/protocol.ts";
import { wsDuplex } from "../shared/ws_duplex.ts";
import {
  ADMIN_TOKEN,
  caClient,
  invite,
  makeCerts,
  RelayProcess,
  setupNode,
  waitOnline,
} from "./relay_helpers.ts";
import { WebSessions } from "../relay/web.ts";
import type { Principal } from "../relay/principals.ts";

Deno.test("web: a login link becomes a cookie once; the cookie acts as its principal, only from the relay's own pages", async () => {
  await using home = new CwHome();
  const certs = await makeCerts(`${home.root}/pki`);
  await using relay = await RelayProcess.start(`${home.root}/relay`, certs);
  const client = caClient(certs);
  const origin = new URL(relay.url).origin;
  const api = (path: string, init: RequestInit = {}) =>
    fetch(`${relay.url}${path}`, { ...init, client } as RequestInit);
  try {
    await setupNode(home, relay, certs, "box-1", await invite(relay, client));
    await waitOnline(home, "box-1");
    // a user of the default network, logged in on a laptop without a node
    const made = await api("/api/v1/users", {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "ana" }),
    });
    const token = (await made.json()).token as string;
    await using laptop = new CwHome();
    await Deno.writeTextFile(`${laptop.root}/token`, `${token}\n`);
    await laptop.ok([
      "login",
      "--relay-url",
      relay.url,
      "--token-file",
      `${laptop.root}/token`,
      "--ca-cert",
      certs.ca,
    ]);

    // cw web: the link, its code in the fragment
    const r = await laptop.run(["web"]);
    assert.equal(r.code, 0, r.stderr);
    const url = new URL(r.stdout.trim());
    assert.equal(url.origin, origin);
    const code = /^#login=(cwl_[\w-]{40,})$/.exec(url.hash)?.[1];
    assert.ok(code, url.href);
    assert.match(r.stderr, /within 2 minutes/);

    const login = (c: string, from = origin) =>
      api("/api/v1/web/login", {
        method: "POST",
        headers: { origin: from, "content-type": "application/json" },
        body: JSON.stringify({ code: c }),
      });
    // from another site's page: refused (and the code is not spent by it)
    const forged = await login(code, "https://evil.example");
    assert.equal(forged.status, 403);
    await forged.body?.cancel();
    const ok = await login(code);
    assert.equal(ok.status, 200, await ok.clone().text());
    assert.deepEqual(await ok.json(), {
      kind: "user",
      name: "ana",
      network: "default",
      readOnly: false,
    });
    const setCookie = ok.headers.get("set-cookie") ?? "";
    assert.match(setCookie, /^cw_session=cws_[\w-]+;/);
    for (const flag of ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"]) {
      assert.ok(setCookie.includes(flag), `${flag} in ${setCookie}`);
    }
    const cookie = setCookie.split(";")[0];
    // the same code again: refused
    const replay = await login(code);
    assert.equal(replay.status, 401);
    await replay.body?.cancel();

    // the cookie reads as ana
    const who = await api("/api/v1/whoami", { headers: { cookie } });
    assert.deepEqual(await who.json(), {
      kind: "user",
      name: "ana",
      network: "default",
      readOnly: false,
    });
    const nodes = await api("/api/v1/nodes", { headers: { cookie } });
    assert.equal(nodes.status, 200);
    assert.ok(JSON.stringify(await nodes.json()).includes("box-1"));
    // a change with the cookie: from the relay's own page only
    const put = (from: string | null) =>
      api("/api/v1/kv/default/web-key", {
        method: "PUT",
        headers: { cookie, ...(from ? { origin: from } : {}), "content-type": "text/plain" },
        body: "v",
      });
    for (const from of ["https://evil.example", null]) {
      const res = await put(from);
      assert.equal(res.status, 403, `origin ${from}`);
      await res.body?.cancel();
    }
    const same = await put(origin);
    assert.ok(same.status < 300, `${same.status} ${await same.text()}`);
    // a WebSocket with the cookie from another site's page is refused before the upgrade
    assert.equal(await upgradeStatus(relay.url, certs.ca, cookie, "https://evil.example"), 403);

    // listed, and ended by its owner: the cookie no longer works
    const listed = JSON.parse(await laptop.ok(["web", "sessions", "--json"]));
    assert.equal(listed.length, 1);
    assert.equal(listed[0].principal, "user:ana");
    assert.equal((await laptop.run(["web", "revoke", listed[0].id])).code, 0);
    const after = await api("/api/v1/whoami", { headers: { cookie } });
    assert.equal(after.status, 401);
    await after.body?.cancel();

    // a new session ends with its principal: revoking ana logs her browsers out
    const code2 = new URL((await laptop.ok(["web"])).trim()).hash.slice("#login=".length);
    const cookie2 = ((await login(code2)).headers.get("set-cookie") ?? "").split(";")[0];
    assert.equal((await api("/api/v1/whoami", { headers: { cookie: cookie2 } })).status, 200);
    const revoked = await api("/api/v1/users/ana", {
      method: "DELETE",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    assert.ok(revoked.status < 300);
    await revoked.body?.cancel();
    const gone = await api("/api/v1/whoami", { headers: { cookie: cookie2 } });
    assert.equal(gone.status, 401);
    await gone.body?.cancel();

    // every step is in the audit log
    const audit = await Deno.readTextFile(`${home.root}/relay/audit.log`);
    for (const event of ["web_code_created", "web_login", "web_session_ended", "refused"]) {
      assert.ok(audit.includes(`"event":"${event}"`), event);
    }
    assert.ok(!audit.includes(code), "no code in the audit log");
  } finally {
    client.close();
  }
});

/** The HTTP status a WebSocket upgrade to a node's stream gets with `cookie` from `origin`. */
function upgradeStatus(base: string, ca: string, cookie: string, origin: string): Promise<number> {
  return upgradeStatusAt(new URL("/api/v1/nodes/box-1/connect", base).href, ca, cookie, origin);
}

/** The HTTP status a WebSocket upgrade to `target` gets with `cookie` from `origin`. */
async function upgradeStatusAt(
  target: string,
  ca: string,
  cookie: string,
  origin: string,
): Promise<number> {
  const url = new URL(target);
  const conn = await Deno.connectTls({
    hostname: url.hostname,
    port: Number(url.port),
    caCerts: [await Deno.readTextFile(ca)],
  });
  try {
    const key = crypto.getRandomValues(new Uint8Array(16)).toBase64();
    await conn.write(new TextEncoder().encode(
      `GET ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\n` +
        `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
        `Origin: ${origin}\r\nCookie: ${cookie}\r\n\r\n`,
    ));
    const buf = new Uint8Array(1024);
    const n = await conn.read(buf);
    const line = new TextDecoder().decode(buf.subarray(0, n ?? 0)).split("\r\n")[0];
    return Number(/^HTTP\/1\.1 (\d{3})/.exec(line)?.[1] ?? 0);
  } finally {
    conn.close();
  }
}

Deno.test("web: codes expire after 2 minutes and work once; sessions end when idle or old", () => {
  let now = Date.parse("2026-12-01T00:00:00Z");
  const web = new WebSessions(() => new Date(now));
  const p: Principal = {
    kind: "user",
    id: "user:ana",
    name: "ana",
    network: "default",
    readOnly: true,
  };
  const late = web.createCode(p).code;
  now += 2 * 60_000;
  assert.equal(web.redeem(late, "1.2.3.4", "ua"), null);
  const { code } = web.createCode(p);
  const got = web.redeem(code, "1.2.3.4", "Mozilla\x1b]52;evil\x07")!;
  assert.equal(web.redeem(code, "1.2.3.4", "ua"), null);
  assert.equal(web.principalOf(got.token)?.principal.readOnly, true);
  // a browser's user agent is kept escaped
  assert.ok(!web.list(() => true)[0].userAgent.includes("\x1b"));
  // idle a day: ended
  now += 24 * 3600_000 + 1;
  assert.equal(web.principalOf(got.token), null);
  // a week in all, used or not
  const again = web.redeem(web.createCode(p).code, "a", "b")!;
  for (let i = 0; i < 8; i++) {
    now += 23 * 3600_000;
    if (i < 7) assert.ok(web.principalOf(again.token), `day ${i}`);
  }
  assert.equal(web.principalOf(again.token), null);
  // codes per principal are bounded
  for (let i = 0; i < 8; i++) web.createCode(p);
  assert.throws(() => web.createCode(p), /Too many login codes/);
});

Deno.test("web, direct mode: a node's own listener serves the page, logs a browser in, streams with the cookie", async () => {
  await using node = new CwHome();
  await using laptop = new CwHome();
  const certs = await makeCerts(`${node.root}/pki`);
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  await Deno.mkdir(node.home, { recursive: true, mode: 0o700 });
  await Deno.writeTextFile(
    `${node.home}/config.json`,
    JSON.stringify({ listen: `127.0.0.1:${port}`, tlsCert: certs.cert, tlsKey: certs.key }),
  );
  await node.ok(["list"]);
  const token = (await node.ok(["node", "token"])).trim();
  const base = `https://127.0.0.1:${port}`;
  await laptop.ok([
    "server",
    "add",
    "s1",
    `wss://127.0.0.1:${port}/`,
    "--token",
    token,
    "--ca-cert",
    certs.ca,
  ]);
  const client = caClient(certs);
  try {
    await waitFor(
      "the listener",
      async () => (await laptop.run(["--server", "s1", "list"])).code === 0,
    );
    await node.launch(["sh", "-c", "echo direct-hello; sleep 600"], ["--name", "d"]);
    // the page is served here too
    const page = await fetch(`${base}/`, { client });
    assert.equal(page.status, 200);
    await page.body?.cancel();
    // cw --server s1 web: a link to the node itself
    const link = new URL((await laptop.ok(["--server", "s1", "web"])).trim());
    assert.equal(link.origin, base);
    const code = link.hash.slice("#login=".length);
    const forged = await fetch(`${base}/api/v1/web/login`, {
      method: "POST",
      client,
      headers: { origin: "https://evil.example", "content-type": "application/json" },
      body: JSON.stringify({ code }),
    });
    assert.equal(forged.status, 403);
    await forged.body?.cancel();
    const ok = await fetch(`${base}/api/v1/web/login`, {
      method: "POST",
      client,
      headers: { origin: base, "content-type": "application/json" },
      body: JSON.stringify({ code }),
    });
    assert.equal(ok.status, 200);
    const setCookie = ok.headers.get("set-cookie") ?? "";
    assert.match(setCookie, /HttpOnly; Secure; SameSite=Strict/);
    const cookie = setCookie.split(";")[0];
    await ok.body?.cancel();
    const nodes = await (await fetch(`${base}/api/v1/nodes`, { client, headers: { cookie } }))
      .json();
    assert.equal(nodes.nodes.length, 1);
    // a stream with the cookie, from the node's own page: the node protocol
    const ws = new WebSocket(`wss://127.0.0.1:${port}/api/v1/nodes/x/connect`, {
      headers: { cookie, origin: base },
      client,
    } as unknown as string[]);
    const conn = new FramedConn(wsDuplex(ws));
    await conn.sendJson(FrameKind.HELLO, helloFrame());
    checkHello(await conn.next());
    await conn.sendJson(FrameKind.REQUEST, { op: "list" });
    const frame = await conn.next();
    assert.equal(frame?.kind, FrameKind.RESPONSE);
    const sessions =
      (frame as unknown as { value: { sessions: { name: string }[] } }).value.sessions;
    assert.deepEqual(sessions.map((s) => s.name), ["d"]);
    conn.close();
    // from another site: refused
    assert.equal(
      await upgradeStatusAt(
        `${base}/api/v1/nodes/x/connect`,
        certs.ca,
        cookie,
        "https://evil.example",
      ),
      403,
    );
    // rotating the node token ends browser sessions
    await node.ok(["node", "token", "--rotate"]);
    const after = await fetch(`${base}/api/v1/whoami`, { client, headers: { cookie } });
    assert.equal(after.status, 401);
    await after.body?.cancel();
  } finally {
    client.close();
  }
});
