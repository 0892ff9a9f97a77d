/**
 * The door of every authenticated route: reads the bearer token, finds its
 * principal, limits failures per address, ties the connection to the
 * principal when the answer is long-lived (so revoking it closes the
 * connection) and audits failures.
 */
import type { MiddlewareHandler } from "hono";
import { CwError } from "../shared/errors.ts";
import { RateLimiter } from "../shared/rate_limit.ts";
import { addressKey } from "../shared/guarded_listener.ts";
import type { AuditLog } from "./audit.ts";
import { type Ctx, type Env, peerOf } from "./http.ts";
import { cookieToken, fromOwnPages, type WebSessions } from "./web.ts";
import {
  ADMIN,
  type Authenticator,
  type Closable,
  type Connections,
  type Principal,
} from "./principals.ts";

/** Failed authentications allowed per address: per minute, and in a burst. */
export const AUTH_FAILURES_PER_MINUTE = 30;
/** Burst of {@link AUTH_FAILURES_PER_MINUTE}. */
export const AUTH_FAILURES_BURST = 20;

/** What the gate needs. */
export interface GateDeps {
  auth: Authenticator;
  connections: Connections;
  audit: AuditLog;
  authMode: "token" | "none";
  /** Browser sessions (absent: cookies are ignored). */
  web?: WebSessions;
  /** The relay's public URL (a browser's pages come from its origin). */
  baseUrl: () => string;
}

/** Authenticates requests; see the file's comment. */
export class Gate {
  #deps: GateDeps;
  #failures = new RateLimiter(AUTH_FAILURES_PER_MINUTE, AUTH_FAILURES_BURST);

  /** A gate over `deps`. */
  constructor(deps: GateDeps) {
    this.#deps = deps;
  }

  /**
   * The principal of a request, or throws 401 (unknown, revoked and expired
   * alike) or 429 (too many failures from this address; IPv6 counted by /64,
   * so that one host cannot spread a guessing run, or audit lines, over its prefix). A valid credential
   * always gets in: an attacker behind the same NAT must not lock out its
   * users, so the limiter only decides how a *failed* attempt is answered.
   */
  async authenticate(c: Ctx, opts: { cookie?: boolean } = {}): Promise<Principal> {
    const header = c.req.header("authorization");
    const m = /^Bearer\s+(\S+)$/i.exec(header ?? "");
    // a browser's session cookie, when there is no bearer token (relay/web.ts)
    const cookie = header === undefined && opts.cookie !== false && this.#deps.web
      ? cookieToken(c)
      : null;
    if (cookie !== null) return this.#fromCookie(c, cookie);
    const found = m ? await this.#deps.auth.principalOf(m[1]) : null;
    const peer = peerOf(c);
    if (this.#deps.authMode === "none") {
      // no credentials needed; a node's own credential still says which node it is
      peer?.trust();
      return found?.kind === "node" ? found : ADMIN;
    }
    if (found === null) {
      this.failed(c, m ? "invalid credential" : "no credential");
      throw new CwError(
        "unauthorized",
        m ? "Invalid credential" : "Missing credential: send Authorization: Bearer TOKEN",
      );
    }
    peer?.trust();
    return found;
  }

  /**
   * The principal of a browser session. A cookie goes with every request a
   * browser makes to this host, whichever page asks: what changes anything,
   * and every WebSocket, must come from the relay's own origin.
   */
  #fromCookie(c: Ctx, token: string): Principal {
    const found = this.#deps.web!.principalOf(token);
    if (!found) {
      this.failed(c, "invalid session cookie");
      throw new CwError("unauthorized", "Your browser session has ended: open a new login link");
    }
    const method = c.req.method;
    const upgrade = (c.req.header("upgrade") ?? "").toLowerCase() === "websocket";
    if (
      (upgrade || (method !== "GET" && method !== "HEAD")) && !fromOwnPages(c, this.#deps.baseUrl())
    ) {
      this.#deps.audit.record({
        event: "refused",
        principal: found.principal.id,
        network: found.principal.network,
        addr: c.get("addr"),
        route: `${method} ${new URL(c.req.url).pathname}`.slice(0, 200),
        reason: "cross-origin request with a browser session",
      });
      throw new CwError("forbidden", "Cross-origin requests may not use a browser session");
    }
    peerOf(c)?.trust();
    return found.principal;
  }

  /**
   * Counts a failed attempt from this request's address: throws `rate_limited`
   * past the limit, else audits it.
   */
  failed(c: Ctx, reason: string): void {
    const addr = c.get("addr");
    if (!this.#failures.take(addressKey(addr))) {
      throw new CwError("rate_limited", "Too many failed attempts from this address; try later");
    }
    this.#deps.audit.record({
      event: "auth_failed",
      principal: null,
      network: null,
      addr,
      route: `${c.req.method} ${new URL(c.req.url).pathname}`.slice(0, 200),
      reason,
    });
  }

  /**
   * Ties a long-lived answer to `p`: the connection of a WebSocket, or
   * `what` (a KV watch); revoking `p` closes it. Plain requests are not tied — each is
   * authenticated again, and a keep-alive connection a proxy shares between
   * users must not be cut for one of them.
   */
  hold(c: Ctx, p: Principal, what?: Closable): void {
    const held = what ?? peerOf(c);
    if (held) this.#deps.connections.hold(p.id, held);
  }

  /**
   * Middleware: authenticates, sets `principal`, and refuses with 403 a
   * principal that is not the admin (`admin`) or is read-only (`write`).
   */
  require(needs: "any" | "write" | "admin" = "any"): MiddlewareHandler<Env> {
    return async (c, next) => {
      const p = await this.authenticate(c);
      if (needs === "admin" && p.kind !== "admin") {
        throw new CwError("forbidden", "This needs the admin token");
      }
      if (needs === "write" && p.readOnly) {
        throw new CwError("forbidden", `${p.id} is read-only`);
      }
      c.set("principal", p);
      await next();
    };
  }
}
