import { parseArgs } from "../shared/args.ts";
import { CwError } from "../shared/errors.ts";
import {
  FrameKind,
  SESSION_STATUSES,
  type SessionEvent,
  type SessionInfo,
  type StreamEvent,
} from "../shared/protocol.ts";
import { cwHome, nodePaths } from "../shared/paths.ts";
import { parseDuration } from "../shared/duration.ts";
import { parseSignal } from "../shared/signals.ts";
import { checkSessionName, checkTag } from "../shared/names.ts";
import { VERSION } from "../shared/version.ts";
import { AnsiStripper } from "../shared/ansi.ts";
import { printable, printableArgv } from "../shared/printable.ts";
import { acknowledge, REMOTE_WINDOW } from "./ack.ts";
import { exitCodeOf } from "./exit_code.ts";
import { COMMANDS, helpText, usageError } from "../shared/help.ts";
import { concat, readAll, writeAll } from "./io.ts";
import { nodeRunning } from "./local.ts";
import type { NodeClient } from "./node_client.ts";
import { splitRef, Targets } from "./targets.ts";
import { RelayUsageError } from "./usage.ts";

/** Exit code for a wait or watch that ran out of time, as timeout(1) does. */
const TIMEOUT_EXIT = 124;
/** Lines of scrollback an attach shows above the screen by default. */
const DEFAULT_HISTORY_LINES = 200;
/** Bytes of input per `send` request. */
const SEND_CHUNK = 96 * 1024;

/** Raised for bad command lines; printed with a hint, exit code 2. */
export class UsageError extends Error {
  /** The command whose help applies. */
  readonly command: string | null;
  /** Builds the error. */
  constructor(message: string, command: string | null) {
    super(message);
    this.name = "UsageError";
    this.command = command;
  }
}

/** What a command needs: its targets (local node, relay nodes, a server), and the data dir. */
interface Ctx {
  targets: Targets;
  home: string;
}

type Handler = (args: string[], ctx: Ctx) => Promise<number>;

/** The relay's commands (kv, nodes, login …), loaded on first use. */
function relayCmds(): Promise<typeof import("./relay_cmds.ts")> {
  return import("./relay_cmds.ts");
}

const HANDLERS: Record<string, Handler> = {
  launch,
  list,
  attach: attachCmd,
  logs,
  send,
  watch,
  wait,
  kill,
  status,
  screen,
  events,
  stop,
  mcp: async (args, ctx) => {
    if (ctx.targets.server) {
      throw new UsageError("cw mcp reaches every server itself: give the tools `server`", "mcp");
    }
    return await (await import("./mcp_server.ts")).runMcp(args, ctx.home);
  },
  // the relay's and the servers' commands are loaded when used
  setup: async (args, ctx) => (await relayCmds()).setup(args, ctx.home, ctx.targets.client(null)),
  server: async (args, ctx) => (await import("./servers.ts")).serverCmd(args, ctx.home),
  nodes: async (args, ctx) => (await relayCmds()).nodes(args, ctx.home),
  login: async (args, ctx) => (await relayCmds()).login(args, ctx.home),
  logout: async (args, ctx) => (await relayCmds()).logout(args, ctx.home),
  kv: async (args, ctx) => (await relayCmds()).kv(args, ctx.home),
  "ssh-key": async (args, ctx) => (await relayCmds()).sshKey(args, ctx.home),
  web: async (args, ctx) =>
    ctx.targets.server
      ? (await import("./servers.ts")).webLink(args, ctx.home, ctx.targets.server)
      : (await relayCmds()).web(args, ctx.home),
};

/**
 * Runs the client for `argv` (without the program name) and returns the exit
 * code. Errors become one line on stderr.
 */
export async function runClient(argv: string[]): Promise<number> {
  let server = Deno.env.get("CW_SERVER") || null;
  while (argv[0] === "--server" || argv[0]?.startsWith("--server=")) {
    if (argv[0] === "--server") {
      server = argv[1] ?? "";
      argv = argv.slice(2);
    } else {
      server = argv[0].slice("--server=".length);
      argv = argv.slice(1);
    }
    if (!server) {
      console.error("cw: --server needs a NAME (see cw server list)");
      return 2;
    }
  }
  const [command, ...rest] = argv;
  try {
    if (command === undefined || command === "--help" || command === "-h") {
      console.log(helpText(null));
      return command === undefined ? 2 : 0;
    }
    if (command === "--version" || command === "-V" || command === "version") {
      console.log(`cw ${VERSION}`);
      return 0;
    }
    if (command === "help") {
      const topic = rest[0] ?? null;
      if (topic !== null && !COMMANDS.includes(topic)) {
        throw new UsageError(`Unknown command "${topic}"`, null);
      }
      console.log(helpText(topic));
      return 0;
    }
    const handler = HANDLERS[command];
    if (!handler) throw new UsageError(`Unknown command "${command}"`, null);
    if (rest.includes("--help") || rest.includes("-h")) {
      const dashdash = rest.indexOf("--");
      const help = rest.findIndex((a) => a === "--help" || a === "-h");
      if (dashdash === -1 || help < dashdash) {
        console.log(helpText(command));
        return 0;
      }
    }
    const home = cwHome();
    const targets = new Targets(home, server, command !== "stop");
    return await handler(rest, { targets, home });
  } catch (err) {
    // the reader of our output left (`cw logs 3 | head`): quietly, as a program that got SIGPIPE
    if (err instanceof Deno.errors.BrokenPipe) return 128 + 13;
    if (err instanceof RelayUsageError) {
      console.error(`cw: ${err.message}`);
      return 2;
    }
    if (err instanceof UsageError) {
      console.error(`cw: ${err.message}`);
      console.error(usageError(err.command));
      return 2;
    }
    if (err instanceof CwError) {
      console.error(`cw: ${err.message}`);
      return 1;
    }
    if (
      err instanceof RangeError || err instanceof TypeError && /argument|option/i.test(err.message)
    ) {
      console.error(`cw: ${err.message}`);
      return 2;
    }
    console.error(`cw: ${(err as Error)?.message ?? err}`);
    return 1;
  }
}

/** parseArgs with cw's conventions: strict, positionals allowed, errors as usage. */
function parse<
  T extends Record<string, { type: "string" | "boolean"; multiple?: boolean; short?: string }>,
>(
  command: string,
  args: string[],
  options: T,
) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message.split("\n")[0], command);
  }
}

function needOne(command: string, positionals: string[], what: string): string {
  if (positionals.length !== 1) {
    throw new UsageError(
      positionals.length === 0 ? `Missing ${what}` : `Expected one ${what}`,
      command,
    );
  }
  return positionals[0];
}

/** Splits session refs that must all be on one node. */
function oneNode(command: string, refs: string[]): { node: string | null; sessions: string[] } {
  const split = refs.map(splitRef);
  const node = split[0]?.node ?? null;
  if (split.some((t) => t.node !== node)) {
    throw new UsageError("All sessions of one command must be on the same node", command);
  }
  return { node, sessions: split.map((t) => t.session) };
}

function durationOpt(command: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  try {
    return parseDuration(value);
  } catch (err) {
    throw new UsageError((err as Error).message, command);
  }
}

function countOpt(command: string, name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^[0-9]+$/.test(value)) {
    throw new UsageError(`--${name} needs a whole number, got "${value}"`, command);
  }
  return Number(value);
}

// ---------------------------------------------------------------- launch

async function launch(args: string[], { targets }: Ctx): Promise<number> {
  const split = args.indexOf("--");
  const own = split === -1 ? args : args.slice(0, split);
  const argv = split === -1 ? [] : args.slice(split + 1);
  const { values, positionals } = parse("launch", own, {
    name: { type: "string" },
    dir: { type: "string" },
    tag: { type: "string", multiple: true },
    env: { type: "string", multiple: true },
    json: { type: "boolean" },
  });
  if (positionals.length > 1 || (positionals.length === 1 && split === -1)) {
    throw new UsageError(
      `Put the command after "--": cw launch [NODE] [OPTIONS] -- ${positionals.join(" ")}`,
      "launch",
    );
  }
  const node = positionals[0] ?? null;
  if (argv.length === 0) throw new UsageError("Missing the command to launch after --", "launch");
  if (values.name !== undefined) checkSessionName(values.name);
  for (const tag of values.tag ?? []) checkTag(tag);
  // a local session starts from this shell's environment; a remote one from its node's
  const remote = targets.isRemote(node);
  const env: Record<string, string> = remote ? {} : Deno.env.toObject();
  for (const pair of values.env ?? []) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new UsageError(`--env needs KEY=VALUE, got "${pair}"`, "launch");
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  const dir = values.dir === undefined
    ? (remote ? undefined : Deno.cwd())
    : remote
    ? values.dir
    : resolvePath(values.dir);
  const client = targets.client(node);
  let size: { cols?: number; rows?: number } = {};
  try {
    const { columns, rows } = Deno.consoleSize();
    size = { cols: columns, rows };
  } catch {
    // not a terminal: the node's default size
  }
  const { session } = await client.request<{ session: SessionInfo }>({
    op: "launch",
    argv,
    name: values.name,
    dir,
    tags: values.tag ?? [],
    env,
    inheritNodeEnv: remote,
    ...size,
  });
  if (values.json) console.log(JSON.stringify(session));
  else console.log(node ? `${node}:${session.id}` : session.id);
  const label = session.name ? ` (${session.name})` : "";
  console.error(
    `Launched session ${node ? `${node}:` : ""}${session.id}${printable(label)}: ${
      printableArgv(argv)
    }`,
  );
  return 0;
}

function resolvePath(p: string): string {
  return p.startsWith("/") ? p : `${Deno.cwd()}/${p}`;
}

// ---------------------------------------------------------------- list

async function list(args: string[], { targets }: Ctx): Promise<number> {
  const { values, positionals } = parse("list", args, {
    json: { type: "boolean" },
    tag: { type: "string" },
    status: { type: "string" },
  });
  if (positionals.length > 1) {
    throw new UsageError(`Unexpected argument "${positionals[1]}"`, "list");
  }
  const client = targets.client(positionals[0] ?? null);
  const status = values.status;
  if (status !== undefined && !(SESSION_STATUSES as readonly string[]).includes(status)) {
    throw new UsageError(
      `Unknown status "${status}"; use one of ${SESSION_STATUSES.join(", ")}`,
      "list",
    );
  }
  const { sessions } = await client.request<{ sessions: SessionInfo[] }>({
    op: "list",
    tag: values.tag,
    status: status as SessionInfo["status"] | undefined,
  });
  if (values.json) {
    console.log(JSON.stringify(sessions));
    return 0;
  }
  if (sessions.length === 0) {
    console.error("No sessions.");
    return 0;
  }
  const now = Date.now();
  // names, tags and argv come from whoever launched: shown escaped, never raw
  const rows = sessions.map((s) => [
    String(s.id),
    printable(s.name ?? "-"),
    printable(s.state ?? s.status), // working or waiting while it runs
    s.status === "exited" ? String(s.exitCode) : printable(s.signal ?? "-"),
    age(now - Date.parse(s.startedAt)),
    printable(s.tags.join(",")) || "-",
    printableArgv(s.argv),
  ]);
  console.log(table(["ID", "NAME", "STATUS", "EXIT", "AGE", "TAGS", "COMMAND"], rows));
  return 0;
}

function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) =>
    r.map((c, i) => i === r.length - 1 ? c : c.padEnd(widths[i])).join("  ").trimEnd();
  return [line(head), ...rows.map(line)].join("\n");
}

function age(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

// ---------------------------------------------------------------- attach

async function attachCmd(args: string[], { targets }: Ctx): Promise<number> {
  const { values, positionals } = parse("attach", args, {
    "read-only": { type: "boolean" },
    "no-history": { type: "boolean" },
    history: { type: "string" },
    "raw-history": { type: "boolean" },
  });
  const { node, session } = splitRef(needOne("attach", positionals, "session"));
  if (values["no-history"] && values.history !== undefined) {
    throw new UsageError("Give --history N or --no-history, not both", "attach");
  }
  const lines = values["no-history"] ? 0 : countOpt("attach", "history", values.history);
  const { attach } = await import("./attach.ts");
  return await attach(targets.client(node), session, {
    readOnly: values["read-only"] === true,
    history: values["no-history"] !== true,
    // the screen as the node's model renders it, plus this much scrollback
    snapshot: values["raw-history"] ? undefined : lines ?? DEFAULT_HISTORY_LINES,
    resume: targets.isRemote(node),
  });
}

// ---------------------------------------------------------------- logs / watch

async function logs(args: string[], { targets }: Ctx): Promise<number> {
  const { values, positionals } = parse("logs", args, {
    tail: { type: "string" },
    follow: { type: "boolean", short: "f" },
    raw: { type: "boolean" },
  });
  const { node, session: ref } = splitRef(needOne("logs", positionals, "session"));
  const end = await streamOutput(targets.client(node), ref, {
    remote: targets.isRemote(node),
    tail: countOpt("logs", "tail", values.tail),
    follow: values.follow === true,
    raw: values.raw === true,
  });
  return end === "timeout" ? TIMEOUT_EXIT : 0;
}

async function watch(args: string[], { targets }: Ctx): Promise<number> {
  const { values, positionals } = parse("watch", args, {
    tail: { type: "string" },
    timeout: { type: "string" },
    raw: { type: "boolean" },
  });
  const { node, session: ref } = splitRef(needOne("watch", positionals, "session"));
  const end = await streamOutput(targets.client(node), ref, {
    remote: targets.isRemote(node),
    tail: countOpt("watch", "tail", values.tail) ?? 20,
    follow: true,
    raw: values.raw === true,
    timeoutMs: durationOpt("watch", values.timeout),
  });
  if (end === "timeout") {
    console.error(`cw: stopped watching session ${ref}: timed out`);
    return TIMEOUT_EXIT;
  }
  return end === null ? 0 : exitCodeOf(end);
}

/** Prints a session's output; resolves with how the session ended, if it did. */
async function streamOutput(
  client: NodeClient,
  ref: string,
  opts: { tail?: number; follow: boolean; raw: boolean; timeoutMs?: number; remote: boolean },
): Promise<Extract<StreamEvent, { type: "exit" }> | "timeout" | null> {
  const { conn } = await client.stream({
    op: "logs",
    session: ref,
    tail: opts.tail,
    follow: opts.follow,
    window: opts.remote ? REMOTE_WINDOW : undefined,
  });
  const strip = opts.raw ? null : new AnsiStripper();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    if (opts.timeoutMs !== undefined) timer = setTimeout(() => resolve("timeout"), opts.timeoutMs);
  });
  const read = (async () => {
    while (true) {
      const frame = await conn.next();
      if (!frame) throw new CwError("node_unavailable", "The node closed the connection");
      if (frame.kind === FrameKind.DATA) {
        await writeAll(Deno.stdout, strip ? strip.push(frame.bytes) : frame.bytes);
        if (opts.remote) await acknowledge(conn, frame.bytes.byteLength);
      } else if (frame.kind === FrameKind.EVENT) {
        const e = frame.value as StreamEvent;
        if (e.type === "exit") return e;
        if (e.type === "end") return null;
        if (e.type === "skipped") console.error(`[cw: ${e.bytes} bytes skipped: reader too slow]`);
      } else if (frame.kind === FrameKind.ERROR) {
        throw new CwError("internal", String(frame.value.message));
      }
    }
  })();
  try {
    return await Promise.race([read, timeout]);
  } finally {
    clearTimeout(timer);
    conn.close();
  }
}

// ---------------------------------------------------------------- send

async function send(args: string[], { targets }: Ctx): Promise<number> {
  const { values, positionals } = parse("send", args, {
    stdin: { type: "boolean" },
    file: { type: "string" },
    "no-newline": { type: "boolean", short: "n" },
  });
  if (positionals.length === 0) throw new UsageError("Missing session", "send");
  const [target, ...text] = positionals;
  const { node, session: ref } = splitRef(target);
  const client = targets.client(node);
  const sources = [text.length > 0, values.stdin === true, values.file !== undefined].filter(
    Boolean,
  );
  if (sources.length !== 1) {
    throw new UsageError("Give exactly one of TEXT, --stdin or --file", "send");
  }
  let data: Uint8Array;
  if (values.file !== undefined) {
    try {
      data = await Deno.readFile(values.file);
    } catch (err) {
      throw new CwError("not_found", `Cannot read ${values.file}: ${(err as Error).message}`);
    }
  } else if (values.stdin) {
    data = await readAll(Deno.stdin.readable);
  } else {
    data = new TextEncoder().encode(text.join(" "));
  }
  if (!values["no-newline"] && values.file === undefined && values.stdin !== true) {
    // Enter is a carriage return: cooked terminals turn it into a newline,
    // raw-mode programs (agent UIs) expect exactly it.
    data = concat([data, new Uint8Array([0x0d])]);
  }
  for (let i = 0; i < data.byteLength || i === 0; i += SEND_CHUNK) {
    const part = data.subarray(i, i + SEND_CHUNK);
    await client.request({ op: "send", session: ref, data: part.toBase64() });
    if (data.byteLength === 0) break;
  }
  return 0;
}

// ---------------------------------------------------------------- wait

async function wait(args: string[], { targets }: Ctx): Promise<number> {
  const { values, positionals } = parse("wait", args, {
    tag: { type: "string" },
    condition: { type: "string" },
    timeout: { type: "string" },
    idle: { type: "boolean" },
    for: { type: "string" },
  });
  if (positionals.length === 0 && values.tag === undefined) {
    throw new UsageError("Give sessions or --tag TAG", "wait");
  }
  if (values.for !== undefined && !values.idle) {
    throw new UsageError("--for goes with --idle", "wait");
  }
  const idleMs = values.idle ? durationOpt("wait", values.for) ?? 0 : undefined;
  if (values.tag !== undefined && positionals.length > 1) {
    throw new UsageError("With --tag, give at most a NODE", "wait");
  }
  const { node, sessions: refs } = values.tag !== undefined
    ? { node: positionals[0] ?? null, sessions: [] }
    : oneNode("wait", positionals);
  const client = targets.client(node);
  const condition = values.condition ?? "all";
  if (condition !== "all" && condition !== "any") {
    throw new UsageError(`--condition is all or any, got "${condition}"`, "wait");
  }
  const timeoutMs = durationOpt("wait", values.timeout);
  const { conn } = await client.stream({ op: "info" }); // reachability first, so errors stay errors
  conn.close();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const call = client.request<{ sessions: SessionInfo[]; first: number | null }>({
    op: "wait",
    sessions: refs.length ? refs : undefined,
    tag: values.tag,
    condition,
    ...(values.idle ? { idle: true, idleMs } : {}),
  });
  const timeout = new Promise<"timeout">((resolve) => {
    if (timeoutMs !== undefined) timer = setTimeout(() => resolve("timeout"), timeoutMs);
  });
  try {
    const result = await Promise.race([call, timeout]);
    if (result === "timeout") {
      console.error(`cw: timed out after ${timeoutMs! / 1000} s`);
      return TIMEOUT_EXIT;
    }
    // with --idle, a session still running is waiting for you: 0; an ended one, its code
    const code = (s: SessionInfo) => values.idle && s.status === "running" ? 0 : exitCodeOf(s);
    if (condition === "any") {
      const first = result.sessions.find((s) => s.id === result.first) ?? result.sessions[0];
      return code(first);
    }
    for (const s of result.sessions) {
      if (code(s) !== 0) return code(s);
    }
    return 0;
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------- events

/**
 * `cw events [NODE] [--session S] [--tag T] [--json]`: what happens to sessions,
 * one line (or JSON object) per event, until interrupted.
 */
async function events(args: string[], { targets }: Ctx): Promise<number> {
  const { values, positionals } = parse("events", args, {
    session: { type: "string", multiple: true },
    tag: { type: "string" },
    json: { type: "boolean" },
  });
  if (positionals.length > 1) throw new UsageError("Give at most a NODE", "events");
  const refs = (values.session ?? []).map(splitRef);
  let node = positionals[0] ?? refs[0]?.node ?? null;
  if (positionals[0] !== undefined) {
    if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/.test(positionals[0])) {
      throw new UsageError(`Invalid node name "${positionals[0]}"`, "events");
    }
    node = positionals[0];
  }
  if (refs.some((r) => r.node !== null && r.node !== node)) {
    throw new UsageError("All sessions of one command must be on the same node", "events");
  }
  if (values.tag !== undefined) checkTag(values.tag);
  const { conn } = await targets.client(node).stream({
    op: "subscribe",
    sessions: refs.length ? refs.map((r) => r.session) : undefined,
    tag: values.tag,
  });
  // on stderr, so that a script knows the subscription stands (events after it are seen)
  console.error(`Watching events on ${node ?? "this machine"}; Ctrl-C stops.`);
  const out = new TextEncoder();
  try {
    for (;;) {
      const frame = await conn.next();
      if (!frame) {
        console.error("cw: the node closed the event stream");
        return 1;
      }
      if (frame.kind !== FrameKind.EVENT) continue;
      const ev = frame.value as StreamEvent;
      if (ev.type === "lagged") {
        console.error("cw: fell behind the node's events; run cw events again");
        return 1;
      }
      if (ev.type !== "session") continue;
      const e = ev.event;
      const line = values.json
        ? JSON.stringify({ node, ...e })
        : formatEvent(node === null ? String(e.session) : `${node}:${e.session}`, e);
      await writeAll(Deno.stdout, out.encode(line + "\n"));
    }
  } finally {
    conn.close();
  }
}

/** One event for a person: time, session, what happened. */
function formatEvent(ref: string, e: SessionEvent): string {
  const time = e.time.slice(11, 19);
  const who = e.name ? `${ref} (${printable(e.name)})` : ref;
  const what = e.type === "state"
    ? e.state
    : e.type === "exited"
    ? e.status === "killed"
      ? `killed by ${e.signal}`
      : `exited ${e.status === "lost" ? "(lost)" : e.exitCode}`
    : e.type === "attached" || e.type === "detached"
    ? `${e.type}${e.readOnly ? " (read-only)" : ""}; ${e.viewers} viewing`
    : e.type;
  return `${time}  ${who}  ${what}`;
}

// ---------------------------------------------------------------- kill

async function kill(args: string[], { targets }: Ctx): Promise<number> {
  const { values, positionals } = parse("kill", args, {
    tag: { type: "string" },
    all: { type: "boolean" },
    signal: { type: "string", short: "s" },
  });
  const bulk = values.tag !== undefined || values.all === true;
  if ((values.tag !== undefined && values.all === true) || (!bulk && positionals.length === 0)) {
    throw new UsageError("Give sessions, [NODE] --tag TAG or [NODE] --all (one of them)", "kill");
  }
  if (bulk && positionals.length > 1) {
    throw new UsageError("With --tag or --all, give at most a NODE", "kill");
  }
  const { node, sessions: refs } = bulk
    ? { node: positionals[0] ?? null, sessions: [] }
    : oneNode("kill", positionals);
  const client = targets.client(node);
  if (values.signal !== undefined) {
    try {
      parseSignal(values.signal);
    } catch (err) {
      throw new UsageError((err as Error).message, "kill");
    }
  }
  const { sessions } = await client.request<{ sessions: SessionInfo[] }>({
    op: "kill",
    sessions: refs.length ? refs : undefined,
    tag: values.tag,
    all: values.all,
    signal: values.signal,
  });
  if (sessions.length === 0) console.error("No running sessions matched.");
  for (const s of sessions) {
    const how = s.status === "running"
      ? "signalled (still running)"
      : s.status === "killed"
      ? `killed (${s.signal})`
      : `${s.status} (code ${s.exitCode})`;
    console.error(`Session ${s.id}: ${how}`);
  }
  return 0;
}

// ---------------------------------------------------------------- screen

/** `cw screen SESSION [--ansi] [--json]`: what the program shows right now. */
async function screen(args: string[], { targets }: Ctx): Promise<number> {
  const { values, positionals } = parse("screen", args, {
    json: { type: "boolean" },
    ansi: { type: "boolean" },
  });
  const { node, session: ref } = splitRef(needOne("screen", positionals, "session"));
  const { screen } = await targets.client(node).request<{ screen: Record<string, unknown> }>({
    op: "screen",
    session: ref,
    ansi: values.ansi === true,
  });
  if (values.json) {
    console.log(JSON.stringify(screen));
    return 0;
  }
  const out = values.ansi
    ? `${screen.ansi as string}\x1b[0m\n`
    // cells hold no control characters; a title or such never reaches the output
    : (screen.lines as string[]).map((l) => `${l}\n`).join("");
  await writeAll(Deno.stdout, new TextEncoder().encode(out));
  return 0;
}

// ---------------------------------------------------------------- status

async function status(args: string[], { targets }: Ctx): Promise<number> {
  const { values, positionals } = parse("status", args, {
    json: { type: "boolean" },
    lines: { type: "string" },
  });
  const { node, session: ref } = splitRef(needOne("status", positionals, "session"));
  const client = targets.client(node);
  const lines = countOpt("status", "lines", values.lines);
  const { session, lastOutput, screen } = await client.request<
    { session: SessionInfo; lastOutput: string; screen?: string[] }
  >({ op: "status", session: ref, lines, screen: true });
  const text = new TextDecoder().decode(new AnsiStripper().push(Uint8Array.fromBase64(lastOutput)));
  if (values.json) {
    console.log(JSON.stringify({ ...session, lastOutput: text, ...(screen ? { screen } : {}) }));
    return 0;
  }
  const fields: [string, string][] = [
    ["id", String(session.id)],
    ["name", printable(session.name ?? "-")],
    ["status", printable(session.status)],
    [
      "state",
      printable(session.state ?? session.status) +
      (session.stateSince ? ` for ${age(Date.now() - Date.parse(session.stateSince))}` : ""),
    ],
    ["exit code", session.exitCode === null ? "-" : String(session.exitCode)],
    ["signal", printable(session.signal ?? "-")],
    ["pid", session.pid === null ? "-" : String(session.pid)],
    ["command", printableArgv(session.argv)],
    ["dir", printable(session.dir)],
    ["tags", printable(session.tags.join(",")) || "-"],
    ["started", session.startedAt],
    ["ended", session.endedAt ?? "-"],
    ["output", `${session.outputBytes} bytes`],
  ];
  for (const [k, v] of fields) console.log(`${(k + ":").padEnd(11)}${v}`);
  if (screen) {
    // a running program: the last rows of what it shows now (full-screen programs read right)
    console.log("screen:");
    for (const line of screen.slice(-(lines ?? 10))) console.log(`  ${printable(line)}`);
    return 0;
  }
  console.log("last output:");
  for (const line of text.split("\n")) if (line !== "") console.log(`  ${printable(line)}`);
  return 0;
}

// ---------------------------------------------------------------- stop

async function stop(args: string[], { targets, home }: Ctx): Promise<number> {
  const { positionals } = parse("stop", args, {});
  if (positionals.length > 0) {
    throw new UsageError(`Unexpected argument "${positionals[0]}"`, "stop");
  }
  if (targets.server) {
    throw new UsageError("cw stop stops the local node; it does not take --server", "stop");
  }
  const client = targets.client(null);
  if (!(await nodeRunning(home))) {
    console.error("No node was running.");
    return 0;
  }
  const info = await client.request<{ pid: number }>({ op: "info" });
  await client.request({ op: "shutdown" });
  // the node answers first, then ends its sessions, saves, and removes its
  // pid file as the last step
  const { pidFile } = nodePaths(home);
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (!(await exists(pidFile))) {
      console.error(`Stopped the node (pid ${info.pid}).`);
      return 0;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new CwError("timeout", `The node (pid ${info.pid}) did not stop within 15 s`);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}
