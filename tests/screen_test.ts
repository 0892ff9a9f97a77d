/**
 * `cw screen`: what a program shows right now, rendered by the node's
 * terminal model, equals what tmux shows of the same program at the same size.
 */
import assert from "node:assert/strict";
import { CwHome, Tmux, waitFor } from "./helpers.ts";
import { NodeClient } from "../client/node_client.ts";
import { localDialer } from "../client/local.ts";
import type { CwError } from "../shared/errors.ts";
import { Screens } from "../node/screen.ts";
import { Session } from "../node/session.ts";
import { OutputLog } from "../node/output_log.ts";

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
  // cw status shows a running full-screen program's rows as it shows them
  const status = JSON.parse(await home.ok(["status", "1", "--json"]));
  assert.deepEqual(status.screen, (await tmux.capture("vim")).replace(/\n+$/, "").split("\n"));
  assert.ok((await home.ok(["status", "1"])).includes("\nscreen:\n  line 1"));
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
  await tmux.cwPane(home, "v", 100, 30, { TERM: "xterm" });
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

Deno.test("modes set megabytes of output ago come back on attach, with a small ring", async () => {
  await using home = new CwHome();
  await using tmux = new Tmux(home.root);
  await Deno.mkdir(home.home, { mode: 0o700 });
  await Deno.writeTextFile(
    `${home.home}/config.json`,
    JSON.stringify({ sessionRingBytes: "16KiB" }),
  );
  // alternate screen, mouse with SGR encoding, bracketed paste, application cursor keys and
  // keypad, a hidden cursor; then 2.5 MiB of lines, well past the ring and the model's window
  const script =
    "printf '\\033[?1049h\\033[?1000h\\033[?1006h\\033[?2004h\\033[?1h\\033=\\033[?25l';" +
    " yes 'a line of text the program prints on its alternate screen' | head -n 45000;" +
    " printf 'THE END'; read x; printf '\\033[?1049l\\033[?25hBACK ON MAIN'; sleep 600";
  const id = String(await home.launch(["sh", "-c", script]));
  await waitFor("the output", async () => (await home.ok(["screen", id])).includes("THE END"));
  assert.ok(
    JSON.parse(await home.ok(["status", id, "--json"])).outputBytes > 2_500_000,
  );
  const view = JSON.parse(await home.ok(["screen", id, "--json"]));
  assert.equal(view.alternate, true);

  await tmux.cwPane(home, "v", 80, 24, { TERM: "xterm" });
  const flags = async () =>
    (await tmux.cmd(
      "display-message",
      "-p",
      "-t",
      "v",
      "#{alternate_on},#{mouse_any_flag},#{mouse_sgr_flag},#{keypad_cursor_flag},#{keypad_flag},#{cursor_flag}",
    )).trim();
  await tmux.typeLine("v", `cw attach --read-only ${id}; echo EXIT=$?`);
  await tmux.waitFor("v", "THE END");
  assert.equal(await flags(), "1,1,1,1,1,0");
  await tmux.keys("v", ["C-b", "d"]);
  await tmux.waitFor("v", /^EXIT=0$/m);
  assert.equal(await flags(), "0,0,0,0,0,1");

  // the kept model follows: the program leaves its alternate screen
  await home.ok(["send", id, ""]);
  await waitFor("the main screen", async () => (await home.ok(["screen", id])).includes("BACK"));
  assert.equal(JSON.parse(await home.ok(["screen", id, "--json"])).alternate, false);
});

Deno.test("a kept model fed piece by piece, with resizes, renders as one built from scratch", async () => {
  const dir = await Deno.makeTempDir();
  const kept = new Screens();
  try {
    const meta = {
      id: 1,
      name: null,
      argv: ["x"],
      dir,
      tags: [],
      status: "running" as const,
      pid: null,
      exitCode: null,
      signal: null,
      startedAt: new Date().toISOString(),
      endedAt: null,
      outputBytes: 0,
    };
    const s = new Session(meta, dir, 64 * 1024, new OutputLog(dir, 64 * 1024 * 1024));
    s.resized(60, 20);
    let seed = 7;
    const rand = (n: number) => { // mulberry32
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) % n;
    };
    let compared = 0;
    const enc = new TextEncoder();
    const pieces = [
      () => `\x1b[${1 + rand(30)};${1 + rand(90)}H`,
      () => `\x1b[3${rand(8)}m${"wörd ".repeat(rand(12))}\x1b[0m`,
      () => "line of text\r\n".repeat(rand(5)),
      () => ["\x1b[?1049h", "\x1b[?1049l", "\x1b[2J", "\x1b[K", "\x1b[5;15r", "\x1b[r"][rand(6)],
      () => "界".repeat(rand(6)),
    ];
    for (let round = 0; round < 40; round++) {
      let chunk = "";
      for (let i = 0; i < 1 + rand(40); i++) chunk += pieces[rand(pieces.length)]();
      s.append(enc.encode(chunk));
      if (rand(4) === 0) s.resized(20 + rand(100), 5 + rand(40));
      if (rand(2) === 0) continue;
      const fresh = new Screens();
      try {
        const [a, b] = [await kept.screen(s, true), await fresh.screen(s, true)];
        assert.deepEqual(a, b, `round ${round}`);
        const [c, d] = [await kept.snapshot(s, 100), await fresh.snapshot(s, 100)];
        assert.equal(c, d, `round ${round}`);
        compared++;
      } finally {
        fresh.close();
      }
    }
    assert.ok(compared >= 10, `${compared} comparisons`);
  } finally {
    kept.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("viewers of another size see the program clipped or padded from the top-left, live", async () => {
  await using home = new CwHome();
  await using tmux = new Tmux(home.root);
  const file = `${home.root}/wide.txt`;
  await Deno.writeTextFile(
    file,
    Array.from({ length: 300 }, (_, i) => `row ${i} ` + "abcdefghij".repeat(20)).join("\n"),
  );
  const id = await home.launch(
    ["vim", "-u", "NONE", "-N", "-n", "-c", "set nowrap", "-c", "normal 100Gzt", file],
  );
  // the writable viewer sets the size: 120×35
  await tmux.cwPane(home, "w", 120, 35, { TERM: "xterm" });
  await tmux.typeLine("w", `cw attach ${id}`);
  const program = async () => {
    const view = JSON.parse(await home.ok(["screen", String(id), "--json"]));
    return view.cols === 120 && view.rows === 35 ? view.lines as string[] : null;
  };
  await waitFor("vim at 120×35", async () => (await program())?.[0].startsWith("row 99 ") ?? false);
  // read-only viewers, one smaller and one larger
  await tmux.cwPane(home, "small", 90, 25, { TERM: "xterm" });
  await tmux.cwPane(home, "large", 160, 50, { TERM: "xterm" });
  await tmux.typeLine("small", `cw attach --read-only ${id}`);
  await tmux.typeLine("large", `cw attach --read-only ${id}`);
  const check = async (what: string) => {
    let want: string[] = [];
    let small: string[] = [];
    let large: string[] = [];
    await waitFor(what, async () => {
      want = (await program()) ?? [];
      small = (await tmux.capture("small")).split("\n").map((l) => l.trimEnd());
      large = (await tmux.capture("large")).split("\n").map((l) => l.trimEnd());
      return want.length === 35 &&
        want.slice(0, 25).every((l, i) => small[i] === l.slice(0, 90).trimEnd()) &&
        want.every((l, i) => large[i] === l.trimEnd()) &&
        large.slice(35).every((l) => l === "");
    }).catch((err) => {
      assert.deepEqual(
        { small: small.slice(0, 25), large: large.slice(0, 50) },
        {
          small: want.slice(0, 25).map((l) => l.slice(0, 90).trimEnd()),
          large: [...want, ...Array(15).fill("")],
        },
        err.message,
      );
    });
  };
  await check("both viewers to show vim's 120×35 screen, clipped and padded");
  // the program moves on: the viewers follow, still clipped
  await tmux.keys("w", ["C-f"]);
  await waitFor("vim to scroll", async () => !(await program())?.[0].startsWith("row 99 "));
  await check("both viewers to follow vim");
  // a second writable viewer takes the size: the first now sees the program padded, live
  await tmux.cwPane(home, "w2", 100, 30, { TERM: "xterm" });
  await tmux.typeLine("w2", `cw attach ${id}`);
  let w: string[] = [];
  let want: string[] = [];
  await waitFor("the first writable viewer to show vim at 100×30", async () => {
    const view = JSON.parse(await home.ok(["screen", String(id), "--json"]));
    want = view.lines;
    w = (await tmux.capture("w")).split("\n").map((l) => l.trimEnd());
    return view.cols === 100 && view.rows === 30 &&
      want.every((l, i) => w[i] === l.trimEnd()) && w.slice(30).every((l) => l === "");
  }).catch((err) => assert.deepEqual(w, [...want, ...Array(5).fill("")], err.message));
  // it leaves: the size is the first's again
  await tmux.keys("w2", ["C-b", "d"]);
  await check("the viewers to show vim at 120×35 again");
  await waitFor(
    "the first writable viewer to show vim 1:1",
    async () => (await tmux.capture("w")).trimEnd() === (await program())?.join("\n").trimEnd(),
  );
  // leaving a clipped view leaves the terminal clean
  await tmux.keys("small", ["C-b", "d"]);
  await tmux.waitFor("small", "detached from session");
  assert.equal(
    (await tmux.cmd("display-message", "-p", "-t", "small", "#{alternate_on},#{cursor_flag}"))
      .trim(),
    "0,1",
  );
});

Deno.test("a terminal sized to millions of cells is not rendered: a clear error, the node unharmed", async () => {
  await using home = new CwHome();
  const id = String(await home.launch(["sh", "-c", "echo hello; sleep 600"]));
  const client = new NodeClient(localDialer(home.home, false));
  // a writable viewer may size the PTY up to 10,000 × 10,000
  const { conn } = await client.stream({
    op: "attach",
    session: id,
    cols: 3000,
    rows: 3000,
  });
  conn.close();
  const r = await home.run(["screen", id]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /3000×3000\) is too large to render/);
  // an attach asking for a snapshot gets the raw history instead
  const attach = await client.stream({ op: "attach", session: id, readOnly: true, snapshot: 10 });
  assert.equal(attach.response.snapshot, undefined);
  attach.conn.close();
  await home.ok(["list"]);
});
