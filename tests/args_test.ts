/** shared/args.ts reads command lines exactly as node:util's parseArgs (strict) does. */
import assert from "node:assert/strict";
import { parseArgs as nodeParseArgs } from "node:util";
import { parseArgs } from "../shared/args.ts";

const OPTIONS = {
  json: { type: "boolean" },
  name: { type: "string", short: "n" },
  tag: { type: "string", multiple: true },
  all: { type: "boolean", short: "a" },
  quiet: { type: "boolean", short: "q" },
  env: { type: "string", multiple: true, short: "e" },
} as const;

function answer(f: () => { values: unknown; positionals: string[] }): unknown {
  try {
    const { values, positionals } = f();
    return { values: { ...(values as object) }, positionals };
  } catch (err) {
    return { error: (err as Error).message.split("\n")[0] };
  }
}

Deno.test("args: the same answers and errors as node:util parseArgs", () => {
  const cases: string[][] = [
    [],
    ["a", "b"],
    ["--json"],
    ["--json", "x", "--name", "n1"],
    ["--name=n2", "--name", "n3"],
    ["-n", "n4"],
    ["-nn5"],
    ["--tag", "a", "--tag=b", "--tag", "c"],
    ["-aq"],
    ["-qa", "pos"],
    ["-an", "x"],
    ["--", "--json", "-n"],
    ["x", "--", "y"],
    ["-"],
    ["--name", "-"],
    ["--bogus"],
    ["--bogus=1"],
    ["-z"],
    ["--json=yes"],
    ["--name"],
    ["--name", "--json"],
    ["-n", "-q"],
    ["--name", "-5"],
    ["--name="],
    ["-e", "A=1", "-e", "B=2", "--env=C=3"],
    ["--Name", "x"],
    ["---json"],
    ["--name", "a b", "c d"],
  ];
  for (const args of cases) {
    const ours = answer(() =>
      parseArgs({ args, options: OPTIONS, allowPositionals: true, strict: true })
    );
    const node = answer(() =>
      nodeParseArgs({ args, options: OPTIONS, allowPositionals: true, strict: true })
    );
    assert.deepEqual(ours, node, JSON.stringify(args));
  }
  // without positionals allowed
  for (const args of [["x"], ["--json", "y"]]) {
    assert.deepEqual(
      answer(() => parseArgs({ args, options: OPTIONS, strict: true })),
      answer(() => nodeParseArgs({ args, options: OPTIONS, strict: true })),
    );
  }
});

Deno.test("args: 5,000 random command lines read the same as node:util parseArgs", () => {
  const tokens = [
    "x",
    "-",
    "--",
    "--json",
    "--json=1",
    "--name",
    "--name=v",
    "-n",
    "-nv",
    "-a",
    "-aq",
    "-an",
    "-qn5",
    "-z",
    "-az",
    "--tag",
    "--tag=t",
    "-e",
    "--bogus",
    "-5",
    "--all",
    "",
  ];
  let seed = 11;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return (seed >>> 16) % n;
  };
  for (let i = 0; i < 5000; i++) {
    const args = Array.from({ length: rand(6) }, () => tokens[rand(tokens.length)]);
    const allowPositionals = rand(4) !== 0;
    assert.deepEqual(
      answer(() => parseArgs({ args, options: OPTIONS, allowPositionals, strict: true })),
      answer(() => nodeParseArgs({ args, options: OPTIONS, allowPositionals, strict: true })),
      JSON.stringify({ args, allowPositionals }),
    );
  }
});

Deno.test("path: join, dirname, basename, normalize and fromFileUrl answer as node:path and node:url", async () => {
  const nodePath = await import("node:path");
  const nodeUrl = await import("node:url");
  const ours = await import("../shared/path.ts");
  const parts = ["", ".", "..", "/", "//", "a", "b/", "/c", "d/../e", "./f", "g//h", "..."];
  let seed = 5;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return (seed >>> 16) % n;
  };
  for (let i = 0; i < 5000; i++) {
    const ps = Array.from({ length: 1 + rand(4) }, () => parts[rand(parts.length)]);
    const p = ps.join(rand(2) ? "/" : "");
    assert.equal(ours.join(...ps), nodePath.join(...ps), JSON.stringify(ps));
    assert.equal(ours.normalize(p), nodePath.normalize(p), JSON.stringify(p));
    assert.equal(ours.dirname(p), nodePath.dirname(p), JSON.stringify(p));
    assert.equal(ours.basename(p), nodePath.basename(p), JSON.stringify(p));
  }
  for (const u of ["file:///a/b%20c", "file:///", "file://localhost/x/y", import.meta.url]) {
    assert.equal(ours.fromFileUrl(u), nodeUrl.fileURLToPath(u));
  }
  assert.throws(() => ours.fromFileUrl("file:///a%2fb"));
  assert.throws(() => ours.fromFileUrl("https://x/"));
});

Deno.test("splitCommandLine: words, quotes and escapes as a shell splits them, nothing else", async () => {
  const { splitCommandLine } = await import("../shared/args.ts");
  const cases: [string, string[]][] = [
    ["bash", ["bash"]],
    ["  sh -c 'echo hi; ls'  ", ["sh", "-c", "echo hi; ls"]],
    [`echo "a \\"b\\" c" d\\ e`, ["echo", 'a "b" c', "d e"]],
    ["echo '' x", ["echo", "", "x"]],
    ["echo $HOME *", ["echo", "$HOME", "*"]],
    ["", []],
  ];
  for (const [line, argv] of cases) assert.deepEqual(splitCommandLine(line), argv, line);
  assert.throws(() => splitCommandLine("echo 'open"), /Unclosed quote/);
});
