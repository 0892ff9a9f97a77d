import { Hono } from "hono";
import type { Context } from "hono";
import type { ErrorCode } from "../shared/protocol.ts";
import type { Logger } from "../shared/logger.ts";
import { Mux } from "../shared/mux.ts";
import { splice, wsDuplex } from "../shared/ws_duplex.ts";
import { encodeJson, FrameKind } from "../shared/protocol.ts";
import { constantTimeEqual, hashSecret, newToken } from "../shared/secrets.ts";
import { VERSION } from "../shared/version.ts";
import { Hub, type LiveNode } from "./hub.ts";
import { Tickets } from "./tickets.ts";
import { parsePublicKey, type PublicKey } from "./ssh_gateway.ts";
import { CwError } from "../shared/errors.ts";
import { TICKET_TTL_MS } from "../shared/dialback.ts";
import { kvApi } from "./kv_api.ts";
import { Metrics } from "./metrics.ts";
import { RateLimiter } from "../shared/rate_limit.ts";
import type { NodeRecord, RelayStore } from "./store.ts";
import type { GuardStats, Peer } from "../shared/guarded_listener.ts";
import { upgradeWebSocket } from "../shared/guarded_http.ts";
import { LINK_MAX_MESSAGE, STREAM_MAX_MESSAGE } from "../shared/listener_limits.ts";

/** Node names: 1-63 of [A-Za-z0-9_-], starting with a letter or digit. */
export const NODE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;
/** Largest JSON body of the client API. */
const MAX_JSON_BODY = 64 * 1024;
/** Longest invite lifetime an admin may ask for. */
const MAX_INVITE_TTL_S = 365 * 86400;

/** An error that becomes an HTTP response with a JSON body. */
export class HttpError extends Error {
  /** HTTP status. */
  readonly status: number;
  /** Stable code, as on the wire and in the CLI. */
  readonly code: ErrorCode;
  /** Builds the error. */
  constructor(status: number, code: ErrorCode, message: string) {
    super(message);
    this.name = "HttpError";
    this.status = status;
    this.code = code;
  }
}

/** Who made a request. */
export type Principal = { kind: "admin" } | { kind: "node"; node: NodeRecord } | {
  kind: "anonymous";
};

/** What the relay app needs; all passed in, nothing read from globals. */
export interface RelayDeps {
  store: RelayStore;
  logger: Logger;
  /** Public URL told to clients and nodes. */
  baseUrl: string;
  authMode: "token" | "none";
  /** SHA-256 of the admin token (token mode). */
  adminTokenHash: string | null;
  /** The proxy whose X-Forwarded-For is trusted, if any. */
  trustedProxy?: string | null;
  now?: () => Date;
  /** Extra facts for /api/v1/info (e.g. the SSH host key). */
  info?: () => Record<string, unknown>;
  /** An OpenSSH authorized_keys file whose keys may log in through the gateway. */
  authorizedKeysFile?: string | null;
}

/** The relay: its HTTP app plus the live state behind it. */
export interface Relay {
  app: Hono<Env>;
  hub: Hub;
  metrics: Metrics;
  /** Tells every node the relay is restarting and closes their links. */
  goaway(message: string): void;
  /** Asks node `name` to dial back (for an SSH session); see shared/dialback.ts. */
  dialback(name: string): Promise<WebSocket>;
  /** Whether node `name`'s link said it speaks `feature`. */
  speaks(name: string, feature: string): boolean;
  /** Keys that may log in through the SSH gateway. */
  publicKeys(): Promise<PublicKey[]>;
  /** Whether a password is a valid node credential or the admin token. */
  checkPassword(password: string): Promise<boolean>;
  /**
   * Records an SSH connection that logged in with node `name`'s credential or
   * with key `fingerprint`: revoking that node or removing that key closes it.
   */
  holdSshConnection(peer: Peer, login: { password?: string; fingerprint?: string }): Promise<void>;
  /** Closes every live connection of a node revoked elsewhere (the data dir). */
  revoked(name: string): void;
  /** Publishes the HTTPS listener's counters in /metrics. */
  listenerStats(read: () => GuardStats): void;
}

type Env = { Variables: { principal: Principal; addr: string } };

/** Splits a node credential `NAME.cwn_SECRET` into its name. */
export function credentialName(credential: string): string | null {
  const dot = credential.indexOf(".");
  if (dot <= 0) return null;
  const name = credential.slice(0, dot);
  return NODE_NAME_RE.test(name) && credential.slice(dot + 1).startsWith("cwn_") ? name : null;
}

/**
 * Builds the relay's HTTP app: the client API, the KV API, `/node/connect`
 * for node links, `/healthz` and `/metrics`. A function of its dependencies,
 * testable without a socket; `Deno.serve` is the caller's business.
 */
export function createRelay(deps: RelayDeps): Relay {
  const now = deps.now ?? (() => new Date());
  const hub = new Hub();
  const metrics = new Metrics();
  const registerLimit = new RateLimiter(20, 10);
  const authFailures = new RateLimiter(30, 20);
  const app = new Hono<Env>();

  metrics.gauge("cw_relay_connected_nodes", "Nodes with a live link", () => hub.size);
  metrics.gauge(
    "cw_relay_link_bytes_in",
    "Bytes received on node links (live links)",
    () => hub.all().reduce((n, l) => n + l.mux.bytes.in, 0),
  );
  metrics.gauge(
    "cw_relay_link_bytes_out",
    "Bytes sent on node links (live links)",
    () => hub.all().reduce((n, l) => n + l.mux.bytes.out, 0),
  );
  metrics.describe("cw_relay_http_requests_total", "HTTP requests by route and status");
  metrics.describe("cw_relay_kv_operations_total", "KV operations by kind");

  /** Throws 400 unless the request asks for a WebSocket. */
  const expectWebSocket = (c: Context<Env>) => {
    if ((c.req.header("upgrade") ?? "").toLowerCase() !== "websocket") {
      throw new HttpError(400, "bad_request", "Expected a WebSocket upgrade");
    }
  };

  /** Upgrades to a WebSocket whose messages are at most `maxMessage` bytes (see guarded_http). */
  const upgrade = (c: Context<Env>, maxMessage: number, opts: { onTake?: boolean } = {}) => {
    expectWebSocket(c);
    return upgradeWebSocket(c.req.raw, peerOf(c), maxMessage, opts);
  };

  /** The connection behind a request (absent under app.request in tests). */
  const peerOf = (c: Context<Env>): Peer | undefined =>
    (c.env as { peer?: Peer } | undefined)?.peer;

  const clientAddr = (c: Context<Env>): string => {
    const info = (c.env as { remoteAddr?: Deno.NetAddr } | undefined)?.remoteAddr;
    const peer = info?.hostname ?? "unknown";
    if (deps.trustedProxy && peer === deps.trustedProxy) {
      const xff = c.req.header("x-forwarded-for")?.split(",").at(-1)?.trim();
      if (xff) return xff;
    }
    return peer;
  };

  /** Resolves the bearer token; throws 401/403/429. */
  const authenticate = async (c: Context<Env>): Promise<Principal> => {
    const addr = c.get("addr");
    const m = /^Bearer\s+(\S+)$/i.exec(c.req.header("authorization") ?? "");
    if (deps.authMode === "none") {
      // no credentials needed; a node's own credential still says which node it is
      const p = m ? await principalOf(m[1]) : null;
      peerOf(c)?.trust();
      return p?.kind === "node" ? p : { kind: "admin" };
    }
    // A valid credential always gets in: failures are limited per address, but an
    // attacker behind the same NAT must not lock out its users (the limiter only
    // decides how a *failed* attempt is answered).
    const p = m ? await principalOf(m[1]) : null;
    if (p === null) {
      if (!authFailures.take(addr)) {
        throw new HttpError(
          429,
          "rate_limited",
          "Too many failed attempts from this address; try later",
        );
      }
      throw new HttpError(
        401,
        "unauthorized",
        m ? "Invalid credential" : "Missing credential: send Authorization: Bearer TOKEN",
      );
    }
    if (p.kind === "node" && p.node.revokedAt) {
      throw new HttpError(403, "forbidden", `Node "${p.node.name}" has been revoked`);
    }
    const peer = peerOf(c);
    peer?.trust();
    if (peer && p.kind === "node") holdsConnection(p.node.name, peer);
    return p;
  };

  /**
   * The live connections each node credential (by name) or SSH key (`key:FP`)
   * authenticated: revocation closes them all.
   */
  const connectionsOf = new Map<string, Set<Peer>>();
  const holdsConnection = (name: string, peer: Peer) => {
    let set = connectionsOf.get(name);
    if (!set) connectionsOf.set(name, set = new Set());
    if (set.has(peer)) return;
    set.add(peer);
    peer.onClose(() => {
      set.delete(peer);
      if (set.size === 0 && connectionsOf.get(name) === set) connectionsOf.delete(name);
    });
  };
  /** Ends everything a node's credential holds: its link, streams, KV watches, dial-backs. */
  const cutOff = (name: string, reason: string) => {
    hub.disconnect(name, reason);
    for (const peer of [...(connectionsOf.get(name) ?? [])]) peer.close();
  };

  /** Who a token belongs to (revoked nodes included), or null. */
  const principalOf = async (token: string): Promise<Principal | null> => {
    const hash = await hashSecret(token);
    if (deps.adminTokenHash && constantTimeEqual(hash, deps.adminTokenHash)) {
      return { kind: "admin" };
    }
    const name = credentialName(token);
    const node = name ? await deps.store.getNode(name) : null;
    if (!node || !constantTimeEqual(hash, node.credentialHash)) return null;
    return { kind: "node", node };
  };

  const tickets = new Tickets();

  const dialback = async (name: string): Promise<WebSocket> => {
    const node = NODE_NAME_RE.test(name) ? await deps.store.getNode(name) : null;
    if (!node || node.revokedAt) throw new CwError("not_found", `Unknown node "${name}"`);
    const live = hub.get(name);
    if (!live) throw new CwError("node_offline", `Node "${name}" is offline`);
    const { ticket, connected, cancel } = await tickets.issue(name);
    live.mux.control({ type: "dialback", ticket });
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
  };

  let keyCache: { mtime: number; keys: PublicKey[] } = { mtime: -1, keys: [] };
  const publicKeys = async (): Promise<PublicKey[]> => {
    const registered = (await deps.store.listSshKeys())
      .map((k) => parsePublicKey(k.line))
      .filter((k): k is PublicKey => k !== null);
    if (deps.authorizedKeysFile) {
      try {
        const mtime = (await Deno.stat(deps.authorizedKeysFile)).mtime?.getTime() ?? 0;
        if (mtime !== keyCache.mtime) {
          const text = await Deno.readTextFile(deps.authorizedKeysFile);
          const keys = text.split("\n")
            .filter((l) => l.trim() && !l.trim().startsWith("#"))
            .map(parsePublicKey)
            .filter((k): k is PublicKey => k !== null);
          keyCache = { mtime, keys };
        }
      } catch {
        keyCache = { mtime: -1, keys: [] }; // no file (yet)
      }
    }
    return [...registered, ...keyCache.keys];
  };

  const requireAuth = (admin: boolean) => async (c: Context<Env>, next: () => Promise<void>) => {
    const p = await authenticate(c);
    if (admin && p.kind !== "admin") {
      throw new HttpError(403, "forbidden", "This needs the admin token");
    }
    c.set("principal", p);
    await next();
  };

  app.use("*", async (c, next) => {
    c.set("addr", clientAddr(c));
    await next();
    const route = c.req.routePath || "unmatched";
    metrics.inc("cw_relay_http_requests_total", {
      route,
      method: c.req.method,
      status: String(c.res.status),
    });
  });

  app.onError((err, c) => {
    if (err instanceof HttpError) {
      return c.json({ error: { code: err.code, message: err.message } }, err.status as 400);
    }
    deps.logger.error(`${c.req.method} ${new URL(c.req.url).pathname}: ${err.stack ?? err}`);
    return c.json({ error: { code: "internal", message: "Internal error" } }, 500);
  });
  app.notFound((c) =>
    c.json({
      error: {
        code: "not_found",
        message: `No route ${c.req.method} ${new URL(c.req.url).pathname}`,
      },
    }, 404)
  );

  app.get("/healthz", (c) => c.json({ ok: true, version: VERSION }));
  app.get(
    "/metrics",
    requireAuth(true),
    (c) => c.text(metrics.render(), 200, { "content-type": "text/plain; version=0.0.4" }),
  );

  app.get(
    "/api/v1/info",
    requireAuth(false),
    (c) => c.json({ version: VERSION, baseUrl: deps.baseUrl, ...(deps.info?.() ?? {}) }),
  );

  // ---- registration by invite
  app.post("/api/v1/register", async (c) => {
    if (!registerLimit.take(c.get("addr"))) {
      throw new HttpError(
        429,
        "rate_limited",
        "Too many registration attempts from this address; try later",
      );
    }
    const body = await jsonBody(c);
    const name = body.name;
    if (typeof name !== "string" || !NODE_NAME_RE.test(name)) {
      throw new HttpError(
        400,
        "invalid_name",
        "Invalid node name: use 1-63 of [A-Za-z0-9_-], starting with a letter or digit",
      );
    }
    const invite = body.invite;
    if (deps.authMode === "token" && typeof invite !== "string") {
      throw new HttpError(400, "bad_request", 'Missing field "invite"');
    }
    const credential = `${name}.${newToken("cwn")}`;
    const record: NodeRecord = {
      name,
      credentialHash: await hashSecret(credential),
      createdAt: now().toISOString(),
      revokedAt: null,
      lastSeenAt: null,
      lastAddr: c.get("addr"),
      version: typeof body.version === "string" ? body.version.slice(0, 64) : null,
    };
    if (deps.authMode === "none" && typeof invite !== "string") {
      const existing = await deps.store.getNode(name);
      if (existing && !existing.revokedAt) {
        throw new HttpError(409, "name_taken", `The name "${name}" is registered`);
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
          await deps.store.putNode({ ...existing, revokedAt: now().toISOString() });
        }
      }
      const result = await deps.store.register(await hashSecret(invite as string), record, now());
      // a failed re-registration (bad invite) must not cost the node its old credential
      if (!result.ok && displaced) await deps.store.putNode(displaced);
      if (!result.ok && result.reason === "invite_invalid") {
        throw new HttpError(403, "invite_invalid", "The invite is unknown, used up or expired");
      }
      if (!result.ok) {
        throw new HttpError(409, "name_taken", `The name "${name}" is held by another node`);
      }
    }
    cutOff(name, "re-registered"); // the old credential's connections go with it
    deps.logger.info(`registered node ${name} from ${c.get("addr")}`);
    return c.json({ name, credential, baseUrl: deps.baseUrl }, 201);
  });

  // ---- nodes
  app.get("/api/v1/nodes", requireAuth(false), async (c) => {
    const nodes = await deps.store.listNodes();
    return c.json({
      nodes: nodes.filter((n) => !n.revokedAt).map((n) => {
        const live = hub.get(n.name);
        return {
          name: n.name,
          online: live !== undefined,
          lastSeenAt: live ? now().toISOString() : n.lastSeenAt,
          addr: live?.addr ?? n.lastAddr,
          version: live?.version ?? n.version,
          sessions: live?.sessions ?? null,
          connectedAt: live?.connectedAt.toISOString() ?? null,
        };
      }),
    });
  });
  app.delete("/api/v1/nodes/:name", requireAuth(true), async (c) => {
    const name = c.req.param("name") ?? "";
    const node = await deps.store.getNode(name);
    if (!node) throw new HttpError(404, "not_found", `No node "${name}"`);
    await deps.store.putNode({ ...node, revokedAt: now().toISOString() });
    cutOff(name, "revoked");
    deps.logger.info(`revoked node ${name}`);
    return c.body(null, 204);
  });

  // ---- invites (admin)
  app.post("/api/v1/invites", requireAuth(true), async (c) => {
    const body = await jsonBody(c);
    const uses = body.uses ?? 1;
    const ttl = body.ttlSeconds ?? 86400;
    if (!Number.isSafeInteger(uses) || (uses as number) < 1 || (uses as number) > 10000) {
      throw new HttpError(400, "bad_request", '"uses" must be 1-10000');
    }
    if (!Number.isSafeInteger(ttl) || (ttl as number) < 1 || (ttl as number) > MAX_INVITE_TTL_S) {
      throw new HttpError(400, "bad_request", `"ttlSeconds" must be 1-${MAX_INVITE_TTL_S}`);
    }
    const token = newToken("cwi");
    const invite = {
      tokenHash: await hashSecret(token),
      usesLeft: uses as number,
      createdAt: now().toISOString(),
      expiresAt: new Date(now().getTime() + (ttl as number) * 1000).toISOString(),
    };
    await deps.store.createInvite(invite);
    return c.json({
      token,
      id: invite.tokenHash.slice(0, 16),
      usesLeft: invite.usesLeft,
      expiresAt: invite.expiresAt,
    }, 201);
  });
  app.get("/api/v1/invites", requireAuth(true), async (c) => {
    const invites = await deps.store.listInvites(now());
    return c.json({
      invites: invites.map((i) => ({
        id: i.tokenHash.slice(0, 16),
        usesLeft: i.usesLeft,
        createdAt: i.createdAt,
        expiresAt: i.expiresAt,
      })),
    });
  });
  app.delete("/api/v1/invites/:id", requireAuth(true), async (c) => {
    const id = c.req.param("id") ?? "";
    const match = (await deps.store.listInvites(now())).find((i) =>
      i.tokenHash === id || i.tokenHash.slice(0, 16) === id
    );
    if (!match || !(await deps.store.revokeInvite(match.tokenHash))) {
      throw new HttpError(404, "not_found", "No such invite");
    }
    return c.body(null, 204);
  });

  // ---- SSH keys for the gateway
  app.post("/api/v1/ssh-keys", requireAuth(false), async (c) => {
    const body = await jsonBody(c);
    const key = typeof body.key === "string" ? parsePublicKey(body.key) : null;
    if (!key) {
      throw new HttpError(400, "bad_request", 'Field "key" must be an OpenSSH public key line');
    }
    const p = c.get("principal");
    await deps.store.addSshKey({
      fingerprint: key.fingerprint,
      line: key.line,
      addedBy: p.kind === "node" ? p.node.name : "admin",
      addedAt: now().toISOString(),
    });
    return c.json({ fingerprint: key.fingerprint }, 201);
  });
  app.get(
    "/api/v1/ssh-keys",
    requireAuth(false),
    async (c) => c.json({ keys: await deps.store.listSshKeys() }),
  );
  app.delete("/api/v1/ssh-keys/:fingerprint", requireAuth(false), async (c) => {
    const fp = c.req.param("fingerprint") ?? "";
    if (!(await deps.store.removeSshKey(fp))) throw new HttpError(404, "not_found", `No key ${fp}`);
    cutOff(`key:${fp}`, "key removed"); // its SSH sessions end with it
    return c.body(null, 204);
  });

  // ---- dial-back connections of nodes (SSH sessions)
  app.get("/node/dialback", async (c) => {
    if (c.req.header("origin") !== undefined) {
      throw new HttpError(403, "forbidden", "Cross-origin requests are refused");
    }
    const p = await authenticate(c);
    if (p.kind !== "node") throw new HttpError(403, "forbidden", "Only a node may dial back");
    const ticket = c.req.header("x-cw-ticket") ?? "";
    const entry = ticket ? await tickets.claim(ticket, p.node.name) : null;
    if (!entry) throw new HttpError(403, "forbidden", "Invalid, used or expired dial-back ticket");
    expectWebSocket(c);
    const { socket, response } = upgrade(c, LINK_MAX_MESSAGE);
    socket.addEventListener("open", () => entry.resolve(socket), { once: true });
    return response;
  });

  // ---- KV
  app.use("/api/v1/kv/*", requireAuth(false));
  app.route(
    "/api/v1/kv",
    kvApi(deps.store, { now, onOp: (op) => metrics.inc("cw_relay_kv_operations_total", { op }) }),
  );

  // ---- client streams to a node: the node protocol, spliced onto a link stream
  app.get("/api/v1/nodes/:name/connect", async (c) => {
    const origin = c.req.header("origin");
    if (origin !== undefined && origin !== new URL(deps.baseUrl).origin) {
      throw new HttpError(403, "forbidden", "Cross-origin WebSocket upgrades are refused");
    }
    const p = await authenticate(c);
    const name = c.req.param("name") ?? "";
    expectWebSocket(c);
    const record = deps.authMode === "none" ? null : await deps.store.getNode(name);
    const known = deps.authMode === "none" || record?.revokedAt === null;
    // a client's input is taken as the node's stream accepts it (its mux window), so a
    // client that types into a program that does not read is held back, not queued
    const { socket, response, taken } = upgrade(c, STREAM_MAX_MESSAGE, { onTake: false });
    const client = wsDuplex(socket, { onTaken: taken });
    const live = hub.get(name);
    socket.addEventListener("open", () => {
      if (!live || !known) {
        // a WebSocket client cannot read an HTTP error body: answer in the protocol
        const error = known
          ? { code: "node_offline", message: `Node "${name}" is offline` }
          : record?.revokedAt
          ? { code: "forbidden", message: `Node "${name}" has been revoked` }
          : { code: "not_found", message: `Unknown node "${name}"` };
        socket.send(encodeJson(FrameKind.ERROR, error));
        socket.close(1000);
        return;
      }
      metrics.inc("cw_relay_client_streams_total", { principal: p.kind });
      let stream;
      try {
        stream = live.mux.open({ kind: "node" });
      } catch (err) {
        socket.send(
          encodeJson(FrameKind.ERROR, {
            code: "node_offline",
            message: `Node "${name}": ${(err as Error).message}`,
          }),
        );
        socket.close(1000);
        return;
      }
      void splice(client, stream);
    });
    return response;
  });

  // ---- node links
  app.get("/node/connect", async (c) => {
    const origin = c.req.header("origin");
    if (origin !== undefined && origin !== new URL(deps.baseUrl).origin) {
      throw new HttpError(403, "forbidden", "Cross-origin WebSocket upgrades are refused");
    }
    const p = await authenticate(c);
    if (p.kind !== "node") {
      if (deps.authMode === "none") return nodeLinkWithoutAuth(c);
      throw new HttpError(403, "forbidden", "Only a node credential may open a node link");
    }
    expectWebSocket(c);
    return acceptLink(c, p.node.name);
  });

  const nodeLinkWithoutAuth = (c: Context<Env>) => {
    const name = c.req.header("x-cw-node") ?? "";
    if (!NODE_NAME_RE.test(name)) {
      throw new HttpError(400, "invalid_name", "Send the node name in X-Cw-Node");
    }
    return acceptLink(c, name);
  };

  const acceptLink = (c: Context<Env>, name: string): Response => {
    const { socket, response } = upgrade(c, LINK_MAX_MESSAGE);
    const addr = c.get("addr");
    socket.addEventListener("open", () => {
      const live = {
        name,
        addr,
        version: null,
        sessions: null,
        connectedAt: now(),
      } as unknown as LiveNode;
      live.mux = new Mux(socket, {
        onControl(msg) {
          if (msg.type === "status") {
            if (typeof msg.version === "string") live.version = msg.version.slice(0, 64);
            if (Number.isSafeInteger(msg.sessions)) live.sessions = msg.sessions as number;
            if (Array.isArray(msg.features)) {
              live.features = msg.features.filter((f): f is string => typeof f === "string")
                .slice(0, 16).map((f) => f.slice(0, 32));
            }
          }
        },
        onClose(reason) {
          hub.remove(live);
          touch(name, addr, live.version).catch(() => {});
          deps.logger.info(`node ${name} disconnected: ${reason}`);
        },
      }, { role: "accept" });
      hub.add(live);
      touch(name, addr, null).catch(() => {});
      deps.logger.info(`node ${name} connected from ${addr}`);
    });
    return response;
  };

  const touch = async (name: string, addr: string, version: string | null) => {
    const node = await deps.store.getNode(name);
    if (!node || node.revokedAt) return;
    await deps.store.putNode({
      ...node,
      lastSeenAt: now().toISOString(),
      lastAddr: addr,
      version: version ?? node.version,
    });
  };

  for (
    const path of [
      "/healthz",
      "/metrics",
      "/api/v1/info",
      "/api/v1/register",
      "/api/v1/nodes",
      "/api/v1/nodes/:name",
      "/api/v1/invites",
      "/api/v1/invites/:id",
      "/api/v1/nodes/:name/connect",
      "/api/v1/ssh-keys",
      "/api/v1/ssh-keys/:fingerprint",
      "/node/dialback",
      "/node/connect",
    ]
  ) {
    app.all(path, (c) => {
      throw new HttpError(405, "method_not_allowed", `${c.req.method} is not allowed on ${path}`);
    });
  }

  return {
    app,
    hub,
    metrics,
    goaway(message: string) {
      for (const node of hub.all()) node.mux.goaway("relay_restarting", message);
    },
    dialback,
    speaks: (name: string, feature: string) => hub.get(name)?.features?.includes(feature) ?? false,
    publicKeys,
    revoked: (name: string) => cutOff(name, "revoked"),
    listenerStats(read: () => GuardStats) {
      const gauges: [keyof GuardStats, string, string][] = [
        ["open", "cw_relay_connections_open", "Client connections open on HTTPS"],
        ["untrusted", "cw_relay_connections_untrusted", "Connections not yet authenticated"],
        ["refused", "cw_relay_connections_refused_total", "Connections refused by a cap"],
        ["handshakeTimeouts", "cw_relay_handshake_timeouts_total", "Handshake deadlines hit"],
        ["idleTimeouts", "cw_relay_idle_timeouts_total", "Unauthenticated idle connections closed"],
        ["acceptErrors", "cw_relay_accept_errors_total", "Failed accepts (out of descriptors)"],
        ["evicted", "cw_relay_connections_evicted_total", "Stale handshakes closed for room"],
      ];
      for (const [key, name, help] of gauges) metrics.gauge(name, help, () => read()[key]);
    },
    async holdSshConnection(peer: Peer, login: { password?: string; fingerprint?: string }) {
      if (login.fingerprint) holdsConnection(`key:${login.fingerprint}`, peer);
      if (login.password) {
        const p = await principalOf(login.password);
        if (p?.kind === "node") holdsConnection(p.node.name, peer);
      }
    },
    async checkPassword(password: string) {
      const p = await principalOf(password);
      return p !== null && (p.kind === "admin" || (p.kind === "node" && !p.node.revokedAt));
    },
  };
}

/** Reads a JSON object body of at most {@link MAX_JSON_BODY} bytes. */
async function jsonBody(c: Context<Env>): Promise<Record<string, unknown>> {
  const length = Number(c.req.header("content-length") ?? "0");
  if (length > MAX_JSON_BODY) {
    throw new HttpError(413, "too_large", `Body over ${MAX_JSON_BODY} bytes`);
  }
  const text = await readLimited(c.req.raw, MAX_JSON_BODY);
  let value: unknown;
  try {
    value = JSON.parse(text || "{}");
  } catch {
    throw new HttpError(400, "bad_request", "The body is not valid JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new HttpError(400, "bad_request", "The body must be a JSON object");
  }
  return value as Record<string, unknown>;
}

async function readLimited(req: Request, limit: number): Promise<string> {
  if (!req.body) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of req.body) {
    size += chunk.byteLength;
    if (size > limit) throw new HttpError(413, "too_large", `Body over ${limit} bytes`);
    chunks.push(chunk);
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const ch of chunks) {
    all.set(ch, at);
    at += ch.byteLength;
  }
  return new TextDecoder().decode(all);
}
