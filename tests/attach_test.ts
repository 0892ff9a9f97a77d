/**
 * `cw attach [--read-only] [--no-history] SESSION`, end to end: a real node,
 * real PTYs, and a person's terminal played by tmux (send-keys, capture-pane).
 * Where the guarantee belongs to the node (read-only, slow viewers), the test
 * also speaks the protocol directly through the client library, so that a
 * well-behaved CLI cannot hide a node that trusts its clients.
 */
import assert from "node:assert/strict";
import { NodeClient } from "../client/node_client.ts";
import { localDialer } from "../client/local.ts";
import type { FramedConn } from "../shared/framed.ts";
import {
  encodeFrame,
  FrameKind,
  type Request,
  type SessionInfo,
  type StreamEvent,
} from "../shared/protocol.ts";
import { CW_SHELL, CwHome, shellQuote, Tmux, waitFor } from "./helpers.ts";

const enc = new TextEncoder();

/** The interactive shell every session here runs: no rc files, no history file. */
const BASH = ["bash", "--norc", "--noprofile"];

/** Launches bash with a recognisable prompt. */
function launchBash(home: CwHome, prompt: string): Promise<number> {
  return home.launch(BASH, ["--env", `PS1=${prompt}`, "--env", "HISTFILE="]);
}

/** `cw logs ID`, ANSI stripped, as a person would read it. */
function logsOf(home: CwHome, id: number): Promise<string> {
  return home.ok(["logs", String(id)]);
}

/** Waits until the session's log contains `text`. */
async function waitForLog(home: CwHome, id: number, text: string, timeoutMs = 10_000) {
  let last = "";
  try {
    return await waitFor(`session ${id}'s log to contain ${JSON.stringify(text)}`, async () => {
      last = await logsOf(home, id);
      return last.includes(text) ? last : null;
    }, timeoutMs);
  } catch (err) {
    throw new Error(`${(err as Error).message}\n--- log ---\n${last.slice(-2000)}`);
  }
}

async function sessionInfo(home: CwHome, id: number): Promise<SessionInfo> {
  const all = JSON.parse(await home.ok(["list", "--json"])) as SessionInfo[];
  const s = all.find((x) => x.id === id);
  assert.ok(s, `session ${id} is in cw list`);
  return s;
}

// ------------------------------------------------------------ tmux side

/**
 * Starts a tmux pane running an interactive shell whose PATH has a `cw` that
 * runs this checkout against `home`, so the test types what a person types.
 */
async function startPane(
  tmux: Tmux,
  home: CwHome,
  name: string,
  cols = 100,
  rows = 30,
): Promise<void> {
  const bin = `${home.root}/bin`;
  await Deno.mkdir(bin, { recursive: true });
  await Deno.writeTextFile(`${bin}/cw`, `#!/bin/sh\nexec ${CW_SHELL} "$@"\n`, { mode: 0o755 });
  // set on the command line, not with tmux -e: tmux puts its client's PATH in
  // new panes, and runs the command with `$SHELL -c`, whose bash drops PS1
  const path = `${bin}:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}`;
  const shell = ["env", `PATH=${path}`, "PS1=pane$ ", ...BASH].map(shellQuote).join(" ");
  await tmux.start(name, shell, cols, rows, { CW_HOME: home.home, HISTFILE: "" });
  await tmux.waitFor(name, "pane$");
}

// ------------------------------------------------------------ protocol side

/** A protocol client for `home`'s node; never starts one. */
function clientOf(home: CwHome): NodeClient {
  return new NodeClient(localDialer(home.home, false));
}

/**
 * Reads an attach stream in the background, keeping what a test asks about:
 * the output as text (the last `keep` characters), byte counts, skipped
 * bytes, the exit event and PONGs.
 */
class Collector {
  readonly conn: FramedConn;
  /** Offset of the first byte the node said it would send. */
  readonly offset: number;
  text = "";
  bytes = 0;
  skipped = 0;
  exit: Extract<StreamEvent, { type: "exit" }> | null = null;
  /** The first `skipped` event, and how many bytes had arrived before it. */
  firstSkip: { bytes: number; after: number } | null = null;
  ended = false;
  readonly done: Promise<void>;
  #keep: number;
  #pongs = new Set<string>();
  #decoder = new TextDecoder();

  constructor(conn: FramedConn, offset: number, keep = 1 << 20) {
    this.conn = conn;
    this.offset = offset;
    this.#keep = keep;
    this.done = this.#run();
  }

  /** Bytes accounted for: offset + received + skipped; equals the session's output at the end. */
  get position(): number {
    return this.offset + this.bytes + this.skipped;
  }

  async #run(): Promise<void> {
    try {
      while (true) {
        const frame = await this.conn.next();
        if (!frame) break;
        if (frame.kind === FrameKind.DATA) {
          this.bytes += frame.bytes.byteLength;
          this.text += this.#decoder.decode(frame.bytes, { stream: true });
          if (this.text.length > this.#keep * 2) this.text = this.text.slice(-this.#keep);
        } else if (frame.kind === FrameKind.PONG) {
          this.#pongs.add(frame.bytes.toHex());
        } else if (frame.kind === FrameKind.EVENT) {
          const e = frame.value as StreamEvent;
          if (e.type === "skipped") {
            this.firstSkip ??= { bytes: e.bytes, after: this.bytes };
            this.skipped += e.bytes;
          }
          if (e.type === "exit") this.exit = e;
        }
      }
    } finally {
      this.ended = true;
    }
  }

  /** Waits until the output received so far contains `text`. */
  async waitText(text: string, timeoutMs = 10_000): Promise<void> {
    try {
      await waitFor(`stream output to contain ${JSON.stringify(text)}`, () => {
        if (this.text.includes(text)) return true;
        if (this.ended) throw new Error("the stream ended");
        return false;
      }, timeoutMs);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n--- output ---\n${this.text.slice(-2000)}`);
    }
  }

  /**
   * PING and wait for the PONG: the node answers in frame order, so every
   * frame this side sent before has been handled when this resolves.
   */
  async sync(timeoutMs = 10_000): Promise<void> {
    const token = crypto.getRandomValues(new Uint8Array(8));
    await this.conn.send(encodeFrame(FrameKind.PING, token));
    await waitFor("PONG", () => this.#pongs.has(token.toHex()), timeoutMs);
  }

  async close(): Promise<void> {
    this.conn.close();
    await this.done;
  }
}

/** Opens an attach stream directly over the protocol. */
async function openAttach(
  home: CwHome,
  req: Omit<Extract<Request, { op: "attach" }>, "op">,
): Promise<{ conn: FramedConn; offset: number; session: SessionInfo }> {
  const { response, conn } = await clientOf(home).stream({ op: "attach", ...req });
  return {
    conn,
    offset: response.offset as number,
    session: response.session as SessionInfo,
  };
}

/** Parses the last `stty size` answer ("ROWS COLS") printed before `marker`. */
function sttySizeBefore(text: string, marker: string): string {
  const at = text.lastIndexOf(marker);
  const sizes = [...text.slice(0, at).matchAll(/^(\d+ \d+)\r?$/gm)];
  assert.ok(sizes.length > 0, `no stty size output before ${marker} in:\n${text.slice(-1000)}`);
  return sizes.at(-1)![1];
}

// ------------------------------------------------------------ tests

Deno.test("attach in a terminal: type, resize, detach, re-attach with history, Ctrl+B Ctrl+B", async () => {
  await using home = new CwHome();
  await using tmux = new Tmux(home.root);
  const id = await launchBash(home, "sess$ ");
  await waitForLog(home, id, "sess$ ");

  await startPane(tmux, home, "t");
  await tmux.typeLine("t", `cw attach ${id}; echo ATTACH-EXIT=$?`);
  await tmux.waitFor("t", "sess$");

  // typing reaches the session, its output reaches the terminal
  await tmux.typeLine("t", "echo hello-$((6*7))");
  await tmux.waitFor("t", /^hello-42$/m);

  // the session has the terminal's size, and follows it
  const before = await tmux.size("t");
  await tmux.typeLine("t", "stty size; echo SIZE-$((1+1))");
  await tmux.waitFor("t", new RegExp(`^${before}\\s*\\nSIZE-2$`, "m"));
  await tmux.cmd("resize-window", "-t", "t", "-x", "120", "-y", "40");
  const after = await tmux.size("t");
  assert.equal(after, "40 120");
  // SIGWINCH travels client → node → PTY asynchronously: ask until it shows
  let asked = 0;
  await waitFor(`stty size to report ${after}`, async () => {
    await tmux.typeLine("t", `stty size; echo RESIZED-${++asked}-$((0))`);
    const pane = await tmux.waitFor("t", `RESIZED-${asked}-0`);
    return new RegExp(`^${after}\\s*\\nRESIZED-${asked}-0$`, "m").test(pane);
  });

  // Ctrl+B d detaches; attach exits 0 and the session keeps running
  await tmux.keys("t", ["C-b", "d"]);
  await tmux.waitFor("t", `[detached from session ${id}]`);
  await tmux.waitFor("t", /^ATTACH-EXIT=0$/m);
  assert.equal((await sessionInfo(home, id)).status, "running");

  // re-attach: the earlier output is replayed
  await tmux.clearPane("t");
  assert.ok(!(await tmux.capture("t")).includes("hello-42"));
  await tmux.typeLine("t", `cw attach ${id}; echo ATTACH-EXIT=$?`);
  await tmux.waitFor("t", /^hello-42$/m);

  // Ctrl+B Ctrl+B sends one Ctrl+B; Ctrl+B then another key sends both
  await tmux.typeLine("t", "od -c");
  await tmux.waitFor("t", /^sess\$ od -c\s*$/m);
  await tmux.keys("t", ["C-b", "C-b", "C-b", "x", "Enter", "C-d"]);
  await tmux.waitFor("t", /^0000000\s+002\s+002\s+x\s+\\n\s*$/m);
  await tmux.keys("t", ["C-b", "d"]);
  await tmux.waitFor("t", /^ATTACH-EXIT=0$/m);

  // --no-history: the session's screen as it is now, and nothing above it
  await home.ok(["send", String(id), "seq 1 300"]);
  await waitForLog(home, id, "300");
  await tmux.clearPane("t");
  await tmux.cmd("clear-history", "-t", "t");
  await tmux.typeLine("t", `cw attach --no-history ${id}; echo ATTACH-EXIT=$?`);
  await tmux.waitFor("t", /^300$/m);
  await tmux.typeLine("t", "echo fresh-$((5+5))");
  await tmux.waitFor("t", /^fresh-10$/m);
  const all = await tmux.cmd("capture-pane", "-p", "-S", "-", "-t", "t");
  assert.ok(!/^250$/m.test(all), `more than the screen was shown:\n${all}`);
  assert.ok(!all.includes("hello-42"), `more than the screen was shown:\n${all}`);
  await tmux.keys("t", ["C-b", "d"]);
  await tmux.waitFor("t", /^ATTACH-EXIT=0$/m);

  // --history N: that many lines of scrollback above the screen, not the whole transcript
  await tmux.clearPane("t");
  await tmux.cmd("clear-history", "-t", "t");
  await tmux.typeLine("t", `cw attach --history 100 ${id}; echo ATTACH-EXIT=$?`);
  await tmux.waitFor("t", /^fresh-10$/m);
  const scrolled = await tmux.cmd("capture-pane", "-p", "-S", "-", "-t", "t");
  assert.match(scrolled, /^250$/m, "100 lines of scrollback above the screen");
  assert.ok(!/^150$/m.test(scrolled), `more than 100 lines of scrollback:\n${scrolled}`);
  await tmux.keys("t", ["C-b", "d"]);
  await tmux.waitFor("t", /^ATTACH-EXIT=0$/m);
});

Deno.test("attach exits with the session's exit code when the session ends", async () => {
  await using home = new CwHome();
  await using tmux = new Tmux(home.root);
  const id = await launchBash(home, "sess$ ");
  await startPane(tmux, home, "t");
  await tmux.typeLine("t", `cw attach ${id}; echo ATTACH-EXIT=$?`);
  await tmux.waitFor("t", "sess$");

  await tmux.typeLine("t", "exit 42");
  const pane = await tmux.waitFor("t", /^ATTACH-EXIT=42$/m);
  assert.match(pane, new RegExp(`\\[session ${id} exited with code 42\\]`));
  const s = await sessionInfo(home, id);
  assert.equal(s.status, "exited");
  assert.equal(s.exitCode, 42);
});

Deno.test("attach --read-only in a terminal: sees output, typing reaches nothing, size untouched", async () => {
  await using home = new CwHome();
  await using tmux = new Tmux(home.root);
  const id = await launchBash(home, "sess$ ");
  await home.ok(["send", String(id), "stty size; echo SIZE-$((1+1))"]);
  const sizeBefore = sttySizeBefore(await waitForLog(home, id, "SIZE-2"), "SIZE-2");

  // a viewer whose terminal differs from the session's size
  await startPane(tmux, home, "ro", 111, 33);
  await tmux.typeLine("ro", `cw attach --read-only ${id}; echo ATTACH-EXIT=$?`);
  await tmux.waitFor("ro", /^SIZE-2$/m); // history replayed

  await tmux.typeLine("ro", "echo TYPED-IN-VIEWER");
  await tmux.keys("ro", ["C-c", "C-d"]);
  await tmux.cmd("resize-window", "-t", "ro", "-x", "90", "-y", "20");

  // a writer's input shows up in the viewer; the viewer's never reached the PTY
  await home.ok(["send", String(id), "stty size; echo VIA-SEND-$((4+4))"]);
  await tmux.waitFor("ro", /^VIA-SEND-8$/m);
  const log = await waitForLog(home, id, "VIA-SEND-8");
  assert.ok(!log.includes("TYPED-IN-VIEWER"), `viewer input reached the session:\n${log}`);
  assert.equal(sttySizeBefore(log, "VIA-SEND-8"), sizeBefore);
  assert.equal((await sessionInfo(home, id)).status, "running"); // the C-d did not end bash

  await tmux.keys("ro", ["C-b", "d"]);
  await tmux.waitFor("ro", `[detached from session ${id}]`);
  await tmux.waitFor("ro", /^ATTACH-EXIT=0$/m);
});

Deno.test("read-only is enforced by the node: DATA and resize from a read-only stream are dropped", async () => {
  await using home = new CwHome();
  const id = await launchBash(home, "sess$ ");
  await waitForLog(home, id, "sess$ ");

  const writer = await openAttach(home, { session: String(id), history: false });
  const w = new Collector(writer.conn, writer.offset);
  await writer.conn.sendData(enc.encode("stty size; echo BEFORE-$((1+1))\r"));
  await w.waitText("BEFORE-2\r\n");
  const sizeBefore = sttySizeBefore(w.text, "BEFORE-2\r\n");

  // a client that ignores --read-only's promise: it asks for a size, types, resizes
  const viewer = await openAttach(home, {
    session: String(id),
    readOnly: true,
    history: false,
    cols: 201,
    rows: 51,
  });
  const v = new Collector(viewer.conn, viewer.offset);
  await viewer.conn.sendData(enc.encode("echo LEAK-$((2*3))\r"));
  await viewer.conn.sendData(enc.encode("exit 7\r"));
  await viewer.conn.sendData(new Uint8Array(200_000).fill(0x41)); // several DATA frames
  await viewer.conn.sendJson(
    FrameKind.EVENT,
    { type: "resize", cols: 150, rows: 45 } satisfies StreamEvent,
  );
  await v.sync(); // the node has handled all of the above

  await writer.conn.sendData(enc.encode("stty size; echo AFTER-$((2+2))\r"));
  await w.waitText("AFTER-4\r\n");
  await v.waitText("AFTER-4\r\n"); // the viewer does see output
  assert.equal(sttySizeBefore(w.text, "AFTER-4\r\n"), sizeBefore);

  const log = await logsOf(home, id);
  assert.ok(log.includes("AFTER-4"), log);
  for (const leaked of ["LEAK", "exit 7", "AAAA"]) {
    assert.ok(!log.includes(leaked), `read-only input ${leaked} reached the PTY:\n${log}`);
    assert.ok(!w.text.includes(leaked), `read-only input ${leaked} was echoed:\n${w.text}`);
  }
  assert.equal((await sessionInfo(home, id)).status, "running");
  assert.equal(v.ended, false);

  await v.close();
  await w.close();
});

Deno.test("a viewer that stops reading stalls nobody: other attachers and cw list keep going", async () => {
  await using home = new CwHome();
  await using tmux = new Tmux(home.root);
  const id = await launchBash(home, "sess$ ");
  await waitForLog(home, id, "sess$ ");

  // opened, then never read from while the session floods
  const stalled = await openAttach(home, { session: String(id) });
  const reader = await openAttach(home, { session: String(id), readOnly: true });
  const r = new Collector(reader.conn, reader.offset, 64 * 1024);
  await startPane(tmux, home, "t");
  await tmux.typeLine("t", `cw attach ${id}; echo ATTACH-EXIT=$?`);
  await tmux.waitFor("t", "sess$");

  const FLOOD = 50_000_000;
  await home.ok([
    "send",
    String(id),
    `yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c ${FLOOD}; echo; echo FLOOD-END-$((40+2))`,
  ]);

  // while output pours out, the node still answers at once
  await waitFor("the flood to start", () => r.bytes > 2_000_000, 20_000);
  const client = clientOf(home);
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    const { sessions } = await client.request<{ sessions: SessionInfo[] }>({ op: "list" });
    const ms = performance.now() - t0;
    assert.equal(sessions[0].status, "running");
    assert.ok(ms < 1000, `list took ${ms.toFixed(0)} ms during the flood`);
  }
  const t0 = performance.now();
  const table = await home.ok(["list"], { timeoutMs: 10_000 });
  assert.match(table, /working|waiting/);
  const listMs = performance.now() - t0;

  // the reading attachers get to the end
  await r.waitText("FLOOD-END-42\r\n", 60_000);
  await tmux.waitFor("t", /^FLOOD-END-42$/m, 60_000);
  let s: SessionInfo | undefined;
  const produced = await waitFor("the reader to account for every byte", async () => {
    s = await sessionInfo(home, id);
    return r.position === s.outputBytes ? s.outputBytes : null;
  }).catch((err) => {
    throw new Error(
      `${err.message}: reader at ${r.position} (${r.bytes} + ${r.skipped} from ${r.offset}), session ${s?.outputBytes}`,
    );
  });
  assert.ok(produced > FLOOD, `produced ${produced} bytes`);
  assert.ok(r.bytes > 0);

  // the stalled viewer was not buffered for: it resumes with a skip notice
  const late = new Collector(stalled.conn, stalled.offset, 64 * 1024);
  const skip = await waitFor("the stalled stream to report a skip", () => {
    assert.ok(!late.ended, "the node closed the stalled stream");
    return late.firstSkip;
  });
  assert.ok(skip.bytes > FLOOD / 2, `skipped only ${skip.bytes} bytes`);
  assert.ok(skip.after < 8 * 1024 * 1024, `${skip.after} bytes were queued for a stalled viewer`);
  await late.waitText("FLOOD-END-42\r\n");
  await late.close();

  // and everything still works once it is gone
  await home.ok(["send", String(id), "echo AFTER-$((1+2))"]);
  await r.waitText("AFTER-3\r\n");
  await tmux.waitFor("t", /^AFTER-3$/m);
  await tmux.keys("t", ["C-b", "d"]);
  await tmux.waitFor("t", /^ATTACH-EXIT=0$/m);
  await r.close();
  console.log(`cw list during the flood: ${listMs.toFixed(0)} ms`);
});

Deno.test("attach to an unknown or ended session fails with one line", async () => {
  await using home = new CwHome();
  const id = await home.launch(["sh", "-c", "exit 3"]);
  await home.run(["wait", String(id)], { timeoutMs: 10_000 });

  const unknown = await home.run(["attach", "99"]);
  assert.notEqual(unknown.code, 0);
  assert.equal(unknown.stdout, "");
  assert.equal(unknown.stderr.trimEnd().split("\n").length, 1, unknown.stderr);
  assert.match(unknown.stderr, /^cw: .*"99"/);

  const ended = await home.run(["attach", String(id)]);
  assert.notEqual(ended.code, 0);
  assert.equal(ended.stdout, "");
  assert.equal(ended.stderr.trimEnd().split("\n").length, 1, ended.stderr);
  assert.match(ended.stderr, new RegExp(`^cw: .*"${id}".*ended`));

  // the same through --read-only, and by name
  const named = await home.launch(["true"], ["--name", "gone"]);
  await home.run(["wait", String(named)], { timeoutMs: 10_000 });
  const byName = await home.run(["attach", "--read-only", "gone"]);
  assert.notEqual(byName.code, 0);
  assert.match(byName.stderr, /ended/);
});
