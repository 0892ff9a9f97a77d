/**
 * Every session command through the real CLI against a real node in a temp
 * CW_HOME: what it prints, its exit codes, and its failure cases.
 */
import assert from "node:assert/strict";
import { CwHome, waitFor } from "./helpers.ts";
import type { SessionInfo } from "../shared/protocol.ts";

async function listJson(home: CwHome, args: string[] = []): Promise<SessionInfo[]> {
  return JSON.parse(await home.ok(["list", "--json", ...args]));
}

async function statusJson(
  home: CwHome,
  ref: string | number,
): Promise<SessionInfo & { lastOutput: string }> {
  return JSON.parse(await home.ok(["status", String(ref), "--json"]));
}

/** Waits until a session's log contains `text`. */
function logsContain(home: CwHome, ref: string | number, text: string): Promise<string> {
  return waitFor(`session ${ref} to print ${JSON.stringify(text)}`, async () => {
    const out = await home.ok(["logs", String(ref)]);
    return out.includes(text) ? out : null;
  });
}

Deno.test("launch prints the id alone, sets the environment, and list shows it", async () => {
  await using home = new CwHome();
  const r = await home.run(
    [
      "launch",
      "--name",
      "env-check",
      "--tag",
      "t1",
      "--tag",
      "t2",
      "--env",
      "FOO=bar baz",
      "--",
      "sh",
      "-c",
      'echo "id=$CW_SESSION_ID name=$CW_SESSION_NAME foo=$FOO term=$TERM pwd=$(pwd)"',
    ],
    { env: { TERM: "dumb" } },
  );
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "1\n");
  assert.match(r.stderr, /Launched session 1 \(env-check\)/);
  const out = await logsContain(home, 1, "id=1");
  assert.match(out, /id=1 name=env-check foo=bar baz term=xterm-256color pwd=/);
  assert.ok(out.includes(`pwd=${home.root}`), out);

  const second = await home.launch(["sleep", "30"], ["--dir", "/", "--tag", "t2"]);
  assert.equal(second, 2);
  const all = await listJson(home);
  assert.deepEqual(all.map((s) => s.id), [1, 2]);
  assert.deepEqual(all[0].tags, ["t1", "t2"]);
  assert.equal(all[1].dir, "/");
  assert.deepEqual(all[1].argv, ["sleep", "30"]);
  assert.deepEqual((await listJson(home, ["--tag", "t1"])).map((s) => s.id), [1]);
  assert.deepEqual((await listJson(home, ["--status", "running"])).map((s) => s.id), [2]);
  const table = await home.ok(["list"]);
  assert.match(table, /^ID\s+NAME\s+STATUS\s+EXIT\s+AGE\s+TAGS\s+COMMAND$/m);
  assert.match(table, /^2\s+-\s+(?:working|waiting)\s+-\s+\d+s\s+t2\s+sleep 30$/m);
});

Deno.test("argv from a launch is shown escaped: no escape sequence reaches the viewer", async () => {
  await using home = new CwHome();
  // an OSC 52 clipboard write, a title change and a right-to-left override in argv
  const hostile = [
    "sh",
    "-c",
    "sleep 30",
    "\x1b]52;c;aGk=\x07",
    "\x1b]0;pwned\x07",
    "a\u202eb",
    "two words",
  ];
  const r = await home.run(["launch", "--", ...hostile]);
  assert.equal(r.code, 0, r.stderr);
  for (const out of [r.stderr, await home.ok(["list"]), await home.ok(["status", "1"])]) {
    for (const c of ["\x1b", "\x07", "\u202e"]) {
      assert.ok(!out.includes(c), `a raw ${JSON.stringify(c)} was printed`);
    }
  }
  const table = await home.ok(["list"]);
  assert.match(
    table,
    /sh -c 'sleep 30' \\x1b\]52;c;aGk=\\x07 \\x1b\]0;pwned\\x07 a\\u202eb 'two words'$/m,
  );
  // --json keeps the exact strings for programs
  assert.deepEqual((await listJson(home))[0].argv, hostile);
});

Deno.test("launch validates before spawning", async () => {
  await using home = new CwHome();
  const cases: [string[], RegExp][] = [
    [["--", "no-such-command-xyz"], /command not found/],
    [["--", "./missing.sh"], /no executable file/],
    [["--dir", "/no/such/dir", "--", "true"], /does not exist/],
    [["--name", "bad name", "--", "true"], /Invalid session name/],
    [["--name", "123", "--", "true"], /Invalid session name/],
    [["--tag=-x", "--", "true"], /Invalid tag/],
    [["--env", "NOEQUALS", "--", "true"], /KEY=VALUE/],
    [["true"], /after "--"/],
    [[], /Missing the command/],
  ];
  for (const [args, message] of cases) {
    const r = await home.run(["launch", ...args]);
    assert.notEqual(r.code, 0, `launch ${args.join(" ")} should fail`);
    assert.equal(r.stdout, "");
    assert.match(r.stderr, message);
    assert.ok(r.stderr.startsWith("cw: "), r.stderr);
  }
  await home.launch(["sleep", "30"], ["--name", "dup"]);
  const dup = await home.run(["launch", "--name", "dup", "--", "true"]);
  assert.equal(dup.code, 1);
  assert.match(dup.stderr, /The name "dup" is taken by running session 1/);
  assert.equal((await listJson(home)).length, 1, "failed launches leave no session behind");
  // once it ended, the name is free again; ids keep increasing
  await home.ok(["kill", "dup"]);
  assert.equal(await home.launch(["true"], ["--name", "dup"]), 2);
});

Deno.test("logs strips escapes, --raw keeps them, --tail counts lines, --follow ends with the session", async () => {
  await using home = new CwHome();
  const id = await home.launch([
    "sh",
    "-c",
    'printf "\\033[31mred\\033[0m\\n"; for i in 1 2 3 4 5; do echo line$i; done',
  ]);
  await home.ok(["wait", String(id)]);
  assert.equal(await home.ok(["logs", String(id)]), "red\nline1\nline2\nline3\nline4\nline5\n");
  const raw = await home.ok(["logs", String(id), "--raw"]);
  assert.ok(raw.startsWith("\x1b[31mred\x1b[0m\r\n"), JSON.stringify(raw));
  assert.equal(await home.ok(["logs", String(id), "--tail", "2"]), "line4\nline5\n");
  assert.equal(await home.ok(["logs", String(id), "--tail", "0"]), "");

  const live = await home.launch(["sh", "-c", "echo start; read x; echo got-$x; exit 3"]);
  await logsContain(home, live, "start");
  const follow = home.run(["logs", String(live), "--follow"]);
  await home.ok(["send", String(live), "hello"]);
  const r = await follow;
  assert.equal(r.code, 0);
  assert.equal(r.stdout, "start\nhello\ngot-hello\n");
  // following an ended session prints its log and ends at once
  assert.equal((await home.run(["logs", String(live), "-f"])).stdout, "start\nhello\ngot-hello\n");
});

Deno.test("send: text with Enter, --no-newline, --stdin and --file", async () => {
  await using home = new CwHome();
  const id = await home.launch(["sh", "-c", 'stty -echo; while read -r l; do echo "<$l>"; done']);
  await home.ok(["send", String(id), "one", "two"]);
  await home.ok(["send", String(id), "--no-newline", "par"]);
  await home.ok(["send", String(id), "tial"]);
  await home.ok(["send", String(id), "--stdin"], { stdin: "from stdin\n" });
  const file = `${home.root}/input.txt`;
  await Deno.writeTextFile(file, "from file\n");
  await home.ok(["send", String(id), "--file", file]);
  await logsContain(home, id, "<from file>");
  assert.equal(
    await home.ok(["logs", String(id)]),
    "<one two>\n<partial>\n<from stdin>\n<from file>\n",
  );

  const bad = await home.run(["send", String(id)]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /exactly one of TEXT, --stdin or --file/);
  const missing = await home.run(["send", String(id), "--file", "/no/such/file"]);
  assert.equal(missing.code, 1);
  await home.ok(["kill", String(id)]);
  const ended = await home.run(["send", String(id), "late"]);
  assert.equal(ended.code, 1);
  assert.match(ended.stderr, /has ended/);
});

Deno.test("wait: exit codes, several sessions, tags, any, timeout", async () => {
  await using home = new CwHome();
  const seven = await home.launch(["sh", "-c", "exit 7"]);
  assert.equal((await home.run(["wait", String(seven)])).code, 7);
  const zero = await home.launch(["true"]);
  assert.equal((await home.run(["wait", String(zero), String(seven)])).code, 7, "first non-zero");
  assert.equal((await home.run(["wait", String(zero)])).code, 0);

  const slow = await home.launch(["sleep", "30"], ["--tag", "grp"]);
  const fast = await home.launch(["sh", "-c", "read x; exit 5"], ["--tag", "grp"]);
  const t0 = Date.now();
  const timedOut = await home.run(["wait", "--tag", "grp", "--timeout", "0.3"]);
  assert.equal(timedOut.code, 124);
  assert.match(timedOut.stderr, /timed out/);
  assert.ok(Date.now() - t0 < 10_000);
  const any = home.run(["wait", "--tag", "grp", "--condition", "any"]);
  await home.ok(["send", String(fast), "go"]);
  assert.equal((await any).code, 5);
  await home.ok(["kill", "--signal", "TERM", String(slow)]);
  assert.equal((await home.run(["wait", String(slow)])).code, 128 + 15);

  assert.equal((await home.run(["wait", "99"])).code, 1);
  assert.equal((await home.run(["wait"])).code, 2);
  assert.equal((await home.run(["wait", "--tag", "nope"])).code, 1);
});

Deno.test("kill: by id, name, tag, all, signal; the whole process group; errors", async () => {
  await using home = new CwHome();
  // the grandchild writes its pid; kill must reach it too
  const pidFile = `${home.root}/grandchild.pid`;
  const group = await home.launch(["sh", "-c", `sleep 300 & echo $! > ${pidFile}; wait`], [
    "--name",
    "grp",
  ]);
  const grandchild = Number(
    await waitFor("grandchild pid", async () => {
      const t = await Deno.readTextFile(pidFile).catch(() => "");
      return t.trim() || null;
    }),
  );
  const r = await home.run(["kill", "grp"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`Session ${group}: killed \\(SIG(HUP|TERM)\\)`));
  await waitFor("grandchild to die", () => {
    try {
      Deno.kill(grandchild, "SIGCONT");
      return false;
    } catch {
      return true;
    }
  });
  const info = await statusJson(home, group);
  assert.equal(info.status, "killed");
  assert.ok(info.endedAt);

  const a = await home.launch(["sleep", "300"], ["--tag", "w"]);
  const b = await home.launch(["sleep", "300"], ["--tag", "w"]);
  const c = await home.launch(["sleep", "300"]);
  await home.ok(["kill", "--tag", "w", "--signal", "KILL"]);
  for (const id of [a, b]) assert.equal((await statusJson(home, id)).signal, "SIGKILL");
  assert.equal((await statusJson(home, c)).status, "running");
  await home.ok(["kill", "--all"]);
  assert.equal((await statusJson(home, c)).status, "killed");
  assert.match((await home.run(["kill", "--all"])).stderr, /No running sessions matched/);

  const again = await home.run(["kill", String(c)]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /already ended/);
  const unknown = await home.run(["kill", "42"]);
  assert.equal(unknown.code, 1);
  assert.equal(unknown.stderr, 'cw: Cannot find session "42"\n');
  assert.equal((await home.run(["kill", "--signal", "BOGUS", "1"])).code, 2);
  assert.equal((await home.run(["kill"])).code, 2);
});

Deno.test("watch follows read-only and ends with the session, or times out", async () => {
  await using home = new CwHome();
  const id = await home.launch(["sh", "-c", "echo before; read x; echo after-$x; exit 4"]);
  await logsContain(home, id, "before");
  const watching = home.run(["watch", String(id)]);
  await home.ok(["send", String(id), "go"]);
  const r = await watching;
  assert.equal(r.code, 4);
  assert.equal(r.stdout, "before\ngo\nafter-go\n");
  // already ended: prints the tail and ends at once
  const done = await home.run(["watch", String(id), "--tail", "1"]);
  assert.equal(done.code, 4);
  assert.equal(done.stdout, "after-go\n");
  const slow = await home.launch(["sleep", "30"]);
  const t = await home.run(["watch", String(slow), "--timeout", "200ms"]);
  assert.equal(t.code, 124);
});

Deno.test("status shows pid, dir, bytes, last lines and exit code", async () => {
  await using home = new CwHome();
  const id = await home.launch(["sh", "-c", "for i in $(seq 1 30); do echo row$i; done; exit 2"], [
    "--name",
    "st",
  ]);
  await home.run(["wait", "st"]);
  const s = await statusJson(home, "st");
  assert.equal(s.id, id);
  assert.equal(s.status, "exited");
  assert.equal(s.exitCode, 2);
  assert.equal(
    s.outputBytes,
    Array.from({ length: 30 }, (_, i) => `row${i + 1}\r\n`).join("").length,
  );
  assert.equal(s.lastOutput, Array.from({ length: 10 }, (_, i) => `row${i + 21}\n`).join(""));
  const human = await home.ok(["status", "st"]);
  assert.match(human, /^status:\s+exited$/m);
  assert.match(human, /^exit code: 2$/m);
  assert.match(human, /^ {2}row30$/m);
  const running = await home.launch(["sleep", "30"]);
  const r = await statusJson(home, running);
  assert.ok(r.pid && r.pid > 1);
  assert.equal((await home.run(["status", "nope"])).code, 1);
});

Deno.test("help, version and usage errors", async () => {
  await using home = new CwHome();
  assert.match(await home.ok(["--version"]), /^cw \d+\.\d+\.\d+\n$/);
  const help = await home.ok(["help"]);
  for (
    const cmd of [
      "launch",
      "list",
      "attach",
      "logs",
      "send",
      "watch",
      "wait",
      "kill",
      "status",
      "node",
      "stop",
    ]
  ) {
    assert.ok(help.includes(`cw ${cmd}`), cmd);
    assert.match(await home.ok([cmd, "--help"]), new RegExp(`^Usage: cw ${cmd}`));
    assert.match(await home.ok(["help", cmd]), new RegExp(`^Usage: cw ${cmd}`));
  }
  const unknown = await home.run(["frobnicate"]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /^cw: Unknown command "frobnicate"$/m);
  const badFlag = await home.run(["list", "--bogus"]);
  assert.equal(badFlag.code, 2);
  assert.match(badFlag.stderr, /Unknown option '--bogus'/);
  assert.equal((await home.run(["list", "--status", "weird"])).code, 2);
  assert.equal(home.nodePid(), null, "usage errors never start a node");
});

Deno.test("status of a session whose last line is 3 MB long shows its tail", async () => {
  await using home = new CwHome();
  const id = await home.launch([
    "sh",
    "-c",
    "head -c 3000000 /dev/zero | tr '\\0' x; echo; echo end",
  ]);
  await home.ok(["wait", String(id)]);
  const status = JSON.parse(await home.ok(["status", String(id), "--json"]));
  assert.equal(status.outputBytes >= 3_000_000, true);
  const text = await home.ok(["status", String(id)]);
  assert.match(text, /end/);
});

Deno.test("send: 800 KB to a program that reads silently arrives byte-exact", async () => {
  // Deno's PTY socket write stalled after a full kernel buffer until the program printed
  // something: `stty -echo; cat > f` got ~12 KB of this (node/pty_input.ts)
  await using home = new CwHome();
  const input = `${home.root}/in.txt`;
  const output = `${home.root}/out.txt`;
  const line = "0123456789abcdefghijklmnopqrstuvwxyz".repeat(2) + "\n";
  Deno.writeTextFileSync(input, line.repeat(Math.ceil(800_000 / line.length)));
  const id = await home.launch(["sh", "-c", `stty -echo; exec cat > ${output}`]);
  await home.ok(["send", String(id), "--file", input, "--no-newline"]);
  const want = Deno.statSync(input).size;
  await waitFor("every byte", () => {
    try {
      return Deno.statSync(output).size >= want;
    } catch {
      return false;
    }
  }, 20_000);
  assert.equal(Deno.readTextFileSync(output), Deno.readTextFileSync(input));
});
