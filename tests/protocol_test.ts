/**
 * Pure pieces: the frame codec (property tests over many thousands of random
 * and truncated inputs), the byte ring, the ANSI stripper, the detach keys,
 * and the project's own rules (flags in deno.json, the import rule).
 */
import assert from "node:assert/strict";
import {
  encodeFrame,
  encodeJson,
  type Frame,
  FrameDecoder,
  FrameKind,
  HEADER_SIZE,
  MAX_FRAME_PAYLOAD,
  MAX_JSON_PAYLOAD,
  ProtocolError,
} from "../shared/protocol.ts";
import { ByteRing } from "../node/ring.ts";
import { AnsiStripper } from "../shared/ansi.ts";
import { DetachKeys } from "../client/attach.ts";
import { parseDuration } from "../shared/duration.ts";
import { RUN_FLAGS } from "../shared/runtime.ts";
import { findViolations } from "../scripts/check_imports.ts";

/** A small deterministic PRNG (mulberry32), so failures reproduce. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomBytes(r: () => number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
  return b;
}

function randomFrame(r: () => number): { bytes: Uint8Array; kind: number } {
  const pick = r();
  if (pick < 0.4) {
    return {
      bytes: encodeFrame(FrameKind.DATA, randomBytes(r, Math.floor(r() * 300))),
      kind: FrameKind.DATA,
    };
  }
  if (pick < 0.5) {
    return { bytes: encodeFrame(FrameKind.PING, randomBytes(r, 8)), kind: FrameKind.PING };
  }
  const kinds = [
    FrameKind.HELLO,
    FrameKind.REQUEST,
    FrameKind.RESPONSE,
    FrameKind.EVENT,
    FrameKind.ERROR,
  ];
  const kind = kinds[Math.floor(r() * kinds.length)];
  return { bytes: encodeJson(kind, { op: "list", n: Math.floor(r() * 1e6), s: "é✓" }), kind };
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** Feeds `bytes` in random pieces; returns frames or the ProtocolError. */
function decodeInPieces(
  bytes: Uint8Array,
  r: () => number,
): { frames: Frame[]; error?: ProtocolError } {
  const d = new FrameDecoder();
  const frames: Frame[] = [];
  let at = 0;
  try {
    while (at < bytes.byteLength) {
      const n = 1 + Math.floor(r() * 64);
      frames.push(...d.push(bytes.subarray(at, at + n)));
      at += n;
    }
  } catch (err) {
    if (err instanceof ProtocolError) return { frames, error: err };
    throw err; // anything else is a bug in the decoder
  }
  return { frames };
}

Deno.test("codec: valid streams split anywhere decode to the same frames", () => {
  const r = rng(1);
  for (let i = 0; i < 3000; i++) {
    const sent = Array.from({ length: 1 + Math.floor(r() * 6) }, () => randomFrame(r));
    const { frames, error } = decodeInPieces(concat(sent.map((f) => f.bytes)), r);
    assert.equal(error, undefined);
    assert.deepEqual(frames.map((f) => f.kind), sent.map((f) => f.kind));
  }
});

Deno.test("codec: truncated streams yield only whole frames and never throw", () => {
  const r = rng(2);
  for (let i = 0; i < 5000; i++) {
    const sent = Array.from({ length: 1 + Math.floor(r() * 4) }, () => randomFrame(r));
    const all = concat(sent.map((f) => f.bytes));
    const cut = Math.floor(r() * all.byteLength);
    const { frames, error } = decodeInPieces(all.subarray(0, cut), r);
    assert.equal(error, undefined);
    // exactly the frames that fit entirely before the cut
    let end = 0;
    let whole = 0;
    for (const f of sent) {
      end += f.bytes.byteLength;
      if (end <= cut) whole++;
    }
    assert.equal(frames.length, whole);
  }
});

Deno.test("codec: random bytes either decode or raise ProtocolError, nothing else", () => {
  const r = rng(3);
  let errors = 0;
  for (let i = 0; i < 20000; i++) {
    const bytes = randomBytes(r, Math.floor(r() * 200));
    // bias towards plausible headers so payload parsing is exercised too
    if (bytes.byteLength >= HEADER_SIZE && r() < 0.5) {
      new DataView(bytes.buffer).setUint32(
        0,
        Math.floor(r() * (bytes.byteLength - HEADER_SIZE + 1)),
      );
      bytes[4] = 1 + Math.floor(r() * 8);
    }
    if (decodeInPieces(bytes, r).error) errors++;
  }
  assert.ok(errors > 1000, `expected many rejections, got ${errors}`);
});

Deno.test("codec: a 1 MiB frame dripped one byte at a time decodes in linear time", () => {
  // joining everything held on every chunk made this quadratic: ~85 s of CPU for one slow peer
  const payload = new Uint8Array(MAX_FRAME_PAYLOAD).map((_, i) => i * 7);
  const wire = encodeFrame(FrameKind.DATA, payload);
  const dec = new FrameDecoder();
  const frames: Frame[] = [];
  for (let i = 0; i < wire.byteLength; i++) frames.push(...dec.push(wire.subarray(i, i + 1)));
  assert.equal(frames.length, 1);
  assert.deepEqual((frames[0] as { bytes: Uint8Array }).bytes, payload);
  assert.equal(dec.pending, 0);
});

Deno.test("codec: oversized and unknown frames are rejected from the header alone", () => {
  const header = (len: number, kind: number) => {
    const b = new Uint8Array(HEADER_SIZE);
    new DataView(b.buffer).setUint32(0, len);
    b[4] = kind;
    return b;
  };
  const tooBig = [
    header(MAX_FRAME_PAYLOAD + 1, FrameKind.DATA),
    header(MAX_JSON_PAYLOAD + 1, FrameKind.REQUEST),
    header(65, FrameKind.PING),
    header(0xffffffff, FrameKind.DATA),
  ];
  for (const h of tooBig) {
    assert.throws(
      () => new FrameDecoder().push(h),
      (e) => e instanceof ProtocolError && e.code === "frame_too_large",
    );
  }
  for (const kind of [0, 9, 0x7f, 0xff]) {
    assert.throws(
      () => new FrameDecoder().push(header(0, kind)),
      (e) => e instanceof ProtocolError && e.code === "protocol_error",
    );
  }
  // JSON frames must hold a UTF-8 JSON object
  for (const payload of ["[1]", "42", "{", "\xff"]) {
    const bytes = encodeFrame(FrameKind.REQUEST, Uint8Array.from(payload, (c) => c.charCodeAt(0)));
    assert.throws(() => new FrameDecoder().push(bytes), ProtocolError);
  }
  assert.throws(
    () => encodeFrame(FrameKind.DATA, new Uint8Array(MAX_FRAME_PAYLOAD + 1)),
    RangeError,
  );
});

Deno.test("ring: offsets stay addressable, growth and wrap keep bytes exact", () => {
  const r = rng(4);
  for (let round = 0; round < 200; round++) {
    const cap = 1 + Math.floor(r() * 5000);
    const ring = new ByteRing(cap, 1 + Math.floor(r() * 64));
    const all: number[] = [];
    for (let i = 0; i < 30; i++) {
      const chunk = randomBytes(r, Math.floor(r() * cap * 0.7));
      ring.write(chunk);
      all.push(...chunk);
      assert.equal(ring.end, all.length);
      assert.equal(ring.start, Math.max(0, all.length - cap));
      const from = ring.start + Math.floor(r() * (ring.end - ring.start + 1));
      const got = ring.read(from, 1 + Math.floor(r() * cap));
      assert.deepEqual([...got], all.slice(from, from + got.byteLength));
    }
    assert.throws(() => ring.read(ring.start - 1, 1), RangeError);
    assert.throws(() => ring.read(ring.end + 1, 1), RangeError);
  }
});

Deno.test("ring: reset starts empty at an offset", () => {
  const ring = new ByteRing(16);
  ring.reset(1000);
  assert.equal(ring.start, 1000);
  assert.equal(ring.end, 1000);
  ring.write(new Uint8Array([1, 2, 3]));
  assert.deepEqual([...ring.read(1001, 10)], [2, 3]);
});

Deno.test("ansi: escapes are stripped across chunk boundaries", () => {
  const enc = new TextEncoder();
  const input =
    "a\x1b[31mred\x1b[0m b\x1b]52;c;ZXZpbA==\x07c\x1b]0;title\x1b\\d\x1b(Be\r\nf\t✓\x07";
  const want = "ared bcde\nf\t✓";
  const dec = new TextDecoder();
  const bytes = enc.encode(input);
  for (let split = 0; split <= bytes.byteLength; split++) {
    const s = new AnsiStripper();
    const out = dec.decode(
      concat([s.push(bytes.subarray(0, split)), s.push(bytes.subarray(split))]),
    );
    assert.equal(out, want, `split at ${split}`);
  }
});

Deno.test("ansi: a full-screen program's cursor moves read as lines and spaces", () => {
  const enc = new TextEncoder();
  const dec = new TextDecoder();
  // a UI drawn by cursor positioning: title row, two words on one row, a status row
  const input = "\x1b[?1049h\x1b[2J\x1b[1;1HTitle\x1b[3;5Hleft\x1b[3;40Hright\x1b[24;1Hstatus" +
    "\x1b[5A\x1b[2Cup\x1b[?25l\x1b[>4;2m";
  const want = "Title\nleft right\nstatus\nup";
  const bytes = enc.encode(input);
  for (let split = 0; split <= bytes.byteLength; split++) {
    const s = new AnsiStripper();
    const out = dec.decode(
      concat([s.push(bytes.subarray(0, split)), s.push(bytes.subarray(split))]),
    );
    assert.equal(out, want, `split at ${split}`);
  }
});

Deno.test("detach keys: Ctrl+B d detaches, Ctrl+B Ctrl+B is one Ctrl+B, split reads", () => {
  const k = new DetachKeys();
  assert.deepEqual(k.feed(new Uint8Array([0x61, 0x02])), {
    forward: new Uint8Array([0x61]),
    detach: false,
  });
  assert.deepEqual(k.feed(new Uint8Array([0x64])), { forward: new Uint8Array([]), detach: true });
  const k2 = new DetachKeys();
  assert.deepEqual(k2.feed(new Uint8Array([0x02, 0x02, 0x78, 0x02, 0x78])), {
    forward: new Uint8Array([0x02, 0x78, 0x02, 0x78]),
    detach: false,
  });
});

Deno.test("durations parse with units and reject junk", () => {
  assert.equal(parseDuration("30"), 30_000);
  assert.equal(parseDuration("1.5"), 1500);
  assert.equal(parseDuration("500ms"), 500);
  assert.equal(parseDuration("5m"), 300_000);
  assert.equal(parseDuration("2h"), 7_200_000);
  for (const bad of ["", "x", "-1", "5 m", "1e3"]) {
    assert.throws(() => parseDuration(bad), RangeError);
  }
});

Deno.test("deno.json tasks run with exactly cw's flags", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  assert.equal(config.tasks.cw, `deno run ${RUN_FLAGS.join(" ")} main.ts`);
  assert.ok(config.tasks.test.startsWith(`deno test ${RUN_FLAGS.join(" ")} `));
  assert.ok(config.tasks.bench.startsWith(`deno run ${RUN_FLAGS.join(" ")} `));
  // and the launcher scripts/cw (the container's cw too)
  const shim = await Deno.readTextFile(new URL("../scripts/cw", import.meta.url));
  const flags = /flags="--no-prompt ([^"]*)"/.exec(shim)?.[1].replace(/\\\n/g, "").split(/\s+/);
  assert.deepEqual(flags, [...RUN_FLAGS]);
});

Deno.test("import rule: the project obeys it and a violation is caught", async () => {
  const root = new URL("..", import.meta.url).pathname;
  assert.deepEqual(findViolations(root), []);
  const tmp = await Deno.makeTempDir();
  try {
    for (const d of ["node", "client", "shared", "relay"]) await Deno.mkdir(`${tmp}/${d}`);
    await Deno.writeTextFile(
      `${tmp}/node/a.ts`,
      `import { x } from "../client/b.ts";\nimport "../shared/c.ts";\n`,
    );
    await Deno.writeTextFile(`${tmp}/shared/c.ts`, `export * from "../relay/d.ts";\n`);
    await Deno.writeTextFile(`${tmp}/client/b.ts`, `const m = await import("../relay/d.ts");\n`);
    const found = findViolations(tmp).map((v) => `${v.file}:${v.line}`).sort();
    assert.deepEqual(found, ["client/b.ts:1", "node/a.ts:1", "shared/c.ts:1"]);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
