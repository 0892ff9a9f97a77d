/**
 * The few libc calls cw makes through FFI, all in this file (the PTY worker's
 * addon aside):
 *
 * - the process's file-descriptor limit: read from `/proc/self/limits`,
 *   raised from the soft to the hard limit with `setrlimit`. A relay or node
 *   at the default soft limit (often 1024) would run out of descriptors long
 *   before its memory; service managers should still set `LimitNOFILE=`
 *   (systemd) or `ulimit -n` high: a process cannot go past the hard limit;
 * - TCP_NODELAY on a listening socket Deno opened itself (Deno.serve has no
 *   option for it), which accepted sockets inherit on Linux;
 * - small reads of /proc/PID files, which Deno refuses without --allow-all
 *   (the node's view of its sessions' CPU: node/activity.ts).
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

const SYMBOLS = {
  getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  setrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
} as const;
type Libc = Deno.DynamicLibrary<typeof SYMBOLS>;

function openLibc(): Libc {
  return Deno.dlopen(
    Deno.build.os === "linux" ? "libc.so.6" : "/usr/lib/libSystem.B.dylib",
    SYMBOLS,
  );
}

/**
 * Sets TCP_NODELAY on this process's listening socket bound to
 * 127.0.0.1:`port`, so that every socket it accepts has it (Linux inherits
 * it). Deno.serve's sockets otherwise hold a small write back until the
 * previous one is acknowledged: ~40 ms against a delayed ACK. Linux only;
 * false where it could not be done.
 */
export function setListenerNoDelay(port: number): boolean {
  if (Deno.build.os !== "linux") return false;
  let lib: Libc | null = null;
  try {
    lib = openLibc();
    const addr = new Uint8Array(128);
    const len = new Uint32Array(1);
    const one = new Int32Array([1]);
    // Deno lets no one list /proc/self/fd without --allow-all: ask every descriptor
    // (getsockname fails fast on one that is not a socket or not open)
    const last = Math.min(readFdLimits()?.soft ?? 4096, 1 << 16);
    for (let fd = 3; fd < last; fd++) {
      len[0] = addr.byteLength;
      if (lib.symbols.getsockname(fd, addr, len) !== 0) continue;
      const family = addr[0] | (addr[1] << 8); // sa_family_t, little-endian on Linux
      const bound = (addr[2] << 8) | addr[3]; // sin_port, network order
      const loopback = addr[4] === 127 && addr[5] === 0 && addr[6] === 0 && addr[7] === 1;
      if (family !== 2 || bound !== port || !loopback) continue; // AF_INET
      // IPPROTO_TCP = 6, TCP_NODELAY = 1
      return lib.symbols.setsockopt(fd, 6, 1, one, 4) === 0;
    }
    return false;
  } catch {
    return false;
  } finally {
    lib?.close();
  }
}

let procLibc: Libc | null | undefined;

/**
 * Reads a small file of /proc (Linux), at most `max` bytes; null when it
 * cannot. Deno refuses every read under /proc/PID without --allow-all, so the
 * node, which watches its sessions' processes (node/activity.ts), reads them
 * through libc; nothing else should.
 */
export function readProcFile(path: string, max = 4096): string | null {
  if (Deno.build.os !== "linux" || !path.startsWith("/proc/")) return null;
  try {
    procLibc ??= openLibc();
  } catch {
    procLibc = null;
  }
  if (!procLibc) return null;
  const fd = procLibc.symbols.open(new TextEncoder().encode(`${path}\0`), 0o2000000); // O_CLOEXEC
  if (fd < 0) return null;
  try {
    const buf = new Uint8Array(max);
    let got = 0;
    while (got < max) {
      const n = Number(procLibc.symbols.read(fd, buf.subarray(got), BigInt(max - got)));
      if (n <= 0) break;
      got += n;
    }
    return new TextDecoder().decode(buf.subarray(0, got));
  } finally {
    procLibc.symbols.close(fd);
  }
}
