/**
 * `cw screen`: what a program shows right now, rendered by the node's
 * terminal model, equals what tmux shows of the same program at the same size.
 */
import assert from "node:assert/strict";
import { CwHome, Tmux, waitFor } from "./helpers.ts";

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
