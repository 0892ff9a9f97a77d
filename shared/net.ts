/** Parses `HOST:PORT`, `[v6]:PORT` or `:PORT` (all interfaces). Throws RangeError. */
export function parseListen(value: string): { hostname: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):([0-9]{1,5})$/.exec(value);
  if (!m || Number(m[3]) > 65535) {
    throw new RangeError(`Invalid listen address "${value}"; use HOST:PORT`);
  }
  return { hostname: m[1] ?? (m[2] || "0.0.0.0"), port: Number(m[3]) };
}

/** Whether a listen host is loopback only. */
export function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" || /^127\./.test(hostname);
}
