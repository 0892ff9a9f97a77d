import { errorResponse, type NodeRow, type WebCode } from "../shared/api.ts";
import { webAsset } from "../shared/web_assets.ts";
import {
  cookieOf,
  fromOwnPage,
  loginCode,
  sessionCookie,
  WEB_MAX_AGE_MS,
  WebSessions,
} from "../shared/web_sessions.ts";
import { join } from "node:path";
import type { Logger } from "../shared/logger.ts";
import { RateLimiter } from "../shared/rate_limit.ts";
import { constantTimeEqual, hashSecret, newToken } from "../shared/secrets.ts";
import { writeFileAtomic } from "../shared/paths.ts";
import { wsDuplex } from "../shared/ws_duplex.ts";
import type { Duplex } from "../shared/duplex.ts";
import { type GuardedInfo, serveGuardedHttp, upgradeWebSocket } from "../shared/guarded_http.ts";
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
  /** null when the request shows the node token; else the answer (limited per address). */
  const checkToken = async (req: Request, addr: string): Promise<Response | null> => {
    const m = /^Bearer\s+(\S+)$/i.exec(req.headers.get("authorization") ?? "");
    const expected = await hashSecret(nodeToken(opts.home));
    if (m && constantTimeEqual(await hashSecret(m[1]), expected)) return null;
    // only failures are limited: a valid token from the same address always gets in
    if (!failures.take(addressKey(addr))) {
      return errorResponse("rate_limited", "Too many failed attempts; try later");
    }
    return errorResponse("unauthorized", "Missing or invalid node token");
  };
  // browsers: a session acts as the node token that made its code (rotating the token ends it)
  const web = new WebSessions<{ id: string }>(() => new Date());
  const tokenId = async () => (await hashSecret(nodeToken(opts.home))).slice(0, 16);
  const name = Deno.hostname();
  const browser = async (req: Request, addr: string): Promise<Response | true> => {
    const token = cookieOf(req);
    const found = token ? web.principalOf(token) : null;
    if (!found || found.principal.id !== await tokenId()) {
      if (!failures.take(addressKey(addr))) {
        return errorResponse("rate_limited", "Too many failed attempts; try later");
      }
      return errorResponse("unauthorized", "Your browser session has ended: open a new login link");
    }
    const changes = req.method !== "GET" ||
      (req.headers.get("upgrade") ?? "").toLowerCase() === "websocket";
    if (changes && !fromOwnPage(req, null)) {
      return errorResponse("forbidden", "Cross-origin requests may not use a browser session");
    }
    return true;
  };
  const browserApi = async (
    req: Request,
    info: GuardedInfo,
    path: string,
    addr: string,
  ): Promise<Response> => {
    if (path === "/api/v1/web/codes" && req.method === "POST") {
      const refused = await checkToken(req, addr);
      if (refused) return refused;
      const { code, expiresAt } = web.createCode({ id: await tokenId() });
      opts.logger.info(`web: a login code was made (from ${addr})`);
      const body: WebCode = {
        url: `${new URL(req.url).origin}/#login=${code}`,
        expiresAt: new Date(expiresAt).toISOString(),
      };
      return Response.json(body, { status: 201 });
    }
    if (path === "/api/v1/web/login" && req.method === "POST") {
      if (!fromOwnPage(req, null)) {
        return errorResponse("forbidden", "Log in from this node's own page");
      }
      const got = web.redeem(await loginCode(req), addr, req.headers.get("user-agent") ?? "");
      if (!got || got.session.principal.id !== await tokenId()) {
        if (!failures.take(addressKey(addr))) {
          return errorResponse("rate_limited", "Too many failed attempts; try later");
        }
        return errorResponse(
          "unauthorized",
          "This login link is not valid (used, expired or wrong)",
        );
      }
      opts.logger.info(`web: a browser logged in from ${addr}`);
      return Response.json({ kind: "node", name, network: null, readOnly: false }, {
        headers: { "set-cookie": sessionCookie(got.token, WEB_MAX_AGE_MS) },
      });
    }
    const ok = await browser(req, addr);
    if (ok !== true) return ok;
    info.peer.trust();
    if (path === "/api/v1/whoami" && req.method === "GET") {
      return Response.json({ kind: "node", name, network: null, readOnly: false });
    }
    if (path === "/api/v1/nodes" && req.method === "GET") {
      const node: NodeRow = {
        name,
        network: "direct",
        online: true,
        lastSeenAt: null,
        addr: null,
        version: null,
        sessions: null,
        connectedAt: null,
      };
      return Response.json({ nodes: [node] });
    }
    if (/^\/api\/v1\/nodes\/[^/]+\/connect$/.test(path) && req.method === "GET") {
      if ((req.headers.get("upgrade") ?? "").toLowerCase() !== "websocket") {
        return errorResponse("bad_request", "Expected a WebSocket upgrade");
      }
      const { socket, response, taken } = upgradeWebSocket(req, info.peer, STREAM_MAX_MESSAGE, {
        onTake: false,
      });
      opts.serve(wsDuplex(socket, { onTaken: taken }));
      return response;
    }
    return errorResponse("not_found", `No route ${req.method} ${path}`);
  };
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
    // the web client, in direct mode: its files, and a browser's login and streams
    // (a WebSocket upgrade to `/` is the protocol, not the page)
    if (req.method === "GET" && (req.headers.get("upgrade") ?? "").toLowerCase() !== "websocket") {
      const asset = await webAsset(path);
      if (asset) return asset;
    }
    if (path.startsWith("/api/v1/")) return await browserApi(req, info, path, addr);
    if (path !== "/") return errorResponse("not_found", `No route ${path}`);
    if (req.headers.get("origin") !== null) {
      return errorResponse("forbidden", "Cross-origin WebSocket upgrades are refused");
    }
    const refused = await checkToken(req, addr);
    if (refused) return refused;
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
