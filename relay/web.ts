/**
 * Browsers on the relay, without typing a token on a phone: a credential
 * holder asks for a one-time code (`cw web`), opens the link it makes (the
 * code is in the URL's fragment, which no server or proxy log ever sees), and
 * the page trades the code for a session cookie (HttpOnly, Secure,
 * SameSite=Strict). The session carries the principal that made the code
 * (its network, read-only or not) and dies with it: revoking the node or user
 * ends its browser sessions too.
 *
 * Codes live 2 minutes and are good once; sessions end after an idle day or
 * a week in all, and can be listed and ended (`cw web sessions`, `cw web
 * revoke`). Both are held by this relay process, hashed (a relay restart logs
 * browsers out; codes are short-lived anyway). Every request a cookie
 * authenticates must come from the relay's own origin when it changes
 * anything (the Origin header must name the Host), and every WebSocket
 * upgrade too: a page elsewhere can neither act with the cookie nor open a
 * session's stream. Limits below, named once.
 */
import type { Hono } from "hono";
import {
  cookieOf,
  fromOwnPage,
  loginCode,
  sessionCookie,
  WEB_MAX_AGE_MS,
  WebSessions as Sessions,
} from "../shared/web_sessions.ts";
import { paths, type WebCode, type WebSessionRow } from "../shared/api.ts";
import { CwError } from "../shared/errors.ts";
import type { AuditLog } from "./audit.ts";
import type { Gate } from "./gate.ts";
import type { Ctx, Env } from "./http.ts";
import type { Principal } from "./principals.ts";

/** The relay's browser sessions: each acts as the principal that made its code. */
export class WebSessions extends Sessions<Principal> {}

/** The session cookie's value in a request, if any. */
export function cookieToken(c: Ctx): string | null {
  return cookieOf(c.req.raw);
}

/** Whether a request comes from the relay's own pages (see shared/web_sessions.ts). */
export function fromOwnPages(c: Ctx, baseUrl: string): boolean {
  return fromOwnPage(c.req.raw, baseUrl);
}

/** A session as `cw web sessions` shows it. */
function row(s: ReturnType<WebSessions["list"]>[number]): WebSessionRow {
  return {
    id: s.id,
    principal: s.principal.id,
    network: s.principal.network,
    readOnly: s.principal.readOnly,
    createdAt: new Date(s.createdAt).toISOString(),
    lastUsedAt: new Date(s.lastUsedAt).toISOString(),
    addr: s.addr,
    userAgent: s.userAgent,
  };
}

/** The routes of browser logins and sessions. */
export function webRoutes(
  app: Hono<Env>,
  deps: { web: WebSessions; gate: Gate; audit: AuditLog; baseUrl: () => string },
): void {
  const { web, gate, audit } = deps;

  // a credential holder (bearer token, not a browser) asks for a login link
  app.post(paths.webCodes, async (c) => {
    const p = await gate.authenticate(c, { cookie: false });
    const { code, expiresAt } = web.createCode(p);
    audit.record({
      event: "web_code_created",
      principal: p.id,
      network: p.network,
      addr: c.get("addr"),
    });
    const body: WebCode = {
      url: `${deps.baseUrl().replace(/\/$/, "")}/#login=${code}`,
      expiresAt: new Date(expiresAt).toISOString(),
    };
    return c.json(body, 201);
  });

  // the page trades the code for the cookie
  app.post(paths.webLogin, async (c) => {
    if (!fromOwnPages(c, deps.baseUrl())) {
      throw new CwError("forbidden", "Log in from the relay's own page");
    }
    const addr = c.get("addr");
    const got = web.redeem(await loginCode(c.req.raw), addr, c.req.header("user-agent") ?? "");
    if (!got) {
      gate.failed(c, "invalid login code");
      audit.record({ event: "web_login_failed", principal: null, network: null, addr });
      throw new CwError("unauthorized", "This login link is not valid (used, expired or wrong)");
    }
    const { token, session } = got;
    audit.record({
      event: "web_login",
      principal: session.principal.id,
      network: session.principal.network,
      addr,
      webSession: session.id,
    });
    c.header("set-cookie", sessionCookie(token, WEB_MAX_AGE_MS));
    const p = session.principal;
    return c.json({ kind: p.kind, name: p.name, network: p.network, readOnly: p.readOnly });
  });

  app.post(paths.webLogout, (c) => {
    const token = cookieToken(c);
    const found = token ? web.principalOf(token) : null;
    if (found) {
      if (!fromOwnPages(c, deps.baseUrl())) {
        throw new CwError("forbidden", "Log out from the relay's own page");
      }
      web.end(found.session);
      audit.record({
        event: "web_session_ended",
        principal: found.principal.id,
        network: found.principal.network,
        addr: c.get("addr"),
        webSession: found.session.id,
        reason: "logout",
      });
    }
    c.header("set-cookie", sessionCookie(null, 0));
    return c.json({ ok: true });
  });

  app.get(paths.webSessions, async (c) => {
    const p = await gate.authenticate(c);
    const mine = (x: Principal) => p.kind === "admin" || x.id === p.id;
    return c.json({ sessions: web.list(mine).map(row) });
  });

  app.delete(`${paths.webSessions}/:id`, async (c) => {
    const p = await gate.authenticate(c);
    const ended = web.revoke(c.req.param("id"), (x) => p.kind === "admin" || x.id === p.id);
    if (!ended) {
      throw new CwError("not_found", `No browser session "${c.req.param("id")}" of yours`);
    }
    audit.record({
      event: "web_session_ended",
      principal: p.id,
      network: p.network,
      addr: c.get("addr"),
      webSession: ended.id,
      owner: ended.principal.id,
      reason: "revoked",
    });
    return c.json({ ok: true });
  });
}
