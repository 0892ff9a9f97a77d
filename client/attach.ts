import { FrameKind, type SessionInfo, type StreamEvent } from "../shared/protocol.ts";
import type { FramedConn } from "../shared/framed.ts";
import type { NodeClient } from "./node_client.ts";
import { exitCodeOf } from "./exit_code.ts";
import { concat, writeAll } from "./io.ts";

/** The detach prefix: Ctrl+B, as in tmux. */
const PREFIX = 0x02;
const DETACH_KEY = 0x64; // d

/** Options of `cw attach`. */
export interface AttachOptions {
  readOnly: boolean;
  history: boolean;
}

/**
 * Splits keyboard input into what goes to the session and a detach request.
 * Ctrl+B d detaches, Ctrl+B Ctrl+B sends one Ctrl+B, Ctrl+B followed by any
 * other key sends both. The prefix may end one read and its key start the next.
 */
export class DetachKeys {
  #pending = false;

  /** Returns the bytes to forward and whether to detach. */
  feed(input: Uint8Array): { forward: Uint8Array; detach: boolean } {
    const out: number[] = [];
    for (const b of input) {
      if (this.#pending) {
        this.#pending = false;
        if (b === DETACH_KEY) return { forward: new Uint8Array(out), detach: true };
        if (b === PREFIX) out.push(PREFIX);
        else out.push(PREFIX, b);
      } else if (b === PREFIX) {
        this.#pending = true;
      } else {
        out.push(b);
      }
    }
    return { forward: new Uint8Array(out), detach: false };
  }
}

/**
 * Attaches the terminal to a session: raw mode, history replay, live output,
 * input, size following the terminal. Resolves to the process exit code: the
 * session's when it ends, 0 on detach.
 */
export async function attach(
  client: NodeClient,
  ref: string,
  opts: AttachOptions,
): Promise<number> {
  const tty = Deno.stdin.isTerminal();
  const size = consoleSize();
  const { response, conn } = await client.stream({
    op: "attach",
    session: ref,
    readOnly: opts.readOnly,
    history: opts.history,
    ...size,
  });
  const info = response.session as SessionInfo;
  if (tty) Deno.stdin.setRaw(true);
  const onResize = () => {
    const s = consoleSize();
    if (s && !opts.readOnly) {
      conn.sendJson(FrameKind.EVENT, { type: "resize", ...s } satisfies StreamEvent).catch(
        () => {},
      );
    }
  };
  if (tty) Deno.addSignalListener("SIGWINCH", onResize);
  try {
    const detached = readInput(conn, opts.readOnly);
    const ended = readOutput(conn);
    const result = await Promise.race([detached, ended]);
    if (result === "detach") {
      restore(tty);
      console.error(`\n[detached from session ${info.id}]`);
      return 0;
    }
    restore(tty);
    if (result === "lost") {
      console.error(`cw: lost the connection to the node while attached to session ${info.id}`);
      return 1;
    }
    const code = exitCodeOf(result);
    console.error(`\n[session ${info.id} ${describeEnd(result)}]`);
    return code;
  } finally {
    restore(tty);
    if (tty) Deno.removeSignalListener("SIGWINCH", onResize);
    conn.close();
  }
}

function restore(tty: boolean): void {
  if (!tty) return;
  try {
    Deno.stdin.setRaw(false);
  } catch {
    // stdin is gone
  }
}

function consoleSize(): { cols: number; rows: number } | undefined {
  try {
    const { columns, rows } = Deno.consoleSize();
    return columns > 0 && rows > 0 ? { cols: columns, rows } : undefined;
  } catch {
    return undefined;
  }
}

type End = Pick<SessionInfo, "status" | "exitCode" | "signal">;

async function readOutput(conn: FramedConn): Promise<End | "lost"> {
  while (true) {
    const frame = await conn.next();
    if (!frame) return "lost";
    if (frame.kind === FrameKind.DATA) {
      const more = conn.takeQueuedData();
      await writeAll(Deno.stdout, more.length ? concat([frame.bytes, ...more]) : frame.bytes);
    } else if (frame.kind === FrameKind.EVENT) {
      const e = frame.value as StreamEvent;
      if (e.type === "exit") return e;
      if (e.type === "skipped") {
        await writeAll(
          Deno.stdout,
          new TextEncoder().encode(`\r\n[cw: ${e.bytes} bytes skipped]\r\n`),
        );
      }
    } else if (frame.kind === FrameKind.ERROR) {
      return "lost";
    }
  }
}

async function readInput(conn: FramedConn, readOnly: boolean): Promise<"detach"> {
  const keys = new DetachKeys();
  const buf = new Uint8Array(16 * 1024);
  while (true) {
    const n = await Deno.stdin.read(buf);
    if (n === null) return new Promise<never>(() => {}); // no more input; keep watching output
    const { forward, detach } = keys.feed(buf.subarray(0, n));
    if (forward.byteLength > 0 && !readOnly) {
      await conn.sendData(forward).catch(() => {});
    }
    if (detach) return "detach";
  }
}

function describeEnd(end: End): string {
  if (end.status === "exited") return `exited with code ${end.exitCode}`;
  if (end.status === "killed") return `was killed by ${end.signal}`;
  return end.status;
}
