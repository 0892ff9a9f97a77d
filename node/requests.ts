import { CwError } from "../shared/errors.ts";
import { OPS, type Request, SESSION_STATUSES, type SessionStatus } from "../shared/protocol.ts";
import { PTY_MAX_SIZE } from "./limits.ts";

/**
 * Checks a REQUEST payload field by field and returns it typed. Throws
 * {@link CwError} `bad_request` naming the first bad field.
 */
export function parseRequest(value: Record<string, unknown>): Request {
  const op = value.op;
  if (typeof op !== "string" || !(OPS as readonly string[]).includes(op)) {
    throw bad(`Unknown operation ${JSON.stringify(op)}`);
  }
  const v = new Fields(value);
  switch (op) {
    case "launch":
      return {
        op,
        argv: v.strings("argv", true)!,
        name: v.string("name"),
        dir: v.string("dir"),
        tags: v.strings("tags"),
        env: v.env("env"),
        inheritNodeEnv: v.bool("inheritNodeEnv"),
        cols: v.size("cols"),
        rows: v.size("rows"),
      };
    case "list": {
      const status = v.string("status");
      if (status !== undefined && !(SESSION_STATUSES as string[]).includes(status)) {
        throw bad(`Unknown status "${status}"; use one of ${SESSION_STATUSES.join(", ")}`);
      }
      return {
        op,
        tag: v.string("tag"),
        status: status as SessionStatus | undefined,
        lastLines: v.bool("lastLines"),
      };
    }
    case "status":
      return {
        op,
        session: v.string("session", true)!,
        lines: v.count("lines"),
        screen: v.bool("screen"),
      };
    case "kill":
      return {
        op,
        sessions: v.strings("sessions"),
        tag: v.string("tag"),
        all: v.bool("all"),
        signal: v.string("signal"),
      };
    case "send":
      return { op, session: v.string("session", true)!, data: v.string("data", true)! };
    case "wait": {
      const condition = v.string("condition");
      if (condition !== undefined && condition !== "all" && condition !== "any") {
        throw bad(`Unknown condition "${condition}"; use all or any`);
      }
      return {
        op,
        sessions: v.strings("sessions"),
        tag: v.string("tag"),
        condition,
        idle: v.bool("idle"),
        idleMs: v.count("idleMs"),
      };
    }
    case "attach":
      return {
        op,
        session: v.string("session", true)!,
        readOnly: v.bool("readOnly"),
        from: v.count("from"),
        history: v.bool("history"),
        cols: v.size("cols"),
        rows: v.size("rows"),
        window: v.window("window"),
        snapshot: v.count("snapshot"),
      };
    case "logs":
      return {
        op,
        session: v.string("session", true)!,
        tail: v.count("tail"),
        tailBytes: v.count("tailBytes"),
        from: v.count("from"),
        limit: v.count("limit"),
        follow: v.bool("follow"),
        window: v.window("window"),
      };
    case "subscribe":
      return { op, sessions: v.strings("sessions"), tag: v.string("tag") };
    case "screen":
      return { op, session: v.string("session", true)!, ansi: v.bool("ansi") };
    case "info":
    case "relay_reload":
    case "shutdown":
      return { op };
  }
  throw bad(`Unknown operation "${op}"`);
}

function bad(message: string): CwError {
  return new CwError("bad_request", message);
}

class Fields {
  #v: Record<string, unknown>;
  constructor(v: Record<string, unknown>) {
    this.#v = v;
  }
  string(key: string, required = false): string | undefined {
    const x = this.#v[key];
    if (x === undefined || x === null) {
      if (required) throw bad(`Missing field "${key}"`);
      return undefined;
    }
    if (typeof x !== "string") throw bad(`Field "${key}" must be a string`);
    return x;
  }
  strings(key: string, required = false): string[] | undefined {
    const x = this.#v[key];
    if (x === undefined || x === null) {
      if (required) throw bad(`Missing field "${key}"`);
      return undefined;
    }
    if (!Array.isArray(x) || !x.every((s) => typeof s === "string")) {
      throw bad(`Field "${key}" must be a list of strings`);
    }
    return x;
  }
  bool(key: string): boolean | undefined {
    const x = this.#v[key];
    if (x === undefined || x === null) return undefined;
    if (typeof x !== "boolean") throw bad(`Field "${key}" must be true or false`);
    return x;
  }
  count(key: string): number | undefined {
    const x = this.#v[key];
    if (x === undefined || x === null) return undefined;
    if (!Number.isSafeInteger(x) || (x as number) < 0) {
      throw bad(`Field "${key}" must be a non-negative integer`);
    }
    return x as number;
  }
  size(key: string): number | undefined {
    const n = this.count(key);
    if (n !== undefined && (n < 1 || n > PTY_MAX_SIZE)) {
      throw bad(`Field "${key}" must be 1-${PTY_MAX_SIZE}`);
    }
    return n;
  }
  window(key: string): number | undefined {
    const n = this.count(key);
    if (n !== undefined && (n < 64 * 1024 || n > 64 * 1024 * 1024)) {
      throw bad(`Field "${key}" must be 64 KiB-64 MiB`);
    }
    return n;
  }
  env(key: string): Record<string, string> | undefined {
    const x = this.#v[key];
    if (x === undefined || x === null) return undefined;
    if (typeof x !== "object" || Array.isArray(x)) throw bad(`Field "${key}" must be an object`);
    for (const [k, val] of Object.entries(x as Record<string, unknown>)) {
      if (
        typeof val !== "string" || k === "" || k.includes("=") || k.includes("\0") ||
        val.includes("\0")
      ) {
        throw bad(`Field "${key}" has an invalid variable "${k}"`);
      }
    }
    return x as Record<string, string>;
  }
}
