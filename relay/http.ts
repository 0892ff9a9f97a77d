/**
 * What every route group of the relay shares: the Hono context's variables,
 * request body reading, the WebSocket upgrade guard and the caller's address.
 */
import type { Context } from "hono";
import { CwError } from "../shared/errors.ts";
import type { Peer } from "../shared/guarded_listener.ts";
import { upgradeWebSocket } from "../shared/guarded_http.ts";
import type { Principal } from "./principals.ts";

/** Largest JSON body of the client API. */
export const MAX_JSON_BODY = 64 * 1024;

/** Variables a request carries through the middleware. */
export type Env = { Variables: { principal: Principal; addr: string } };

/** The relay's Hono context. */
export type Ctx = Context<Env>;

/** The guarded connection behind a request (absent under `app.request` in tests). */
export function peerOf(c: Ctx): Peer | undefined {
  return (c.env as { peer?: Peer } | undefined)?.peer;
}

/** The client's address: the connection's, or the trusted proxy's last X-Forwarded-For hop. */
export function clientAddr(c: Ctx, trustedProxy: string | null | undefined): string {
  const info = (c.env as { remoteAddr?: Deno.NetAddr } | undefined)?.remoteAddr;
  const peer = info?.hostname ?? "unknown";
  if (trustedProxy && peer === trustedProxy) {
    const xff = c.req.header("x-forwarded-for")?.split(",").at(-1)?.trim();
    if (xff) return xff.slice(0, 64);
  }
  return peer;
}

/** Throws 400 unless the request asks for a WebSocket. */
export function expectWebSocket(c: Ctx): void {
  if ((c.req.header("upgrade") ?? "").toLowerCase() !== "websocket") {
    throw new CwError("bad_request", "Expected a WebSocket upgrade");
  }
}

/** Refuses a browser's cross-origin upgrade (another site's page must not use a user's cookies or network). */
export function sameOrigin(c: Ctx, baseUrl: string | null): void {
  const origin = c.req.header("origin");
  if (origin !== undefined && (baseUrl === null || origin !== new URL(baseUrl).origin)) {
    throw new CwError("forbidden", "Cross-origin WebSocket upgrades are refused");
  }
}

/** Upgrades to a WebSocket whose messages are at most `maxMessage` bytes (see guarded_http). */
export function upgrade(c: Ctx, maxMessage: number, opts: { onTake?: boolean } = {}) {
  expectWebSocket(c);
  return upgradeWebSocket(c.req.raw, peerOf(c), maxMessage, opts);
}

/** Reads a JSON object body of at most {@link MAX_JSON_BODY} bytes. */
export async function jsonBody(c: Ctx): Promise<Record<string, unknown>> {
  const length = Number(c.req.header("content-length") ?? "0");
  if (length > MAX_JSON_BODY) throw new CwError("too_large", `Body over ${MAX_JSON_BODY} bytes`);
  const text = await readLimited(c.req.raw, MAX_JSON_BODY);
  let value: unknown;
  try {
    value = JSON.parse(text || "{}");
  } catch {
    throw new CwError("bad_request", "The body is not valid JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new CwError("bad_request", "The body must be a JSON object");
  }
  return value as Record<string, unknown>;
}

async function readLimited(req: Request, limit: number): Promise<string> {
  if (!req.body) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of req.body) {
    size += chunk.byteLength;
    if (size > limit) throw new CwError("too_large", `Body over ${limit} bytes`);
    chunks.push(chunk);
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const ch of chunks) {
    all.set(ch, at);
    at += ch.byteLength;
  }
  return new TextDecoder().decode(all);
}
