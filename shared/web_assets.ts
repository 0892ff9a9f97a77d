/**
 * The web client's files (web/dist/, made by `deno task web`; a compiled cw
 * carries them) for whichever server serves them (the relay at `/`, a node's
 * direct listener at `/`), with headers that keep the page to itself:
 * scripts and connections from its own origin only, no framing, no
 * referrer, no type sniffing.
 */
import { errorResponse } from "./api.ts";

const DIST = new URL("../web/dist/", import.meta.url);
const FILES: Record<string, string> = {
  "/": "index.html",
  "/web/app.js": "app.js",
  "/web/app.css": "app.css",
  "/web/xterm.css": "xterm.css",
};
const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
};
const HEADERS = {
  "content-security-policy": [
    "default-src 'self'",
    "script-src 'self'",
    // xterm sizes its rows with inline styles
    "style-src 'self' 'unsafe-inline'",
    "connect-src 'self'",
    "img-src 'self' data:",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "form-action 'self'",
  ].join("; "),
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
  "cache-control": "no-cache",
};

const cache = new Map<string, Uint8Array>();

/** The response for `path` if it is one of the web client's files, else null. */
export async function webAsset(path: string): Promise<Response | null> {
  const file = FILES[path];
  if (file === undefined) return null;
  let body = cache.get(file);
  if (!body) {
    try {
      body = await Deno.readFile(new URL(file, DIST));
    } catch {
      return errorResponse("not_found", "The web client is not built here: run deno task web");
    }
    cache.set(file, body);
  }
  const type = TYPES[file.slice(file.lastIndexOf(".") + 1)];
  return new Response(body as Uint8Array<ArrayBuffer>, {
    headers: { ...HEADERS, "content-type": type },
  });
}

/** The paths of the web client's files. */
export const WEB_ASSET_PATHS = Object.keys(FILES);
