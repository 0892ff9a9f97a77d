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
import { paths, WEB_COOKIE, type WebCode, type WebSessionRow } from "../shared/api.ts";
import { CwError } from "../shared/errors.ts";
import { printable } from "../shared/printable.ts";
import { constantTimeEqual, hashSecretSync } from "../shared/secrets.ts";
import type { AuditLog } from "./audit.ts";
import type { Gate } from "./gate.ts";
import type { Ctx, Env } from "./http.ts";
import type { Principal } from "./principals.ts";

/** A login code is good this long, once. */
export const WEB_CODE_TTL_MS = 2 * 60_000;
/** A browser session unused this long ends. */
export const WEB_IDLE_MS = 24 * 3600_000;
/** A browser session ends this long after its login, used or not. */
export const WEB_MAX_AGE_MS = 7 * 24 * 3600_000;
/** Codes outstanding at most (each principal may hold {@link WEB_CODES_PER_PRINCIPAL}). */
export const WEB_MAX_CODES = 1024;
export const WEB_CODES_PER_PRINCIPAL = 8;
/** Browser sessions at most, and per principal (the oldest of a principal's goes first). */
export const WEB_MAX_SESSIONS = 4096;
export const WEB_SESSIONS_PER_PRINCIPAL = 32;

interface Code {
  principal: Principal;
  expiresAt: number;
}

interface Session {
  id: string;
  hash: string;
  principal: Principal;
  createdAt: number;
  lastUsedAt: number;
  addr: string;
  userAgent: string;
}

function random(bytes: number): string {
  return crypto.getRandomValues(new Uint8Array(bytes)).toBase64({
    alphabet: "base64url",
    omitPadding: true,
  });
}

/** The relay's browser sessions; see the file's comment. */
export class WebSessions {
  #codes = new Map<string, Code>();
  #sessions = new Map<string, Session>();
  #now: () => number;

  constructor(now: () => Date) {
    this.#now = () => now().getTime();
  }

  /** A new login code for `p`. */
  createCode(p: Principal): { code: string; expiresAt: number } {
    this.#sweep();
    const mine = [...this.#codes.values()].filter((c) => c.principal.id === p.id).length;
    if (this.#codes.size >= WEB_MAX_CODES || mine >= WEB_CODES_PER_PRINCIPAL) {
      throw new CwError("rate_limited", "Too many login codes outstanding; wait 2 minutes");
    }
    const code = `cwl_${random(32)}`;
    const expiresAt = this.#now() + WEB_CODE_TTL_MS;
    this.#codes.set(hashSecretSync(code), { principal: p, expiresAt });
    return { code, expiresAt };
  }

  /** Trades a code (once, before it expires) for a session: its cookie value, or null. */
  redeem(
    code: string,
    addr: string,
    userAgent: string,
  ): { token: string; session: Session } | null {
    if (typeof code !== "string" || code.length > 256) return null;
    const hash = hashSecretSync(code);
    const found = this.#codes.get(hash);
    this.#codes.delete(hash); // good once, whatever happens next
    if (!found || found.expiresAt <= this.#now()) return null;
    const p = found.principal;
    const mine = [...this.#sessions.values()].filter((s) => s.principal.id === p.id)
      .sort((a, b) => a.createdAt - b.createdAt);
    while (mine.length >= WEB_SESSIONS_PER_PRINCIPAL) this.#end(mine.shift()!);
    this.#sweep();
    if (this.#sessions.size >= WEB_MAX_SESSIONS) {
      throw new CwError("rate_limited", "Too many browser sessions on this relay");
    }
    const token = `cws_${random(32)}`;
    const now = this.#now();
    const session: Session = {
      id: random(9),
      hash: hashSecretSync(token),
      principal: p,
      createdAt: now,
      lastUsedAt: now,
      addr,
      userAgent: printable(userAgent.slice(0, 200)),
    };
    this.#sessions.set(session.hash, session);
    return { token, session };
  }

  /** The principal of a cookie's session, or null; using it keeps it alive. */
  principalOf(token: string): { principal: Principal; session: Session } | null {
    if (token.length > 256) return null;
    const s = this.#sessions.get(hashSecretSync(token));
    if (!s || !constantTimeEqual(s.hash, hashSecretSync(token))) return null;
    const now = this.#now();
    if (now - s.lastUsedAt > WEB_IDLE_MS || now - s.createdAt > WEB_MAX_AGE_MS) {
      this.#end(s);
      return null;
    }
    s.lastUsedAt = now;
    return { principal: s.principal, session: s };
  }

  /** Sessions `p` may see: its own (the admin: all). */
  list(p: Principal): WebSessionRow[] {
    this.#sweep();
    return [...this.#sessions.values()]
      .filter((s) => p.kind === "admin" || s.principal.id === p.id)
      .map((s) => ({
        id: s.id,
        principal: s.principal.id,
        network: s.principal.network,
        readOnly: s.principal.readOnly,
        createdAt: new Date(s.createdAt).toISOString(),
        lastUsedAt: new Date(s.lastUsedAt).toISOString(),
        addr: s.addr,
        userAgent: s.userAgent,
      }));
  }

  /** Ends session `id` if `p` may (its own; the admin: any); false if there is none. */
  revoke(id: string, p: Principal): Session | null {
    const s = [...this.#sessions.values()].find((x) => x.id === id);
    if (!s || (p.kind !== "admin" && s.principal.id !== p.id)) return null;
    this.#end(s);
    return s;
  }

  /** Ends a session by its object (logout). */
  end(s: Session): void {
    this.#end(s);
  }

  /** Ends every session and code of principal `id` (it was revoked). */
  cut(id: string): void {
    for (const s of [...this.#sessions.values()]) if (s.principal.id === id) this.#end(s);
    for (const [h, c] of [...this.#codes]) if (c.principal.id === id) this.#codes.delete(h);
  }

  /** The principals that hold sessions (for the revocation check). */
  principalIds(): string[] {
    return [...new Set([...this.#sessions.values()].map((s) => s.principal.id))];
  }

  #end(s: Session): void {
    this.#sessions.delete(s.hash);
  }

  #sweep(): void {
    const now = this.#now();
    for (const [h, c] of [...this.#codes]) if (c.expiresAt <= now) this.#codes.delete(h);
    for (const s of [...this.#sessions.values()]) {
      if (now - s.lastUsedAt > WEB_IDLE_MS || now - s.createdAt > WEB_MAX_AGE_MS) this.#end(s);
    }
  }
}

/** The session cookie's value in a request, if any. */
export function cookieToken(c: Ctx): string | null {
  const header = c.req.header("cookie") ?? "";
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq !== -1 && part.slice(0, eq).trim() === WEB_COOKIE) return part.slice(eq + 1).trim();
  }
  return null;
}

/**
 * Whether a request comes from the relay's own pages: its Origin header names
 * the host it was sent to. (A browser always sends Origin on a POST, DELETE
 * or WebSocket upgrade; a page of another site cannot forge it.)
 */
export function fromOwnPages(c: Ctx, baseUrl: string): boolean {
  const origin = c.req.header("origin");
  if (!origin) return false;
  try {
    // the host it was sent to (HTTP/1.1's Host, or HTTP/2's :authority, as the URL has it), or
    // the relay's public URL (behind a proxy, the request names the proxy's upstream)
    return new URL(origin).host === new URL(c.req.url).host ||
      new URL(origin).origin === new URL(baseUrl).origin;
  } catch {
    return false;
  }
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
    const body = await c.req.json().catch(() => null) as { code?: unknown } | null;
    const addr = c.get("addr");
    const got = web.redeem(String(body?.code ?? ""), addr, c.req.header("user-agent") ?? "");
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
    c.header(
      "set-cookie",
      `${WEB_COOKIE}=${token}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=${
        Math.floor(WEB_MAX_AGE_MS / 1000)
      }`,
    );
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
    c.header("set-cookie", `${WEB_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0`);
    return c.json({ ok: true });
  });

  app.get(paths.webSessions, async (c) => {
    const p = await gate.authenticate(c);
    return c.json({ sessions: web.list(p) });
  });

  app.delete(`${paths.webSessions}/:id`, async (c) => {
    const p = await gate.authenticate(c);
    const ended = web.revoke(c.req.param("id"), p);
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
