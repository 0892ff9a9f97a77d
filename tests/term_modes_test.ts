/**
 * Detach leaves the terminal as it was found: the modes a program turned on
 * through `cw attach` (alternate screen, hidden cursor, mouse, keypad, …)
 * are turned off again on detach, on the session's end and on a lost node —
 * checked on the unit and with real programs in tmux, whose own flags say
 * what state the outer terminal is in.
 */
import assert from "node:assert/strict";
import { TerminalModes } from "../shared/term_modes.ts";
import { QueryFilter } from "../client/query_filter.ts";
import { NodeClient } from "../client/node_client.ts";
import { localDialer } from "../client/local.ts";
import { FrameKind } from "../shared/protocol.ts";
import { CwHome, Tmux, waitFor } from "./helpers.ts";

const enc = new TextEncoder();

Deno.test("terminal modes: tracked across chunks, reset exactly, nothing when clean", () => {
  const m = new TerminalModes();
  m.feed(enc.encode("plain text, no modes\r\n\x1b[1;31mred\x1b[0m"));
  assert.equal(m.dirty, false);
  // a sequence cut between two chunks still counts
  const seq =
    "\x1b[?1049h\x1b[?25l\x1b[?1000;1006h\x1b[?1h\x1b=\x1b[>1u\x1b[>4;2m\x1b[2;20r\x1b[5 q";
  const bytes = enc.encode(`before${seq}after`);
  for (let cut = 1; cut < bytes.byteLength; cut += 3) {
    const t = new TerminalModes();
    t.feed(bytes.subarray(0, cut));
    t.feed(bytes.subarray(cut));
    const reset = t.reset();
    for (
      const want of [
        "\x1b[?1049l",
        "\x1b[?25h",
        "\x1b[?1000l",
        "\x1b[?1006l",
        "\x1b[?1l",
        "\x1b>",
        "\x1b[<1u",
        "\x1b[>4m",
        "\x1b7\x1b[r\x1b8",
        "\x1b[0 q",
      ]
    ) {
      assert.ok(reset.includes(want), `cut at ${cut}: ${JSON.stringify(want)} missing`);
    }
    // the alternate screen is left after everything else was reset on it
    assert.ok(reset.indexOf("\x1b[?1049l") > reset.indexOf("\x1b[?1000l"));
  }
  // a program that undoes its own modes leaves nothing to reset
  const tidy = new TerminalModes();
  tidy.feed(
    enc.encode(
      `${seq}\x1b[?1049l\x1b[?25h\x1b[?1000;1006l\x1b[?1l\x1b>\x1b[<u\x1b[>4;0m\x1b[r\x1b[0 q`,
    ),
  );
  assert.equal(tidy.dirty, false);
  assert.equal(tidy.reset(), "\x1b[0m\x1b(B\x0f");
  // junk and overlong sequences neither throw nor grow memory
  const junk = new TerminalModes();
  junk.feed(enc.encode(`\x1b[${"9".repeat(10_000)}`));
  junk.feed(enc.encode("\x1b[?99999999999h\x1b\x1b\x1b[?;;;h\x1b"));
  junk.feed(new Uint8Array(1 << 16).fill(0x1b));
  assert.equal(typeof junk.reset(), "string");
});

/** The outer terminal's state as tmux sees it. */
async function flags(tmux: Tmux, pane: string): Promise<Record<string, string>> {
  const names = [
    "alternate_on",
    "cursor_flag",
    "mouse_any_flag",
    "keypad_flag",
    "keypad_cursor_flag",
    "mouse_sgr_flag",
  ];
  const out = await tmux.cmd(
    "display-message",
    "-p",
    "-t",
    pane,
    names.map((n) => `#{${n}}`).join(","),
  );
  const values = out.trim().split(",");
  return Object.fromEntries(names.map((n, i) => [n, values[i]]));
}

const CLEAN = {
  alternate_on: "0",
  cursor_flag: "1",
  mouse_any_flag: "0",
  keypad_flag: "0",
  keypad_cursor_flag: "0",
  mouse_sgr_flag: "0",
};

function pane(tmux: Tmux, home: CwHome, name: string): Promise<void> {
  return tmux.cwPane(home, name, 100, 30, { TERM: "xterm" });
}

Deno.test("detach, session end and a lost node leave the outer terminal clean (vim, less, top)", async () => {
  await using home = new CwHome();
  await using tmux = new Tmux(home.root);
  await Deno.writeTextFile(
    `${home.root}/text`,
    Array.from({ length: 200 }, (_, i) => `line ${i}`).join("\n"),
  );
  type Flags = Record<string, string>;
  const programs: [string, string[], RegExp, (f: Flags) => boolean][] = [
    // vim with the mouse on: alternate screen, mouse reporting, application keys
    [
      "vim",
      ["vim", "-u", "NONE", "-N", "-n", "-c", "set mouse=a", `${home.root}/text`],
      /line \d+/,
      (f) => f.alternate_on === "1" && f.mouse_any_flag === "1",
    ],
    ["less", ["less", `${home.root}/text`], /line \d+/, (f) => f.alternate_on === "1"],
    // top hides the cursor
    ["top", ["top", "-d", "1"], /PID/, (f) => f.cursor_flag === "0"],
  ];
  await pane(tmux, home, "t");
  for (const [name, argv, ready, set] of programs) {
    const id = await home.launch(["env", "TERM=xterm", ...argv]);
    await tmux.typeLine("t", `cw attach ${id}; echo EXIT-${name}=$?`);
    await tmux.waitFor("t", ready);
    // the program's modes reached the outer terminal (so there is something to undo)
    await waitFor(`${name}'s modes in the outer terminal`, async () => set(await flags(tmux, "t")));
    await tmux.keys("t", ["C-b", "d"]);
    await tmux.waitFor("t", new RegExp(`^EXIT-${name}=0$`, "m"));
    assert.deepEqual(await flags(tmux, "t"), CLEAN, `after detaching from ${name}`);
    // the prompt is back on the shell's own screen, not drawn over the program's
    // (top draws on the main screen, as it would in any terminal)
    const screen = await tmux.capture("t");
    if (name !== "top") assert.doesNotMatch(screen, ready, `${name}'s screen is gone after detach`);
    await tmux.typeLine("t", "clear");
    await waitFor("the pane to clear", async () => (await tmux.capture("t")).trim() === "pane$");
  }

  // the session ends while attached (killed: it cannot undo its own modes)
  const vim = await home.launch(["env", "TERM=xterm", ...programs[0][1]]);
  await tmux.typeLine("t", `cw attach ${vim}; echo EXIT-END=$?`);
  await tmux.waitFor("t", /line \d+/);
  await waitFor(
    "vim's alternate screen",
    async () => (await flags(tmux, "t")).alternate_on === "1",
  );
  await home.ok(["kill", "--signal", "KILL", String(vim)]);
  await tmux.waitFor("t", /^EXIT-END=137$/m);
  assert.deepEqual(await flags(tmux, "t"), CLEAN, "after the session was killed");

  // the node dies while attached (SIGKILL): the client still cleans up
  await tmux.typeLine("t", "clear");
  const less = await home.launch(["env", "TERM=xterm", "less", `${home.root}/text`]);
  await tmux.typeLine("t", `cw attach ${less}; echo EXIT-LOST=$?`);
  await tmux.waitFor("t", /line \d+/);
  await waitFor(
    "less's alternate screen",
    async () => (await flags(tmux, "t")).alternate_on === "1",
  );
  Deno.kill(home.nodePid()!, "SIGKILL");
  await tmux.waitFor("t", /^EXIT-LOST=255$/m);
  assert.deepEqual(await flags(tmux, "t"), CLEAN, "after the node was lost");
});

Deno.test("query filter: old queries are removed from a replay, everything else kept", () => {
  const f = new QueryFilter();
  const queries = [
    "\x1b[c",
    "\x1b[0c",
    "\x1b[>c",
    "\x1b[=c",
    "\x1b[6n",
    "\x1b[?6n",
    "\x1b[>q",
    "\x1b[?2026$p",
    "\x1b[14t",
    "\x1b[?u",
    "\x1b]11;?\x07",
    "\x1b]10;?\x1b\\",
    "\x1b]4;1;?\x07",
    "\x1b]52;c;?\x07",
    "\x1bP$qm\x1b\\",
    "\x1bP+q544e\x1b\\",
  ];
  const kept =
    "hi \x1b[1;31mred\x1b[0m \x1b[?1049h\x1b[2J\x1b[5;1H\x1b]0;title\x07 \x1b[8;24;80t end";
  const input = enc.encode(queries.join("a") + kept);
  // however the replay is cut into chunks, the queries go and nothing else does
  for (const size of [1, 2, 3, 7, 64, input.byteLength]) {
    const g = new QueryFilter();
    const out: number[] = [];
    for (let i = 0; i < input.byteLength; i += size) {
      out.push(...g.push(input.subarray(i, i + size)));
    }
    out.push(...g.flush());
    assert.equal(
      new TextDecoder().decode(new Uint8Array(out)),
      "a".repeat(queries.length - 1) + kept,
    );
  }
  assert.equal(new TextDecoder().decode(f.push(enc.encode("plain"))), "plain");
});

Deno.test("re-attaching never answers an old query into the program", async () => {
  await using home = new CwHome();
  await using tmux = new Tmux(home.root);
  // the program asks for the terminal's attributes once, at its start, with nobody attached;
  // anything typed into it (a terminal's answer included) comes out of `cat -v` visibly
  const id = await home.launch(["sh", "-c", "stty -echo; printf 'asked\\033[c\\n'; exec cat -v"]);
  await waitFor(
    "the query in the log",
    async () => (await home.run(["logs", String(id), "--raw"])).stdout.includes("asked"),
  );
  await pane(tmux, home, "t");
  for (let i = 0; i < 3; i++) {
    await tmux.typeLine("t", `cw attach ${id}; echo ROUND-${i}=$?`);
    await tmux.waitFor("t", "asked");
    await tmux.keys("t", ["C-b", "d"]);
    await tmux.waitFor("t", new RegExp(`^ROUND-${i}=0$`, "m"));
  }
  await home.ok(["send", String(id), "typed"]);
  await waitFor(
    "the program to print what it read",
    async () => (await home.run(["logs", String(id), "--raw"])).stdout.includes("typed"),
  );
  const log = (await home.run(["logs", String(id), "--raw"])).stdout;
  const line = log.split(/\r?\n/).find((l) => l.includes("typed"))!;
  assert.equal(line.trim(), "typed", `the program read old answers: ${JSON.stringify(line)}`);
});

Deno.test("size policy: the most recent writable viewer sets the size; when it leaves, the previous one's applies", async () => {
  await using home = new CwHome();
  // the program prints its terminal size for every line it reads
  const id = String(
    await home.launch(["sh", "-c", 'while read x; do echo "size:$(stty size)"; done']),
  );
  const client = new NodeClient(localDialer(home.home, false));
  let asked = 0;
  const sizeNow = async () => {
    const mark = `q${++asked}`;
    await home.ok(["send", id, mark]);
    let seen = "";
    await waitFor(`the size after ${mark}`, async () => {
      const lines = (await home.run(["logs", id])).stdout.trim().split("\n");
      const at = lines.lastIndexOf(mark);
      const answer = at === -1 ? undefined : lines.slice(at + 1).find((l) => l.startsWith("size:"));
      if (answer) seen = answer.slice(5);
      return answer !== undefined;
    });
    return seen;
  };
  const a = await client.stream({ op: "attach", session: id, cols: 100, rows: 30 });
  assert.equal(await sizeNow(), "30 100");
  const b = await client.stream({ op: "attach", session: id, cols: 120, rows: 40 });
  assert.equal(await sizeNow(), "40 120", "the last to attach sets the size");
  // a read-only viewer never resizes
  const ro = await client.stream({ op: "attach", session: id, cols: 60, rows: 10, readOnly: true });
  assert.equal(await sizeNow(), "40 120");
  // the first viewer resizes: it is now the most recent
  await a.conn.sendJson(FrameKind.EVENT, { type: "resize", cols: 90, rows: 25 });
  assert.equal(await sizeNow(), "25 90");
  // it leaves: the other writable viewer's size applies again
  a.conn.close();
  assert.equal(await sizeNow(), "40 120", "the remaining writable viewer's size");
  ro.conn.close();
  b.conn.close();
});

Deno.test("mode tracker and query filter: 2,000 random streams, any chunking, same answer, never a throw", () => {
  // a small seeded generator: escape-heavy bytes, as hostile output would be
  let state = 0x9e3779b9;
  const next = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
  const pieces = [
    "\x1b",
    "[",
    "]",
    "?",
    ">",
    "<",
    "=",
    "$",
    ";",
    "1",
    "0",
    "6",
    "c",
    "n",
    "u",
    "h",
    "l",
    "m",
    "q",
    " ",
    "\x07",
    "\\",
    "P",
    "a",
    "\n",
    "\x1b[?1049h",
    "\x1b[c",
    "\x1b]11;?\x07",
  ];
  for (let n = 0; n < 2000; n++) {
    let text = "";
    const len = Math.floor(next() * 200);
    for (let i = 0; i < len; i++) text += pieces[Math.floor(next() * pieces.length)];
    const bytes = enc.encode(text);
    const whole = new QueryFilter();
    const once = [...whole.push(bytes), ...whole.flush()];
    const modesOnce = new TerminalModes();
    modesOnce.feed(bytes);
    // the same stream cut at random places
    const cut = new QueryFilter();
    const modesCut = new TerminalModes();
    const out: number[] = [];
    for (let at = 0; at < bytes.byteLength;) {
      const size = 1 + Math.floor(next() * 8);
      const chunk = bytes.subarray(at, at + size);
      out.push(...cut.push(chunk));
      modesCut.feed(chunk);
      at += size;
    }
    out.push(...cut.flush());
    assert.deepEqual(out, once, `case ${n}: ${JSON.stringify(text)}`);
    assert.ok(once.length <= bytes.byteLength);
    assert.equal(modesCut.reset(), modesOnce.reset(), `case ${n}: ${JSON.stringify(text)}`);
    assert.equal(modesCut.restoreExtras(), modesOnce.restoreExtras());
  }
});
