/**
 * The limits of every listener cw opens, in one place: the relay's HTTPS and
 * SSH ports, the node's direct WebSocket port and its unix socket. Each
 * figure says why it is what it is. Connections are also bounded by the
 * process's descriptors ({@link connectionBudget}).
 */
import { FdBudget, type GuardLimits } from "./guarded_listener.ts";
import { MUX_MAX_DATA, MUX_MAX_JSON } from "./mux.ts";
import { MAX_FRAME_PAYLOAD } from "./protocol.ts";

/**
 * Largest WebSocket message on a node link or a dial-back: a link frame is
 * at most 5 + 64 KiB (shared/mux.ts), a dial-back message 1 + 64 KiB
 * (shared/dialback.ts). Deno's own limit is 64 MiB, all held in memory.
 */
export const LINK_MAX_MESSAGE = 2 * Math.max(MUX_MAX_DATA, MUX_MAX_JSON);

/**
 * Largest WebSocket message of a node-protocol stream (a client's
 * `/api/v1/nodes/NAME/connect`, a node's direct listener): one frame of at
 * most {@link MAX_FRAME_PAYLOAD} plus its header, with room to spare.
 */
export const STREAM_MAX_MESSAGE = MAX_FRAME_PAYLOAD + 64 * 1024;

/**
 * Relay HTTPS (client API, KV, node links, dial-backs). A browser or CLI
 * sends its first request within milliseconds of connecting; 10 s covers a
 * slow TLS handshake over a bad mobile link. Unauthenticated keep-alive
 * connections are dropped after 60 s of silence (nginx's keepalive_timeout
 * is 75 s). 32 unauthenticated connections per address leave room for a
 * NAT full of users while one address cannot hold the port.
 */
export const RELAY_HTTP_LIMITS: Omit<GuardLimits, "maxConnections"> = {
  handshakeMs: 10_000,
  idleMs: 60_000,
  untrustedLifetimeMs: 120_000,
  perAddress: 32,
  // an idle connection costs ~11 KiB: a flood holds at most ~22 MiB (measured, bench)
  maxUntrusted: 2048,
};

/**
 * Relay SSH gateway: the handshake mark is a successful login. OpenSSH's
 * LoginGraceTime is 120 s; half of that still lets a person type a password.
 * OpenSSH starts dropping at 10 unauthenticated connections (MaxStartups);
 * 16 per address is a little kinder to shared NATs.
 */
export const RELAY_SSH_LIMITS: Omit<GuardLimits, "maxConnections"> = {
  handshakeMs: 60_000,
  idleMs: 60_000,
  // (an SSH connection is trusted at login, which the handshake deadline already bounds)
  untrustedLifetimeMs: 60_000,
  perAddress: 16,
  // an SSH connection starts its key exchange at once (~16 KiB each)
  maxUntrusted: 512,
};

/**
 * The node's direct WebSocket listener (`cw node --listen`): as the relay's
 * HTTPS port, with fewer pending connections (a node serves a few people,
 * and its memory belongs to their sessions).
 */
export const NODE_WS_LIMITS: Omit<GuardLimits, "maxConnections"> = {
  ...RELAY_HTTP_LIMITS,
  maxUntrusted: 512,
};

/**
 * Connections at once on the node's unix socket (only its owner can open
 * it): far above what people and scripts open, far below the descriptors.
 */
export const NODE_SOCKET_MAX_CONNECTIONS = 1024;

/**
 * Descriptors kept back from connections: a quarter of the limit, at least
 * 32 and at most 2048 — the store, logs, and on a node every session's PTY
 * and log file (sessions never fail for lack of descriptors because of
 * connections: see {@link NODE_FD_SHARE}).
 */
export function connectionBudget(fdLimit: number, share = 1): FdBudget {
  const reserve = Math.min(2048, Math.max(32, Math.floor(fdLimit / 4)));
  return new FdBudget(Math.floor((fdLimit - reserve) * share), 0);
}

/** A node spends at most half its descriptors on connections; sessions keep the rest. */
export const NODE_FD_SHARE = 0.5;

/**
 * A listener's own cap: the descriptors it may use at three per relayed
 * connection (client, front → server, server side), never above `max`.
 */
export function maxConnectionsFor(budget: FdBudget, max = 65_536): number {
  return Math.max(1, Math.min(max, Math.floor(budget.free / 3)));
}
