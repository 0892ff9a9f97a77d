/**
 * An HTTP(S) server behind a {@link listenGuarded} front: Deno.serve runs on a
 * private loopback port (with TLS, when given: Deno cannot close a TLS
 * connection that never finished its handshake, but the front can close its
 * TCP side), and the handler gets the real client as `peer` (whose
 * `webSocket()` is called at an upgrade, so that the front bounds what the
 * client may send ahead of the server). Requests that reach the private port
 * without the front are refused. Should Deno.serve's own accept loop die, a new one is started on a
 * new private port.
 */
import { errorResponse } from "./api.ts";
import type { Logger } from "./logger.ts";
import { setListenerNoDelay } from "./libc.ts";
import {
  type FdBudget,
  type GuardedListener,
  type GuardLimits,
  listenGuarded,
  type Peer,
} from "./guarded_listener.ts";

/** What a guarded HTTP handler receives besides the request. */
export interface GuardedInfo {
  /** The client's address, as the front accepted it. */
  remoteAddr: Deno.NetAddr;
  /** The connection: `trust()` it once the client authenticated. */
  peer: Peer;
}

/** Options of {@link serveGuardedHttp}. */
export interface GuardedHttpOptions {
  hostname: string;
  port: number;
  tls: { cert: string; key: string } | null;
  name: string;
  limits: GuardLimits;
  budget: FdBudget;
  logger: Logger;
  exemptAddress?: string | null;
}

/** A running guarded HTTP server. */
export interface GuardedHttpServer {
  readonly addr: Deno.NetAddr;
  readonly front: GuardedListener;
  /** Stops accepting; resolves when the requests in flight are done. */
  shutdown(): Promise<void>;
  /** Waits up to `ms` for connections to finish (their last bytes), then closes the rest. */
  close(ms?: number): Promise<void>;
}

const refused = () =>
  errorResponse("forbidden", "Connect through the public address", { connection: "close" });

/** Starts the server; resolves once it listens. */
export async function serveGuardedHttp(
  opts: GuardedHttpOptions,
  handler: (req: Request, info: GuardedInfo) => Response | Promise<Response>,
): Promise<GuardedHttpServer> {
  let server: Deno.HttpServer<Deno.NetAddr>;
  let backendPort = 0;
  let stopping = false;
  let front: GuardedListener | null = null;

  const start = async (): Promise<void> => {
    const ready = Promise.withResolvers<number>();
    server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      ...(opts.tls ?? {}),
      onListen: (addr) => ready.resolve(addr.port),
      onError: (err) => {
        opts.logger.error(`${opts.name}: handler failed: ${(err as Error)?.stack ?? err}`);
        return errorResponse("internal", "Internal error");
      },
    }, (req, info) => {
      const peer = front?.peer(info.remoteAddr.port);
      if (!peer) return refused();
      peer.handshakeDone();
      return handler(req, {
        peer,
        remoteAddr: { transport: "tcp", hostname: peer.address, port: peer.port },
      });
    });
    backendPort = await ready.promise;
    // its sockets then get TCP_NODELAY too: the loopback hop must not hold small writes ~40 ms
    if (!setListenerNoDelay(backendPort)) {
      opts.logger.warn(`${opts.name}: cannot set TCP_NODELAY on the private port`);
    }
    server.finished.catch(async (err) => {
      if (stopping) return;
      opts.logger.error(`${opts.name}: the HTTP server stopped (${err}); starting a new one`);
      // out of descriptors, a new one may not start at once either: keep trying
      for (let delay = 50; !stopping; delay = Math.min(delay * 2, 2000)) {
        try {
          return await start();
        } catch (e) {
          opts.logger.error(`${opts.name}: cannot restart (${e}); retrying in ${delay} ms`);
          await new Promise((r) => setTimeout(r, delay));
        }
      }
    });
  };
  await start();
  front = listenGuarded({
    hostname: opts.hostname,
    port: opts.port,
    name: opts.name,
    limits: opts.limits,
    budget: opts.budget,
    logger: opts.logger,
    exemptAddress: opts.exemptAddress,
    backendPort: () => backendPort,
  });
  const f = front;
  return {
    addr: f.addr,
    front: f,
    shutdown() {
      stopping = true;
      f.stopAccepting();
      return server.shutdown().catch(() => {});
    },
    close(ms = 0) {
      stopping = true;
      return f.close(ms);
    },
  };
}

/**
 * Upgrades a request to a WebSocket (no idle pings: cw's protocols have their
 * own) and tells the front how large its messages may be, so that the front
 * never lets the client get more than about `maxMessage` bytes ahead of the
 * server. By default a message counts as taken when it arrives (a reader that
 * handles messages at once, like the link mux); with `{ onTake: false }` the
 * caller reports it with the returned `taken` when its reader consumes it
 * (`wsDuplex`'s `onTaken`), so a slow reader holds the client back over TCP
 * instead of queueing. `peer` is absent under `app.request` in tests.
 */
export function upgradeWebSocket(
  req: Request,
  peer: Peer | undefined,
  maxMessage: number,
  opts: { onTake?: boolean } = {},
): { socket: WebSocket; response: Response; taken(bytes: number): void } {
  const upgraded = Deno.upgradeWebSocket(req, { idleTimeout: 0 });
  const taken = (bytes: number) => peer?.delivered(bytes);
  if (peer) {
    peer.webSocket(maxMessage);
    if (opts.onTake !== false) {
      upgraded.socket.addEventListener("message", (e) => taken(messageSize(e.data)));
    }
  }
  return { ...upgraded, taken };
}

/** A message's size in bytes (a string's UTF-8 size is at most three bytes a UTF-16 unit). */
export function messageSize(d: unknown): number {
  return d instanceof ArrayBuffer
    ? d.byteLength
    : d instanceof Blob
    ? d.size
    : String(d).length * 3;
}
