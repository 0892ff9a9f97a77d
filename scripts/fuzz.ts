/**
 * Decoder fuzzer (`deno task fuzz`; `--help` lists its flags): feeds seeded
 * random input, valid and mutated, to the decoders of cw's three wire formats
 * and checks each result against the format's spec file:
 *
 * - `protocol`: the node protocol's streaming {@link FrameDecoder}
 *   (shared/protocol.ts), and a tenth of the streams again through
 *   {@link FramedConn} and {@link checkHello} (shared/framed.ts);
 * - `mux`: {@link decodeMux} on every link frame, and a live {@link Mux} over
 *   an in-memory socket, so its frame handler runs too (shared/mux.ts);
 * - `dialback`: {@link decodeDial}, {@link dialJson}, {@link dialCount}, and
 *   START's and RESIZE's field parsers (shared/dialback.ts).
 *
 * A decoder may accept its input or reject it with its documented error.
 * Anything else is a finding: another error, a result that breaks the spec (a
 * frame over its limit, a valid frame that does not round-trip, a streaming
 * decoder whose output depends on where the stream was cut, a Mux that keeps a
 * link the spec says is broken), or a case still running after
 * {@link HANG_AFTER_MS}. Findings print with the seed, the case and the input
 * as hex; the run then exits 1.
 *
 * Each case draws from its own generator seeded by (seed, format, case), so
 * one case replays alone: `deno task fuzz --seed S --only mux --case I`, and
 * a run split across workers finds what one worker would. The cases run in
 * workers while the main thread watches each one's case counter, so a decoder
 * stuck in a loop is caught and named.
 */
import { parseArgs } from "node:util";
import { concat } from "../shared/bytes.ts";
import {
  allowedEnv,
  decodeDial,
  Dial,
  DIALBACK_MAX_CHUNK,
  dialCount,
  dialJson,
  dialSize,
  encodeDial,
  parseStart,
} from "../shared/dialback.ts";
import type { Duplex } from "../shared/duplex.ts";
import { CwError } from "../shared/errors.ts";
import { checkHello, FramedConn } from "../shared/framed.ts";
import {
  decodeMux,
  encodeMux,
  type LinkSocket,
  Mux,
  MUX_INITIAL_WINDOW,
  MUX_MAX_DATA,
  MUX_MAX_JSON,
  MUX_MAX_STREAMS,
  MuxError,
  type MuxFrame,
  MuxType,
} from "../shared/mux.ts";
import {
  encodeFrame,
  type Frame,
  FrameDecoder,
  FrameKind,
  HEADER_SIZE,
  type Hello,
  MAX_FRAME_PAYLOAD,
  MAX_JSON_PAYLOAD,
  MAX_PING_PAYLOAD,
  OPS,
  PROTOCOL_MAGIC,
  PROTOCOL_VERSION,
  ProtocolError,
} from "../shared/protocol.ts";

/** Cases of a run without `--cases`, split evenly across the formats. */
export const DEFAULT_CASES = 1_000_000;
/** A case still running after this long is reported as a hang. */
export const HANG_AFTER_MS = 10_000;
/** A case that finishes but took this long is reported as too slow. */
const SLOW_CASE_MS = 2_000;
/** Bytes of an input printed as hex; the rest is left to a replay. */
const HEX_LIMIT = 4096;

/** The wire formats, in the order their cases are seeded. */
export const FORMATS = ["protocol", "mux", "dialback"] as const;
/** One of {@link FORMATS}. */
export type FormatName = typeof FORMATS[number];

/** Options of {@link runFuzz}. */
export interface FuzzOptions {
  /** Cases in all, split evenly across the formats run. */
  cases: number;
  /** Seed of every case's generator (a u32). */
  seed: number;
  /** Formats to run; default all. */
  only?: readonly FormatName[];
  /** Run only the cases whose number is `index` modulo `count`: one worker's share. */
  shard?: { index: number; count: number };
  /** Called before each case, e.g. to watch for hangs. */
  onCase?(format: number, index: number): void;
}

/** One kind of finding, with the smallest input that showed it. */
export interface FindingReport {
  /** What broke, the same for every case that broke it the same way. */
  problem: string;
  /** Cases that showed it. */
  count: number;
  /** The case of the input below, for `--case`. */
  index: number;
  /** Bytes in that input. */
  size: number;
  /** The error and stack, or what differed from the spec. */
  detail: string;
  /** The input, as hex. */
  input: string;
}

/** What one format's run found. */
export interface FormatReport {
  format: FormatName;
  cases: number;
  /** Cases whose input the decoder accepted as the spec says. */
  accepted: number;
  /** Cases whose input the decoder rejected as the spec says. */
  rejected: number;
  /** How the decoder rejects input, per its spec. */
  rejects: string;
  findings: FindingReport[];
  ms: number;
}

/**
 * Runs `cases` seeded cases across the formats and reports, per format, what
 * was accepted, rejected and found. Never throws for a decoder's bug: that is
 * a finding.
 *
 * @example
 * ```ts
 * const reports = await runFuzz({ cases: 20_000, seed: 1 });
 * const clean = reports.every((r) => r.findings.length === 0);
 * ```
 */
export async function runFuzz(opts: FuzzOptions): Promise<FormatReport[]> {
  const names = opts.only ?? FORMATS;
  const shard = opts.shard ?? { index: 0, count: 1 };
  const reports: FormatReport[] = [];
  for (const [k, name] of names.entries()) {
    const format = FORMATS.indexOf(name);
    const target = TARGETS[name];
    const cases = Math.floor(opts.cases / names.length) + (k < opts.cases % names.length ? 1 : 0);
    const report: FormatReport = {
      format: name,
      cases: 0,
      accepted: 0,
      rejected: 0,
      rejects: target.rejects,
      findings: [],
      ms: 0,
    };
    const found = new Map<
      string,
      { finding: Finding; count: number; index: number; input: unknown }
    >();
    const started = performance.now();
    for (let index = shard.index; index < cases; index += shard.count) {
      opts.onCase?.(format, index);
      const caseStarted = performance.now();
      const input = target.generate(caseRng(opts.seed, format, index));
      let result = await runCase(target, input);
      const ms = performance.now() - caseStarted;
      if (!(result instanceof Finding) && ms > SLOW_CASE_MS) {
        result = new Finding(`A case took over ${SLOW_CASE_MS} ms`, `${Math.round(ms)} ms`);
      }
      report.cases++;
      if (!(result instanceof Finding)) {
        report[result]++;
        continue;
      }
      const seen = found.get(result.message);
      if (!seen) found.set(result.message, { finding: result, count: 1, index, input });
      else {
        seen.count++;
        if (target.size(input) < target.size(seen.input)) {
          Object.assign(seen, { finding: result, index, input });
        }
      }
    }
    report.ms = performance.now() - started;
    for (const { finding, count, index, input } of found.values()) {
      report.findings.push({
        problem: finding.message,
        count,
        index,
        size: target.size(input),
        detail: finding.describe(),
        input: target.describe(input),
      });
    }
    reports.push(report);
  }
  return reports;
}

/** Joins the reports of workers that ran shares of one run; elapsed time is the slowest's. */
export function mergeReports(parts: FormatReport[][]): FormatReport[] {
  return parts[0].map((first, i) => {
    const same = parts.map((reports) => reports[i]);
    const findings = new Map<string, FindingReport>();
    for (const f of same.flatMap((r) => r.findings)) {
      const seen = findings.get(f.problem);
      if (!seen) findings.set(f.problem, { ...f });
      else if (f.size < seen.size) findings.set(f.problem, { ...f, count: seen.count + f.count });
      else seen.count += f.count;
    }
    const sum = (key: "cases" | "accepted" | "rejected") => same.reduce((n, r) => n + r[key], 0);
    return {
      ...first,
      cases: sum("cases"),
      accepted: sum("accepted"),
      rejected: sum("rejected"),
      findings: [...findings.values()],
      ms: Math.max(...same.map((r) => r.ms)),
    };
  });
}

/** Runs one case: its outcome, or the finding it showed. */
async function runCase<I>(target: Target<I>, input: I): Promise<Outcome | Finding> {
  try {
    return await target.check(input);
  } catch (err) {
    if (err instanceof Finding) return err;
    // the checks catch what decoders document; anything else escaped one
    return new Finding(`A decoder threw ${nameOf(err)} past its checks`, "", { cause: err });
  }
}

/** A case that broke its decoder's spec; `message` is the same for every case broken alike. */
class Finding extends Error {
  /** What this case showed, beyond the message. */
  readonly detail: string;
  /** Builds the finding. */
  constructor(problem: string, detail = "", options?: ErrorOptions) {
    super(problem, options);
    this.name = "Finding";
    this.detail = detail;
  }

  /** The detail and the stack of the error behind it. */
  describe(): string {
    const cause = this.cause instanceof Error
      ? (this.cause.stack ?? String(this.cause)).split("\n").slice(0, 10).join("\n")
      : this.cause === undefined
      ? ""
      : String(this.cause);
    return [this.detail, cause].filter(Boolean).join("\n");
  }
}

function nameOf(err: unknown): string {
  return err instanceof Error ? err.name : typeof err;
}

type Outcome = "accepted" | "rejected";

/** One wire format under test. */
interface Target<I> {
  /** How its decoders reject input, per the spec. */
  rejects: string;
  generate(rng: Rng): I;
  /** Runs one case; throws a {@link Finding} when a decoder breaks the spec. */
  check(input: I): Outcome | Promise<Outcome>;
  /** The input as hex. */
  describe(input: I): string;
  /** Bytes in the input, to keep the smallest example of a finding. */
  size(input: I): number;
}

// ---------------------------------------------------------------- randomness

/** mulberry32: 32 bits of state, fast, and random enough for test input. */
class Rng {
  #s: number;

  /** A generator that starts from `seed`. */
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }

  /** The next 32 random bits. */
  u32(): number {
    this.#s = (this.#s + 0x6d2b79f5) >>> 0;
    let t = this.#s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** An integer in [0, n), for n ≤ 2^32. */
  int(n: number): number {
    return Math.floor(this.u32() / 0x1_0000_0000 * n);
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.u32() < p * 0x1_0000_0000;
  }

  /** One of `items`. */
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  /** `n` random bytes; long runs are views into a shared pool, so never write to them. */
  bytes(n: number): Uint8Array {
    if (n > 64) {
      const at = this.int(POOL.byteLength - n + 1);
      return POOL.subarray(at, at + n);
    }
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }
}

/** Random bytes for large payloads: filling a megabyte per case would dominate the run. */
const POOL = (() => {
  const rng = new Rng(0x5eed);
  const words = new Uint32Array((2 * MAX_FRAME_PAYLOAD + 4096) / 4);
  for (let i = 0; i < words.length; i++) words[i] = rng.u32();
  return new Uint8Array(words.buffer);
})();

/** The generator of one case: a mix of the seed, the format and the case number. */
function caseRng(seed: number, format: number, index: number): Rng {
  let h = (seed ^ Math.imul(index + 1, 0x9e3779b1) ^ Math.imul(format + 1, 0x85ebca6b)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return new Rng(h ^ (h >>> 16));
}

/**
 * A payload length: mostly small, sometimes at its limit or one past it,
 * rarely anything up to it (large payloads cost the run most of its time).
 */
function length(rng: Rng, limit: number): number {
  const r = rng.int(10_000);
  if (r < 6000) return rng.int(17);
  if (r < 8800) return rng.int(257);
  if (r < 9990) return rng.int(4097);
  if (r < 9998) return Math.max(0, limit - 1 + rng.int(3));
  return rng.int(limit + 2);
}

const INTERESTING_BYTES = [0x00, 0x01, 0x7f, 0x80, 0xff];
const INTERESTING_U32 = [
  0,
  1,
  4,
  MAX_PING_PAYLOAD,
  MAX_PING_PAYLOAD + 1,
  MUX_MAX_DATA,
  MUX_MAX_DATA + 1,
  MAX_JSON_PAYLOAD,
  MAX_JSON_PAYLOAD + 1,
  MAX_FRAME_PAYLOAD,
  MAX_FRAME_PAYLOAD + 1,
  0x7fff_ffff,
  0x8000_0000,
  0xffff_ffff,
];

/**
 * A mutated copy of `input`: truncated, bits flipped, a byte or a u32 field
 * (`u32At`: offsets of length or id fields) set to an edge value, bytes
 * inserted or deleted, or all of it replaced by random bytes.
 */
function mutate(rng: Rng, input: Uint8Array, u32At: readonly number[]): Uint8Array {
  let out: Uint8Array = input.slice();
  for (let n = 1 + rng.int(3); n > 0; n--) {
    const len = out.byteLength;
    switch (rng.int(7)) {
      case 0:
        out = out.slice(0, rng.int(len + 1));
        break;
      case 1:
        for (let k = 1 + rng.int(8); k > 0 && len > 0; k--) out[rng.int(len)] ^= 1 << rng.int(8);
        break;
      case 2:
        if (len > 0) {
          out[rng.int(len)] = rng.chance(0.5) ? rng.pick(INTERESTING_BYTES) : rng.int(256);
        }
        break;
      case 3: {
        const at = u32At.length > 0 ? rng.pick(u32At) : rng.int(len + 1);
        if (at + 4 > len) break;
        const value = rng.chance(0.8) ? rng.pick(INTERESTING_U32) : rng.u32();
        new DataView(out.buffer, out.byteOffset).setUint32(at, value);
        break;
      }
      case 4: {
        const at = rng.int(len + 1);
        out = concat([out.subarray(0, at), rng.bytes(1 + rng.int(16)), out.subarray(at)]);
        break;
      }
      case 5: {
        const from = rng.int(len + 1);
        out = concat([out.subarray(0, from), out.subarray(from + rng.int(len - from + 1))]);
        break;
      }
      default:
        out = rng.bytes(rng.int(64)).slice();
    }
  }
  return out;
}

// ---------------------------------------------------------------- JSON payloads

/** Fields a JSON payload of some frame has, with values a peer would put there. */
type Shape = readonly (readonly [string, readonly unknown[]])[];

const KEYS = [
  "kind",
  "type",
  "reason",
  "message",
  "code",
  "signal",
  "cols",
  "rows",
  "ticket",
  "version",
  "magic",
  "op",
  "session",
  "bytes",
  "__proto__",
  "toString",
  "valueOf",
  "constructor",
  "toJSON",
  "then",
];
const WORDS = ["", "cw", "node", "x", "status", "dialback", "INT", "é", "😀", "\u0000", "\ud800"];
const NUMBERS = [0, -0, 1, -1, 0.5, 80, 2 ** 31, 2 ** 32, 2 ** 53 + 2, -(2 ** 53), 1e308, 5e-324];
const NOT_OBJECTS = ["null", "[]", "[{}]", "0", "-0", "1e999", '"x"', "true"];
const BROKEN_JSON = [
  "",
  " ",
  "{",
  "}",
  '{"a":}',
  "{'a':1}",
  '{"a":1,}',
  "NaN",
  "{}}",
  "[}",
  "\u0000{}",
];
const BAD_UTF8 = [[0xff], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xe2, 0x82], [0xf4, 0x90, 0x80, 0x80]];

function randomJson(rng: Rng, depth: number): unknown {
  switch (rng.int(depth > 0 ? 9 : 6)) {
    case 0:
      return null;
    case 1:
      return rng.chance(0.5);
    case 2:
      return rng.pick(NUMBERS);
    case 3:
      return rng.int(0x1_0000_0000);
    case 4:
    case 5:
      return rng.pick(WORDS);
    case 6:
      return Array.from({ length: rng.int(4) }, () => randomJson(rng, depth - 1));
    default:
      return randomObject(rng, depth - 1, []);
  }
}

function randomObject(rng: Rng, depth: number, shape: Shape): Record<string, unknown> {
  const out: Record<string, unknown> = Object.create(null); // so "__proto__" is a key like others
  for (const [key, usual] of shape) {
    if (rng.chance(0.85)) out[key] = rng.chance(0.7) ? rng.pick(usual) : randomJson(rng, depth);
  }
  for (let n = rng.int(shape.length > 0 ? 2 : 4); n > 0; n--) {
    out[rng.pick(KEYS)] = randomJson(rng, depth);
  }
  return out;
}

/** A JSON payload and, when it is an object by construction, its canonical text. */
interface JsonPayload {
  bytes: Uint8Array;
  json: string | null;
}

const utf8 = new TextEncoder();

/**
 * A JSON payload: mostly an object of `shape`, else what peers get wrong —
 * not an object, invalid UTF-8, broken or deeply nested JSON, or padded to
 * `limit` and one past it.
 */
function jsonPayload(rng: Rng, shape: Shape, limit: number): JsonPayload {
  const json = JSON.stringify(randomObject(rng, 2, shape));
  const r = rng.int(1000);
  if (r < 730) return { bytes: utf8.encode(json), json };
  if (r < 810) {
    const text = rng.chance(0.5) ? rng.pick(NOT_OBJECTS) : JSON.stringify(randomJson(rng, 2));
    return { bytes: utf8.encode(text), json: null };
  }
  if (r < 880) {
    const bytes = utf8.encode(json);
    const at = rng.int(bytes.byteLength + 1);
    const bad = Uint8Array.from(rng.pick(BAD_UTF8));
    return { bytes: concat([bytes.subarray(0, at), bad, bytes.subarray(at)]), json: null };
  }
  if (r < 950) {
    const text = rng.chance(0.5) ? rng.pick(BROKEN_JSON) : json.slice(0, rng.int(json.length));
    return { bytes: utf8.encode(text), json: null };
  }
  if (r < 996) {
    // JSON.parse does not recurse, but what reads the value may; at ~0.3 µs a level, very
    // deep is rare
    const depth = rng.int(rng.chance(0.002) ? limit / 2 : rng.chance(0.1) ? 5000 : 200);
    switch (rng.int(3)) {
      case 0: // valid, not an object
        return { bytes: utf8.encode("[".repeat(depth) + "]".repeat(depth)), json: null };
      case 1: { // an object, deep inside (within what JSON.stringify can walk back)
        const inner = Math.max(1, Math.min(depth, 20_000));
        const text = `{"kind":${"[".repeat(inner)}${"]".repeat(inner)}}`;
        return { bytes: utf8.encode(text), json: JSON.stringify(JSON.parse(text)) };
      }
      default: // never closed
        return { bytes: utf8.encode("[".repeat(depth)), json: null };
    }
  }
  const text = utf8.encode(json);
  const size = Math.max(text.byteLength, rng.pick([limit, limit + 1, limit + 1 + rng.int(1000)]));
  const bytes = new Uint8Array(size).fill(0x20); // whitespace: still the same object
  bytes.set(text, size - text.byteLength);
  return { bytes, json };
}

function jsonObject(text: string): Record<string, unknown> | null {
  try {
    const v = JSON.parse(text);
    return typeof v === "object" && v !== null && !Array.isArray(v) ? v : null;
  } catch {
    return null;
  }
}

/** JSON equality; values nested past what JSON.stringify can walk count as equal. */
function sameJson(a: unknown, b: unknown): boolean {
  try {
    return JSON.stringify(a) === JSON.stringify(b);
  } catch (err) {
    if (err instanceof RangeError) return true;
    throw err;
  }
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  if (a.buffer === b.buffer && a.byteOffset === b.byteOffset) return true; // views of one run
  const n = a.byteLength - a.byteLength % 4;
  const va = new DataView(a.buffer, a.byteOffset, a.byteLength);
  const vb = new DataView(b.buffer, b.byteOffset, b.byteLength);
  for (let i = 0; i < n; i += 4) if (va.getUint32(i) !== vb.getUint32(i)) return false;
  for (let i = n; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

function hex(bytes: Uint8Array): string {
  const shown = Array.from(bytes.subarray(0, HEX_LIMIT), (b) => b.toString(16).padStart(2, "0"));
  const more = bytes.byteLength - HEX_LIMIT;
  return shown.join("") + (more > 0 ? ` … (+${more} bytes: replay the case to see them)` : "");
}

// ---------------------------------------------------------------- the node protocol

const JSON_SHAPES: Partial<Record<number, Shape>> = {
  [FrameKind.HELLO]: [
    ["magic", [PROTOCOL_MAGIC]],
    ["version", [PROTOCOL_VERSION, PROTOCOL_VERSION + 1]],
    ["agent", ["cw/0.1.0"]],
  ],
  [FrameKind.REQUEST]: [["op", OPS], ["session", ["1", "web"]], ["argv", [["sh", "-c", "true"]]]],
  [FrameKind.RESPONSE]: [["session", [{ id: 1 }]], ["offset", [0]]],
  [FrameKind.EVENT]: [
    ["type", ["skipped", "exit", "end", "ack", "resize"]],
    ["bytes", [1, 65536]],
    ["cols", [80]],
    ["rows", [24]],
  ],
  [FrameKind.ERROR]: [["code", ["protocol_error", "not_found"]], ["message", ["Cannot attach"]]],
};

/** Largest payload of each frame kind, per the spec's table. */
const FRAME_LIMITS: Partial<Record<number, number>> = {
  [FrameKind.HELLO]: MAX_JSON_PAYLOAD,
  [FrameKind.REQUEST]: MAX_JSON_PAYLOAD,
  [FrameKind.RESPONSE]: MAX_JSON_PAYLOAD,
  [FrameKind.EVENT]: MAX_JSON_PAYLOAD,
  [FrameKind.ERROR]: MAX_JSON_PAYLOAD,
  [FrameKind.DATA]: MAX_FRAME_PAYLOAD,
  [FrameKind.PING]: MAX_PING_PAYLOAD,
  [FrameKind.PONG]: MAX_PING_PAYLOAD,
};

interface ProtocolCase {
  stream: Uint8Array;
  /** Where the stream is cut into the chunks the decoder is fed. */
  cuts: number[];
  /** The frames encoded, when all were valid and the stream is intact: they must come back. */
  sent: { kind: number; bytes: Uint8Array; json: string | null }[] | null;
  /** Also read it through a FramedConn and check its HELLO. */
  framed: boolean;
}

function protocolCase(rng: Rng): ProtocolCase {
  // FramedConn adds little over FrameDecoder but a 64 KiB buffer per read: a tenth of the cases
  const framed = rng.chance(0.1);
  const frames: Uint8Array[] = [];
  const starts: number[] = [];
  let sent: ProtocolCase["sent"] = [];
  let at = 0;
  for (let n = 1 + rng.int(4); n > 0; n--) {
    const kind = framed && at === 0 && rng.chance(0.5) // a conversation starts with HELLO
      ? FrameKind.HELLO
      : rng.chance(0.95)
      ? 1 + rng.int(8)
      : rng.pick([0, 9, 0x80, 0xff, rng.int(256)]);
    const limit = FRAME_LIMITS[kind] ?? MAX_FRAME_PAYLOAD;
    const shape = JSON_SHAPES[kind];
    const { bytes, json } = shape
      ? jsonPayload(rng, shape, limit)
      : { bytes: rng.bytes(length(rng, limit)), json: null };
    const valid = FRAME_LIMITS[kind] !== undefined && bytes.byteLength <= limit &&
      (!shape || json !== null);
    // valid frames go through the real encoder, the others are written by hand
    const frame = valid ? encodeFrame(kind as FrameKind, bytes) : rawFrame(kind, bytes);
    frames.push(frame);
    starts.push(at);
    at += frame.byteLength;
    if (valid) sent?.push({ kind, bytes, json });
    else sent = null;
  }
  let stream = concat(frames);
  if (rng.chance(0.5)) {
    stream = mutate(rng, stream, starts);
    sent = null;
  }
  const cuts = stream.byteLength <= 64 && rng.chance(0.05)
    ? Array.from({ length: stream.byteLength }, (_, i) => i) // a byte at a time
    : Array.from({ length: rng.int(8) }, () => rng.int(stream.byteLength + 1));
  return { stream, cuts: cuts.sort((a, b) => a - b), sent, framed };
}

function rawFrame(kind: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + payload.byteLength);
  new DataView(out.buffer).setUint32(0, payload.byteLength);
  out[4] = kind;
  out.set(payload, HEADER_SIZE);
  return out;
}

/** What the spec says a stream decodes to: frames, then an error or the bytes of a partial frame. */
interface SpecStream {
  frames: { kind: number; payload: Uint8Array; value?: Record<string, unknown> }[];
  error: ProtocolError["code"] | null;
  rest: number;
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** The spec's reading of a stream, written from the table in shared/protocol.ts. */
function specStream(stream: Uint8Array): SpecStream {
  const frames: SpecStream["frames"] = [];
  const view = new DataView(stream.buffer, stream.byteOffset, stream.byteLength);
  let at = 0;
  while (stream.byteLength - at >= HEADER_SIZE) {
    const len = view.getUint32(at);
    const kind = stream[at + 4];
    const limit = FRAME_LIMITS[kind];
    if (limit === undefined) return { frames, error: "protocol_error", rest: 0 };
    if (len > limit) return { frames, error: "frame_too_large", rest: 0 };
    if (stream.byteLength - at - HEADER_SIZE < len) break;
    const payload = stream.subarray(at + HEADER_SIZE, at + HEADER_SIZE + len);
    if (JSON_SHAPES[kind]) {
      let value: Record<string, unknown> | null = null;
      try {
        value = jsonObject(strictUtf8.decode(payload));
      } catch {
        // not UTF-8
      }
      if (!value) return { frames, error: "protocol_error", rest: 0 };
      frames.push({ kind, payload, value });
    } else frames.push({ kind, payload });
    at += HEADER_SIZE + len;
  }
  return { frames, error: null, rest: stream.byteLength - at };
}

function chunksOf(stream: Uint8Array, cuts: number[]): Uint8Array[] {
  const ends = [0, ...cuts, stream.byteLength];
  return ends.slice(1).map((end, i) => stream.subarray(ends[i], end));
}

function expectProtocolError(err: unknown, where: string): ProtocolError {
  if (
    err instanceof ProtocolError &&
    (err.code === "protocol_error" || err.code === "frame_too_large")
  ) return err;
  throw new Finding(`${where} threw ${nameOf(err)}, not ProtocolError`, "", { cause: err });
}

/** Checks frames a decoder gave (and the error it threw) against the spec's reading. */
function compareFrames(where: string, got: Frame[], want: SpecStream, error: ProtocolError | null) {
  if (got.length > want.frames.length) {
    const problem = want.error ? `a frame the spec rejects with ${want.error}` : "frames not sent";
    throw new Finding(`${where} returned ${problem}`, `frame ${want.frames.length}`);
  }
  for (const [i, frame] of got.entries()) {
    if (breaksSpec(frame)) {
      throw new Finding(`${where} returned a frame that breaks the spec`, `frame ${i}`);
    }
    const spec = want.frames[i];
    const same = frame.kind === spec.kind &&
      ("bytes" in frame
        ? equalBytes(frame.bytes, spec.payload)
        : sameJson(frame.value, spec.value));
    if (!same) throw new Finding(`${where} returned a frame other than the one sent`, `frame ${i}`);
  }
  if (want.error !== null && error === null) {
    throw new Finding(`${where} accepted a stream the spec rejects with ${want.error}`);
  }
  if (want.error !== null && error !== null && error.code !== want.error) {
    throw new Finding(`${where} rejected with ${error.code}, the spec says ${want.error}`);
  }
  if (want.error === null && error !== null) {
    throw new Finding(`${where} rejected a stream the spec accepts`, error.message);
  }
  if (want.error === null && got.length !== want.frames.length) {
    throw new Finding(`${where} lost frames`, `${got.length} of ${want.frames.length}`);
  }
}

/** Whether a decoded frame has a kind, a shape or a size the spec's table does not allow. */
function breaksSpec(frame: Frame): boolean {
  const limit = FRAME_LIMITS[frame.kind];
  if (limit === undefined) return true;
  if ("bytes" in frame) {
    return JSON_SHAPES[frame.kind] !== undefined || !(frame.bytes instanceof Uint8Array) ||
      frame.bytes.byteLength > limit;
  }
  const v = frame.value;
  return JSON_SHAPES[frame.kind] === undefined || typeof v !== "object" || v === null ||
    Array.isArray(v);
}

async function checkProtocol(c: ProtocolCase): Promise<Outcome> {
  const want = specStream(c.stream);
  const chunks = chunksOf(c.stream, c.cuts);
  const decoder = new FrameDecoder();
  const got: Frame[] = [];
  let error: ProtocolError | null = null;
  for (const chunk of chunks) {
    try {
      got.push(...decoder.push(chunk));
    } catch (err) {
      error = expectProtocolError(err, "FrameDecoder.push");
      break; // the decoder must not be used again
    }
  }
  compareFrames("FrameDecoder", got, want, error);
  if (error === null && decoder.pending !== want.rest) {
    throw new Finding(
      "FrameDecoder holds other bytes than the partial frame",
      `${decoder.pending}`,
    );
  }
  if (c.sent) {
    const same = error === null && got.length === c.sent.length &&
      c.sent.every((sent, i) => {
        const frame = got[i];
        return frame.kind === sent.kind &&
          ("bytes" in frame
            ? equalBytes(frame.bytes, sent.bytes)
            : JSON.stringify(frame.value) === sent.json);
      });
    if (!same) {
      throw new Finding("Valid frames did not round-trip through encodeFrame/FrameDecoder");
    }
  }
  if (c.framed) await checkFramed(chunks, want);
  return error ? "rejected" : "accepted";
}

/** Reads the chunks through a FramedConn, which answers PINGs itself, then checks the HELLO. */
async function checkFramed(chunks: Uint8Array[], want: SpecStream): Promise<void> {
  const written: Uint8Array[] = [];
  const conn = new FramedConn(memoryConn(chunks, written));
  const got: Frame[] = [];
  let error: ProtocolError | null = null;
  try {
    while (true) {
      const frame = await conn.next();
      if (frame === null) break;
      got.push(frame);
    }
  } catch (err) {
    error = expectProtocolError(err, "FramedConn.next");
  }
  await conn.send(new Uint8Array(0)); // writes are queued: the PONGs are out after this
  conn.close();
  const pings = want.frames.filter((f) => f.kind === FrameKind.PING);
  compareFrames("FramedConn", got, {
    ...want,
    frames: want.frames.filter((f) => !pings.includes(f)),
  }, error);
  const pongs = new FrameDecoder().push(concat(written));
  const answered = pongs.length <= pings.length &&
    (error !== null || pongs.length === pings.length) &&
    pongs.every((f, i) =>
      f.kind === FrameKind.PONG && equalBytes((f as { bytes: Uint8Array }).bytes, pings[i].payload)
    );
  if (!answered) throw new Finding("FramedConn did not answer each PING with its PONG");
  let hello: Hello;
  try {
    hello = checkHello(got[0] ?? null);
  } catch (err) {
    if (err instanceof CwError) return;
    throw new Finding(`checkHello threw ${nameOf(err)}, not CwError`, "", { cause: err });
  }
  if (
    got[0].kind !== FrameKind.HELLO || hello.magic !== PROTOCOL_MAGIC ||
    hello.version !== PROTOCOL_VERSION
  ) throw new Finding("checkHello accepted a frame that is not this protocol's HELLO");
}

/** A socket in memory that delivers `chunks` and keeps what is written. */
function memoryConn(chunks: Uint8Array[], written: Uint8Array[]): Duplex {
  const queue = chunks.filter((c) => c.byteLength > 0); // a socket read never returns 0 bytes
  const conn = {
    read(p: Uint8Array): Promise<number | null> {
      const chunk = queue.shift();
      if (!chunk) return Promise.resolve(null);
      const n = Math.min(chunk.byteLength, p.byteLength);
      if (n < chunk.byteLength) queue.unshift(chunk.subarray(n));
      p.set(chunk.subarray(0, n));
      return Promise.resolve(n);
    },
    write(p: Uint8Array): Promise<number> {
      written.push(p.slice());
      return Promise.resolve(p.byteLength);
    },
    close() {},
  };
  // FramedConn prefers a socket's own read/write; its streams are never touched
  return conn as unknown as Duplex;
}

function describeProtocol(c: ProtocolCase): string {
  const cuts = c.cuts.length > 0 ? `, cut at ${c.cuts.join(" ")}` : "";
  const via = c.framed ? ", also read by a FramedConn" : "";
  return `stream of ${c.stream.byteLength} bytes${cuts}${via}:\n${hex(c.stream)}`;
}

// ---------------------------------------------------------------- the link mux

const MUX_SHAPES: Partial<Record<number, Shape>> = {
  [MuxType.OPEN]: [["kind", ["node", "other"]]],
  [MuxType.GOAWAY]: [["reason", ["relay_restarting"]], ["message", ["Relay restarting"]]],
  [MuxType.CONTROL]: [
    ["type", ["dialback", "status"]],
    ["ticket", ["t1"]],
    ["version", ["0.1.0"]],
    ["sessions", [3]],
  ],
};

/** Largest payload of each link frame type, per the spec's table. */
const MUX_LIMITS: Partial<Record<number, number>> = {
  [MuxType.OPEN]: MUX_MAX_JSON,
  [MuxType.DATA]: MUX_MAX_DATA,
  [MuxType.WINDOW]: 4,
  [MuxType.CLOSE]: 0,
  [MuxType.PING]: 64,
  [MuxType.PONG]: 64,
  [MuxType.GOAWAY]: MUX_MAX_JSON,
  [MuxType.CONTROL]: MUX_MAX_JSON,
};

interface MuxCase {
  role: "accept" | "dial";
  /** Whether onStream keeps the streams the peer opens, or closes them at once. */
  keep: boolean;
  /** WebSocket messages from the peer: binary, or a text message. */
  messages: (Uint8Array | string)[];
  /** What each binary message was encoded from; null when mutated or text. */
  encoded: (MuxFrame | null)[];
}

function muxCase(rng: Rng): MuxCase {
  const role = rng.chance(0.5) ? "accept" : "dial";
  const parity = role === "accept" ? 0 : 1; // the peer of the accepting side opens even ids
  const ids: number[] = [];
  const newId = () => {
    const id = 2 * (1 + rng.int(1 << 20)) - parity;
    ids.push(id);
    return id;
  };
  const someId = () =>
    ids.length > 0 && rng.chance(0.8) ? rng.pick(ids) : rng.pick([0, 1, 2, 0xffff_ffff, rng.u32()]);
  const c: MuxCase = { role, keep: rng.chance(0.7), messages: [], encoded: [] };
  const add = (type: number, stream: number, payload: Uint8Array, mutable = true) => {
    const frame = { type, stream, payload };
    const bytes = encodeMux(type, stream, payload);
    const mutated = mutable && rng.chance(0.2);
    c.messages.push(mutated ? mutate(rng, bytes, [1]) : bytes);
    c.encoded.push(mutated ? null : frame);
  };
  const r = rng.int(10_000);
  if (r < 50) {
    // a peer that overruns a stream's window
    const id = newId();
    add(MuxType.OPEN, id, utf8.encode('{"kind":"node"}'), false);
    for (let n = 8 + rng.int(3); n > 0; n--) add(MuxType.DATA, id, rng.bytes(MUX_MAX_DATA), false);
    return c;
  }
  if (r < 53) {
    // a peer that opens more streams than a link may hold
    const base = 2 * rng.int(1 << 20) + 2 - parity;
    for (let n = 0; n < MUX_MAX_STREAMS + 1 + rng.int(3); n++) {
      add(MuxType.OPEN, base + 2 * n, utf8.encode('{"kind":"node"}'), false);
    }
    return c;
  }
  for (let n = 1 + rng.int(6); n > 0; n--) {
    if (rng.chance(0.01)) {
      c.messages.push(rng.pick(["", "{}", "hello"]));
      c.encoded.push(null);
      continue;
    }
    const type = rng.chance(0.95) ? 1 + rng.int(8) : rng.pick([0, 9, 0x80, 0xff, rng.int(256)]);
    const shape = MUX_SHAPES[type];
    if (type === MuxType.OPEN && shape) {
      add(type, rng.chance(0.85) ? newId() : someId(), jsonPayload(rng, shape, MUX_MAX_JSON).bytes);
    } else if (shape) {
      add(type, rng.chance(0.9) ? 0 : someId(), jsonPayload(rng, shape, MUX_MAX_JSON).bytes);
    } else if (type === MuxType.WINDOW) {
      const credit = new Uint8Array(4);
      new DataView(credit.buffer).setUint32(
        0,
        rng.chance(0.5) ? rng.pick(INTERESTING_U32) : rng.u32(),
      );
      add(type, someId(), rng.chance(0.9) ? credit : rng.bytes(length(rng, 4)));
    } else if (type === MuxType.CLOSE) {
      add(type, someId(), rng.chance(0.9) ? new Uint8Array(0) : rng.bytes(length(rng, 0)));
    } else if (type === MuxType.PING || type === MuxType.PONG) {
      add(type, rng.chance(0.9) ? 0 : someId(), rng.bytes(length(rng, 64)));
    } else {
      add(type, someId(), rng.bytes(length(rng, MUX_MAX_DATA)));
    }
  }
  return c;
}

/** A link frame as the spec reads it, or null when the spec rejects it. */
function specMux(bytes: Uint8Array): MuxFrame | null {
  if (bytes.byteLength < 5) return null;
  const limit = MUX_LIMITS[bytes[0]];
  if (limit === undefined || bytes.byteLength - 5 > limit) return null;
  const stream = new DataView(bytes.buffer, bytes.byteOffset).getUint32(1);
  return { type: bytes[0], stream, payload: bytes.subarray(5) };
}

const lenientUtf8 = new TextDecoder(); // the mux, like the dial-back, decodes leniently

/** What the spec says of a message: whether the peer broke the protocol, and what is answered. */
interface Verdict {
  broken: boolean;
  /** The spec leaves it open: closing the link with a protocol error is as right as going on. */
  either?: boolean;
  pong?: Uint8Array;
}

/** The link as the spec sees it: the peer's open streams and the data each holds. */
class LinkModel {
  readonly #parity: number;
  readonly #keep: boolean;
  /** Bytes held per open stream (a stream nobody reads holds all it gets). */
  readonly held = new Map<number, number>();

  constructor(c: MuxCase) {
    this.#parity = c.role === "accept" ? 0 : 1;
    this.#keep = c.keep;
  }

  /** Takes one message; says whether the peer broke the protocol and what must be answered. */
  receive(message: Uint8Array | string): Verdict {
    const f = typeof message === "string" ? null : specMux(message);
    if (!f) return { broken: true };
    const json = () => jsonObject(lenientUtf8.decode(f.payload));
    switch (f.type) {
      case MuxType.PING:
        return { broken: false, pong: f.payload };
      case MuxType.GOAWAY: {
        const v = json();
        if (v === null) return { broken: true };
        // {reason, message} are strings, but the spec does not say what else is an error
        const strings = ["reason", "message"].every((k) =>
          v[k] === undefined || typeof v[k] === "string"
        );
        return { broken: false, either: !strings };
      }
      case MuxType.CONTROL:
        return { broken: json() === null };
      case MuxType.OPEN: {
        const meta = json();
        if (
          !meta || typeof meta.kind !== "string" || f.stream === 0 ||
          f.stream % 2 !== this.#parity || this.held.has(f.stream)
        ) return { broken: true };
        if (this.#keep && this.held.size < MUX_MAX_STREAMS) this.held.set(f.stream, 0);
        return { broken: false };
      }
      case MuxType.DATA: {
        const held = this.held.get(f.stream);
        if (held === undefined) return { broken: false };
        this.held.set(f.stream, held + f.payload.byteLength);
        return { broken: held + f.payload.byteLength > MUX_INITIAL_WINDOW };
      }
      case MuxType.WINDOW:
        return { broken: f.payload.byteLength !== 4 };
      case MuxType.CLOSE:
        this.held.delete(f.stream);
        return { broken: false };
      default:
        return { broken: false };
    }
  }
}

/** An in-memory {@link LinkSocket}: keeps what the Mux sends, delivers what the case says. */
class MemorySocket implements LinkSocket {
  binaryType: BinaryType = "blob";
  readonly bufferedAmount = 0;
  readyState: number = WebSocket.OPEN;
  readonly sent: Uint8Array[] = [];
  #listeners: ((e: MessageEvent) => void)[] = [];

  send(data: Uint8Array): void {
    this.sent.push(data.slice());
  }

  close(): void {
    this.readyState = WebSocket.CLOSING;
  }

  addEventListener(type: string, fn: (e: never) => void): void {
    if (type === "message") this.#listeners.push(fn as (e: MessageEvent) => void);
  }

  /** Delivers a message as a WebSocket with binaryType "arraybuffer" does. */
  receive(message: Uint8Array | string): void {
    const whole = typeof message !== "string" && message.byteLength === message.buffer.byteLength;
    const data = typeof message === "string"
      ? message
      : whole
      ? message.buffer
      : message.slice().buffer;
    for (const fn of this.#listeners) fn({ data } as MessageEvent);
  }
}

function checkMux(c: MuxCase): Outcome {
  for (const [i, message] of c.messages.entries()) {
    if (typeof message !== "string") checkDecodeMux(message, c.encoded[i]);
  }
  const socket = new MemorySocket();
  const model = new LinkModel(c);
  const closes: string[] = [];
  let wrong: Finding | null = null;
  const mux = new Mux(socket, {
    onStream(stream, meta) {
      if (typeof meta.kind !== "string") wrong = new Finding("Mux opened a stream without a kind");
      if (!c.keep) stream.close();
    },
    onControl(message) {
      if (typeof message !== "object" || message === null || Array.isArray(message)) {
        wrong = new Finding("Mux passed on a CONTROL message that is not an object");
      }
    },
    onGoaway(reason, message) {
      if (typeof reason !== "string" || typeof message !== "string") {
        wrong = new Finding("Mux passed on a GOAWAY without string reason and message");
      }
    },
    onClose: (reason) => closes.push(reason),
  }, { role: c.role });
  try {
    for (const [i, message] of c.messages.entries()) {
      if (socket.readyState !== WebSocket.OPEN) break; // a closed WebSocket delivers nothing more
      const spec = model.receive(message);
      const before = socket.sent.length;
      try {
        socket.receive(message);
      } catch (err) {
        throw new Finding(`Mux's message listener threw ${nameOf(err)}`, `message ${i}`, {
          cause: err,
        });
      }
      if (wrong) throw wrong;
      const reason = mux.closedReason;
      if (reason !== null && !reason.startsWith("protocol error")) {
        const why = reason.split(":")[0];
        throw new Finding(`Mux closed the link with "${why}", not a protocol error`, reason);
      }
      if (spec.broken && reason === null) {
        throw new Finding("Mux kept a link whose peer broke the spec", `message ${i}`);
      }
      if (!spec.broken && !spec.either && reason !== null) {
        throw new Finding(
          "Mux closed a link over a frame the spec allows",
          `message ${i}: ${reason}`,
        );
      }
      if (reason !== null) break;
      const pong = spec.pong && encodeMux(MuxType.PONG, 0, spec.pong);
      if (pong && !socket.sent.slice(before).some((f) => equalBytes(f, pong))) {
        throw new Finding("Mux did not answer a PING with its PONG", `message ${i}`);
      }
      if (mux.streamCount !== model.held.size) {
        throw new Finding(
          "Mux holds another number of streams than the spec",
          `${mux.streamCount}, spec ${model.held.size}`,
        );
      }
    }
    if (socket.sent.some((f) => specMux(f) === null)) {
      throw new Finding("Mux sent a frame that breaks the spec");
    }
  } finally {
    mux.close("end of case"); // stops its heartbeat timer
  }
  if (closes.length !== 1) throw new Finding("Mux did not call onClose exactly once");
  return closes[0] === "end of case" ? "accepted" : "rejected";
}

/** decodeMux against the spec, and against what was encoded when the frame is intact. */
function checkDecodeMux(message: Uint8Array, encoded: MuxFrame | null): void {
  const spec = specMux(message);
  let got: MuxFrame;
  try {
    got = decodeMux(message);
  } catch (err) {
    if (!(err instanceof MuxError)) {
      throw new Finding(`decodeMux threw ${nameOf(err)}, not MuxError`, "", { cause: err });
    }
    if (spec) throw new Finding("decodeMux rejected a frame the spec accepts", err.message);
    return;
  }
  if (!spec) throw new Finding("decodeMux accepted a frame the spec rejects");
  const same = (a: MuxFrame, b: MuxFrame) =>
    a.type === b.type && a.stream === b.stream && equalBytes(a.payload, b.payload);
  if (!same(got, spec)) throw new Finding("decodeMux returned other than the frame's fields");
  if (encoded && !same(got, encoded)) {
    throw new Finding("A link frame did not round-trip through encodeMux/decodeMux");
  }
}

function describeMux(c: MuxCase): string {
  const shown = c.messages.slice(0, 20).map((m, i) =>
    `  ${i}: ${typeof m === "string" ? `text ${JSON.stringify(m)}` : hex(m)}`
  );
  const more = c.messages.length - shown.length;
  return [
    `role ${c.role}, streams ${c.keep ? "kept" : "closed at once"}, ${c.messages.length} messages:`,
    ...shown,
    ...(more > 0 ? [`  … +${more} messages`] : []),
  ].join("\n");
}

// ---------------------------------------------------------------- the dial-back

const DIAL_SHAPES: Partial<Record<number, Shape>> = {
  [Dial.START]: [
    ["command", ["ls -l", null, ""]],
    ["pty", [null, { term: "xterm-256color", cols: 80, rows: 24 }]],
    ["env", [{}, { LANG: "C.UTF-8", LC_ALL: "C" }, { PATH: "/bin" }, { LANG: 1 }]],
  ],
  [Dial.RESIZE]: [["cols", [80, 1, 0, -1, 1.5]], ["rows", [24, 2 ** 53]]],
  [Dial.SIGNAL]: [["signal", ["INT", "SIGTERM"]]],
  [Dial.EXIT]: [["code", [0, 1, null]], ["signal", [null, "SIGKILL"]]],
  [Dial.ERROR]: [["message", ["cannot start"]]],
};

const DIAL_TYPES = Object.values(Dial);
/** Types whose payload is a u32 count. */
const COUNT_TYPES: readonly number[] = [Dial.ACK, Dial.STDIN_ACK];

interface DialCase {
  message: Uint8Array;
  /** What the message was encoded from; null when mutated. */
  encoded: { type: number; payload: Uint8Array; json: string | null } | null;
}

function dialCase(rng: Rng): DialCase {
  if (rng.chance(0.03)) return { message: new Uint8Array(0), encoded: null };
  const type = rng.chance(0.95) ? rng.pick(DIAL_TYPES) : rng.int(256);
  const shape = DIAL_SHAPES[type];
  let payload: Uint8Array;
  let json: string | null = null;
  if (shape) ({ bytes: payload, json } = jsonPayload(rng, shape, DIALBACK_MAX_CHUNK));
  else if (COUNT_TYPES.includes(type) && rng.chance(0.9)) {
    payload = encodeDial(type, rng.u32()).subarray(1);
  } else if (type === Dial.EOF || type === Dial.EOW) {
    payload = rng.chance(0.9) ? new Uint8Array(0) : rng.bytes(length(rng, 0));
  } else payload = rng.bytes(length(rng, DIALBACK_MAX_CHUNK));
  const message = encodeDial(type, payload);
  if (rng.chance(0.3)) return { message: mutate(rng, message, []), encoded: null };
  return { message, encoded: { type, payload, json } };
}

function checkDial(c: DialCase): Outcome {
  let decoded: { type: number; payload: Uint8Array };
  try {
    decoded = decodeDial(c.message);
  } catch (err) {
    if (c.message.byteLength === 0 && err instanceof RangeError) return "rejected";
    throw new Finding(`decodeDial threw ${nameOf(err)}`, "", { cause: err });
  }
  const { type, payload } = decoded;
  if (c.message.byteLength === 0) throw new Finding("decodeDial accepted an empty message");
  if (type !== c.message[0] || !equalBytes(payload, c.message.subarray(1))) {
    throw new Finding("decodeDial returned other than the message's type and payload");
  }
  if (c.encoded && (c.encoded.type !== type || !equalBytes(c.encoded.payload, payload))) {
    throw new Finding("A message did not round-trip through encodeDial/decodeDial");
  }
  // dialCount's contract holds for any payload; dialJson is for the JSON types
  const count = rangeErrorOr(() => dialCount(payload), "dialCount");
  const u32 = payload.byteLength === 4
    ? new DataView(payload.buffer, payload.byteOffset).getUint32(0)
    : null;
  if (count instanceof RangeError ? u32 !== null : count !== u32) {
    throw new Finding("dialCount read other than the payload's u32", `${count}, spec ${u32}`);
  }
  if (COUNT_TYPES.includes(type)) return u32 === null ? "rejected" : "accepted";
  if (!DIAL_SHAPES[type]) return "accepted";
  const value = rangeErrorOr(() => dialJson(payload), "dialJson");
  if (value instanceof RangeError) {
    if (c.encoded?.json) throw new Finding("dialJson rejected a JSON object", value.message);
    return "rejected";
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Finding("dialJson returned something other than an object");
  }
  if (c.encoded?.json && !sameJson(value, JSON.parse(c.encoded.json))) {
    throw new Finding("A JSON message did not round-trip through encodeDial/dialJson");
  }
  if (type === Dial.START) return agree("parseStart", () => parseStart(payload), validStart(value));
  if (type === Dial.RESIZE) return agree("dialSize", () => dialSize(value), validSize(value));
  return "accepted";
}

/** Runs a field parser and checks it accepts exactly what the spec allows. */
function agree(name: string, parse: () => object, valid: boolean): Outcome {
  const parsed = rangeErrorOr(parse, name);
  const accepted = !(parsed instanceof RangeError);
  if (accepted !== valid) {
    const verdict = accepted ? "accepted what the spec rejects" : "rejected what the spec allows";
    const detail = accepted ? JSON.stringify(parsed) : (parsed as RangeError).message;
    throw new Finding(`${name} ${verdict}`, detail);
  }
  return accepted ? "accepted" : "rejected";
}

/** START per the spec: `{command: string | null, pty: {term, cols, rows} | null, env}`. */
function validStart(v: Record<string, unknown>): boolean {
  const pty = v.pty as Record<string, unknown> | null;
  const env = v.env as Record<string, unknown> | null;
  return (v.command === null || typeof v.command === "string") &&
    (pty === null || (typeof pty === "object" && !Array.isArray(pty) &&
      typeof pty.term === "string" && validSize(pty))) &&
    typeof env === "object" && env !== null && !Array.isArray(env) &&
    Object.entries(env).every(([k, val]) => allowedEnv(k) && typeof val === "string");
}

/** Sizes are positive integers. */
function validSize(v: Record<string, unknown>): boolean {
  const size = (n: unknown) => Number.isSafeInteger(n) && (n as number) >= 1;
  return size(v.cols) && size(v.rows);
}

/** Runs a parser whose documented error is RangeError; anything else thrown is a finding. */
function rangeErrorOr<T>(parse: () => T, name: string): T | RangeError {
  try {
    return parse();
  } catch (err) {
    if (err instanceof RangeError) return err;
    throw new Finding(`${name} threw ${nameOf(err)}, not RangeError`, "", { cause: err });
  }
}

const TARGETS: Record<FormatName, Target<unknown>> = {
  protocol: {
    rejects: "ProtocolError",
    generate: protocolCase,
    check: checkProtocol,
    describe: describeProtocol,
    size: (c: ProtocolCase) => c.stream.byteLength,
  } satisfies Target<ProtocolCase>,
  mux: {
    rejects: "MuxError, link closed",
    generate: muxCase,
    check: checkMux,
    describe: describeMux,
    size: (c: MuxCase) => c.messages.reduce((n, m) => n + m.length, 0),
  } satisfies Target<MuxCase>,
  dialback: {
    rejects: "RangeError",
    generate: dialCase,
    check: checkDial,
    describe: (c: DialCase) => `message of ${c.message.byteLength} bytes:\n${hex(c.message)}`,
    size: (c: DialCase) => c.message.byteLength,
  } satisfies Target<DialCase>,
};

// ---------------------------------------------------------------- command line

const USAGE = `Usage: deno task fuzz [--cases N] [--seed S] [--only F] [--workers W] [--case I]

  --cases N    cases in all, split evenly across the formats (default ${DEFAULT_CASES})
  --seed S     seed, a u32 (default: random, printed)
  --only F     run one format of ${FORMATS.join(", ")} (comma-separated for several)
  --workers W  workers running cases in parallel (default: one per CPU)
  --case I     replay case I of the one format given with --only, and print it`;

/** The command line, read; throws TypeError when it cannot be. */
function parseOptions(args: string[]) {
  const { values } = parseArgs({
    args,
    options: {
      cases: { type: "string" },
      seed: { type: "string" },
      only: { type: "string" },
      case: { type: "string" },
      workers: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  const cases = count(values.cases, "--cases") ?? DEFAULT_CASES;
  const seed = count(values.seed, "--seed") ?? crypto.getRandomValues(new Uint32Array(1))[0];
  const only = values.only?.split(",").map((name) => {
    if (!(FORMATS as readonly string[]).includes(name)) {
      throw new TypeError(`Cannot fuzz "${name}": the formats are ${FORMATS.join(", ")}`);
    }
    return name as FormatName;
  });
  const index = count(values.case, "--case");
  if (index !== undefined && only?.length !== 1) {
    throw new TypeError("Cannot replay a case without its format: give one with --only");
  }
  const replay = index === undefined ? null : { format: only![0], index };
  const workers = count(values.workers, "--workers") ?? navigator.hardwareConcurrency;
  if (workers < 1) throw new TypeError("Cannot run without a worker: give --workers 1 or more");
  if (seed > 0xffff_ffff) throw new TypeError(`Cannot use the seed ${seed}: it is not a u32`);
  return { help: values.help === true, cases, seed, only, replay, workers };
}

async function main(args: string[]): Promise<number> {
  let opts: ReturnType<typeof parseOptions>;
  try {
    opts = parseOptions(args);
  } catch (err) {
    if (!(err instanceof TypeError)) throw err;
    console.error(`fuzz: ${err.message}\n\n${USAGE}`);
    return 2;
  }
  const { cases, seed, only, workers } = opts;
  if (opts.help) {
    console.log(USAGE);
    return 0;
  }
  if (opts.replay) return await replay(opts.replay.format, seed, opts.replay.index);

  const plural = workers === 1 ? "" : "s";
  console.log(
    `fuzz: seed ${seed}, ${cases.toLocaleString("en-US")} cases, ${workers} worker${plural}`,
  );
  const started = performance.now();
  const result = await inWorkers({ cases, seed, only }, workers);
  if ("hang" in result) {
    const { format, index } = result.hang;
    const name = FORMATS[format];
    const target = TARGETS[name];
    const input = target.generate(caseRng(seed, format, index));
    console.log(`\nFINDING ${name}: case ${index} did not finish in ${HANG_AFTER_MS / 1000} s`);
    console.log(`  replay: deno task fuzz --seed ${seed} --only ${name} --case ${index}`);
    console.log(indent(target.describe(input)));
    return 1;
  }
  for (const report of result) console.log(summary(report));
  const findings = result.flatMap((r) => r.findings.map((f) => ({ format: r.format, ...f })));
  for (const f of findings) {
    console.log(`\nFINDING ${f.format}: ${f.problem} (${f.count.toLocaleString("en-US")} cases)`);
    console.log(`  replay: deno task fuzz --seed ${seed} --only ${f.format} --case ${f.index}`);
    console.log(indent(f.input));
    if (f.detail) console.log(indent(f.detail));
  }
  const total = result.reduce((n, r) => n + r.cases, 0);
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  console.log(
    `\nfuzz: seed ${seed}: ${total.toLocaleString("en-US")} cases in ${seconds} s, ` +
      `${findings.length} findings`,
  );
  return findings.length > 0 ? 1 : 0;
}

function count(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new TypeError(`Cannot read ${flag} "${value}": expected a whole number`);
  }
  return n;
}

function summary(r: FormatReport): string {
  const n = (x: number) => x.toLocaleString("en-US").padStart(9);
  const findings = r.findings.reduce((sum, f) => sum + f.count, 0);
  return `${r.format.padEnd(8)} ${n(r.cases)} cases ${n(r.accepted)} accepted ${n(r.rejected)} ` +
    `rejected (${r.rejects}) ${n(findings)} findings ${(r.ms / 1000).toFixed(1).padStart(6)} s`;
}

function indent(text: string): string {
  return text.split("\n").map((line) => `  ${line}`).join("\n");
}

async function replay(name: FormatName, seed: number, index: number): Promise<number> {
  const target = TARGETS[name];
  const input = target.generate(caseRng(seed, FORMATS.indexOf(name), index));
  console.log(`${name} case ${index} of seed ${seed}: ${target.describe(input)}`);
  const outcome = await runCase(target, input);
  if (!(outcome instanceof Finding)) {
    console.log(`→ ${outcome}`);
    return 0;
  }
  console.log(`FINDING: ${outcome.message}\n${indent(outcome.describe())}`);
  return 1;
}

/** What a worker is asked to run. */
interface WorkerTask {
  cases: number;
  seed: number;
  only?: FormatName[];
  shard: { index: number; count: number };
  /** Two Int32s: the format and case the worker is at. */
  at: SharedArrayBuffer;
}

/** The case a worker stopped at. */
interface Hang {
  hang: { format: number; index: number };
}

/**
 * Runs the cases in `workers` workers, a share each. A case that loops
 * forever cannot be stopped from its own thread, so this one watches each
 * worker's case counter and names the case that stopped moving.
 */
async function inWorkers(
  task: Omit<WorkerTask, "at" | "shard">,
  workers: number,
): Promise<FormatReport[] | Hang> {
  const shards = Array.from({ length: workers }, (_, index) => ({
    index,
    worker: new Worker(import.meta.url, { type: "module" }),
    at: new Int32Array(new SharedArrayBuffer(8)).fill(-1),
    last: "",
    since: Date.now(),
    done: false,
  }));
  let timer: ReturnType<typeof setInterval> | undefined;
  try {
    return await new Promise((resolve, reject) => {
      timer = setInterval(() => {
        for (const s of shards) {
          const format = Atomics.load(s.at, 0);
          const index = Atomics.load(s.at, 1);
          if (`${format}:${index}` !== s.last) {
            s.last = `${format}:${index}`;
            s.since = Date.now();
          } else if (!s.done && format >= 0 && Date.now() - s.since > HANG_AFTER_MS) {
            resolve({ hang: { format, index } });
          }
        }
      }, 500);
      const parts: FormatReport[][] = [];
      for (const s of shards) {
        s.worker.onmessage = (e: MessageEvent<FormatReport[]>) => {
          s.done = true;
          parts[s.index] = e.data;
          if (shards.every((t) => t.done)) resolve(mergeReports(parts));
        };
        s.worker.onerror = (e) => {
          e.preventDefault();
          reject(new Error(`The fuzz worker failed: ${e.message}`));
        };
        const shard = { index: s.index, count: workers };
        s.worker.postMessage({ ...task, shard, at: s.at.buffer } satisfies WorkerTask);
      }
    });
  } finally {
    clearInterval(timer);
    for (const s of shards) s.worker.terminate();
  }
}

function serveWorker(): void {
  const scope = globalThis as unknown as {
    onmessage: (e: MessageEvent<WorkerTask>) => void;
    postMessage(message: unknown): void;
  };
  scope.onmessage = async (e) => {
    const at = new Int32Array(e.data.at);
    const reports = await runFuzz({
      ...e.data,
      onCase(format, index) {
        Atomics.store(at, 0, format);
        Atomics.store(at, 1, index);
      },
    });
    scope.postMessage(reports);
  };
}

if (import.meta.main) {
  if ("WorkerGlobalScope" in globalThis) serveWorker();
  else Deno.exit(await main(Deno.args));
}
