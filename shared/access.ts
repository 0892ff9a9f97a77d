/**
 * What a principal the relay vouches for may do on a node. The relay checks
 * each remote request before it reaches the node (relay/stream_guard.ts) and
 * the node checks it again with the principal the relay named in the stream's
 * OPEN (node/service.ts): a relay bug cannot widen access.
 */
import type { Request } from "./protocol.ts";

/** Who a remote stream is for, as the relay tells the node (mux OPEN meta `principal`). */
export interface RemotePrincipal {
  /** `admin`, `node:NAME`, `user:NAME`. */
  id: string;
  /** Its network; null: every network (the admin). */
  network: string | null;
  readOnly: boolean;
}

/** Node protocol operations a read-only principal may run (attach only with readOnly). */
export const READ_ONLY_OPS: ReadonlySet<string> = new Set([
  "list",
  "status",
  "logs",
  "wait",
  "info",
  "attach",
  "screen",
  "subscribe",
]);

/**
 * Operations that never cross the relay or a direct listener, for anyone:
 * stopping a node and relinking it belong to the node's own machine. An
 * admin stops a node by revoking it (`cw relay nodes --revoke`), which cuts
 * its link; the node's owner runs `cw stop` there.
 */
export const LOCAL_ONLY_OPS: ReadonlySet<string> = new Set(["shutdown", "relay_reload"]);

/** Why `p` may not run `req` remotely, or null when it may. */
export function refusal(
  p: Pick<RemotePrincipal, "id" | "readOnly">,
  req: { op: Request["op"] | string; readOnly?: unknown },
): string | null {
  if (LOCAL_ONLY_OPS.has(req.op)) {
    return `"${req.op === "shutdown" ? "cw stop" : req.op}" works only on the node's own machine`;
  }
  if (!p.readOnly) return null;
  if (!READ_ONLY_OPS.has(req.op)) return `${p.id} is read-only: "${req.op}" is refused`;
  if (req.op === "attach" && req.readOnly !== true) {
    return `${p.id} is read-only: attach with --read-only`;
  }
  return null;
}

/** The principal in a stream's OPEN meta, checked; null when absent or malformed. */
export function remotePrincipalOf(meta: Record<string, unknown>): RemotePrincipal | null {
  const p = meta.principal as Record<string, unknown> | undefined;
  if (typeof p !== "object" || p === null || typeof p.id !== "string") return null;
  return {
    id: p.id.slice(0, 300),
    network: typeof p.network === "string" ? p.network.slice(0, 64) : null,
    readOnly: p.readOnly !== false, // anything but an explicit false reads as read-only
  };
}
