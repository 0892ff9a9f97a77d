/// <reference lib="dom" />
/**
 * cw in the browser: nodes → a node's sessions → a session's live terminal,
 * on the relay that serves this page. It speaks the node protocol
 * (shared/protocol.ts, shared/framed.ts) over a WebSocket to
 * /api/v1/nodes/NAME/connect, authenticated by the session cookie that a
 * one-time login link (`cw web`) set. Bundled by scripts/web_build.ts;
 * nothing comes from anywhere else.
 *
 * A session opens read-only, from its screen snapshot; "Take control"
 * attaches again writable at the window's size. On a phone a key row gives
 * the keys its keyboard lacks, and a box sends a line of text.
 */
import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import { checkHello, FramedConn, helloFrame } from "../shared/framed.ts";
import { FrameKind, type Request, type SessionInfo, type StreamEvent } from "../shared/protocol.ts";
import { wsDuplex } from "../shared/ws_duplex.ts";
import { splitCommandLine } from "../shared/args.ts";
import { AnsiStripper } from "../shared/ansi.ts";
import type { NodeRow, WhoAmI } from "../shared/api.ts";

const main = document.getElementById("main")!;
const crumbs = document.getElementById("crumbs")!;
const who = document.getElementById("who")!;
const enc = new TextEncoder();

/** Output credit asked of the node, acknowledged in quarters (see the protocol's `ack`). */
const WINDOW = 2 * 1024 * 1024;

/** An element with text (never HTML: every string here came from someone else). */
function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  text = "",
  props: Partial<HTMLElementTagNameMap[K]> = {},
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  e.textContent = text;
  Object.assign(e, props);
  return e;
}

async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const res = await fetch(path, { credentials: "same-origin", ...init });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body?.error?.message ?? `HTTP ${res.status}`);
  return body as T;
}

function show(...children: Node[]): void {
  main.replaceChildren(...children);
}

function fail(err: unknown): void {
  show(el("p", String((err as Error)?.message ?? err), { className: "error" }));
}

/** A protocol connection to node `name` through this relay, HELLO done. */
async function connect(name: string): Promise<FramedConn> {
  const url = new URL(`/api/v1/nodes/${encodeURIComponent(name)}/connect`, location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const conn = new FramedConn(wsDuplex(new WebSocket(url)));
  await conn.sendJson(FrameKind.HELLO, helloFrame());
  checkHello(await conn.next());
  return conn;
}

/** One request and its response on a new connection. */
async function call<T>(name: string, req: Request): Promise<{ conn: FramedConn; response: T }> {
  const conn = await connect(name);
  await conn.sendJson(FrameKind.REQUEST, req);
  const frame = await conn.next();
  if (!frame) throw new Error("The node closed the connection");
  if (frame.kind === FrameKind.ERROR) throw new Error(String(frame.value.message));
  if (frame.kind !== FrameKind.RESPONSE) throw new Error("Unexpected answer");
  return { conn, response: frame.value as T };
}

// ---------------------------------------------------------------- pages

async function nodesPage(): Promise<void> {
  crumbs.replaceChildren();
  const { nodes } = await api<{ nodes: NodeRow[] }>("/api/v1/nodes");
  if (nodes.length === 0) return show(el("p", "No nodes yet.", { className: "note" }));
  const list = el("ul", "", { className: "rows" });
  for (const n of nodes) {
    const a = el("a", n.name, { href: `#/n/${encodeURIComponent(n.name)}` });
    a.append(el("span", n.online ? "online" : "offline", {
      className: `badge ${n.online ? "online" : "offline"}`,
    }));
    a.append(el("span", `${n.sessions ?? 0} sessions · ${n.network ?? "default"}`, {
      className: "sub",
    }));
    list.append(el("li").appendChild(a).parentElement!);
  }
  show(
    el("h2", "Nodes"),
    list,
    el("p", "", { className: "note" }).appendChild(
      el("a", "The network's KV store", { href: "#/kv/default" }),
    ).parentElement!,
  );
}

function ago(iso: string | undefined): string {
  if (!iso) return "";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 60 ? `${s}s` : s < 3600 ? `${Math.floor(s / 60)}m` : `${Math.floor(s / 3600)}h`;
}

async function sessionsPage(node: string): Promise<void> {
  crumbs.replaceChildren(el("a", node, { href: `#/n/${encodeURIComponent(node)}` }));
  const { conn, response } = await call<{ sessions: SessionInfo[] }>(node, {
    op: "list",
    lastLines: true,
  });
  conn.close();
  const list = el("ul", "", { className: "rows" });
  for (const s of response.sessions.slice().reverse()) {
    const state = s.state ?? s.status;
    const a = el("a", s.name ?? `#${s.id}`, {
      href: `#/n/${encodeURIComponent(node)}/s/${s.id}`,
    });
    a.append(el("span", state + (s.stateSince ? ` ${ago(s.stateSince)}` : ""), {
      className: `badge ${state}`,
    }));
    a.append(el("span", s.argv.join(" ") + (s.tags.length ? ` · ${s.tags.join(",")}` : ""), {
      className: "sub",
    }));
    if (s.lastLine) a.append(el("span", s.lastLine, { className: "sub last" }));
    list.append(el("li").appendChild(a).parentElement!);
  }
  show(
    el("h2", `Sessions on ${node}`),
    response.sessions.length ? list : el("p", "No sessions.", { className: "note" }),
    launchForm(node),
  );
  watchStates(node, response.sessions);
}

/** Launch a session: a command line (split as a shell would, never run by one), a name, tags. */
function launchForm(node: string): HTMLElement {
  const form = el("form", "", { id: "launch" });
  const command = el("input", "", { id: "command", placeholder: "Command, e.g. bash" });
  const name = el("input", "", { id: "name", placeholder: "Name (optional)" });
  const tags = el("input", "", { id: "tags", placeholder: "Tags, comma-separated" });
  const dir = el("input", "", { id: "dir", placeholder: "Directory (optional)" });
  const go = el("button", "Launch", { className: "primary", type: "submit" });
  const bar = el("div", "", { className: "bar" });
  bar.append(command, name, tags, dir, go);
  const note = el("p", "", { className: "note" });
  form.append(el("h3", "Launch"), bar, note);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    void (async () => {
      const argv = splitCommandLine(command.value);
      if (argv.length === 0) throw new Error("Give a command");
      const { conn, response } = await call<{ session: SessionInfo }>(node, {
        op: "launch",
        argv,
        inheritNodeEnv: true,
        ...(name.value.trim() ? { name: name.value.trim() } : {}),
        ...(dir.value.trim() ? { dir: dir.value.trim() } : {}),
        ...(tags.value.trim()
          ? { tags: tags.value.split(",").map((t) => t.trim()).filter(Boolean) }
          : {}),
      });
      conn.close();
      location.hash = `#/n/${encodeURIComponent(node)}/s/${response.session.id}`;
    })().catch((err) => note.textContent = String((err as Error).message ?? err));
  });
  return form;
}

/**
 * While a node's sessions are shown: every 5 s, their states again, and a
 * browser notification (when allowed) when one starts waiting or ends.
 */
function watchStates(node: string, first: SessionInfo[]): void {
  let last = new Map(first.map((s) => [s.id, s.state ?? s.status]));
  if ("Notification" in globalThis && Notification.permission === "default") {
    const ask = el("button", "Notify me when a session waits", { id: "notify" });
    ask.addEventListener("click", () => void Notification.requestPermission());
    main.append(ask);
  }
  const here = location.hash;
  const timer = setInterval(async () => {
    if (location.hash !== here) return clearInterval(timer);
    try {
      const { conn, response } = await call<{ sessions: SessionInfo[] }>(node, { op: "list" });
      conn.close();
      for (const s of response.sessions) {
        const state = s.state ?? s.status;
        const was = last.get(s.id);
        if (
          was && was !== state && (state === "waiting" || was === "working" && state !== "working")
        ) {
          if ("Notification" in globalThis && Notification.permission === "granted") {
            new Notification(`${s.name ?? `#${s.id}`} on ${node}: ${state}`, {
              body: s.argv.join(" "),
            });
          }
        }
      }
      last = new Map(response.sessions.map((s) => [s.id, s.state ?? s.status]));
    } catch {
      // the next round will tell
    }
  }, 5000);
}

/** The live terminal of one session. */
function terminalPage(node: string, id: string): void {
  crumbs.replaceChildren(
    el("a", node, { href: `#/n/${encodeURIComponent(node)}` }),
    el("span", ` / ${id}`),
  );
  const box = el("div", "", { id: "term" });
  const status = el("p", "Read-only.", { className: "note", id: "mode" });
  const take = el("button", "Take control", { className: "primary", id: "take" });
  const keys = el("div", "", { className: "bar", id: "keys" });
  const line = el("input", "", { id: "line", placeholder: "Send a line of text" });
  const send = el("button", "Send", { id: "send" });
  const sendBar = el("div", "", { className: "bar" });
  sendBar.append(line, send);
  const kill = el("button", "Kill", { id: "kill" });
  const log = el("a", "Log", {
    href: `#/n/${encodeURIComponent(node)}/s/${encodeURIComponent(id)}/log`,
    id: "log-link",
    className: "button",
  });
  const top = el("div", "", { className: "bar" });
  top.append(take, kill, log);
  kill.addEventListener("click", () => {
    if (!confirm(`Kill session ${id} on ${node}?`)) return;
    void call(node, { op: "kill", sessions: [id] }).then(({ conn }) => conn.close()).catch(fail);
  });
  show(top, status, box, keys, sendBar);

  const term = new Terminal({ convertEol: false, scrollback: 2000, fontSize: 14 });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(box);
  let conn: FramedConn | null = null;
  let writable = false;
  let unacked = 0;

  const input = (bytes: Uint8Array) => {
    if (writable && conn) conn.sendData(bytes).catch(() => {});
  };
  term.onData((d) => input(enc.encode(d)));
  const KEYS: [string, string][] = [
    ["Esc", "\x1b"],
    ["Tab", "\t"],
    ["Ctrl-C", "\x03"],
    ["↑", "\x1b[A"],
    ["↓", "\x1b[B"],
    ["←", "\x1b[D"],
    ["→", "\x1b[C"],
    ["Enter", "\r"],
    ["y", "y"],
    ["n", "n"],
  ];
  for (const [label, bytes] of KEYS) {
    const b = el("button", label);
    b.addEventListener("click", () => input(enc.encode(bytes)));
    keys.append(b);
  }
  const sendLine = () => {
    input(enc.encode(`${line.value}\r`));
    line.value = "";
  };
  send.addEventListener("click", sendLine);
  line.addEventListener("keydown", (e) => {
    if (e.key === "Enter") sendLine();
  });

  const attach = async (asWriter: boolean) => {
    conn?.close();
    writable = false;
    term.reset();
    let size: { cols: number; rows: number } | undefined;
    if (asWriter) {
      fit.fit();
      size = { cols: term.cols, rows: term.rows };
    }
    const call_ = await call<{ snapshot?: string; size?: { cols: number; rows: number } }>(node, {
      op: "attach",
      session: id,
      readOnly: !asWriter,
      snapshot: 200,
      window: WINDOW,
      ...(size ?? {}),
    });
    conn = call_.conn;
    const program = call_.response.size;
    if (!asWriter && program) term.resize(program.cols, program.rows);
    if (typeof call_.response.snapshot === "string") term.write(call_.response.snapshot);
    writable = asWriter;
    status.textContent = asWriter ? "In control: what you type goes to the program." : "Read-only.";
    take.textContent = asWriter ? "Let go" : "Take control";
    if (asWriter) term.focus();
    const mine = conn;
    while (true) {
      const frame = await mine.next().catch(() => null);
      if (!frame) break;
      if (frame.kind === FrameKind.DATA) {
        term.write(frame.bytes);
        unacked += frame.bytes.byteLength;
        if (unacked >= WINDOW / 4) {
          mine.sendJson(FrameKind.EVENT, { type: "ack", bytes: unacked } satisfies StreamEvent)
            .catch(() => {});
          unacked = 0;
        }
      } else if (frame.kind === FrameKind.EVENT) {
        const e = frame.value as StreamEvent;
        if (e.type === "size" && !writable) term.resize(e.cols, e.rows);
        if (e.type === "exit") {
          status.textContent = `The session ended (${e.status}${
            e.exitCode === null ? "" : ` ${e.exitCode}`
          }).`;
          break;
        }
      }
    }
    if (conn === mine) writable = false;
  };
  take.addEventListener("click", () => void attach(!writable).catch(fail));
  addEventListener("resize", () => {
    if (!writable || !conn) return;
    fit.fit();
    conn.sendJson(FrameKind.EVENT, { type: "resize", cols: term.cols, rows: term.rows })
      .catch(() => {});
  });
  addEventListener("hashchange", () => conn?.close(), { once: true });
  void attach(false).catch(fail);
}

/** The network's KV store: keys, and a key's value (as text) when opened. */
async function kvPage(ns: string, key: string | null): Promise<void> {
  crumbs.replaceChildren(el("a", `kv/${ns}`, { href: `#/kv/${encodeURIComponent(ns)}` }));
  const base = `/api/v1/kv/${encodeURIComponent(ns)}`;
  if (key !== null) {
    const res = await fetch(`${base}/${encodeURIComponent(key)}`, { credentials: "same-origin" });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    // shown as text, never as HTML
    return show(el("h2", key), el("pre", await res.text(), { className: "log" }));
  }
  const page = await api<{ entries: { key: string; size: number; expiresAt: string | null }[] }>(
    base,
  );
  const list = el("ul", "", { className: "rows" });
  for (const e of page.entries) {
    const a = el("a", e.key, {
      href: `#/kv/${encodeURIComponent(ns)}/${encodeURIComponent(e.key)}`,
    });
    a.append(el("span", `${e.size} bytes${e.expiresAt ? ` · until ${e.expiresAt}` : ""}`, {
      className: "sub",
    }));
    list.append(el("li").appendChild(a).parentElement!);
  }
  show(
    el("h2", `KV: ${ns}`),
    page.entries.length ? list : el("p", "No keys.", { className: "note" }),
  );
}

/** A session's transcript laid out for reading (the last 500 lines; escape sequences removed). */
async function logPage(node: string, id: string): Promise<void> {
  crumbs.replaceChildren(
    el("a", node, { href: `#/n/${encodeURIComponent(node)}` }),
    el("a", ` / ${id}`, { href: `#/n/${encodeURIComponent(node)}/s/${encodeURIComponent(id)}` }),
    el("span", " / log"),
  );
  const { conn } = await call(node, { op: "logs", session: id, tail: 500 });
  const chunks: Uint8Array[] = [];
  while (true) {
    const frame = await conn.next();
    if (!frame || frame.kind === FrameKind.EVENT) break;
    if (frame.kind === FrameKind.DATA) chunks.push(frame.bytes);
  }
  conn.close();
  // laid out for reading, as `cw logs` does: no escape sequence reaches the page
  const stripper = new AnsiStripper();
  const dec = new TextDecoder();
  const text = chunks.map((c) => dec.decode(stripper.push(c), { stream: true })).join("") +
    dec.decode();
  show(el("pre", text, { className: "log", id: "log" }));
}

// ---------------------------------------------------------------- start

async function route(): Promise<void> {
  const hash = location.hash;
  const login = /^#login=([\w-]+)(?:&to=(n\/[\w.-]+))?$/.exec(hash);
  if (login) {
    // the code leaves the address bar (and history) before anything else
    history.replaceState(null, "", `${location.pathname}#/${login[2] ?? ""}`);
    await api("/api/v1/web/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ code: login[1] }),
    });
  }
  try {
    const me = await api<WhoAmI>("/api/v1/whoami");
    who.textContent = `${me.name ?? me.kind}${me.readOnly ? " (read-only)" : ""}`;
  } catch {
    who.textContent = "";
    return show(
      el("p", "Not signed in. Run `cw web` on a machine with access and open its link.", {
        className: "note",
      }),
    );
  }
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "kv") return await kvPage(parts[1] || "default", parts[2] ?? null);
  if (parts[0] === "n" && parts[1] && parts[2] === "s" && parts[3] && parts[4] === "log") {
    return await logPage(parts[1], parts[3]);
  }
  if (parts[0] === "n" && parts[1] && parts[2] === "s" && parts[3]) {
    return terminalPage(parts[1], parts[3]);
  }
  if (parts[0] === "n" && parts[1]) return await sessionsPage(parts[1]);
  return await nodesPage();
}

addEventListener("hashchange", () => void route().catch(fail));
void route().catch(fail);
