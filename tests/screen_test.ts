/**
 * `cw screen`: what a program shows right now, rendered by the node's
 * terminal model, equals what tmux shows of the same program at the same size.
 */
import assert from "node:assert/strict";
import { CW_SHELL, CwHome, shellQuote, Tmux, waitFor } from "./helpers.ts";
import { NodeClient } from "../client/node_client.ts";
import { localDialer } from "../client/local.ts";
import type { CwError } from "../shared/errors.ts";

Deno.test("cw screen of vim and of a line program equals tmux's capture of the same", async () => {
  await using home = new CwHome();
  await using tmux = new Tmux(home.root);
  const file = `${home.root}/text.txt`;
  await Deno.writeTextFile(
    file,
    Array.from({ length: 200 }, (_, i) => `line ${i} ${"x".repeat(i % 70)}`).join("\n"),
  );
  const programs: [string, string[]][] = [
    ["vim", ["vim", "-u", "NONE", "-N", "-n", "-c", "normal 120Gzz", file]],
    ["seq", ["sh", "-c", "seq 1 300; printf 'tail \\033[1;31mred\\033[0m'; sleep 600"]],
  ];
  for (const [name, argv] of programs) {
    // the same program kept in a reference tmux at the size a cw session has without a terminal
    await tmux.cmd("new-session", "-d", "-s", name, "-x", "80", "-y", "24", ...argv);
    const id = await home.launch(argv);
    let expected = "";
    let got = "";
    await waitFor(`cw screen of ${name} to equal tmux's`, async () => {
      expected = (await tmux.capture(name)).replace(/\n+$/, "");
      got = (await home.ok(["screen", String(id)])).replace(/\n+$/, "");
      return expected.length > 0 && got === expected;
    }).catch((err) => {
      assert.equal(got, expected, `${name}: ${err.message}`);
    });
  }
  // --json tells the size, the cursor and the alternate screen; --ansi keeps colours
  const vim = JSON.parse(await home.ok(["screen", "1", "--json"]));
  assert.equal(vim.cols, 80);
  assert.equal(vim.rows, 24);
  assert.equal(vim.alternate, true);
  assert.equal(JSON.parse(await home.ok(["screen", "2", "--json"])).alternate, false);
  assert.ok((await home.ok(["screen", "2", "--ansi"])).includes("tail \x1b[31;1mred\x1b[0m"));
  // an unknown session is one clear line
  const r = await home.run(["screen", "99"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^cw: .*"99"/);
});

Deno.test("attach shows vim's screen and modes as the node's model has them, at any viewer size", async () => {
  await using home = new CwHome();
  await using tmux = new Tmux(home.root);
  const file = `${home.root}/text.txt`;
  await Deno.writeTextFile(file, Array.from({ length: 200 }, (_, i) => `line ${i}`).join("\n"));
  const argv = ["vim", "-u", "NONE", "-N", "-n", "-c", "set mouse=a", "-c", "normal 80Gzz", file];
  await tmux.cmd("new-session", "-d", "-s", "ref", "-x", "80", "-y", "24", ...argv);
  const id = await home.launch(argv);
  const want = async () => (await tmux.capture("ref")).replace(/\n+$/, "").split("\n");
  await waitFor(
    "the reference vim",
    async () => (await want()).some((l) => l.startsWith("line 80")),
  );
  // a read-only viewer (it never resizes) in a larger terminal: vim's 80×24 screen, top-left
  const bin = `${home.root}/bin`;
  await Deno.mkdir(bin, { recursive: true });
  await Deno.writeTextFile(`${bin}/cw`, `#!/bin/sh\nexec ${CW_SHELL} "$@"\n`, { mode: 0o755 });
  const path = `${bin}:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}`;
  await tmux.start(
    "v",
    ["env", `PATH=${path}`, "PS1=pane$ ", "bash", "--norc", "--noprofile", "-i"].map(shellQuote)
      .join(" "),
    100,
    30,
    { CW_HOME: home.home, HISTFILE: "", TERM: "xterm" },
  );
  await tmux.waitFor("v", "pane$");
  await tmux.typeLine("v", `cw attach --read-only ${id}; echo EXIT=$?`);
  let got: string[] = [];
  await waitFor("the viewer to show vim's screen", async () => {
    got = (await tmux.capture("v")).split("\n").slice(0, 24).map((l) => l.trimEnd());
    const expected = await want();
    return expected.every((l, i) => got[i] === l.trimEnd());
  }).catch(async (err) => assert.deepEqual(got, await want(), err.message));
  // the modes came with the snapshot: alternate screen and vim's mouse
  const flags =
    (await tmux.cmd("display-message", "-p", "-t", "v", "#{alternate_on},#{mouse_any_flag}"))
      .trim();
  assert.equal(flags, "1,1");
  await tmux.keys("v", ["C-b", "d"]);
  await tmux.waitFor("v", /^EXIT=0$/m);
  assert.equal(
    (await tmux.cmd("display-message", "-p", "-t", "v", "#{alternate_on},#{mouse_any_flag}"))
      .trim(),
    "0,0",
  );
});

Deno.test("a flood of screen requests is refused past a bound; the node keeps answering", async () => {
  await using home = new CwHome();
  const id = String(
    await home.launch(["sh", "-c", "seq 1 20000; sleep 600"]),
  );
  await waitFor("the output", async () => (await home.ok(["screen", id])).includes("20000"));
  const client = new NodeClient(localDialer(home.home, false));
  // 40 at once, each a different size of request (ansi or not): past the bound, rate_limited
  const results = await Promise.allSettled(
    Array.from(
      { length: 40 },
      (_, i) => client.request({ op: "attach", session: id, readOnly: true, snapshot: 1000 + i }),
    ),
  );
  const refused =
    results.filter((r) => r.status === "rejected" && (r.reason as CwError).code === "rate_limited")
      .length;
  const answered = results.filter((r) => r.status === "fulfilled").length;
  assert.ok(refused > 0, "some renderings were refused");
  assert.ok(answered >= 1, "some were answered");
  assert.equal(
    refused + answered,
    40,
    JSON.stringify(results.filter((r) => r.status === "rejected")),
  );
  // the node is fine: a list answers, and the same screen twice is the same
  await home.ok(["list"]);
  assert.equal(await home.ok(["screen", id]), await home.ok(["screen", id]));
});
