/**
 * The tools of `cw mcp` (client/mcp_server.ts serves them over MCP): each a
 * JSON Schema for its arguments, a description written for a model to pick
 * the right one, and a handler that is one more client of the node protocol
 * (or the relay's KV API), with this machine's credentials and their limits
 * — a read-only login stays read-only, enforced by the relay and the node.
 *
 * Sessions are named `ID`, `NAME` (this machine, or the `server`
 * argument's saved direct server) or `NODE:ID` / `NODE:NAME` (a node through
 * the relay). Errors are thrown as CwError and carry cw's stable codes.
 */
import { AnsiStripper } from "../shared/ansi.ts";
import { checkResponse, type NodeRow, paths } from "../shared/api.ts";
import { CwError } from "../shared/errors.ts";
import {
  type Frame,
  FrameKind,
  type Request,
  type SessionEvent,
  type SessionInfo,
  type StreamEvent,
} from "../shared/protocol.ts";
import { loadRelayAccess, relayHttpClient } from "../shared/relay_config.ts";
import { loadServers, splitRef, Targets } from "./targets.ts";
import type { NodeClient } from "./node_client.ts";

/** A JSON Schema (the subset these tools use). */
export type Schema = Record<string, unknown>;

/** What a handler may use besides its arguments. */
export interface ToolContext {
  home: string;
  /** Reports progress of a long call (wait, events); a no-op when the caller asked for none. */
  progress(done: number, total: number | undefined, message: string): Promise<void>;
  /** Aborts when the caller cancelled the call. */
  signal: AbortSignal;
}

/** A tool's answer: structured, and a short text for the model. */
export interface ToolResult {
  structured: Record<string, unknown>;
  text: string;
}

/** One tool. */
export interface Tool {
  name: string;
  title: string;
  description: string;
  inputSchema: Schema;
  /** Changes nothing anywhere (MCP's readOnlyHint). */
  readOnly: boolean;
  run(args: Record<string, unknown>, ctx: ToolContext): Promise<ToolResult>;
}

/** Longest `wait` a call may ask for, and the default. */
export const MCP_WAIT_MAX_S = 3600;
const MCP_WAIT_DEFAULT_S = 60;
/** How often a waiting call reports progress. */
const PROGRESS_EVERY_MS = 5_000;
/** Most output bytes one `read_output` returns, and the default. */
export const MCP_READ_MAX_BYTES = 1024 * 1024;
const MCP_READ_DEFAULT_BYTES = 64 * 1024;
/** Most events one `events` call collects, and its longest window. */
const MCP_EVENTS_MAX = 500;
const MCP_EVENTS_MAX_S = 300;
/** Most bytes of one `send`. */
const MCP_SEND_MAX_BYTES = 64 * 1024;
/** Most KV entries one `kv_list` returns. */
const MCP_KV_LIST_MAX = 1000;

/** Named keys for `send`, as a terminal encodes them. */
export const KEYS: Record<string, string> = {
  Enter: "\r",
  Tab: "\t",
  Esc: "\x1b",
  Escape: "\x1b",
  Backspace: "\x7f",
  Space: " ",
  Up: "\x1b[A",
  Down: "\x1b[B",
  Right: "\x1b[C",
  Left: "\x1b[D",
  Home: "\x1b[H",
  End: "\x1b[F",
  PageUp: "\x1b[5~",
  PageDown: "\x1b[6~",
  Delete: "\x1b[3~",
  Insert: "\x1b[2~",
};

/** The bytes of a named key: one of {@link KEYS}, or Ctrl-A … Ctrl-Z, Ctrl-[ \ ] ^ _ @. */
export function keyBytes(name: string): string {
  if (Object.hasOwn(KEYS, name)) return KEYS[name];
  const m = /^(?:Ctrl|C)-(.)$/i.exec(name);
  if (m) {
    const c = m[1].toUpperCase().charCodeAt(0);
    if (c >= 0x40 && c <= 0x5f) return String.fromCharCode(c - 0x40);
  }
  throw new CwError(
    "bad_request",
    `Unknown key "${name.slice(0, 40)}": use ${Object.keys(KEYS).join(", ")}, or Ctrl-A … Ctrl-Z`,
  );
}

// ---------------------------------------------------------------- schemas

const str = (description: string, extra: Schema = {}): Schema => ({
  type: "string",
  description,
  ...extra,
});
const int = (description: string, minimum: number, maximum: number): Schema => ({
  type: "integer",
  description,
  minimum,
  maximum,
});
const SESSION = str(
  "The session: its id or name on this machine (e.g. `3`, `build`), or `NODE:ID` / `NODE:NAME` for a node reached through the relay (e.g. `dev-1:3`).",
  { minLength: 1, maxLength: 200 },
);
const NODE = str(
  "A node reached through the relay (see list_nodes). Omit for this machine (or `server`).",
  { pattern: "^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$" },
);
const SERVER = str(
  "A saved direct server (`cw server add`) to use instead of this machine. Not with `node`.",
  { minLength: 1, maxLength: 64 },
);
const NS = str("The KV namespace (default `default`).", { minLength: 1, maxLength: 128 });
const KEY = str("The KV key.", { minLength: 1, maxLength: 1024 });

function object(properties: Record<string, Schema>, required: string[] = []): Schema {
  return { type: "object", properties, required, additionalProperties: false };
}

// ---------------------------------------------------------------- argument checks

/** Checks `args` against a tool's schema (the subset used here); throws CwError bad_request. */
export function checkArgs(schema: Schema, args: unknown): Record<string, unknown> {
  const v = args ?? {};
  if (typeof v !== "object" || Array.isArray(v)) throw bad("arguments must be an object");
  const props = schema.properties as Record<string, Schema>;
  for (const key of schema.required as string[]) {
    if ((v as Record<string, unknown>)[key] === undefined) throw bad(`"${key}" is required`);
  }
  for (const [key, value] of Object.entries(v)) {
    const s = props[key];
    if (!s) throw bad(`unknown argument "${key.slice(0, 40)}"`);
    checkValue(key, s, value);
  }
  return v as Record<string, unknown>;
}

function checkValue(key: string, s: Schema, value: unknown): void {
  switch (s.type) {
    case "string":
      if (typeof value !== "string") throw bad(`"${key}" must be a string`);
      if (s.minLength !== undefined && value.length < (s.minLength as number)) {
        throw bad(`"${key}" is empty`);
      }
      if (s.maxLength !== undefined && value.length > (s.maxLength as number)) {
        throw bad(`"${key}" is longer than ${s.maxLength}`);
      }
      if (s.pattern !== undefined && !new RegExp(s.pattern as string).test(value)) {
        throw bad(`"${key}" is not valid`);
      }
      if (s.enum !== undefined && !(s.enum as string[]).includes(value)) {
        throw bad(`"${key}" must be one of ${(s.enum as string[]).join(", ")}`);
      }
      return;
    case "integer":
      if (!Number.isSafeInteger(value)) throw bad(`"${key}" must be an integer`);
      if ((value as number) < (s.minimum as number) || (value as number) > (s.maximum as number)) {
        throw bad(`"${key}" must be ${s.minimum}..${s.maximum}`);
      }
      return;
    case "boolean":
      if (typeof value !== "boolean") throw bad(`"${key}" must be true or false`);
      return;
    case "array": {
      if (!Array.isArray(value)) throw bad(`"${key}" must be an array`);
      if (s.minItems !== undefined && value.length < (s.minItems as number)) {
        throw bad(`"${key}" needs at least ${s.minItems} item(s)`);
      }
      if (s.maxItems !== undefined && value.length > (s.maxItems as number)) {
        throw bad(`"${key}" has more than ${s.maxItems} items`);
      }
      value.forEach((x, i) => checkValue(`${key}[${i}]`, s.items as Schema, x));
      return;
    }
    case "object": {
      if (typeof value !== "object" || value === null || Array.isArray(value)) {
        throw bad(`"${key}" must be an object`);
      }
      const entries = Object.entries(value);
      if (s.maxProperties !== undefined && entries.length > (s.maxProperties as number)) {
        throw bad(`"${key}" has more than ${s.maxProperties} entries`);
      }
      for (const [k, x] of entries) checkValue(`${key}.${k}`, s.additionalProperties as Schema, x);
      return;
    }
  }
}

function bad(message: string): CwError {
  return new CwError("bad_request", message);
}

// ---------------------------------------------------------------- helpers

/** The client for a session reference (and the `server` argument). */
function sessionTarget(
  home: string,
  ref: string,
  server: unknown,
): { client: NodeClient; node: string | null; session: string; remote: boolean } {
  const { node, session } = splitRef(ref);
  const targets = new Targets(home, typeof server === "string" ? server : null, true);
  return { client: targets.client(node), node, session, remote: targets.isRemote(node) };
}

/** The client for a tool's `session` (and `server`) arguments. */
function sessionOf(args: Record<string, unknown>, ctx: ToolContext) {
  return sessionTarget(ctx.home, args.session as string, args.server);
}

function nodeTarget(home: string, node: unknown, server: unknown) {
  const targets = new Targets(home, typeof server === "string" ? server : null, true);
  const n = typeof node === "string" ? node : null;
  return { client: targets.client(n), node: n, remote: targets.isRemote(n) };
}

const refOf = (node: string | null, id: number) => node === null ? String(id) : `${node}:${id}`;

/** A session as a model reads it: its reference first. */
function row(node: string | null, s: SessionInfo): Record<string, unknown> {
  return { ref: refOf(node, s.id), ...s };
}

function describeSession(node: string | null, s: SessionInfo): string {
  const state = s.status === "running" ? s.state ?? "running" : s.status;
  const end = s.status === "exited"
    ? ` (exit ${s.exitCode})`
    : s.status === "killed"
    ? ` (${s.signal})`
    : "";
  return `${refOf(node, s.id)}${s.name ? ` ${s.name}` : ""}: ${state}${end} — ${
    s.argv.join(" ").slice(0, 80)
  }`;
}

/** A call that streams: reads frames until `onFrame` says stop, or the node ends the stream. */
async function collect(
  client: NodeClient,
  req: Request,
  onFrame: (frame: Frame) => boolean,
  signal: AbortSignal,
): Promise<Record<string, unknown>> {
  const { response, conn } = await client.stream(req);
  const stop = () => conn.close();
  signal.addEventListener("abort", stop, { once: true });
  try {
    for (;;) {
      const frame = await conn.next();
      if (!frame || !onFrame(frame)) break;
    }
  } finally {
    signal.removeEventListener("abort", stop);
    conn.close();
  }
  return response;
}

/** Text for a model: the layout a person reads (cursor moves become breaks), no escape sequences. */
function readable(bytes: Uint8Array): string {
  const stripper = new AnsiStripper();
  const out = stripper.push(bytes);
  return new TextDecoder().decode(out);
}

/** The relay this machine uses, for KV and the node list. */
function relay(home: string) {
  const access = loadRelayAccess(home);
  if (!access) {
    throw new CwError(
      "not_found",
      "This machine has no relay: cw login --relay-url URL (a user) or cw setup (a node) first",
    );
  }
  return access;
}

/**
 * A call of the relay's API with this machine's credential. The body is read
 * before the HTTP client closes: `cw mcp` lives long, and a client per call
 * must not outlive it.
 */
async function relayCall(
  home: string,
  path: string,
  init: RequestInit = {},
): Promise<Response> {
  const access = relay(home);
  const client = relayHttpClient(access);
  try {
    const res = await fetch(new URL(path, access.url), {
      ...init,
      client,
      headers: { authorization: `Bearer ${access.token}`, ...(init.headers ?? {}) },
    } as RequestInit);
    const body = await res.arrayBuffer();
    return new Response(res.status === 204 ? null : body, {
      status: res.status,
      headers: res.headers,
    });
  } catch (err) {
    throw new CwError(
      "node_unavailable",
      `Cannot reach the relay at ${access.url}: ${(err as Error).message}`,
    );
  } finally {
    client?.close();
  }
}

// ---------------------------------------------------------------- the tools

export const TOOLS: Tool[] = [
  {
    name: "list_nodes",
    title: "List machines",
    description:
      "List the machines you can run sessions on: this machine (`local`), the nodes of your relay network with whether each is online, and saved direct servers. Use a node's name as `node` in launch/list_sessions, or as the `NODE:` prefix of a session.",
    inputSchema: object({}),
    readOnly: true,
    async run(_args, ctx) {
      const access = loadRelayAccess(ctx.home);
      let nodes: NodeRow[] = [];
      let relayError: string | null = null;
      if (access) {
        try {
          const res = await relayCall(ctx.home, paths.nodes);
          await checkResponse(res);
          nodes = (await res.json()).nodes;
        } catch (err) {
          relayError = (err as Error).message;
        }
      }
      const servers = loadServers(ctx.home).map((s) => ({ name: s.name, url: s.url }));
      const lines = [
        "local: this machine",
        ...nodes.map((n) => `${n.name}: ${n.online ? "online" : "offline"} (network ${n.network})`),
        ...servers.map((s) => `server ${s.name}: ${s.url}`),
      ];
      if (!access) lines.push("(no relay: cw login or cw setup to reach other nodes)");
      if (relayError) lines.push(`(relay: ${relayError})`);
      return {
        structured: {
          relay: access ? { url: access.url, error: relayError } : null,
          nodes: nodes.map((n) => ({
            name: n.name,
            network: n.network,
            online: n.online,
            lastSeenAt: n.lastSeenAt,
            sessions: n.sessions,
          })),
          servers,
        },
        text: lines.join("\n"),
      };
    },
  },
  {
    name: "list_sessions",
    title: "List sessions",
    description:
      "List the sessions on one machine with their state: `working` (printing or using CPU), `waiting` (quiet: usually waiting for input), or ended (`exited` with its code, `killed`, `lost`), and each one's last line of output. Filter by tag or status.",
    inputSchema: object({
      node: NODE,
      server: SERVER,
      tag: str("Only sessions with this tag.", { maxLength: 64 }),
      status: str("Only sessions in this status.", {
        enum: ["running", "exited", "killed", "lost"],
      }),
    }),
    readOnly: true,
    async run(args, ctx) {
      const { client, node } = nodeTarget(ctx.home, args.node, args.server);
      const { sessions } = await client.request<{ sessions: SessionInfo[] }>({
        op: "list",
        tag: args.tag as string | undefined,
        status: args.status as SessionInfo["status"] | undefined,
        lastLines: true,
      });
      return {
        structured: { sessions: sessions.map((s) => row(node, s)) },
        text: sessions.length
          ? sessions.map((s) => describeSession(node, s)).join("\n")
          : "No sessions.",
      };
    },
  },
  {
    name: "launch",
    title: "Start a program in a session",
    description:
      'Start a program in a new persistent session (a real terminal that outlives this conversation) on this machine or a node, and return its reference. `argv` is the command as a list, no shell: use ["sh", "-c", "…"] for shell syntax. Then use read_output/screen to see it, send to type into it, wait to wait for it.',
    inputSchema: object({
      argv: {
        type: "array",
        items: { type: "string", maxLength: 4096 },
        minItems: 1,
        maxItems: 256,
        description: 'The command and its arguments, e.g. ["npm", "test"].',
      },
      node: NODE,
      server: SERVER,
      name: str("A unique name for the session (1-32 of A-Z a-z 0-9 _ -, not only digits).", {
        maxLength: 32,
      }),
      dir: str("Working directory (default: the home directory on a node, this one locally)."),
      tags: {
        type: "array",
        items: { type: "string", maxLength: 64 },
        maxItems: 16,
        description: "Tags to find it by (list_sessions, kill, events).",
      },
      env: {
        type: "object",
        additionalProperties: { type: "string", maxLength: 32768 },
        maxProperties: 128,
        description: "Environment variables to add.",
      },
    }, ["argv"]),
    readOnly: false,
    async run(args, ctx) {
      const { client, node, remote } = nodeTarget(ctx.home, args.node, args.server);
      const env = {
        ...(remote ? {} : Deno.env.toObject()),
        ...(args.env as Record<string, string> | undefined ?? {}),
      };
      const { session } = await client.request<{ session: SessionInfo }>({
        op: "launch",
        argv: args.argv as string[],
        name: args.name as string | undefined,
        dir: args.dir as string | undefined ?? (remote ? undefined : Deno.cwd()),
        tags: (args.tags as string[] | undefined) ?? [],
        env,
        inheritNodeEnv: remote,
        cols: 120,
        rows: 40,
      });
      return {
        structured: { ref: refOf(node, session.id), session },
        text: `Launched ${refOf(node, session.id)}: ${session.argv.join(" ").slice(0, 200)}`,
      };
    },
  },
  {
    name: "read_output",
    title: "Read a session's output",
    description:
      "Read what a session printed, from its log (kept after it ends). By default the last 64 KiB as readable text (escape sequences removed, cursor moves laid out as lines); `raw` gives the bytes as UTF-8 text with escape sequences. Choose `tail_lines`, `tail_bytes`, or `from_offset` (pass the previous call's `next_offset` to read only what is new). For what is on screen now (a full-screen program), use screen instead.",
    inputSchema: object({
      session: SESSION,
      server: SERVER,
      tail_lines: int("The last this many lines.", 1, 100_000),
      tail_bytes: int("The last this many bytes.", 1, MCP_READ_MAX_BYTES),
      from_offset: int(
        "Start at this output offset (bytes since the session started).",
        0,
        Number.MAX_SAFE_INTEGER,
      ),
      max_bytes: int("Return at most this many bytes (default 65536).", 1, MCP_READ_MAX_BYTES),
      raw: { type: "boolean", description: "Keep escape sequences." },
    }, ["session"]),
    readOnly: true,
    async run(args, ctx) {
      const { client, node, session } = sessionOf(args, ctx);
      const max = (args.max_bytes as number | undefined) ?? MCP_READ_DEFAULT_BYTES;
      const chunks: Uint8Array[] = [];
      let got = 0;
      const from = args.from_offset as number | undefined;
      const response = await collect(client, {
        op: "logs",
        session,
        tail: args.tail_lines as number | undefined,
        // without a starting point: the last max_bytes
        tailBytes: (args.tail_bytes as number | undefined) ??
          (from === undefined && args.tail_lines === undefined ? max : undefined),
        from,
        limit: from !== undefined ? max : undefined,
      }, (frame) => {
        if (frame.kind === FrameKind.DATA) {
          chunks.push(frame.bytes.slice());
          got += frame.bytes.byteLength;
          return true;
        }
        return !(frame.kind === FrameKind.EVENT && (frame.value as StreamEvent).type === "end");
      }, ctx.signal);
      const all = new Uint8Array(got);
      let at = 0;
      for (const c of chunks) {
        all.set(c, at);
        at += c.byteLength;
      }
      // at most max_bytes: the end of it (tails), or the start (from an offset)
      const cut = all.byteLength > max;
      const bytes = !cut ? all : from !== undefined ? all.subarray(0, max) : all.subarray(-max);
      const offset = (response.offset as number) +
        (cut && from === undefined ? all.byteLength - max : 0);
      const text = args.raw ? new TextDecoder().decode(bytes) : readable(bytes);
      const info = response.session as SessionInfo;
      return {
        structured: {
          ref: refOf(node, info.id),
          status: info.status,
          state: info.state ?? info.status,
          offset,
          next_offset: offset + bytes.byteLength,
          output_bytes: info.outputBytes,
          skipped: response.skipped ?? 0,
          truncated: cut,
          text,
        },
        text: text || "(no output)",
      };
    },
  },
  {
    name: "screen",
    title: "See a session's screen",
    description:
      "What the session's program shows right now, as rows of text rendered by a terminal model at the session's size — the right view of full-screen programs (agents' UIs, editors, prompts). Also says where the cursor is.",
    inputSchema: object({ session: SESSION, server: SERVER }, ["session"]),
    readOnly: true,
    async run(args, ctx) {
      const { client, node, session } = sessionOf(args, ctx);
      const r = await client.request<
        { session: SessionInfo; screen: { lines: string[]; [k: string]: unknown } }
      >({ op: "screen", session });
      const lines = r.screen.lines.map((l) => l.trimEnd());
      while (lines.length && lines[lines.length - 1] === "") lines.pop();
      return {
        structured: { ref: refOf(node, r.session.id), state: r.session.state, ...r.screen },
        text: lines.join("\n") || "(blank screen)",
      };
    },
  },
  {
    name: "send",
    title: "Type into a session",
    description:
      'Type into a session\'s terminal: `text` as is (add "\\n" or the Enter key to submit a line), then named `keys` in order: Enter, Tab, Esc, Backspace, Space, Up, Down, Left, Right, Home, End, PageUp, PageDown, Delete, Insert, Ctrl-A … Ctrl-Z (Ctrl-C interrupts, Ctrl-D ends input).',
    inputSchema: object({
      session: SESSION,
      server: SERVER,
      text: str("Text to type.", { maxLength: MCP_SEND_MAX_BYTES }),
      keys: {
        type: "array",
        items: { type: "string", maxLength: 16 },
        maxItems: 64,
        description: 'Named keys typed after the text, e.g. ["Enter"] or ["Ctrl-C"].',
      },
    }, ["session"]),
    readOnly: false,
    async run(args, ctx) {
      const { client, node, session } = sessionOf(args, ctx);
      const typed = (args.text as string | undefined ?? "") +
        ((args.keys as string[] | undefined) ?? []).map(keyBytes).join("");
      if (typed === "") throw bad("Give `text`, `keys` or both");
      const data = new TextEncoder().encode(typed);
      if (data.byteLength > MCP_SEND_MAX_BYTES) throw bad(`At most ${MCP_SEND_MAX_BYTES} bytes`);
      const r = await client.request<{ session: SessionInfo; bytes: number }>({
        op: "send",
        session,
        data: data.toBase64(),
      });
      return {
        structured: { ref: refOf(node, r.session.id), bytes: r.bytes },
        text: `Sent ${r.bytes} bytes to ${refOf(node, r.session.id)}`,
      };
    },
  },
  {
    name: "wait",
    title: "Wait for a session",
    description:
      'Wait until a session ends (`until: "exit"`, the default) or is waiting for input (`until: "waiting"`: quiet and idle — an agent or prompt expecting an answer), or until the timeout (default 60 s). Reports progress meanwhile. Returns the session\'s state and, when it ended, its exit code; `done: false` on timeout.',
    inputSchema: object({
      session: SESSION,
      server: SERVER,
      until: str("What to wait for.", { enum: ["exit", "waiting"] }),
      timeout_seconds: int("Give up after this long (default 60).", 1, MCP_WAIT_MAX_S),
    }, ["session"]),
    readOnly: true,
    async run(args, ctx) {
      const { client, node, session } = sessionOf(args, ctx);
      const waiting = args.until === "waiting";
      const timeoutS = (args.timeout_seconds as number | undefined) ?? MCP_WAIT_DEFAULT_S;
      const started = Date.now();
      // resolve the session first: a wrong name is an error, not a long wait
      const before = await client.request<{ session: SessionInfo }>({
        op: "status",
        session,
        lines: 0,
      });
      const give = new AbortController();
      const onCancel = () => give.abort();
      ctx.signal.addEventListener("abort", onCancel, { once: true });
      const deadline = setTimeout(() => give.abort(), timeoutS * 1000);
      const ticker = setInterval(() => {
        const s = Math.round((Date.now() - started) / 1000);
        void ctx.progress(s, timeoutS, `waiting for ${refOf(node, before.session.id)} (${s} s)`);
      }, PROGRESS_EVERY_MS);
      let done = true;
      try {
        const { conn } = await client.stream({
          op: "wait",
          sessions: [String(before.session.id)],
          ...(waiting ? { idle: true, idleMs: 0 } : {}),
        }, give.signal);
        conn.close();
      } catch (err) {
        if (!give.signal.aborted) throw err;
        if (ctx.signal.aborted) throw new CwError("timeout", "The wait was cancelled");
        done = false;
      } finally {
        clearTimeout(deadline);
        clearInterval(ticker);
        ctx.signal.removeEventListener("abort", onCancel);
      }
      const { session: now } = await client.request<{ session: SessionInfo }>({
        op: "status",
        session: String(before.session.id),
        lines: 0,
      });
      const ref = refOf(node, now.id);
      const seconds = Math.round((Date.now() - started) / 100) / 10;
      return {
        structured: {
          done,
          ref,
          status: now.status,
          state: now.state ?? now.status,
          exitCode: now.exitCode,
          signal: now.signal,
          seconds,
        },
        text: done
          ? `${describeSession(node, now)} (after ${seconds} s)`
          : `Still ${now.state ?? now.status} after ${seconds} s: ${ref}`,
      };
    },
  },
  {
    name: "kill",
    title: "Stop sessions",
    description:
      "Stop a session's program (its whole process group: SIGHUP then SIGTERM, or `signal`), or every session with `tag` on a machine. Waits up to 5 s for them to end.",
    inputSchema: object({
      session: SESSION,
      node: NODE,
      server: SERVER,
      tag: str("Every session with this tag (on `node`, or this machine).", { maxLength: 64 }),
      signal: str("A signal name, e.g. SIGINT or SIGKILL.", { maxLength: 16 }),
    }),
    readOnly: false,
    async run(args, ctx) {
      if ((args.session === undefined) === (args.tag === undefined)) {
        throw bad("Give `session` or `tag` (one of them)");
      }
      const target = args.session !== undefined
        ? sessionOf(args, ctx)
        : { ...nodeTarget(ctx.home, args.node, args.server), session: null };
      if (args.session !== undefined && args.node !== undefined) {
        throw bad("Name the node in the session (`NODE:ID`), not in `node`");
      }
      const { sessions } = await target.client.request<{ sessions: SessionInfo[] }>({
        op: "kill",
        sessions: target.session !== null ? [target.session] : undefined,
        tag: args.tag as string | undefined,
        signal: args.signal as string | undefined,
      });
      return {
        structured: { sessions: sessions.map((s) => row(target.node, s)) },
        text: sessions.length
          ? sessions.map((s) => describeSession(target.node, s)).join("\n")
          : "No session matched.",
      };
    },
  },
  {
    name: "status",
    title: "A session's status",
    description:
      "One session in detail: command, directory, state (working/waiting/ended), exit code, output size, its last lines of output and its screen now.",
    inputSchema: object({
      session: SESSION,
      server: SERVER,
      lines: int("Last lines of output to include (default 20).", 0, 1000),
    }, ["session"]),
    readOnly: true,
    async run(args, ctx) {
      const { client, node, session } = sessionOf(args, ctx);
      const r = await client.request<
        { session: SessionInfo; lastOutput: string; screen?: string[] }
      >({ op: "status", session, lines: (args.lines as number | undefined) ?? 20, screen: true });
      const last = readable(Uint8Array.fromBase64(r.lastOutput));
      return {
        structured: {
          ...row(node, r.session),
          lastOutput: last,
          screen: r.screen ?? null,
        },
        text: `${describeSession(node, r.session)}\n${last.trimEnd()}`,
      };
    },
  },
  {
    name: "events",
    title: "Watch what happens to sessions",
    description:
      "Collect session events on one machine for up to `timeout_seconds` (default 30) or until `max_events` (default 20) arrived: launched, state (working/waiting), exited (with exit code), attached/detached. Useful to notice when a helper agent needs an answer or finished. Filter by session or tag.",
    inputSchema: object({
      node: NODE,
      server: SERVER,
      session: SESSION,
      tag: str("Only sessions with this tag.", { maxLength: 64 }),
      timeout_seconds: int("Longest wait (default 30).", 1, MCP_EVENTS_MAX_S),
      max_events: int("Return once this many arrived (default 20).", 1, MCP_EVENTS_MAX),
    }),
    readOnly: true,
    async run(args, ctx) {
      let node = typeof args.node === "string" ? args.node : null;
      let sessions: string[] | undefined;
      if (typeof args.session === "string") {
        const t = splitRef(args.session);
        if (t.node !== null && node !== null && t.node !== node) {
          throw bad("`session` is on another node than `node`");
        }
        node = t.node ?? node;
        sessions = [t.session];
      }
      const { client } = nodeTarget(ctx.home, node, args.server);
      const max = (args.max_events as number | undefined) ?? 20;
      const timeoutS = (args.timeout_seconds as number | undefined) ?? 30;
      const events: (SessionEvent & { ref: string })[] = [];
      const window = new AbortController();
      const onCancel = () => window.abort();
      ctx.signal.addEventListener("abort", onCancel, { once: true });
      const timer = setTimeout(() => window.abort(), timeoutS * 1000);
      let lagged = false;
      try {
        await collect(
          client,
          { op: "subscribe", sessions, tag: args.tag as string | undefined },
          (frame) => {
            if (frame.kind !== FrameKind.EVENT) return true;
            const ev = frame.value as StreamEvent;
            if (ev.type === "lagged") {
              lagged = true;
              return false;
            }
            if (ev.type !== "session") return true;
            events.push({ ref: refOf(node, ev.event.session), ...ev.event });
            void ctx.progress(events.length, max, `${events.length} event(s)`);
            return events.length < max;
          },
          window.signal,
        );
      } finally {
        clearTimeout(timer);
        ctx.signal.removeEventListener("abort", onCancel);
      }
      return {
        structured: { events, lagged },
        text: events.length
          ? events.map((e) =>
            `${e.time.slice(11, 19)} ${e.ref} ${e.type}${e.state ? ` ${e.state}` : ""}${
              e.type === "exited" ? ` ${e.status} ${e.exitCode ?? e.signal ?? ""}` : ""
            }`
          ).join("\n")
          : `No events in ${timeoutS} s.`,
      };
    },
  },
  {
    name: "kv_get",
    title: "Read a shared value",
    description:
      "Read a key of the relay's shared key-value store (shared by everyone in your network: agents use it to coordinate). Returns the value as text and its version (for kv_set's if_version), or found: false.",
    inputSchema: object({ key: KEY, ns: NS }, ["key"]),
    readOnly: true,
    async run(args, ctx) {
      const ns = (args.ns as string | undefined) ?? "default";
      const res = await relayCall(ctx.home, paths.kv(ns, args.key as string));
      if (res.status === 404) {
        await res.body?.cancel();
        return { structured: { found: false }, text: `No key "${args.key}" in ${ns}` };
      }
      await checkResponse(res);
      const value = await res.text();
      const version = (res.headers.get("etag") ?? "").replaceAll('"', "") || null;
      return { structured: { found: true, value, version }, text: value };
    },
  },
  {
    name: "kv_set",
    title: "Write a shared value",
    description:
      "Write a key of the relay's shared key-value store. `if_version` makes it a compare-and-set (it fails with precondition_failed when someone wrote since); `if_absent` creates only; `ttl_seconds` makes it expire.",
    inputSchema: object({
      key: KEY,
      value: str("The value (text).", { maxLength: 1024 * 1024 }),
      ns: NS,
      ttl_seconds: int("Expire after this many seconds.", 1, 365 * 24 * 3600),
      if_version: str("Only if the current version is this.", { maxLength: 64 }),
      if_absent: { type: "boolean", description: "Only if the key does not exist." },
    }, ["key", "value"]),
    readOnly: false,
    async run(args, ctx) {
      const ns = (args.ns as string | undefined) ?? "default";
      const headers: Record<string, string> = { "content-type": "application/octet-stream" };
      if (args.if_version !== undefined) headers["if-match"] = `"${args.if_version}"`;
      if (args.if_absent === true) headers["if-none-match"] = "*";
      const q = args.ttl_seconds !== undefined ? `?ttl=${args.ttl_seconds}` : "";
      const res = await relayCall(ctx.home, paths.kv(ns, args.key as string) + q, {
        method: "PUT",
        body: args.value as string,
        headers,
      });
      await checkResponse(res);
      const out = await res.json();
      return {
        structured: { version: out.version },
        text: `Stored ${ns}/${args.key} (version ${out.version})`,
      };
    },
  },
  {
    name: "kv_list",
    title: "List shared keys",
    description: "List keys of the relay's shared key-value store, by prefix.",
    inputSchema: object({
      ns: NS,
      prefix: str("Only keys starting with this.", { maxLength: 1024 }),
      limit: int("At most this many (default 100).", 1, MCP_KV_LIST_MAX),
    }),
    readOnly: true,
    async run(args, ctx) {
      const ns = (args.ns as string | undefined) ?? "default";
      const q = new URLSearchParams({
        prefix: (args.prefix as string | undefined) ?? "",
        limit: String((args.limit as number | undefined) ?? 100),
      });
      const res = await relayCall(ctx.home, `${paths.kv(ns)}?${q}`);
      await checkResponse(res);
      const page = await res.json();
      return {
        structured: { entries: page.entries, more: page.cursor !== null },
        text: page.entries.map((e: { key: string }) => e.key).join("\n") || "No keys.",
      };
    },
  },
  {
    name: "kv_delete",
    title: "Delete a shared value",
    description:
      "Delete a key of the relay's shared key-value store (`if_version`: only that version).",
    inputSchema: object({
      key: KEY,
      ns: NS,
      if_version: str("Only if the current version is this.", { maxLength: 64 }),
    }, ["key"]),
    readOnly: false,
    async run(args, ctx) {
      const ns = (args.ns as string | undefined) ?? "default";
      const headers: Record<string, string> = {};
      if (args.if_version !== undefined) headers["if-match"] = `"${args.if_version}"`;
      const res = await relayCall(ctx.home, paths.kv(ns, args.key as string), {
        method: "DELETE",
        headers,
      });
      if (res.status === 404) {
        await res.body?.cancel();
        return { structured: { deleted: false }, text: `No key "${args.key}" in ${ns}` };
      }
      await checkResponse(res);
      await res.body?.cancel();
      return { structured: { deleted: true }, text: `Deleted ${ns}/${args.key}` };
    },
  },
];
