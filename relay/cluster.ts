/**
 * Relay replicas on one shared store (PostgreSQL): any replica reaches any
 * node.
 *
 * - **Leases.** Each replica renews its lease in the store every
 *   {@link HEARTBEAT_MS} (valid {@link REPLICA_LEASE_MS}) and records each
 *   node link it accepts (`claimLink`). A node's newest link wins, on
 *   whichever replica it lands; a replica whose link was taken over closes
 *   its own at the next heartbeat. A dead replica's links stop counting when
 *   its lease ends, so a node that reconnected elsewhere is reachable at once,
 *   and one that did not is reported offline within the lease.
 * - **Forwarding.** A replica asked for a node it does not hold looks up the
 *   holder's `--peer-url` and forwards over an internal connection to it:
 *   - client streams (the node protocol) ride one multiplexed WebSocket per
 *     peer (`/peer/connect`, shared/mux.ts), each stream spliced onto the
 *     node's link stream there: both muxes' windows hold, so flow control
 *     is end to end and a slow reader costs at most a window per hop;
 *   - SSH sessions get a WebSocket of their own (`/peer/dialback`) that the
 *     holder pipes, message for message, to the node's dial-back
 *     connection: the dial-back protocol's acknowledgements
 *     (shared/dialback.ts) bound it end to end.
 *   The forwarding replica checks and audits as for a local node; the
 *   holder only carries bytes.
 * - **Peer authentication.** A secret every replica reads from the store
 *   (made by the first), sent as a bearer token over TLS (`--peer-ca` names
 *   the CA that signed peers' certificates when it is not a public one),
 *   compared by hash in constant time. A caller that presents it is trusted
 *   to say which principal a stream is for, as a node trusts its relay.
 */
import { TICKET_TTL_MS } from "../shared/dialback.ts";
import { CwError } from "../shared/errors.ts";
import type { Logger } from "../shared/logger.ts";
import { Mux, MUX_MAX_STREAMS, type MuxStream, type StreamMeta } from "../shared/mux.ts";
import { encodeJson, FrameKind } from "../shared/protocol.ts";
import { constantTimeEqual, hashSecret } from "../shared/secrets.ts";
import { type ClientWebSocket, connectWebSocket } from "../shared/ws_client.ts";
import type { Hub, LiveNode } from "./hub.ts";
import type { Principal } from "./principals.ts";
import type { LinkRecord, RelayStore } from "./store.ts";

/** How long a replica's lease lasts without renewal. */
export const REPLICA_LEASE_MS = 3_000;
/** How often a replica renews its lease. */
export const HEARTBEAT_MS = 1_000;
/** Longest wait for a peer's WebSocket handshake. */
export const PEER_CONNECT_TIMEOUT_MS = 5_000;
/** How long a forwarding replica waits for the holder's answer to a dial-back (its own wait is TICKET_TTL_MS). */
export const PEER_DIALBACK_DEADLINE_MS = TICKET_TTL_MS + 5_000;
/** Multiplexed connections to one peer at most (each carries up to MUX_MAX_STREAMS streams). */
export const PEER_MAX_CONNECTIONS = 16;
/** Most features a peer may report for a node. */
const MAX_FEATURES = 16;
/** Peers' routes. */
export const PEER_PATHS = {
  connect: "/peer/connect",
  dialback: "/peer/dialback",
  dialin: "/peer/dialin",
} as const;

/** What the cluster needs. */
export interface ClusterDeps {
  store: RelayStore;
  logger: Logger;
  hub: Hub;
  now: () => Date;
  /** PEM CAs to trust for peers' TLS (absent: the system's). */
  peerCaCerts?: string[];
}

/** A node's link held by another replica. */
export type RemoteLink = LinkRecord & { peerUrl: string };

/** This replica's part in the cluster; see the file's comment. */
export class Cluster {
  readonly id = crypto.randomUUID();
  #deps: ClusterDeps;
  #secret: string;
  #secretHash: string;
  #timer: ReturnType<typeof setInterval> | null = null;
  /** Connections to each peer: another is opened when one carries its most streams. */
  #peers = new Map<string, Promise<Mux>[]>();
  #linkIds = new WeakMap<LiveNode, { id: string; at: number }>();
  #features = new Map<string, string[]>();
  #beating = false;
  #warned = 0;
  #stopped = false;
  #peerUrl: string | null = null;

  private constructor(deps: ClusterDeps, secret: string, secretHash: string) {
    this.#deps = deps;
    this.#secret = secret;
    this.#secretHash = secretHash;
  }

  /** Reads (or makes) the peer secret; {@link start} joins. */
  static async create(deps: ClusterDeps): Promise<Cluster> {
    const secret = await deps.store.sharedValue("peer-secret", () => {
      const bytes = crypto.getRandomValues(new Uint8Array(32));
      return `cwp_${bytes.toBase64({ alphabet: "base64url", omitPadding: true })}`;
    });
    return new Cluster(deps, secret, await hashSecret(secret));
  }

  /** Takes a lease with this replica's address for peers, and keeps renewing it. */
  async start(peerUrl: string): Promise<void> {
    this.#peerUrl = peerUrl;
    await this.#beat();
    this.#timer = setInterval(() => void this.#beat(), HEARTBEAT_MS);
  }

  /** Records a link this replica accepted. */
  async linkUp(live: LiveNode): Promise<void> {
    const id = crypto.randomUUID();
    // `at` is set once the claim is stored: a heartbeat that read the links before that must
    // not take the missing row for a takeover by another replica
    const mine = { id, at: Infinity };
    this.#linkIds.set(live, mine);
    await this.#deps.store.claimLink(live.name, this.id, id, this.#deps.now());
    mine.at = Date.now();
  }

  /** Forgets a link that ended (unless the node's newer link replaced it). */
  async linkDown(live: LiveNode): Promise<void> {
    const held = this.#linkIds.get(live);
    if (held) await this.#deps.store.releaseLink(live.name, held.id);
  }

  /** The node's link on another live replica, if one holds it. */
  async locate(name: string): Promise<RemoteLink | null> {
    const link = await this.#deps.store.getLink(name, this.#deps.now());
    if (!link || link.replica === this.id || !link.peerUrl) return null;
    return link as RemoteLink;
  }

  /** Names of nodes linked to any live replica (this one's included). */
  async onlineNodes(): Promise<Set<string>> {
    return new Set((await this.#deps.store.listLinks(this.#deps.now())).map((l) => l.node));
  }

  /** What a remote node said it speaks (as last seen through a peer). */
  features(name: string): string[] | undefined {
    return this.#features.get(name);
  }

  /** Whether `authorization` carries the peer secret. */
  async isPeer(authorization: string | undefined): Promise<boolean> {
    const m = /^Bearer\s+(\S+)$/i.exec(authorization ?? "");
    return m !== null && constantTimeEqual(await hashSecret(m[1]), this.#secretHash);
  }

  /** Opens a node-protocol stream to `link.node` through the replica holding it. */
  async openStream(link: RemoteLink, meta: StreamMeta): Promise<MuxStream> {
    const mux = await this.#peer(link.peerUrl);
    return mux.open({ ...meta, node: link.node });
  }

  /**
   * A dial-back connection to `link.node` for an SSH session of `principal`,
   * through the replica holding it: resolves once the node connected back there.
   */
  async dialback(link: RemoteLink, principal: Principal): Promise<WebSocket> {
    const url = new URL(PEER_PATHS.dialback, link.peerUrl);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const ws = await connectWebSocket(url, {
      headers: {
        authorization: `Bearer ${this.#secret}`,
        "x-cw-node": link.node,
        "x-cw-principal": JSON.stringify(principal),
      },
      caCerts: this.#deps.peerCaCerts,
      timeoutMs: PEER_CONNECT_TIMEOUT_MS,
    });
    // the holder's first message says what the node speaks, or why it cannot be reached; a
    // holder that says nothing is given up after its own deadline for the node has passed
    const first = await new Promise<string | null>((resolve) => {
      const timer = setTimeout(() => resolve(null), PEER_DIALBACK_DEADLINE_MS);
      ws.addEventListener("close", () => clearTimeout(timer), { once: true });
      ws.addEventListener("message", () => clearTimeout(timer), { once: true });
      ws.addEventListener(
        "message",
        (e) =>
          resolve(typeof (e as MessageEvent).data === "string" ? (e as MessageEvent).data : null),
        { once: true },
      );
      ws.addEventListener("close", () => resolve(null), { once: true });
    });
    let hello: { features?: unknown; error?: { code?: unknown; message?: unknown } } = {};
    try {
      hello = JSON.parse(first ?? "null") ?? {};
    } catch { /* below */ }
    if (hello.error) {
      ws.close();
      throw new CwError(
        hello.error.code === "node_offline" ? "node_offline" : "timeout",
        String(hello.error.message ?? "").slice(0, 200),
      );
    }
    if (!Array.isArray(hello.features)) {
      ws.close();
      throw new CwError("node_offline", `Node "${link.node}": its relay replica did not answer`);
    }
    this.#features.set(
      link.node,
      hello.features.filter((f): f is string => typeof f === "string").slice(0, MAX_FEATURES),
    );
    return ws as unknown as WebSocket;
  }

  /**
   * A node's dial-back that reached this replica with a ticket of `link`'s
   * replica: carried there (`/peer/dialin`), message for message; the
   * dial-back protocol's acknowledgements bound what is in flight.
   */
  async dialin(link: RemoteLink, ticket: string, node: WebSocket): Promise<void> {
    const url = new URL(PEER_PATHS.dialin, link.peerUrl);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const peer = await connectWebSocket(url, {
      headers: {
        authorization: `Bearer ${this.#secret}`,
        "x-cw-node": link.node,
        "x-cw-ticket": ticket,
      },
      caCerts: this.#deps.peerCaCerts,
      timeoutMs: PEER_CONNECT_TIMEOUT_MS,
    });
    pipeSockets(node, peer as unknown as WebSocket);
  }

  /**
   * Serves a peer's multiplexed connection (`/peer/connect`): each stream it
   * opens is spliced onto the named node's link here, if this replica holds it.
   */
  servePeer(socket: WebSocket, from: string): void {
    // the mux owns the socket from here; it ends with it
    new Mux(socket, {
      onStream: (stream, meta) => this.#forward(stream, meta),
      onClose: (reason) => this.#deps.logger.info(`peer ${from} disconnected: ${reason}`),
    }, { role: "accept" });
    this.#deps.logger.info(`peer ${from} connected`);
  }

  #forward(stream: MuxStream, meta: StreamMeta): void {
    const name = typeof meta.node === "string" ? meta.node : "";
    const live = this.#deps.hub.get(name);
    let nodeStream: MuxStream;
    try {
      if (!live) throw new Error("not linked here");
      nodeStream = live.mux.open({ kind: "node", principal: meta.principal });
    } catch {
      // the node left this replica meanwhile: the client hears it in the node protocol
      const w = stream.writable.getWriter();
      void w.write(encodeJson(FrameKind.ERROR, {
        code: "node_offline",
        message: `Node "${name.slice(0, 64)}" is offline`,
      })).then(() => w.close()).catch(() => {}).finally(() => stream.close());
      return;
    }
    const end = () => {
      stream.close();
      nodeStream.close();
    };
    stream.readable.pipeTo(nodeStream.writable).catch(() => {}).finally(end);
    nodeStream.readable.pipeTo(stream.writable).catch(() => {}).finally(end);
  }

  /**
   * A multiplexed connection to a peer with room for a stream: opened on first
   * use, again after one ends, and another when all are full
   * ({@link MUX_MAX_STREAMS} each), up to {@link PEER_MAX_CONNECTIONS}.
   */
  async #peer(peerUrl: string): Promise<Mux> {
    const pool = this.#peers.get(peerUrl) ?? [];
    this.#peers.set(peerUrl, pool);
    for (const opening of [...pool]) {
      const mux = await opening.catch(() => null);
      if (mux && mux.closedReason === null && mux.streamCount < MUX_MAX_STREAMS) return mux;
    }
    if (pool.length >= PEER_MAX_CONNECTIONS) {
      throw new CwError(
        "rate_limited",
        `${PEER_MAX_CONNECTIONS * MUX_MAX_STREAMS} streams to one replica already`,
      );
    }
    return await this.#dialPeer(peerUrl, pool);
  }

  #dialPeer(peerUrl: string, pool: Promise<Mux>[]): Promise<Mux> {
    const drop = () => {
      const i = pool.indexOf(opening);
      if (i !== -1) pool.splice(i, 1);
    };
    const url = new URL(PEER_PATHS.connect, peerUrl);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const opening = connectWebSocket(url, {
      headers: { authorization: `Bearer ${this.#secret}`, "x-cw-replica": this.id },
      caCerts: this.#deps.peerCaCerts,
      timeoutMs: PEER_CONNECT_TIMEOUT_MS,
    }).then((ws: ClientWebSocket) =>
      new Mux(ws as unknown as WebSocket, { onClose: drop }, { role: "dial" })
    );
    pool.push(opening);
    opening.catch(drop);
    return opening;
  }

  /** Renews the lease; closes links another replica took over. Never throws. */
  async #beat(): Promise<void> {
    if (this.#beating || this.#stopped) return;
    this.#beating = true;
    const started = Date.now();
    try {
      const held = await this.#deps.store.heartbeat(
        { id: this.id, peerUrl: this.#peerUrl },
        REPLICA_LEASE_MS,
        this.#deps.now(),
      );
      for (const live of this.#deps.hub.all()) {
        const mine = this.#linkIds.get(live);
        if (mine && mine.at < started && !held.has(mine.id)) {
          this.#deps.hub.disconnect(live.name, "the node linked to another relay replica");
        }
      }
    } catch (err) {
      // the store is away: the lease lapses and peers stop forwarding here; say so, not every second
      if (Date.now() - this.#warned > 30_000) {
        this.#warned = Date.now();
        this.#deps.logger.warn(`cluster: cannot renew the lease: ${(err as Error).message}`);
      }
    } finally {
      this.#beating = false;
    }
  }

  /** Leaves: ends the lease and forgets this replica's links, closes peer connections. */
  async leave(): Promise<void> {
    this.#stopped = true;
    if (this.#timer !== null) clearInterval(this.#timer);
    for (const pool of this.#peers.values()) {
      for (const p of pool) p.then((m) => m.close("leaving"), () => {});
    }
    this.#peers.clear();
    await this.#deps.store.leave(this.id).catch(() => {});
  }
}

/** Passes binary messages both ways between two open sockets; either closing closes the other. */
export function pipeSockets(a: WebSocket, b: WebSocket): void {
  a.binaryType = "arraybuffer";
  b.binaryType = "arraybuffer";
  const pass = (from: WebSocket, to: WebSocket) => {
    from.addEventListener("message", (e) => {
      if (e.data instanceof ArrayBuffer && to.readyState === WebSocket.OPEN) {
        to.send(new Uint8Array(e.data));
      }
    });
    from.addEventListener("close", () => {
      try {
        to.close(1000);
      } catch { /* closed */ }
    });
  };
  pass(a, b);
  pass(b, a);
}
