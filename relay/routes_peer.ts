/**
 * What relay replicas offer one another (relay/cluster.ts): `/peer/connect`,
 * a multiplexed connection whose streams reach the nodes linked here, and
 * `/peer/dialback`, one SSH session's dial-back connection to a node linked
 * here. Both need the peer secret; nothing else opens them.
 */
import type { Hono } from "hono";
import { CwError } from "../shared/errors.ts";
import { LINK_MAX_MESSAGE } from "../shared/listener_limits.ts";
import type { Cluster } from "./cluster.ts";
import { PEER_PATHS, pipeSockets } from "./cluster.ts";
import { type Ctx, type Env, expectWebSocket, peerOf, upgrade } from "./http.ts";
import type { Hub } from "./hub.ts";
import type { Principal } from "./principals.ts";

/** What the peer routes need. */
export interface PeerRoutesDeps {
  cluster: Cluster | null;
  hub: Hub;
  /** A dial-back connection from a node linked to this replica (links.ts), never forwarded again. */
  dialbackHere(name: string, principal: Principal): Promise<WebSocket>;
  /** Takes this replica's dial-back ticket, presented by `node` to another replica. */
  claimTicket(ticket: string, node: string): Promise<{ resolve(ws: WebSocket): void } | null>;
  /** Counts and audits a failed authentication (relay/gate.ts): throws when the address is over its limit. */
  failed(c: Ctx, reason: string): void;
}

/** Mounts the peer routes; without a cluster they answer 404 like any unknown path. */
export function peerRoutes(app: Hono<Env>, deps: PeerRoutesDeps): void {
  const admit = async (c: Ctx) => {
    const cluster = deps.cluster;
    if (!cluster) throw new CwError("not_found", `No route GET ${new URL(c.req.url).pathname}`);
    if (!(await cluster.isPeer(c.req.header("authorization")))) {
      deps.failed(c, "invalid peer secret");
      throw new CwError("unauthorized", "Only a relay replica of this store may connect here");
    }
    expectWebSocket(c);
    peerOf(c)?.trust();
    return cluster;
  };

  app.get(PEER_PATHS.connect, async (c) => {
    const cluster = await admit(c as unknown as Ctx);
    // headers first: the request is gone once upgraded
    const from = `${c.get("addr")} (${(c.req.header("x-cw-replica") ?? "?").slice(0, 40)})`;
    const { socket, response } = upgrade(c, LINK_MAX_MESSAGE);
    socket.addEventListener("open", () => cluster.servePeer(socket, from), { once: true });
    return response;
  });

  app.get(PEER_PATHS.dialback, async (c) => {
    await admit(c as unknown as Ctx);
    const name = c.req.header("x-cw-node") ?? "";
    const principal = principalOf(c.req.header("x-cw-principal"));
    if (!principal) throw new CwError("bad_request", "Send the principal in X-Cw-Principal");
    const { socket, response } = upgrade(c, LINK_MAX_MESSAGE);
    socket.binaryType = "arraybuffer";
    socket.addEventListener("open", async () => {
      let node: WebSocket;
      try {
        node = await deps.dialbackHere(name, principal);
      } catch (err) {
        const code = err instanceof CwError ? err.code : "internal";
        const message = err instanceof CwError ? err.message : "cannot reach the node";
        if (socket.readyState === WebSocket.OPEN) {
          socket.send(JSON.stringify({ error: { code, message } }));
          socket.close(1000);
        }
        return;
      }
      if (socket.readyState !== WebSocket.OPEN) return node.close();
      socket.send(JSON.stringify({ features: deps.hub.get(name)?.features ?? [] }));
      // message for message: the dial-back protocol's acknowledgements bound what is in flight
      pipeSockets(node, socket);
    }, { once: true });
    return response;
  });

  // a node's dial-back that reached another replica, carrying one of this replica's tickets
  app.get(PEER_PATHS.dialin, async (c) => {
    await admit(c as unknown as Ctx);
    const node = c.req.header("x-cw-node") ?? "";
    const ticket = c.req.header("x-cw-ticket") ?? "";
    const entry = ticket && node ? await deps.claimTicket(ticket, node) : null;
    if (!entry) throw new CwError("forbidden", "Invalid, used or expired dial-back ticket");
    const { socket, response } = upgrade(c as unknown as Ctx, LINK_MAX_MESSAGE);
    socket.addEventListener("open", () => entry.resolve(socket), { once: true });
    return response;
  });
}

/** A principal a peer forwarded, checked for shape. */
function principalOf(header: string | undefined): Principal | null {
  try {
    const v = JSON.parse(header ?? "null");
    const str = (x: unknown) => typeof x === "string" && x.length <= 300;
    if (
      v && str(v.id) && str(v.kind) && (v.name === null || str(v.name)) &&
      (v.network === null || str(v.network)) && typeof v.readOnly === "boolean"
    ) {
      return { id: v.id, kind: v.kind, name: v.name, network: v.network, readOnly: v.readOnly };
    }
  } catch { /* below */ }
  return null;
}
