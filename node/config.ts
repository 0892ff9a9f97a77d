import { join } from "node:path";
import { CwError } from "../shared/errors.ts";
import { checkWebhookUrl } from "../shared/notify.ts";

/** Settings a node reads from `$CW_HOME/config.json`; all optional. */
export interface NodeConfig {
  /** On-disk log cap per session (bytes, or "64MiB"). Default 64 MiB. */
  sessionLogBytes: number;
  /** In-memory replay buffer per session. Default 1 MiB. */
  sessionRingBytes: number;
  /** Serve the protocol over WebSocket on this `HOST:PORT` (cw server). */
  listen: string | null;
  /** PEM files for `listen` (wss). */
  tlsCert: string | null;
  tlsKey: string | null;
  /**
   * Where notices go (shared/notify.ts): a session starts waiting, or ends.
   * https://, or http:// to loopback. Off by default.
   */
  notifyUrl: string | null;
  /**
   * `ssh -L` through the relay's SSH gateway to addresses this node reaches
   * (when the relay also allows it for the node's network): `off` (default),
   * `loopback` (this machine's 127.0.0.0/8, ::1, localhost) or `any`.
   */
  forwarding: "off" | "loopback" | "any";
}

/** Defaults for every setting. */
export const DEFAULT_CONFIG: NodeConfig = {
  sessionLogBytes: 64 * 1024 * 1024,
  sessionRingBytes: 1024 * 1024,
  listen: null,
  tlsCert: null,
  tlsKey: null,
  notifyUrl: null,
  forwarding: "off",
};

const UNITS: Record<string, number> = { "": 1, B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 };

/** Parses a byte size: a number, or a string like `512KiB`, `64MiB`. */
export function parseBytes(value: unknown, what: string): number {
  if (typeof value === "number" && Number.isSafeInteger(value) && value > 0) return value;
  if (typeof value === "string") {
    const m = /^([0-9]+)\s*(B|KiB|MiB|GiB)?$/.exec(value.trim());
    if (m && Number(m[1]) > 0) return Number(m[1]) * UNITS[m[2] ?? ""];
  }
  throw new CwError(
    "bad_request",
    `Invalid ${what} ${JSON.stringify(value)}: use bytes or e.g. "64MiB"`,
  );
}

/** Reads the node's config file; a missing file means defaults. */
export function loadConfig(home: string): NodeConfig {
  const path = join(home, "config.json");
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(Deno.readTextFileSync(path));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return { ...DEFAULT_CONFIG };
    throw new CwError("bad_request", `Cannot read ${path}: ${(err as Error).message}`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new CwError("bad_request", `${path} must hold a JSON object`);
  }
  const config = { ...DEFAULT_CONFIG };
  for (const [key, value] of Object.entries(raw)) {
    if (key === "sessionLogBytes" || key === "sessionRingBytes") {
      config[key] = parseBytes(value, key);
    } else if (key === "notifyUrl") {
      config.notifyUrl = value === null
        ? null
        : checkWebhookUrl(value, `Setting "notifyUrl" in ${path}`);
    } else if (key === "forwarding") {
      if (value !== "off" && value !== "loopback" && value !== "any") {
        throw new CwError(
          "bad_request",
          `Setting "forwarding" in ${path} must be "off", "loopback" or "any"`,
        );
      }
      config.forwarding = value;
    } else if (key === "listen" || key === "tlsCert" || key === "tlsKey") {
      if (typeof value !== "string" && value !== null) {
        throw new CwError("bad_request", `Setting "${key}" in ${path} must be a string`);
      }
      config[key] = value;
    } else throw new CwError("bad_request", `Unknown setting "${key}" in ${path}`);
  }
  return config;
}
