/**
 * Browser logins, for any server of cw (the relay, a node's direct
 * listener): one-time codes traded for session cookies. What a code is good
 * for, how long sessions live, and how a request proves it comes from the
 * server's own pages; the HTTP routes are the server's (relay/web.ts,
 * node/ws_listener.ts). Codes and sessions are held hashed, in memory.
 */
import { WEB_COOKIE } from "./api.ts";
import { CwError } from "./errors.ts";
import { printable } from "./printable.ts";
import { constantTimeEqual, hashSecretSync } from "./secrets.ts";

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

interface Code<P> {
  principal: P;
  expiresAt: number;
}

/** One browser session (its secret only as a hash). */
export interface WebSession<P> {
  id: string;
  hash: string;
  principal: P;
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

/**
 * Browser sessions of one server (the relay, or a node's direct listener);
 * `P` is who a code and its session act as (`id` names it for revocation).
 */
export class WebSessions<P extends { id: string }> {
  #codes = new Map<string, Code<P>>();
  #sessions = new Map<string, WebSession<P>>();
  #now: () => number;

  constructor(now: () => Date) {
    this.#now = () => now().getTime();
  }

  /** A new login code for `p`. */
  createCode(p: P): { code: string; expiresAt: number } {
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
  ): { token: string; session: WebSession<P> } | null {
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
    const session: WebSession<P> = {
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
  principalOf(token: string): { principal: P; session: WebSession<P> } | null {
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

  /** The sessions whose principal `visible` accepts. */
  list(visible: (p: P) => boolean): WebSession<P>[] {
    this.#sweep();
    return [...this.#sessions.values()].filter((s) => visible(s.principal));
  }

  /** Ends session `id` if `allowed` accepts its principal; null if there is none such. */
  revoke(id: string, allowed: (p: P) => boolean): WebSession<P> | null {
    const s = [...this.#sessions.values()].find((x) => x.id === id);
    if (!s || !allowed(s.principal)) return null;
    this.#end(s);
    return s;
  }

  /** Ends a session by its object (logout). */
  end(s: WebSession<P>): void {
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

  #end(s: WebSession<P>): void {
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
export function cookieOf(req: Request): string | null {
  const header = req.headers.get("cookie") ?? "";
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq !== -1 && part.slice(0, eq).trim() === WEB_COOKIE) return part.slice(eq + 1).trim();
  }
  return null;
}

/**
 * Whether a request comes from the server's own pages: its Origin header
 * names the host it was sent to (HTTP/1.1's Host, or HTTP/2's :authority, as
 * the URL has it), or `baseUrl`'s origin (behind a proxy, the request names
 * the proxy's upstream). A browser always sends Origin on a POST, DELETE or
 * WebSocket upgrade; a page of another site cannot forge it.
 */
export function fromOwnPage(req: Request, baseUrl: string | null): boolean {
  const origin = req.headers.get("origin");
  if (!origin) return false;
  try {
    return new URL(origin).host === new URL(req.url).host ||
      (baseUrl !== null && new URL(origin).origin === new URL(baseUrl).origin);
  } catch {
    return false;
  }
}

/** The Set-Cookie value of a new session (or, with `null`, of its end). */
export function sessionCookie(token: string | null, maxAgeMs: number): string {
  return `${WEB_COOKIE}=${token ?? ""}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=${
    token === null ? 0 : Math.floor(maxAgeMs / 1000)
  }`;
}

/** Most bytes of a login request's body (`{"code":"cwl_…"}`). */
const LOGIN_BODY_MAX = 1024;

/** The code of a login request (`{"code": …}`), read from at most 1 KiB; "" for anything else. */
export async function loginCode(req: Request): Promise<string> {
  if (!req.body) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for await (const chunk of req.body) {
      size += chunk.byteLength;
      if (size > LOGIN_BODY_MAX) return "";
      chunks.push(chunk);
    }
    const text = new TextDecoder().decode(
      chunks.length === 1 ? chunks[0] : new Uint8Array(chunks.flatMap((c) => [...c])),
    );
    const code = (JSON.parse(text) as { code?: unknown } | null)?.code;
    return typeof code === "string" ? code : "";
  } catch {
    return "";
  }
}
