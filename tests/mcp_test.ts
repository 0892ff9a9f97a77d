/**
 * `cw mcp` driven by the official SDK's own client (`Client` over
 * `StdioClientTransport`, which starts `cw mcp` as an MCP host would), and
 * `cw events`: on the local node, on a node through a real relay, with a
 * read-only login.
 */
import assert from "node:assert/strict";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { Ajv } from "ajv";
import { RUN_FLAGS } from "../shared/runtime.ts";
import { CONFIG, CwHome, MAIN, waitFor } from "./helpers.ts";
import { relayWithNode } from "./relay_helpers.ts";

type Result = {
  isError?: boolean;
  content: { type: string; text: string }[];
  structuredContent?: Record<string, unknown>;
};

/** A tool as tools/list gives it. */
interface ListedTool {
  name: string;
  description?: string;
  inputSchema: { type: string; properties?: Record<string, unknown> };
  annotations?: { readOnlyHint?: boolean };
}

/** An MCP client connected to `cw mcp` running in `home`. */
async function mcp(home: CwHome): Promise<Client & AsyncDisposable> {
  const transport = new StdioClientTransport({
    command: Deno.execPath(),
    args: ["run", ...RUN_FLAGS, "--config", CONFIG, MAIN, "mcp"],
    env: home.env(),
    stderr: "pipe",
  });
  const client = new Client({ name: "cw-test", version: "1.0.0" });
  await client.connect(transport);
  return Object.assign(client, {
    async [Symbol.asyncDispose]() {
      await client.close();
    },
  });
}

async function call(client: Client, name: string, args: Record<string, unknown> = {}) {
  return await client.callTool({ name, arguments: args }) as Result;
}

/** A call that must succeed; returns its structured result. */
async function ok(client: Client, name: string, args: Record<string, unknown> = {}) {
  const r = await call(client, name, args);
  assert.ok(!r.isError, `${name} failed: ${r.content[0]?.text}`);
  assert.equal(r.content[0].type, "text");
  return r.structuredContent!;
}

Deno.test("mcp: tools and schemas; launch, read, screen, answer a prompt, wait, kill on this machine", async () => {
  await using home = new CwHome();
  await using client = await mcp(home);
  assert.equal(client.getServerVersion()?.name, "cw");
  const { tools } = await client.listTools() as { tools: ListedTool[] };
  const names = tools.map((t) => t.name).sort();
  assert.deepEqual(names, [
    "events",
    "kill",
    "kv_delete",
    "kv_get",
    "kv_list",
    "kv_set",
    "launch",
    "list_nodes",
    "list_sessions",
    "read_output",
    "screen",
    "send",
    "status",
    "wait",
  ]);
  const ajv = new Ajv({ strict: true });
  for (const t of tools) {
    assert.ok(t.description && t.description.length > 40, `${t.name} has a description`);
    assert.equal(t.inputSchema.type, "object");
    ajv.compile(t.inputSchema); // a valid JSON Schema, every keyword known
    for (const [k, p] of Object.entries(t.inputSchema.properties ?? {})) {
      assert.ok((p as { description?: string }).description, `${t.name}.${k} is described`);
    }
    assert.equal(typeof t.annotations?.readOnlyHint, "boolean");
  }

  // a program that asks a question, answered with send
  const launched = await ok(client, "launch", {
    argv: ["sh", "-c", 'printf "name? "; read name; echo "hello $name"; exit 3'],
    name: "asker",
    tags: ["mcp"],
  });
  const ref = launched.ref as string;
  assert.match(ref, /^\d+$/);
  await waitFor("the prompt", async () => {
    const out = await ok(client, "read_output", { session: "asker" });
    return (out.text as string).includes("name? ");
  });
  const waiting = await ok(client, "wait", { session: ref, until: "waiting", timeout_seconds: 30 });
  assert.equal(waiting.done, true);
  assert.equal(waiting.state, "waiting");
  const screen = await ok(client, "screen", { session: ref });
  assert.equal((screen.lines as string[])[0].trimEnd(), "name?");
  assert.ok(
    ((await ok(client, "list_sessions", { tag: "mcp" })).sessions as unknown[]).length === 1,
  );
  await ok(client, "send", { session: ref, text: "agent", keys: ["Enter"] });
  const ended = await ok(client, "wait", { session: ref, timeout_seconds: 30 });
  assert.deepEqual([ended.done, ended.status, ended.exitCode], [true, "exited", 3]);
  const all = await ok(client, "read_output", { session: ref, raw: true });
  assert.match(all.text as string, /hello agent/);
  // from an offset: only what is new, and where to go on from
  const part = await ok(client, "read_output", { session: ref, from_offset: 6, max_bytes: 5 });
  assert.equal(part.offset, 6);
  assert.equal(part.next_offset, 11);
  assert.equal((part.text as string).length, 5);
  const tail = await ok(client, "read_output", { session: ref, tail_lines: 1 });
  assert.equal((tail.text as string).trim(), "hello agent");

  // a wait that times out says so, reporting progress meanwhile
  const sleeper = (await ok(client, "launch", { argv: ["sleep", "600"] })).ref as string;
  const progress: number[] = [];
  const slow = await client.callTool(
    { name: "wait", arguments: { session: sleeper, timeout_seconds: 6 } },
    undefined,
    { onprogress: (p: { progress: number }) => progress.push(p.progress), timeout: 20_000 },
  ) as Result;
  assert.equal(slow.structuredContent!.done, false);
  assert.ok(progress.length >= 1, "progress while waiting");
  const killed = await ok(client, "kill", { session: sleeper });
  assert.equal((killed.sessions as { status: string }[])[0].status, "killed");

  // errors are tool errors with cw's codes; bad arguments never reach the node
  const missing = await call(client, "status", { session: "nope" });
  assert.equal(missing.isError, true);
  assert.deepEqual((missing.structuredContent!.error as { code: string }).code, "not_found");
  for (
    const [name, args] of [
      ["launch", { argv: [] }],
      ["launch", { argv: "ls" }],
      ["send", { session: ref, keys: ["Hyper-X"] }],
      ["read_output", { session: ref, max_bytes: 1e9 }],
      ["wait", { session: ref, extra: 1 }],
    ] as const
  ) {
    const r = await call(client, name, args as Record<string, unknown>);
    assert.equal(r.isError, true, `${name} ${JSON.stringify(args)}`);
    assert.equal((r.structuredContent!.error as { code: string }).code, "bad_request");
  }
  const unknown = await call(client, "no_such_tool");
  assert.equal(unknown.isError, true);
  // KV needs a relay: said clearly
  const kv = await call(client, "kv_get", { key: "k" });
  assert.match(kv.content[0].text, /^not_found: This machine has no relay/);
});

Deno.test("mcp and events: a node through the relay, read-only refused writes, cw events in order", async () => {
  await using node = new CwHome();
  await using rig = await relayWithNode(node, "box-1");
  const user = async (name: string, readOnly: boolean) => {
    const res = await fetch(`${rig.relay.url}/api/v1/users`, {
      method: "POST",
      client: rig.client,
      headers: {
        authorization: "Bearer cwa_test-admin-token-0123456789",
        "content-type": "application/json",
      },
      body: JSON.stringify({ name, readOnly }),
    });
    assert.equal(res.status, 201);
    const home = new CwHome();
    await home.ok([
      "login",
      "--relay-url",
      rig.relay.url,
      "--token",
      "-",
      "--ca-cert",
      rig.certs.ca,
    ], {
      stdin: `${(await res.json()).token}\n`,
    });
    return home;
  };
  await using laptop = await user("agent", false);

  // cw events on the node, through the relay, from before the launch
  const events = new Deno.Command(Deno.execPath(), {
    args: ["run", ...RUN_FLAGS, "--config", CONFIG, MAIN, "events", "box-1", "--json"],
    env: laptop.env(),
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: Record<string, unknown>[] = [];
  const watching = Promise.withResolvers<void>();
  let notes = "";
  const notesDone = (async () => {
    for await (const chunk of events.stderr.pipeThrough(new TextDecoderStream())) {
      notes += chunk;
      if (notes.includes("Watching events on box-1")) watching.resolve();
    }
    watching.reject(new Error(`cw events ended: ${notes}`));
  })();
  const reading = (async () => {
    let buf = "";
    for await (const chunk of events.stdout.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        lines.push(JSON.parse(buf.slice(0, i)));
        buf = buf.slice(i + 1);
      }
    }
  })();
  try {
    await using client = await mcp(laptop);
    const nodes = await ok(client, "list_nodes");
    assert.deepEqual(
      (nodes.nodes as { name: string; online: boolean }[]).map((n) => [n.name, n.online]),
      [["box-1", true]],
    );
    await watching.promise; // subscribed: the launch comes after
    const launched = await ok(client, "launch", {
      node: "box-1",
      argv: ["sh", "-c", "echo working; sleep 4; read x; echo got-$x; exit 7"],
      tags: ["remote"],
    });
    const ref = launched.ref as string;
    assert.match(ref, /^box-1:\d+$/);
    await ok(client, "wait", { session: ref, until: "waiting", timeout_seconds: 30 });
    const screen = await ok(client, "screen", { session: ref });
    assert.equal((screen.lines as string[])[0].trimEnd(), "working");
    await ok(client, "send", { session: ref, text: "yes\n" });
    const ended = await ok(client, "wait", { session: ref, timeout_seconds: 30 });
    assert.equal(ended.exitCode, 7);
    assert.match((await ok(client, "read_output", { session: ref })).text as string, /got-yes/);
    const mine = await ok(client, "events", {
      node: "box-1",
      tag: "remote",
      timeout_seconds: 1,
    });
    assert.deepEqual(mine.events, [], "nothing happened since");
    // KV through the relay
    const v1 = await ok(client, "kv_set", { key: "task/1", value: "claimed", if_absent: true });
    const again = await call(client, "kv_set", { key: "task/1", value: "x", if_absent: true });
    assert.equal(again.isError, true);
    assert.equal((await ok(client, "kv_get", { key: "task/1" })).value, "claimed");
    assert.equal((await ok(client, "kv_get", { key: "task/1" })).version, v1.version);
    assert.deepEqual(
      ((await ok(client, "kv_list", { prefix: "task/" })).entries as { key: string }[]).map((e) =>
        e.key
      ),
      ["task/1"],
    );
    assert.equal((await ok(client, "kv_delete", { key: "task/1" })).deleted, true);

    // cw events saw it all, in order
    await waitFor("the exit event", () => lines.some((l) => l.type === "exited"), 10_000);
    const id = Number(ref.split(":")[1]);
    const seq = lines.filter((l) => l.session === id).map((l) =>
      l.type === "state"
        ? `state ${l.state}`
        : l.type === "exited"
        ? `exited ${l.exitCode}`
        : l.type
    );
    assert.equal(seq[0], "launched", seq.join(", "));
    assert.ok(seq.indexOf("state waiting") > 0, seq.join(", "));
    assert.equal(seq.at(-1), "exited 7", seq.join(", "));
    assert.ok(lines.every((l) => l.node === "box-1"));
  } finally {
    events.kill("SIGTERM");
    await reading.catch(() => {});
    await events.status;
    await notesDone.catch(() => {});
  }

  // a read-only user: reads, never writes
  await using reader = await user("watcher", true);
  await using ro = await mcp(reader);
  assert.ok(Array.isArray((await ok(ro, "list_sessions", { node: "box-1" })).sessions));
  for (
    const [name, args] of [
      ["launch", { node: "box-1", argv: ["true"] }],
      ["kv_set", { key: "k", value: "v" }],
      ["kill", { node: "box-1", tag: "remote" }],
    ] as const
  ) {
    const r = await call(ro, name, args as Record<string, unknown>);
    assert.equal(r.isError, true, name);
    assert.equal((r.structuredContent!.error as { code: string }).code, "forbidden", name);
  }
});
