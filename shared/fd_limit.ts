/**
 * The process's file-descriptor limit: read from `/proc/self/limits`, raised
 * from the soft to the hard limit through libc's `setrlimit` (the only FFI
 * call outside the PTY worker; it lives in this file). A relay or node at the
 * default soft limit (often 1024) would run out of descriptors long before
 * its memory; service managers should still set `LimitNOFILE=` (systemd) or
 * `ulimit -n` high, since an unprivileged process cannot go past the hard limit.
 */

/** Soft and hard `RLIMIT_NOFILE`; null when the platform does not say. */
export interface FdLimits {
  soft: number;
  hard: number;
}

/** macOS refuses a soft limit above OPEN_MAX even when the hard limit is "unlimited". */
const DARWIN_OPEN_MAX = 10_240;

/** Reads the limits; null where `/proc/self/limits` is missing (macOS). */
export function readFdLimits(): FdLimits | null {
  try {
    const text = Deno.readTextFileSync("/proc/self/limits");
    const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(text);
    if (!m) return null;
    const num = (s: string) => s === "unlimited" ? Number.MAX_SAFE_INTEGER : Number(s);
    return { soft: num(m[1]), hard: num(m[2]) };
  } catch {
    return null;
  }
}

/**
 * Raises the soft descriptor limit to the hard one where the platform allows,
 * and returns the limit in force afterwards (the soft one). Never throws: with
 * no FFI permission or no libc it leaves the limit as it is.
 */
export function raiseFdLimit(): { limit: number; raisedFrom: number | null; error: string | null } {
  const before = readFdLimits();
  const os = Deno.build.os;
  if (os !== "linux" && os !== "darwin") {
    return { limit: before?.soft ?? 1024, raisedFrom: null, error: `not supported on ${os}` };
  }
  const RLIMIT_NOFILE = os === "linux" ? 7 : 8;
  let lib:
    | Deno.DynamicLibrary<{
      getrlimit: { parameters: ["i32", "buffer"]; result: "i32" };
      setrlimit: { parameters: ["i32", "buffer"]; result: "i32" };
    }>
    | null = null;
  try {
    lib = Deno.dlopen(os === "linux" ? "libc.so.6" : "/usr/lib/libSystem.B.dylib", {
      getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
      setrlimit: { parameters: ["i32", "buffer"], result: "i32" },
    });
    const lim = new BigUint64Array(2);
    if (lib.symbols.getrlimit(RLIMIT_NOFILE, lim) !== 0) throw new Error("getrlimit failed");
    const soft = lim[0];
    let hard = lim[1];
    if (os === "darwin" && hard > BigInt(DARWIN_OPEN_MAX)) hard = BigInt(DARWIN_OPEN_MAX);
    if (soft >= hard) return { limit: Number(soft), raisedFrom: null, error: null };
    lim[0] = hard;
    if (lib.symbols.setrlimit(RLIMIT_NOFILE, lim) !== 0) throw new Error("setrlimit failed");
    return { limit: Number(hard), raisedFrom: Number(soft), error: null };
  } catch (err) {
    return { limit: before?.soft ?? 1024, raisedFrom: null, error: (err as Error).message };
  } finally {
    lib?.close();
  }
}
