/**
 * The relay, assembled: its HTTP app (client API, admin API, node links,
 * KV) and what the SSH gateway needs from it. A function of its
 * dependencies, testable with `app.request`; sockets are the caller's
 * business (relay/main.ts).
 *
 * The parts, each a file: who is asking ({@link Authenticator} in
 * principals.ts, the {@link Gate}), the admin's operations (admin.ts) and
 * routes (routes_admin.ts), the client API (routes_client.ts), node links
 * (links.ts), the audit log (audit.ts). The routes are listed in shared/api.ts.
 */
import { Hono } from "hono";
import { errorResponse, paths } from "../shared/api.ts";
import { CwError } from "../shared/errors.ts";
import type { GuardStats, Peer } from "../shared/guarded_listener.ts";
import type { Logger } from "../shared/logger.ts";
import { VERSION } from "../shared/version.ts";
import type { AdminContext } from "./admin.ts";
import type { AuditLog } from "./audit.ts";
import { Gate } from "./gate.ts";
import { clientAddr, type Env } from "./http.ts";
import { Hub } from "./hub.ts";
import type { Cluster } from "./cluster.ts";
import { peerRoutes } from "./routes_peer.ts";
import { networkSettings } from "./networks.ts";
import { linkRoutes } from "./links.ts";
import { Metrics } from "./metrics.ts";
import { AUTH_POLL_MS, Authenticator, Connections, type Principal } from "./principals.ts";
import { adminRoutes } from "./routes_admin.ts";
import { clientRoutes } from "./routes_client.ts";
import { type GatewayKey, parsePublicKey } from "./ssh_gateway.ts";
import type { RelayStore } from "./store.ts";
import { webRoutes, WebSessions } from "./web.ts";
import { webAssetRoutes } from "./web_assets.ts";
import { NetworkWebhooks } from "./webhooks.ts";

/** What the relay app needs; all passed in, nothing read from globals. */
export interface RelayDeps {
  store: RelayStore;
  logger: Logger;
  audit: AuditLog;
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
  /** An OpenSSH authorized_keys file whose keys may log in through the gateway, to every network. */
  authorizedKeysFile?: string | null;
  /** Watch the store for revocations by other processes (a running relay: yes). */
  pollAuth?: boolean;
  /** `webhooks.json`: a webhook per network for nodes' notices (relay/webhooks.ts). */
  webhooksFile?: string | null;
  /** The live links (made here when absent); the cluster shares it. */
  hub?: Hub;
  /** Replicas on a shared store (relay/cluster.ts); absent: this relay is alone. */
  cluster?: Cluster | null;
}

/** The relay: its HTTP app plus the live state behind it. */
export interface Relay extends Disposable {
  app: Hono<Env>;
  hub: Hub;
  metrics: Metrics;
  /** Tells every node the relay is restarting and closes their links. */
  goaway(message: string): void;
  /** Asks node `name` to dial back for an SSH session of `principal` (see links.ts). */
  dialback(name: string, principal: Principal): Promise<WebSocket>;
  /** Whether node `name`'s link said it speaks `feature`. */
  speaks(name: string, feature: string): boolean;
  /** Whether node `name`'s network allows `ssh -L` to it (relay/networks.ts). */
  forwardingAllowed(name: string): Promise<boolean>;
  /** Keys that may log in through the SSH gateway. */
  publicKeys(): Promise<GatewayKey[]>;
  /** The principal of an SSH password (a node credential, user token or the admin token), or null. */
  passwordPrincipal(password: string): Promise<Principal | null>;
  /** Records an SSH connection of `principal`: revoking it closes the connection. */
  holdSshConnection(peer: Peer, principal: Principal): void;
  /** Publishes the HTTPS listener's counters in /metrics. */
  listenerStats(read: () => GuardStats): void;
  /** The audit log. */
  audit: AuditLog;
  /** The admin operations' context (for `cw relay …` in the same process, and tests). */
  admin: AdminContext;
}

/** Builds the relay; see the file's comment. */
export function createRelay(deps: RelayDeps): Relay {
  const now = deps.now ?? (() => new Date());
  const baseUrl = () => deps.baseUrl;
  const hub = deps.hub ?? new Hub();
  const cluster = deps.cluster ?? null;
  const metrics = new Metrics();
  const connections = new Connections();
  const web = new WebSessions(now);
  const webhooks = deps.webhooksFile ? new NetworkWebhooks(deps.webhooksFile, deps.logger) : null;
  const app = new Hono<Env>();

  /** Ends everything a principal holds: a node's link, and every connection it authenticated. */
  const cutOff = (id: string, reason: string) => {
    auth.forget();
    if (id.startsWith("node:")) hub.disconnect(id.slice(5), reason);
    connections.cut(id);
    web.cut(id);
  };
  /** After another process changed the data dir: cut whoever lost access. */
  const recheck = async () => {
    const ids = [
      ...connections.ids(),
      ...web.principalIds(),
      ...hub.all().map((l) => `node:${l.name}`),
    ];
    for (const id of new Set(ids)) {
      const colon = id.indexOf(":");
      if (colon === -1) continue; // the admin: nothing to revoke
      const [kind, name] = [id.slice(0, colon), id.slice(colon + 1)];
      let live = true;
      if (kind === "node") live = (await deps.store.getNode(name))?.revokedAt === null;
      else if (kind === "user") {
        const u = await deps.store.getUser(name);
        live = !!u && u.revokedAt === null &&
          (u.expiresAt === null || Date.parse(u.expiresAt) > now().getTime());
      } else if (kind === "key") {
        live = (await publicKeys()).some((k) => k.fingerprint === name);
      }
      if (!live) cutOff(id, "revoked");
    }
  };
  const auth = new Authenticator(deps.store, deps.adminTokenHash, {
    now,
    poll: deps.pollAuth,
    onChange: () => void recheck().catch((err) => deps.logger.warn(`revocation check: ${err}`)),
  });
  const gate = new Gate({
    auth,
    connections,
    audit: deps.audit,
    authMode: deps.authMode,
    web,
    baseUrl,
  });
  // a key taken out of the data dir's authorized_keys ends its SSH sessions too
  let keysFileMtime: number | null = null;
  const keysWatch = deps.pollAuth && deps.authorizedKeysFile
    ? setInterval(async () => {
      let mtime = -1;
      try {
        mtime = (await Deno.stat(deps.authorizedKeysFile!)).mtime?.getTime() ?? 0;
      } catch { /* no file */ }
      if (keysFileMtime !== null && mtime !== keysFileMtime) {
        recheck().catch((err) => deps.logger.warn(`revocation check: ${err}`));
      }
      keysFileMtime = mtime;
    }, AUTH_POLL_MS)
    : undefined;
  if (keysWatch !== undefined) Deno.unrefTimer(keysWatch);
  const admin: AdminContext = {
    store: deps.store,
    audit: deps.audit,
    now,
    revoked: (id) => {
      auth.forget();
      cutOff(id, "revoked");
    },
  };

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

  app.use("*", async (c, next) => {
    c.set("addr", clientAddr(c, deps.trustedProxy));
    await next();
    metrics.inc("cw_relay_http_requests_total", {
      route: c.req.routePath || "unmatched",
      method: c.req.method,
      status: String(c.res.status),
    });
  });
  // errors become responses here, and only here
  app.onError((err, c) => {
    if (err instanceof CwError) return errorResponse(err.code, err.message);
    deps.logger.error(`${c.req.method} ${new URL(c.req.url).pathname}: ${err.stack ?? err}`);
    return errorResponse("internal", "Internal error");
  });
  app.notFound((c) =>
    errorResponse("not_found", `No route ${c.req.method} ${new URL(c.req.url).pathname}`)
  );

  app.get(paths.health, (c) => c.json({ ok: true, version: VERSION }));
  adminRoutes(app, { gate, admin, audit: deps.audit, metrics });
  const links = linkRoutes(app, {
    store: deps.store,
    logger: deps.logger,
    audit: deps.audit,
    hub,
    gate,
    now,
    authMode: deps.authMode,
    baseUrl,
    cutOff,
    webhooks: webhooks ?? undefined,
    cluster,
  });
  peerRoutes(app, {
    cluster,
    hub,
    dialbackHere: (name, principal) => links.dialback(name, principal, { here: true }),
    claimTicket: (ticket, node) => links.claimTicket(ticket, node),
    failed: (c, reason) => gate.failed(c, reason),
  });
  webRoutes(app, { web, gate, audit: deps.audit, baseUrl });
  webAssetRoutes(app);
  clientRoutes(app, {
    store: deps.store,
    audit: deps.audit,
    hub,
    gate,
    metrics,
    now,
    authMode: deps.authMode,
    baseUrl,
    info: deps.info ?? (() => ({})),
    cutOff,
    cluster,
  });

  // a known path with the wrong method says so (405), rather than "no route"
  for (
    const path of [
      paths.health,
      paths.metrics,
      paths.info,
      paths.whoami,
      paths.register,
      paths.nodes,
      `${paths.nodes}/:name`,
      `${paths.nodes}/:name/connect`,
      paths.invites,
      `${paths.invites}/:id`,
      paths.users,
      `${paths.users}/:name`,
      paths.sshKeys,
      `${paths.sshKeys}/:fingerprint`,
      paths.audit,
      paths.networks,
      `${paths.networks}/:name`,
      paths.dialback,
      paths.nodeLink,
      paths.webCodes,
      paths.webLogin,
      paths.webLogout,
      paths.webSessions,
      `${paths.webSessions}/:id`,
    ]
  ) {
    app.all(path, (c) => {
      throw new CwError("method_not_allowed", `${c.req.method} is not allowed on ${path}`);
    });
  }

  let keyCache: { mtime: number; keys: GatewayKey[] } = { mtime: -1, keys: [] };
  const publicKeys = async (): Promise<GatewayKey[]> => {
    const registered = (await deps.store.listSshKeys()).flatMap((k) => {
      const key = parsePublicKey(k.line);
      return key ? [{ ...key, network: k.network }] : [];
    });
    if (deps.authorizedKeysFile) {
      try {
        const mtime = (await Deno.stat(deps.authorizedKeysFile)).mtime?.getTime() ?? 0;
        if (mtime !== keyCache.mtime) {
          const text = await Deno.readTextFile(deps.authorizedKeysFile);
          const keys = text.split("\n")
            .filter((l) => l.trim() && !l.trim().startsWith("#"))
            .flatMap((l) => {
              const key = parsePublicKey(l);
              return key ? [{ ...key, network: null }] : [];
            });
          keyCache = { mtime, keys };
        }
      } catch {
        keyCache = { mtime: -1, keys: [] }; // no file (yet)
      }
    }
    return [...registered, ...keyCache.keys];
  };

  return {
    app,
    hub,
    metrics,
    audit: deps.audit,
    admin,
    goaway(message: string) {
      for (const node of hub.all()) node.mux.goaway("relay_restarting", message);
    },
    dialback: links.dialback,
    speaks: (name: string, feature: string) =>
      (hub.get(name)?.features ?? cluster?.features(name))?.includes(feature) ?? false,
    async forwardingAllowed(name: string) {
      const node = await deps.store.getNode(name);
      return !!node && !node.revokedAt &&
        (await networkSettings(deps.store, node.network)).allowForwarding;
    },
    publicKeys,
    passwordPrincipal: (password: string) => auth.principalOf(password),
    holdSshConnection(peer: Peer, principal: Principal) {
      connections.hold(principal.id, peer);
    },
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
    [Symbol.dispose]() {
      auth[Symbol.dispose]();
      clearInterval(keysWatch);
      webhooks?.close();
    },
  };
}
