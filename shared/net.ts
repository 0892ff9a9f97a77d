/** Parses `HOST:PORT`, `[v6]:PORT` or `:PORT` (all interfaces). Throws RangeError. */
export function parseListen(value: string): { hostname: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):([0-9]{1,5})$/.exec(value);
  if (!m || Number(m[3]) > 65535) {
    throw new RangeError(`Invalid listen address "${value}"; use HOST:PORT`);
  }
  return { hostname: m[1] ?? (m[2] || "0.0.0.0"), port: Number(m[3]) };
}

/**
 * Whether a host is loopback only: `localhost`, `::1` (bracketed, as in a
 * URL, or not) or an IPv4 address in 127.0.0.0/8. A name such as
 * `127.example.com` is not.
 */
export function isLoopback(hostname: string): boolean {
  const host = hostname.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  return host === "localhost" || host === "::1" ||
    /^127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$/.test(host);
}

/**
 * Whether what is sent to `url` would cross the network in clear text: plain
 * `http:` or `ws:` to a host that is not loopback. Secrets go there only when
 * the user says the network is private (`--insecure`).
 */
export function isCleartextRemote(url: URL): boolean {
  return (url.protocol === "http:" || url.protocol === "ws:") && !isLoopback(url.hostname);
}
