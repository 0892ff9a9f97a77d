/**
 * A TCP front for a server that must face the internet: it accepts the
 * connections itself and relays their bytes to the real server (Deno.serve,
 * an ssh2 server), which listens on a private loopback port. Deno.serve and
 * node:net servers give no hold on a connection before its request (their
 * accept loop even dies on EMFILE); this front does:
 *
 * - the accept loop survives `EMFILE`/`ENFILE` (it backs off 5 ms → 1 s and
 *   retries, as Go's net/http does) and any other accept error;
 * - a connection is admitted only while its address has fewer than
 *   `perAddress` untrusted connections, the listener is under its cap and the
 *   process's {@link FdBudget} has descriptors to spare; at a cap, the oldest
 *   connection that has sat for a second without finishing its handshake
 *   makes room (an idle flood cannot keep legitimate clients out), else the
 *   newcomer is refused — a connection past its handshake is never dropped
 *   for a newcomer;
 * - a connection that has not reached the service's handshake mark (its first
 *   HTTP request, SSH authentication) within `handshakeMs` is closed, and so
 *   is an untrusted one idle for `idleMs`; a connection the service trusts
 *   (it authenticated) is exempt from both and from the per-address count;
 * - a peer that only connects costs one descriptor: the loopback hop to the
 *   server is opened when its first byte arrives (at once for a server that
 *   speaks first).
 *
 * The server finds its client's real address with {@link GuardedListener.peer}
 * from the remote port of the loopback connection it sees; a connection to
 * the private port that did not come through the front has no peer and is
 * refused by the callers.
 */
import type { Logger } from "./logger.ts";

/** Limits of one listener; each role names its figures in one place. */
export interface GuardLimits {
  /** Time from accept to the service's handshake mark. */
  handshakeMs: number;
  /** An untrusted connection silent both ways this long is closed. */
  idleMs: number;
  /**
   * An untrusted connection is closed this long after it was accepted, however
   * busy: unauthenticated requests take milliseconds, and a slow body or a
   * trickle of keep-alive requests must not hold a slot for good.
   */
  untrustedLifetimeMs: number;
  /** Untrusted connections at once from one address (IPv6: one /64). */
  perAddress: number;
  /** Connections at once on this listener. */
  maxConnections: number;
  /**
   * Connections at once that have not authenticated: what an idle flood can
   * hold (each costs ~11 KiB of memory and a descriptor or three).
   */
  maxUntrusted: number;
}

/**
 * Descriptors a process may spend on connections, shared by its listeners:
 * the rest is kept for what must never fail for lack of them (session logs
 * and PTYs, the store, the log file).
 */
export class FdBudget {
  #free: number;
  /** `limit` descriptors minus `reserve` kept back. */
  constructor(limit: number, reserve: number) {
    this.#free = Math.max(0, limit - reserve);
  }
  /** Takes `n` descriptors; false (and nothing taken) when not enough are free. */
  take(n: number): boolean {
    if (this.#free < n) return false;
    this.#free -= n;
    return true;
  }
  /** Gives `n` back. */
  give(n: number): void {
    this.#free += n;
  }
  /** Descriptors still free. */
  get free(): number {
    return this.#free;
  }
}

/** The client behind one connection, as the service sees it. */
export interface Peer {
  /** The client's address (hostname part). */
  readonly address: string;
  /** The client's port. */
  readonly port: number;
  /** A request reached the service: the handshake deadline no longer applies. */
  handshakeDone(): void;
  /**
   * The connection becomes a WebSocket whose messages are at most
   * `maxMessage` bytes: from now on the front forwards the client's bytes
   * only while the server has not more than about that much undelivered
   * (see {@link WS_HEAD_ALLOWANCE}); the server reports each message with
   * {@link Peer.delivered}. Deno's WebSocket server would otherwise take a
   * message of up to 64 MiB into memory, even over TLS where the front
   * cannot read the frames.
   */
  webSocket(maxMessage: number): void;
  /** The server received a message of `bytes` bytes from this client. */
  delivered(bytes: number): void;
  /** The peer authenticated: no idle timeout, not counted against its address. */
  trust(): void;
  /** Closes the connection. */
  close(): void;
  /** Calls `fn` once the connection is closed (at once if it is). */
  onClose(fn: () => void): void;
}

/** Counters, for metrics and the benchmark. */
export interface GuardStats {
  open: number;
  untrusted: number;
  accepted: number;
  refused: number;
  handshakeTimeouts: number;
  idleTimeouts: number;
  acceptErrors: number;
  /** Connections closed before their handshake to make room for a newcomer. */
  evicted: number;
}

/** A listening front. */
export interface GuardedListener {
  /** Where it listens. */
  readonly addr: Deno.NetAddr;
  /** The peer behind the loopback connection from `backendPort`. */
  peer(backendPort: number): Peer | undefined;
  /** Counters. */
  stats(): GuardStats;
  /** Stops accepting. */
  stopAccepting(): void;
  /** Stops accepting; waits up to `ms` for the connections to end, then closes the rest. */
  close(ms?: number): Promise<void>;
}

/** What {@link listenGuarded} needs. */
export interface GuardOptions {
  hostname: string;
  port: number;
  /** Name in log lines (e.g. "https", "ssh"). */
  name: string;
  limits: GuardLimits;
  budget: FdBudget;
  logger: Logger;
  /** The private loopback port of the real server (read at each connection). */
  backendPort(): number;
  /** An address not held to `perAddress` (the trusted reverse proxy). */
  exemptAddress?: string | null;
  /**
   * The server speaks first (SSH's version line): open the loopback hop at
   * once rather than at the client's first byte.
   */
  serverSpeaksFirst?: boolean;
}

/** Longest back-off after an accept error. */
const ACCEPT_BACKOFF_MAX_MS = 1000;
/** A connection without its handshake this long may be closed to admit a new one. */
const EVICT_AFTER_MS = 1000;
/** How often deadlines are checked. */
const SWEEP_MS = 500;
/** First read buffer; doubled up to {@link MAX_CHUNK} while reads fill it. */
const MIN_CHUNK = 1024;
const MAX_CHUNK = 64 * 1024;
/** Client bytes before an upgrade that are taken to be its request and TLS handshake. */
export const WS_HEAD_ALLOWANCE = 72 * 1024;
/** Undelivered bytes allowed beyond one largest message (frame headers, one read). */
const WS_SLACK = 128 * 1024;
/** A WebSocket client held back this long without the server taking a message is cut. */
const WS_STALL_MS = 30_000;
/** After one direction ended, how long the other may go on. */
const LINGER_MS = 5000;
/** Descriptors a relayed connection holds: the client's, ours to the server, the server's. */
const FDS_RELAYED = 3;

class Conn implements Peer {
  readonly address: string;
  readonly port: number;
  readonly key: string;
  readonly acceptedAt = Date.now();
  lastActive = Date.now();
  handshaken = false;
  trusted = false;
  closed = false;
  fds = 1;
  client: Deno.TcpConn;
  backend: Deno.TcpConn | null = null;
  backendPort = 0;
  /** Client bytes forwarded to the server in all. */
  forwarded = 0;
  /** Forwarded client bytes the server has not delivered as messages (WebSocket only). */
  undelivered = 0;
  /** The most undelivered bytes allowed; 0 while not a WebSocket. */
  window = 0;
  #wake: (() => void) | null = null;
  #onTrust: (c: Conn) => void;
  #onClose: (() => void)[] = [];

  constructor(client: Deno.TcpConn, onTrust: (c: Conn) => void) {
    const remote = client.remoteAddr as Deno.NetAddr;
    this.client = client;
    this.address = remote.hostname;
    this.port = remote.port;
    this.key = addressKey(remote.hostname);
    this.#onTrust = onTrust;
  }
  handshakeDone(): void {
    this.handshaken = true;
  }
  webSocket(maxMessage: number): void {
    this.window = maxMessage + WS_SLACK;
    // what went before was the upgrade request (and the TLS handshake); beyond
    // that, bytes a client sent ahead count at once
    this.undelivered = Math.max(0, this.forwarded - WS_HEAD_ALLOWANCE);
  }
  delivered(bytes: number): void {
    // credit covers the frame header and TLS record overhead generously; the
    // floor at 0 keeps unused credit from piling up into a big allowance
    this.undelivered = Math.max(0, this.undelivered - (bytes + 64 + (bytes >> 7)));
    this.wakeUp();
  }
  /** Resolves when the server may take more (or the connection closed). */
  room(): Promise<void> {
    return new Promise((r) => this.#wake = r);
  }
  wakeUp(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }
  trust(): void {
    this.handshaken = true;
    if (this.trusted) return;
    this.trusted = true;
    this.#onTrust(this);
  }
  onClose(fn: () => void): void {
    if (this.closed) fn();
    else this.#onClose.push(fn);
  }
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.wakeUp();
    for (const fn of this.#onClose.splice(0)) fn();
    for (const c of [this.client, this.backend]) {
      try {
        c?.close();
      } catch {
        // already closed
      }
    }
  }
}

/** The key an address is counted under: IPv4 as is, IPv6 by its /64. */
export function addressKey(address: string): string {
  if (!address.includes(":")) return address;
  const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (v4) return v4[1];
  const [head, tail] = address.split("::");
  const left = head ? head.split(":") : [];
  const right = tail !== undefined && tail !== "" ? tail.split(":") : [];
  const groups = tail === undefined
    ? left
    : [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right];
  return groups.slice(0, 4).map((g) => g.toLowerCase().replace(/^0+(?=.)/, "")).join(":") +
    "::/64";
}

/** Whether an error means the process (or system) is out of descriptors. */
export function isFdExhausted(err: unknown): boolean {
  const code = (err as { code?: string })?.code;
  return code === "EMFILE" || code === "ENFILE" ||
    /os error 2[34]\)/.test(String((err as Error)?.message));
}

/**
 * Accepts until `running()` is false or the listener closes, handing each
 * connection to `onConn`. A failed accept (out of descriptors, above all)
 * never ends the loop: it backs off 5 ms → {@link ACCEPT_BACKOFF_MAX_MS} and
 * retries, as Go's net/http does.
 */
export async function acceptLoop<C extends Deno.Conn>(
  listener: Deno.Listener<C>,
  opts: {
    name: string;
    logger: Logger;
    running(): boolean;
    onConn(conn: C): void;
    onError?(err: unknown): void;
  },
): Promise<void> {
  let backoff = 0;
  while (opts.running()) {
    let conn: C;
    try {
      conn = await listener.accept();
      backoff = 0;
    } catch (err) {
      if (!opts.running()) return;
      if (err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted) return;
      opts.onError?.(err);
      backoff = Math.min(ACCEPT_BACKOFF_MAX_MS, backoff ? backoff * 2 : 5);
      opts.logger.warn(
        `${opts.name}: accept failed (${
          isFdExhausted(err) ? "out of file descriptors" : (err as Error).message
        }); retrying in ${backoff} ms`,
      );
      await new Promise((r) => setTimeout(r, backoff));
      continue;
    }
    opts.onConn(conn);
  }
}

/** Opens a guarded front on `hostname:port`. */
export function listenGuarded(opts: GuardOptions): GuardedListener {
  const listener = Deno.listen({ hostname: opts.hostname, port: opts.port, transport: "tcp" });
  const limits = opts.limits;
  const conns = new Set<Conn>();
  const byBackendPort = new Map<number, Conn>();
  const untrustedBy = new Map<string, number>();
  const stats: GuardStats = {
    open: 0,
    untrusted: 0,
    accepted: 0,
    refused: 0,
    handshakeTimeouts: 0,
    idleTimeouts: 0,
    acceptErrors: 0,
    evicted: 0,
  };
  let accepting = true;

  const countUntrusted = (key: string, delta: number) => {
    const n = (untrustedBy.get(key) ?? 0) + delta;
    if (n > 0) untrustedBy.set(key, n);
    else untrustedBy.delete(key);
    stats.untrusted += delta;
  };
  const onTrust = (c: Conn) => countUntrusted(c.key, -1);

  const release = (c: Conn) => {
    c.close();
    if (!conns.delete(c)) return;
    if (c.backendPort) byBackendPort.delete(c.backendPort);
    if (!c.trusted) countUntrusted(c.key, -1);
    opts.budget.give(c.fds);
    stats.open--;
  };

  const refuse = (client: Deno.TcpConn, why: string) => {
    stats.refused++;
    try {
      client.close();
    } catch {
      // gone
    }
    opts.logger.warn(`${opts.name}: refused a connection: ${why}`);
  };

  /**
   * Makes room at the caps by closing the oldest connection that has not
   * reached its handshake mark in {@link EVICT_AFTER_MS}: an idle flood cannot
   * keep a legitimate client out, while connections that did their handshake
   * are never dropped for a newcomer.
   */
  const evictStale = (): boolean => {
    const cutoff = Date.now() - EVICT_AFTER_MS;
    for (const c of conns) {
      if (c.acceptedAt > cutoff) return false; // in accept order: the rest are younger
      if (!c.handshaken && !c.closed) {
        stats.evicted++;
        release(c);
        return true;
      }
    }
    return false;
  };

  const admit = (client: Deno.TcpConn) => {
    const remote = client.remoteAddr as Deno.NetAddr;
    const key = addressKey(remote.hostname);
    if (
      remote.hostname !== opts.exemptAddress &&
      (untrustedBy.get(key) ?? 0) >= limits.perAddress
    ) {
      return refuse(client, `${limits.perAddress} unauthenticated connections from ${key}`);
    }
    if (conns.size >= limits.maxConnections && !evictStale()) {
      return refuse(client, `${limits.maxConnections} connections open`);
    }
    if (stats.untrusted >= limits.maxUntrusted && !evictStale()) {
      return refuse(client, `${limits.maxUntrusted} unauthenticated connections open`);
    }
    if (!opts.budget.take(1) && !(evictStale() && opts.budget.take(1))) {
      return refuse(client, "out of file descriptors for connections");
    }
    try {
      client.setNoDelay(true); // without it small writes wait ~40 ms for the peer's ACK
    } catch {
      // not a TCP socket any more
    }
    const c = new Conn(client, onTrust);
    conns.add(c);
    countUntrusted(c.key, 1);
    stats.open++;
    stats.accepted++;
    relay(c).catch((err) => {
      if (!c.closed) opts.logger.warn(`${opts.name}: connection from ${c.address}: ${err}`);
    }).finally(() => release(c));
  };

  const relay = async (c: Conn) => {
    let buf = new Uint8Array(MIN_CHUNK);
    const first = opts.serverSpeaksFirst ? 0 : await c.client.read(buf);
    if (first === null || c.closed) return;
    if (!opts.budget.take(FDS_RELAYED - 1)) {
      stats.refused++;
      opts.logger.warn(`${opts.name}: dropped a connection: out of file descriptors`);
      return;
    }
    c.fds = FDS_RELAYED;
    c.lastActive = Date.now();
    const backend = await Deno.connect({ hostname: "127.0.0.1", port: opts.backendPort() });
    if (c.closed) {
      backend.close();
      return;
    }
    c.backend = backend;
    backend.setNoDelay(true);
    c.backendPort = (backend.localAddr as Deno.NetAddr).port;
    byBackendPort.set(c.backendPort, c);
    if (first > 0) {
      c.forwarded += first;
      await writeAll(backend, buf.subarray(0, first));
    }
    buf = first === buf.byteLength ? new Uint8Array(MIN_CHUNK * 2) : buf;
    // Each direction half-closes the other side at its end (closing a socket with unread
    // input would send RST and could cut the response the client is still reading);
    // an error either way, or the second half not ending within LINGER_MS, ends both.
    const up = pipe(c, c.client, backend, buf, opts.logger);
    const down = pipe(c, backend, c.client, null);
    const ended = await Promise.race([up, down]);
    if (ended === "error") return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all([up, down]),
      new Promise((r) => timer = setTimeout(r, LINGER_MS)),
    ]);
    clearTimeout(timer);
  };

  const sweep = setInterval(() => {
    const now = Date.now();
    for (const c of conns) {
      if (!c.handshaken && now - c.acceptedAt > limits.handshakeMs) {
        stats.handshakeTimeouts++;
        c.close();
      } else if (
        !c.trusted &&
        (now - c.lastActive > limits.idleMs || now - c.acceptedAt > limits.untrustedLifetimeMs)
      ) {
        stats.idleTimeouts++;
        c.close();
      }
    }
  }, SWEEP_MS);
  Deno.unrefTimer(sweep);

  void acceptLoop(listener, {
    name: opts.name,
    logger: opts.logger,
    running: () => accepting,
    onConn: admit,
    onError: () => stats.acceptErrors++,
  });

  const stopAccepting = () => {
    if (!accepting) return;
    accepting = false;
    try {
      listener.close();
    } catch {
      // closed
    }
  };
  return {
    addr: listener.addr as Deno.NetAddr,
    peer: (port) => byBackendPort.get(port),
    stats: () => ({ ...stats }),
    stopAccepting,
    async close(ms = 0) {
      stopAccepting();
      const deadline = Date.now() + ms;
      while (conns.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      clearInterval(sweep);
      for (const c of [...conns]) release(c);
    },
  };
}

/**
 * Copies `from` to `to` until `from` ends, then half-closes `to`; reuses one
 * buffer, grown while reads fill it and shrunk after a few small ones. Says how it ended.
 */
async function pipe(
  c: Conn,
  from: Deno.TcpConn,
  to: Deno.TcpConn,
  buf: Uint8Array | null,
  logger: Logger | null = null,
): Promise<"eof" | "error"> {
  buf ??= new Uint8Array(MIN_CHUNK);
  let small = 0;
  const upstream = from === c.client;
  try {
    while (!c.closed) {
      const n = await from.read(buf);
      if (n === null) {
        await to.closeWrite();
        return "eof";
      }
      c.lastActive = Date.now();
      if (upstream) {
        // a WebSocket client may not get more than a message ahead of the server
        if (c.window > 0 && c.undelivered > c.window && !(await waitForRoom(c))) {
          logger?.warn(
            `closed a WebSocket from ${c.address}: ${c.undelivered} bytes sent ahead of the server`,
          );
          return "error";
        }
        c.forwarded += n;
        if (c.window > 0) c.undelivered += n;
      }
      await writeAll(to, buf.subarray(0, n));
      if (n === buf.byteLength && buf.byteLength < MAX_CHUNK) {
        buf = new Uint8Array(buf.byteLength * 2);
        small = 0;
      } else if (buf.byteLength > MIN_CHUNK && n <= buf.byteLength >> 3 && ++small >= 4) {
        // a quiet connection (a link between bursts) waits on a small buffer again
        buf = new Uint8Array(MIN_CHUNK);
        small = 0;
      }
    }
    return "error";
  } catch {
    return "error"; // either side went away: the connection is over
  }
}

/** Waits until the server took the client's messages; false after {@link WS_STALL_MS}. */
async function waitForRoom(c: Conn): Promise<boolean> {
  const deadline = Date.now() + WS_STALL_MS;
  while (c.undelivered > c.window && !c.closed) {
    const left = deadline - Date.now();
    if (left <= 0) return false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([c.room(), new Promise((r) => timer = setTimeout(r, left))]);
    clearTimeout(timer);
  }
  return !c.closed;
}

async function writeAll(to: Deno.Conn, data: Uint8Array): Promise<void> {
  let at = 0;
  while (at < data.byteLength) at += await to.write(data.subarray(at));
}
