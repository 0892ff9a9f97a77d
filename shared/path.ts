/**
 * POSIX path helpers as `node:path` has them (the same answers; a test holds
 * them to it), for the files every client command loads: importing
 * `node:path` or `node:url` starts Deno's Node compatibility layer, ~12 ms of
 * every `cw list`. cw runs on Linux and macOS only.
 */

/** node:path's `normalize`. */
export function normalize(p: string): string {
  if (p === "") return ".";
  const absolute = p.startsWith("/");
  const trailing = p.endsWith("/");
  const out: string[] = [];
  for (const part of p.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (out.length > 0 && out[out.length - 1] !== "..") out.pop();
      else if (!absolute) out.push("..");
      continue;
    }
    out.push(part);
  }
  const s = out.join("/");
  if (s === "") return absolute ? "/" : trailing ? "./" : ".";
  return (absolute ? "/" : "") + s + (trailing ? "/" : "");
}

/** node:path's `join`. */
export function join(...parts: string[]): string {
  const joined = parts.filter((p) => p !== "").join("/");
  return joined === "" ? "." : normalize(joined);
}

/** node:path's `dirname` (its algorithm: the double slash before the last part is kept). */
export function dirname(p: string): string {
  if (p === "") return ".";
  const root = p[0] === "/";
  let end = -1;
  let trailing = true;
  for (let i = p.length - 1; i >= 1; i--) {
    if (p[i] === "/") {
      if (!trailing) {
        end = i;
        break;
      }
    } else trailing = false;
  }
  if (end === -1) return root ? "/" : ".";
  if (root && end === 1) return "//";
  return p.slice(0, end);
}

/** node:path's `basename` (without the suffix argument). */
export function basename(p: string): string {
  let start = 0;
  let end = -1;
  let trailing = true;
  for (let i = p.length - 1; i >= 0; i--) {
    if (p[i] === "/") {
      if (!trailing) {
        start = i + 1;
        break;
      }
    } else if (end === -1) {
      trailing = false;
      end = i + 1;
    }
  }
  return end === -1 ? "" : p.slice(start, end);
}

/** node:url's `fileURLToPath` for file: URLs of this machine. */
export function fromFileUrl(url: string | URL): string {
  const u = url instanceof URL ? url : new URL(url);
  if (u.protocol !== "file:") throw new TypeError("The URL must be of scheme file");
  if (u.hostname !== "" && u.hostname !== "localhost") {
    throw new TypeError(`File URL host must be "localhost" or empty on ${Deno.build.os}`);
  }
  if (/%2f/i.test(u.pathname)) {
    throw new TypeError("File URL path must not include encoded / characters");
  }
  return decodeURIComponent(u.pathname);
}
