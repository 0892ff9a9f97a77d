/**
 * Nodes: registration by invite, their persistent links (`/node/connect`)
 * and the dial-back connections they open for SSH sessions (`/node/dialback`).
 */
import type { Hono } from "hono";
import { DEFAULT_NETWORK, paths, type RegisterResponse } from "../shared/api.ts";
import { CwError } from "../shared/errors.ts";
import { TICKET_TTL_MS } from "../shared/dialback.ts";
import { LINK_MAX_MESSAGE } from "../shared/listener_limits.ts";
import type { Logger } from "../shared/logger.ts";
import { Mux } from "../shared/mux.ts";
import { checkRelayName, RELAY_NAME_RE } from "../shared/names.ts";
import { RateLimiter } from "../shared/rate_limit.ts";
import { constantTimeEqual, hashSecret, newToken } from "../shared/secrets.ts";
import type { AuditLog } from "./audit.ts";
import type { Cluster } from "./cluster.ts";
import type { Gate } from "./gate.ts";
import { type Ctx, type Env, expectWebSocket, jsonBody, sameOrigin, upgrade } from "./http.ts";
import type { NetworkWebhooks } from "./webhooks.ts";
import type { Hub, LiveNode } from "./hub.ts";
import { type Principal, reaches } from "./principals.ts";
import type { NodeRecord, RelayStore } from "./store.ts";
import { MAX_PENDING_DIALBACKS_PER_NODE, Tickets } from "./tickets.ts";

/** Registrations allowed per address: per minute, and in a burst. */
export const REGISTER_PER_MINUTE = 20;
/** Burst of {@link REGISTER_PER_MINUTE}. */
export const REGISTER_BURST = 10;

/** What the node routes need. */
export interface LinksDeps {
  store: RelayStore;
  logger: Logger;
  audit: AuditLog;
  hub: Hub;
  gate: Gate;
  now: () => Date;
  authMode: "token" | "none";
  baseUrl: () => string;
  /** Closes every connection of a principal id (`node:NAME` on re-registration). */
  cutOff(id: string, reason: string): void;
  /** Where nodes' notices go (relay/webhooks.ts); absent: nowhere. */
  webhooks?: NetworkWebhooks;
  /** Replicas on a shared store (relay/cluster.ts); absent: this relay is alone. */
  cluster?: Cluster | null;
}

/** What the links offer the rest of the relay. */
export interface Links {
  /**
   * Asks node `name` to dial back for an SSH session of `principal`; throws
   * CwError `not_found` (also for a node of another network: the same
   * answer as for no node), `node_offline`, `rate_limited` or `timeout`.
   * A node linked to another replica is reached through it, unless `here`.
   */
  dialback(name: string, principal: Principal, opts?: { here?: boolean }): Promise<WebSocket>;
  /** Takes a dial-back ticket of this replica that node `node` presented to another one. */
  claimTicket(ticket: string, node: string): Promise<{ resolve(ws: WebSocket): void } | null>;
}

/** Mounts `/api/v1/register`, `/node/connect` and `/node/dialback`. */
export function linkRoutes(app: Hono<Env>, deps: LinksDeps): Links {
  const registerLimit = new RateLimiter(REGISTER_PER_MINUTE, REGISTER_BURST);
  const tickets = new Tickets();
  /** Dial-backs carried to another replica now, per node. */
  const carrying = new Map<string, number>();

  app.post(paths.register, async (c) => {
    const addr = c.get("addr");
    if (!registerLimit.take(addr)) {
      throw new CwError(
        "rate_limited",
        "Too many registration attempts from this address; try later",
      );
    }
    const body = await jsonBody(c);
    const name = body.name;
    if (typeof name !== "string") throw new CwError("invalid_name", 'Missing field "name"');
    checkRelayName("node", name);
    const invite = body.invite;
    if (deps.authMode === "token" && typeof invite !== "string") {
      throw new CwError("bad_request", 'Missing field "invite"');
    }
    const credential = `${name}.${newToken("cwn")}`;
    const record: NodeRecord = {
      name,
      network: DEFAULT_NETWORK,
      credentialHash: await hashSecret(credential),
      createdAt: deps.now().toISOString(),
      revokedAt: null,
      lastSeenAt: null,
      lastAddr: addr,
      version: typeof body.version === "string" ? body.version.slice(0, 64) : null,
    };
    let joined = record;
    if (deps.authMode === "none" && typeof invite !== "string") {
      const existing = await deps.store.getNode(name);
      if (existing && !existing.revokedAt) {
        throw new CwError("name_taken", `The name "${name}" is registered`);
      }
      await deps.store.putNode(record);
    } else {
      // re-registering: the node proves it holds the name with its old credential
      const previous = body.previousCredential;
      const existing = await deps.store.getNode(name);
      let displaced: NodeRecord | null = null;
      if (existing && !existing.revokedAt && typeof previous === "string") {
        if (constantTimeEqual(await hashSecret(previous), existing.credentialHash)) {
          displaced = existing;
          await deps.store.putNode({ ...existing, revokedAt: deps.now().toISOString() });
        }
      }
      const result = await deps.store.register(
        await hashSecret(invite as string),
        record,
        deps.now(),
      );
      // a failed re-registration (bad invite) must not cost the node its old credential
      if (!result.ok && displaced) await deps.store.putNode(displaced);
      if (!result.ok && result.reason === "invite_invalid") {
        deps.audit.record({
          event: "auth_failed",
          principal: null,
          network: null,
          node: name,
          addr,
          reason: "invalid invite",
        });
        throw new CwError("invite_invalid", "The invite is unknown, used up or expired");
      }
      if (!result.ok) throw new CwError("name_taken", `The name "${name}" is held by another node`);
      joined = result.node;
      if (displaced) await deps.store.bumpAuthVersion();
    }
    deps.cutOff(`node:${name}`, "re-registered"); // the old credential's connections go with it
    deps.audit.record({
      event: "node_registered",
      principal: `node:${name}`,
      network: joined.network,
      node: name,
      addr,
    });
    deps.logger.info(`registered node ${name} (network ${joined.network}) from ${addr}`);
    const answer: RegisterResponse = {
      name,
      network: joined.network,
      credential,
      baseUrl: deps.baseUrl(),
    };
    return c.json(answer, 201);
  });

  app.get(paths.dialback, async (c) => {
    if (c.req.header("origin") !== undefined) {
      throw new CwError("forbidden", "Cross-origin requests are refused");
    }
    const p = await deps.gate.authenticate(c);
    if (p.kind !== "node") throw new CwError("forbidden", "Only a node may dial back");
    const ticket = c.req.header("x-cw-ticket") ?? "";
    const entry = ticket ? await tickets.claim(ticket, p.name!) : null;
    // behind one name for every replica, a node's dial-back may land on another replica than
    // the one whose ticket it carries (the one holding its link): carried over to it
    const holder = !entry && /^cwt_[A-Za-z0-9_-]{43}$/.test(ticket) && deps.cluster
      ? await deps.cluster.locate(p.name!)
      : null;
    if (!entry && !holder) {
      throw new CwError("forbidden", "Invalid, used or expired dial-back ticket");
    }
    // a node that sends tickets nobody issued must not make this replica open peer
    // connections without end: as many at once as it may have dial-backs waiting
    if (holder && (carrying.get(p.name!) ?? 0) >= MAX_PENDING_DIALBACKS_PER_NODE) {
      throw new CwError("rate_limited", "Too many dial-backs in flight for this node");
    }
    expectWebSocket(c);
    deps.gate.hold(c, p);
    const { socket, response } = upgrade(c, LINK_MAX_MESSAGE);
    socket.addEventListener("open", () => {
      if (entry) return entry.resolve(socket);
      const name = p.name!;
      carrying.set(name, (carrying.get(name) ?? 0) + 1);
      const done = () => {
        const n = (carrying.get(name) ?? 1) - 1;
        if (n > 0) carrying.set(name, n);
        else carrying.delete(name);
      };
      socket.addEventListener("close", done, { once: true });
      deps.cluster!.dialin(holder!, ticket, socket).then(
        () => deps.logger.info(`dial-back of ${name} carried to replica ${holder!.replica}`),
      ).catch((err) => {
        deps.logger.warn(`dial-back of ${p.name} for another replica failed: ${err?.message}`);
        socket.close(4003, "invalid ticket");
      });
    }, { once: true });
    return response;
  });

  app.get(paths.nodeLink, async (c) => {
    sameOrigin(c, deps.baseUrl());
    const p = await deps.gate.authenticate(c);
    if (p.kind === "node") {
      expectWebSocket(c);
      deps.gate.hold(c, p);
      return acceptLink(c, p.name!, p.network ?? DEFAULT_NETWORK);
    }
    if (deps.authMode !== "none") {
      throw new CwError("forbidden", "Only a node credential may open a node link");
    }
    const name = c.req.header("x-cw-node") ?? "";
    if (!RELAY_NAME_RE.test(name)) {
      throw new CwError("invalid_name", "Send the node name in X-Cw-Node");
    }
    expectWebSocket(c);
    return acceptLink(c, name, DEFAULT_NETWORK);
  });

  const acceptLink = (c: Ctx, name: string, network: string): Response => {
    const { socket, response } = upgrade(c, LINK_MAX_MESSAGE);
    const addr = c.get("addr");
    socket.addEventListener("open", () => {
      const live = {
        name,
        network,
        addr,
        version: null,
        sessions: null,
        connectedAt: deps.now(),
      } as unknown as LiveNode;
      live.mux = new Mux(socket, {
        onControl(msg) {
          if (msg.type === "notice") return deps.webhooks?.deliver(name, network, msg.notice);
          if (msg.type !== "status") return;
          if (typeof msg.version === "string") live.version = msg.version.slice(0, 64);
          if (Number.isSafeInteger(msg.sessions)) live.sessions = msg.sessions as number;
          if (Array.isArray(msg.features)) {
            live.features = msg.features.filter((f): f is string => typeof f === "string")
              .slice(0, 16).map((f) => f.slice(0, 32));
          }
        },
        onClose(reason) {
          deps.hub.remove(live);
          deps.cluster?.linkDown(live).catch((err) =>
            deps.logger.warn(`cluster: cannot release ${name}'s link: ${err?.message ?? err}`)
          );
          touch(name, addr, live.version).catch(() => {});
          deps.audit.record({
            event: "link_down",
            principal: `node:${name}`,
            network,
            node: name,
            addr,
            reason: reason.slice(0, 200),
          });
          deps.logger.info(`node ${name} disconnected: ${reason}`);
        },
      }, { role: "accept" });
      deps.hub.add(live);
      deps.cluster?.linkUp(live).catch((err) =>
        deps.logger.warn(`cluster: cannot record ${name}'s link: ${err?.message ?? err}`)
      );
      touch(name, addr, null).catch(() => {});
      deps.audit.record({ event: "link_up", principal: `node:${name}`, network, node: name, addr });
      deps.logger.info(`node ${name} (network ${network}) connected from ${addr}`);
    });
    return response;
  };

  const touch = async (name: string, addr: string, version: string | null) => {
    const node = await deps.store.getNode(name);
    if (!node || node.revokedAt) return;
    await deps.store.putNode({
      ...node,
      lastSeenAt: deps.now().toISOString(),
      lastAddr: addr,
      version: version ?? node.version,
    });
  };

  return {
    claimTicket: (ticket, node) => tickets.claim(ticket, node),
    async dialback(name: string, principal: Principal, opts = {}): Promise<WebSocket> {
      const node = RELAY_NAME_RE.test(name) ? await deps.store.getNode(name) : null;
      if (!node || node.revokedAt || !reaches(principal, node.network)) {
        throw new CwError("not_found", `Unknown node "${name}"`);
      }
      const live = deps.hub.get(name);
      if (!live && !opts.here && deps.cluster) {
        const link = await deps.cluster.locate(name);
        if (link) return await deps.cluster.dialback(link, principal);
      }
      if (!live) throw new CwError("node_offline", `Node "${name}" is offline`);
      const { ticket, connected, cancel } = await tickets.issue(name);
      live.mux.control({ type: "dialback", ticket, principal: principal.id });
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        return await Promise.race([
          connected,
          new Promise<never>((_, reject) => {
            timer = setTimeout(
              () =>
                reject(
                  new CwError(
                    "timeout",
                    `Node "${name}" did not connect back within ${TICKET_TTL_MS / 1000} s`,
                  ),
                ),
              TICKET_TTL_MS,
            );
          }),
        ]);
      } finally {
        clearTimeout(timer);
        cancel();
      }
    },
  };
}
