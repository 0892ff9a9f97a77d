import { errorResponse } from "../shared/api.ts";
import { join } from "node:path";
import type { Logger } from "../shared/logger.ts";
import { RateLimiter } from "../shared/rate_limit.ts";
import { constantTimeEqual, hashSecret, newToken } from "../shared/secrets.ts";
import { writeFileAtomic } from "../shared/paths.ts";
import { wsDuplex } from "../shared/ws_duplex.ts";
import type { Duplex } from "../shared/duplex.ts";
import { serveGuardedHttp, upgradeWebSocket } from "../shared/guarded_http.ts";
import { addressKey, type FdBudget } from "../shared/guarded_listener.ts";
import {
  maxConnectionsFor,
  NODE_WS_LIMITS,
  STREAM_MAX_MESSAGE,
} from "../shared/listener_limits.ts";

/** Where the direct listener's token lives (0600; the owner can print it). */
export function nodeTokenPath(home: string): string {
  return join(home, "node.token");
}

/** The node token, created on first use; `rotate` replaces it. */
export function nodeToken(home: string, rotate = false): string {
  const path = nodeTokenPath(home);
  if (!rotate) {
    try {
      const token = Deno.readTextFileSync(path).trim();
      if (token) return token;
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
  const token = newToken("cwt");
  writeFileAtomic(path, token + "\n", 0o600);
  return token;
}

/** Settings of the direct WebSocket listener. */
export interface ListenOptions {
  hostname: string;
  port: number;
  tls: { cert: string; key: string } | null;
  home: string;
  logger: Logger;
  /** The node's descriptors for connections. */
  budget: FdBudget;
  serve(duplex: Duplex): void;
}

/**
 * Serves the node protocol over WebSocket (`wss://host:port/`), for clients
 * that reach the node directly (`cw server add`). The token is read at each
 * connection, so `cw node token --rotate` takes effect at once; browsers'
 * cross-origin upgrades are refused; failures are rate-limited per address
 * (a valid token always gets in). The port sits behind a guarded front
 * (shared/guarded_listener.ts): handshake deadline, idle timeout and caps for
 * connections that have not shown the token.
 */
export async function listenWebSocket(
  opts: ListenOptions,
): Promise<{ url: string; close(): Promise<void> }> {
  const failures = new RateLimiter(30, 20);
  const server = await serveGuardedHttp({
    hostname: opts.hostname,
    port: opts.port,
    tls: opts.tls,
    name: "listen",
    limits: { ...NODE_WS_LIMITS, maxConnections: maxConnectionsFor(opts.budget) },
    budget: opts.budget,
    logger: opts.logger,
  }, async (req, info) => {
    const addr = info.remoteAddr.hostname;
    const path = new URL(req.url).pathname;
    if (path !== "/") return errorResponse("not_found", `No route ${path}`);
    if (req.headers.get("origin") !== null) {
      return errorResponse("forbidden", "Cross-origin WebSocket upgrades are refused");
    }
    const m = /^Bearer\s+(\S+)$/i.exec(req.headers.get("authorization") ?? "");
    const expected = await hashSecret(nodeToken(opts.home));
    if (!m || !constantTimeEqual(await hashSecret(m[1]), expected)) {
      // only failures are limited: a valid token from the same address always gets in
      if (!failures.take(addressKey(addr))) {
        return errorResponse("rate_limited", "Too many failed attempts; try later");
      }
      return errorResponse("unauthorized", "Missing or invalid node token");
    }
    info.peer.trust();
    if ((req.headers.get("upgrade") ?? "").toLowerCase() !== "websocket") {
      return errorResponse("bad_request", "Expected a WebSocket upgrade");
    }
    const { socket, response, taken } = upgradeWebSocket(req, info.peer, STREAM_MAX_MESSAGE, {
      onTake: false,
    });
    opts.serve(wsDuplex(socket, { onTaken: taken }));
    return response;
  });
  const addr = server.addr;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  const url = `${opts.tls ? "wss" : "ws"}://${host}:${addr.port}/`;
  opts.logger.info(`serving the node protocol on ${url}`);
  return {
    url,
    close: async () => {
      await server.shutdown();
      await server.close(1000);
    },
  };
}
