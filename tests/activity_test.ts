/**
 * Session state for people and scripts: `working` (output lately, or a quiet
 * program using CPU), `waiting` (quiet and idle: waiting for you), or how it
 * ended — in `cw list`, `cw status --json`, and `cw wait --idle [--for D]`.
 */
import assert from "node:assert/strict";
import { CwHome, waitFor } from "./helpers.ts";
import type { SessionInfo } from "../shared/protocol.ts";
import { relayWithNode } from "./relay_helpers.ts";

async function info(home: CwHome, id: number): Promise<SessionInfo> {
  return JSON.parse(await home.ok(["status", String(id), "--json"]));
}

Deno.test("state: working while it prints, waiting once quiet and idle; list and status say so", async () => {
  await using home = new CwHome();
  const id = await home.launch(["sh", "-c", "echo started; read answer; echo got $answer"]);
  assert.equal((await info(home, id)).state, "working");
  await waitFor("the session to wait", async () => (await info(home, id)).state === "waiting");
  const s = await info(home, id);
  assert.ok(Date.now() - Date.parse(s.stateSince!) < 10_000);
  assert.match(await home.ok(["list"]), new RegExp(`^${id}\\s+-\\s+waiting\\s`, "m"));
  assert.match(await home.ok(["status", String(id)]), /^state:\s+waiting for \d+s$/m);
  // an answer makes it work again, then it ends
  await home.ok(["send", String(id), "yes"]);
  await home.ok(["wait", String(id)]);
  const ended = await info(home, id);
  assert.equal(ended.state, "exited");
  assert.equal(ended.stateSince, undefined);
});

Deno.test("state: a quiet program busy on the CPU is working; wait --idle does not return for it", async () => {
  await using home = new CwHome();
  const id = await home.launch(["sh", "-c", "while :; do :; done"]);
  // quiet from the start: past the output's 3 s it must still read as working
  const r = await home.run(["wait", String(id), "--idle", "--timeout", "5s"]);
  assert.equal(r.code, 124, r.stderr);
  assert.equal((await info(home, id)).state, "working");
  await home.ok(["kill", String(id), "--signal", "KILL"]);
});

Deno.test("wait --idle returns when a session starts waiting, --for that much later; an end is an end", async () => {
  await using home = new CwHome();
  const id = await home.launch([
    "sh",
    "-c",
    "for i in 1 2 3; do echo step $i; sleep 0.3; done; read x",
  ]);
  const t0 = Date.now();
  const r = await home.run(["wait", String(id), "--idle"]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(Date.now() - t0 >= 3000, "returned before the output was quiet for 3 s");
  const s = await info(home, id);
  assert.equal(s.state, "waiting");
  // --for: it has been waiting that long when wait returns
  const f = await home.run(["wait", String(id), "--idle", "--for", "2s"]);
  assert.equal(f.code, 0, f.stderr);
  assert.ok(Date.now() - Date.parse((await info(home, id)).stateSince!) >= 2000);
  // a session that ends before it waits: its exit code
  const quick = await home.launch(["sh", "-c", "exit 5"]);
  assert.equal((await home.run(["wait", String(quick), "--idle"])).code, 5);
  // --for without --idle is a usage error
  assert.equal((await home.run(["wait", String(id), "--for", "1s"])).code, 2);
  await home.ok(["kill", String(id)]);
});

Deno.test("notices: a webhook gets waiting and exited, with the screen's last lines, retried after a 5xx", async () => {
  const got: { body: Record<string, unknown>; auth: string | null; status: number }[] = [];
  let refuse = 1; // the first delivery is answered 500: it must come again
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const body = await req.json();
    const status = refuse-- > 0 ? 500 : 200;
    got.push({ body, auth: req.headers.get("authorization"), status });
    return new Response(null, { status });
  });
  await using home = new CwHome();
  await Deno.mkdir(home.home, { mode: 0o700 });
  await Deno.writeTextFile(
    `${home.home}/config.json`,
    JSON.stringify({ notifyUrl: `http://127.0.0.1:${server.addr.port}/hook` }),
  );
  try {
    const id = await home.launch(["sh", "-c", "echo 'Proceed? [y/n]'; read x; exit 4"]);
    await waitFor(
      "the waiting notice, delivered",
      () => got.some((g) => g.body.event === "waiting" && g.status === 200),
      20_000,
    );
    const waiting = got.filter((g) => g.body.event === "waiting");
    assert.equal(waiting.length, 2, "refused once, then delivered");
    assert.deepEqual(waiting[0].body, waiting[1].body);
    const notice = waiting[1].body as {
      node: string;
      session: { id: number; state: string };
      lines: string[];
    };
    assert.equal(notice.session.id, id);
    assert.equal(notice.session.state, "waiting");
    assert.ok(notice.lines.includes("Proceed? [y/n]"), JSON.stringify(notice.lines));
    assert.ok(notice.node.length > 0);
    // the answer ends it: an exited notice with its code
    await home.ok(["send", String(id), "y"]);
    await waitFor("the exited notice", () => got.some((g) => g.body.event === "exited"));
    const exited = got.find((g) => g.body.event === "exited")!.body as {
      session: { status: string; exitCode: number };
    };
    assert.equal(exited.session.status, "exited");
    assert.equal(exited.session.exitCode, 4);
    // no credential ever goes with a notice
    assert.ok(got.every((g) => g.auth === null));
  } finally {
    await server.shutdown();
  }
});

Deno.test("notices: a webhook in clear text to another host is refused at start", async () => {
  await using home = new CwHome();
  await Deno.mkdir(home.home, { mode: 0o700 });
  await Deno.writeTextFile(
    `${home.home}/config.json`,
    JSON.stringify({ notifyUrl: "http://example.com/hook" }),
  );
  const r = await home.run(["list"]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /notifyUrl.*https:\/\//);
});

Deno.test("notices through the relay: a node's notices reach its network's webhook (webhooks.json)", async () => {
  const got: Record<string, unknown>[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    got.push(await req.json());
    return new Response(null, { status: 204 });
  });
  await using home = new CwHome();
  await using _rig = await relayWithNode(home, "box-1", (dataDir) =>
    Deno.writeTextFile(
      `${dataDir}/webhooks.json`,
      JSON.stringify({ default: `http://127.0.0.1:${server.addr.port}/net` }),
    ));
  try {
    const id = await home.launch(["sh", "-c", "echo bye; exit 6"]);
    await waitFor("the exited notice", () => got.some((g) => g.event === "exited"), 15_000);
    const notice = got.find((g) => g.event === "exited") as {
      node: string;
      network: string;
      session: { id: number; exitCode: number };
      lines: string[];
    };
    // the node's name and network are the relay's, from the link
    assert.equal(notice.node, "box-1");
    assert.equal(notice.network, "default");
    assert.equal(notice.session.id, id);
    assert.equal(notice.session.exitCode, 6);
    assert.ok(notice.lines.includes("bye"), JSON.stringify(notice.lines));
  } finally {
    await server.shutdown();
  }
});
