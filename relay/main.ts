import { join } from "node:path";
import { parseArgs } from "node:util";
import { CwError } from "../shared/errors.ts";
import { fileLogger, type Logger } from "../shared/logger.ts";
import { ensurePrivateDir, writeFileAtomic } from "../shared/paths.ts";
import { hashSecret, newToken } from "../shared/secrets.ts";
import { VERSION } from "../shared/version.ts";
import { openRelayStore, storeUrlFrom } from "./open_store.ts";
import type { RelayStore } from "./store.ts";
import { Cluster } from "./cluster.ts";
import { Hub } from "./hub.ts";
import { isLoopback, parseListen } from "../shared/net.ts";
import { createRelay } from "./server.ts";
import { AuditLog } from "./audit.ts";
import { raiseFdLimit } from "../shared/libc.ts";
import { serveGuardedHttp } from "../shared/guarded_http.ts";
import { installLastResort } from "../shared/last_resort.ts";
import {
  connectionBudget,
  maxConnectionsFor,
  RELAY_HTTP_LIMITS,
  RELAY_SSH_LIMITS,
} from "../shared/listener_limits.ts";
import {
  describeHostKey,
  loadOrCreateHostKey,
  newHostKey,
  startSshGateway,
} from "./ssh_gateway.ts";

/** Parsed `cw relay` settings. */
export interface RelayOptions {
  dataDir: string;
  listen: { hostname: string; port: number };
  baseUrl: string | null;
  authMode: "token" | "none";
  tls: { cert: string; key: string } | null;
  behindProxy: string | null;
  /** The SSH gateway's address; null turns it off. */
  sshListen: { hostname: string; port: number } | null;
  /** PostgreSQL store URL (relay/open_store.ts); null: Deno KV in the data dir. */
  storeUrl: string | null;
  /** Where other replicas reach this one; null: its listening address. */
  peerUrl: string | null;
  /** PEM CA for peers' TLS certificates; null: the system's. */
  peerCa: string | null;
}

/** Where the relay keeps its state by default. */
export function defaultDataDir(env: { get(k: string): string | undefined } = Deno.env): string {
  const home = env.get("CW_HOME") ?? join(env.get("HOME") ?? ".", ".codewire");
  return join(home, "relay");
}

/** Reads `cw relay` flags. Throws RangeError on bad input. */
export function parseRelayArgs(args: string[]): RelayOptions {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      "base-url": { type: "string" },
      "data-dir": { type: "string" },
      "auth-mode": { type: "string" },
      listen: { type: "string" },
      "ssh-listen": { type: "string" },
      "tls-cert": { type: "string" },
      "tls-key": { type: "string" },
      "behind-proxy": { type: "string" },
      store: { type: "string" },
      "peer-url": { type: "string" },
      "peer-ca": { type: "string" },
    },
  });
  if (positionals.length) throw new RangeError(`Unexpected argument "${positionals[0]}"`);
  const authMode = values["auth-mode"] ?? "token";
  if (authMode !== "token" && authMode !== "none") {
    throw new RangeError(
      `Unknown --auth-mode "${authMode}": use token or none (oidc is not available yet)`,
    );
  }
  if ((values["tls-cert"] === undefined) !== (values["tls-key"] === undefined)) {
    throw new RangeError("Give both --tls-cert and --tls-key");
  }
  const tls = values["tls-cert"]
    ? {
      cert: Deno.readTextFileSync(values["tls-cert"]),
      key: Deno.readTextFileSync(values["tls-key"]!),
    }
    : null;
  // CW_RELAY_LISTEN: the default address where flags are awkward (the container image's 8443)
  const listen = parseListen(
    values.listen ?? Deno.env.get("CW_RELAY_LISTEN") ?? (tls ? "0.0.0.0:443" : "127.0.0.1:8080"),
  );
  const behindProxy = values["behind-proxy"] ?? null;
  if (!tls && !isLoopback(listen.hostname) && !behindProxy) {
    throw new RangeError(
      `Refusing plain HTTP on ${listen.hostname}: give --tls-cert/--tls-key, listen on loopback, or run --behind-proxy PROXY_IP`,
    );
  }
  if (authMode === "none" && behindProxy) {
    // a proxy forwards requests from anywhere: "none" would open the relay to the internet
    throw new RangeError("--auth-mode none cannot be used with --behind-proxy");
  }
  if (authMode === "none" && !isLoopback(listen.hostname)) {
    throw new RangeError("--auth-mode none is only allowed when every listener is on loopback");
  }
  const sshValue = values["ssh-listen"] ?? "0.0.0.0:2222";
  const sshListen = sshValue === "off" ? null : parseListen(sshValue);
  if (authMode === "none" && sshListen && !isLoopback(sshListen.hostname)) {
    throw new RangeError(
      "--auth-mode none is only allowed when every listener is on loopback (see --ssh-listen)",
    );
  }
  const storeUrl = storeUrlFrom(values.store);
  // CW_RELAY_PEER_URL: where flags are awkward (a container's environment)
  const peerUrl = values["peer-url"] ?? (Deno.env.get("CW_RELAY_PEER_URL") || null);
  if (peerUrl !== null) {
    let u: URL | null = null;
    try {
      u = new URL(peerUrl);
    } catch { /* below */ }
    if (!u || (u.protocol !== "https:" && u.protocol !== "http:")) {
      throw new RangeError(`--peer-url must be an https:// URL, not "${peerUrl.slice(0, 100)}"`);
    }
  }
  if (storeUrl === null && (peerUrl !== null || values["peer-ca"] !== undefined)) {
    throw new RangeError(
      "--peer-url and --peer-ca are for replicas on a shared store: give --store",
    );
  }
  if (storeUrl !== null && peerUrl === null && /^(0\.0\.0\.0|::)$/.test(listen.hostname)) {
    // a wildcard address says nothing about where peers can reach this replica
    throw new RangeError(
      `Give --peer-url: other replicas cannot reach ${listen.hostname} (listening on every address)`,
    );
  }
  return {
    sshListen,
    storeUrl,
    peerUrl,
    peerCa: values["peer-ca"] ? Deno.readTextFileSync(values["peer-ca"]) : null,
    dataDir: values["data-dir"] ?? defaultDataDir(),
    listen,
    baseUrl: values["base-url"] ?? null,
    authMode,
    tls,
    behindProxy,
  };
}

/**
 * The admin token's hash: from CW_RELAY_ADMIN_TOKEN, or generated once into
 * the data dir. Replicas on a shared store share it: the first one's token
 * (in its data dir) is everyone's.
 */
async function adminTokenHash(
  dataDir: string,
  logger: Logger,
  shared: RelayStore | null,
): Promise<string> {
  const fromEnv = Deno.env.get("CW_RELAY_ADMIN_TOKEN");
  if (fromEnv) return await hashSecret(fromEnv);
  const path = join(dataDir, "admin.token");
  if (shared) {
    const token = newToken("cwa");
    const mine = await hashSecret(token);
    const hash = await shared.sharedValue("admin-token-hash", () => mine);
    if (hash === mine) {
      writeFileAtomic(path, token + "\n", 0o600);
      logger.info(`generated the replicas' admin token in ${path}`);
    } else {
      // another replica's token: a file here would hold one that does not work
      await Deno.remove(path).catch(() => {});
    }
    return hash;
  }
  try {
    return await hashSecret(Deno.readTextFileSync(path).trim());
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  const token = newToken("cwa");
  writeFileAtomic(path, token + "\n", 0o600);
  logger.info(`generated an admin token in ${path}`);
  return await hashSecret(token);
}

/** Runs the relay until SIGINT/SIGTERM; returns the exit code. */
export async function runRelay(opts: RelayOptions): Promise<number> {
  ensurePrivateDir(opts.dataDir);
  const logger = fileLogger(join(opts.dataDir, "relay.log"), true);
  const removeLastResort = installLastResort(logger);
  const fds = raiseFdLimit();
  if (fds.raisedFrom !== null) {
    logger.info(`file descriptor limit raised from ${fds.raisedFrom} to ${fds.limit}`);
  } else if (fds.error) logger.warn(`cannot raise the file descriptor limit: ${fds.error}`);
  const budget = connectionBudget(fds.limit);
  // the SSH gateway gets a quarter: each of its sessions also holds a dial-back on HTTPS
  const httpMax = maxConnectionsFor(budget);
  const sshMax = Math.max(1, Math.floor(httpMax / 4));
  const opened = await openRelayStore(opts.dataDir, opts.storeUrl);
  await using store = opened.store;
  logger.info(`store: ${opened.where}`);
  const adminHash = opts.authMode === "token"
    ? await adminTokenHash(opts.dataDir, logger, opened.shared ? store : null)
    : null;
  const scheme = opts.tls ? "https" : "http";

  let baseUrl = opts.baseUrl ?? "";
  // replicas present one host key: the first makes it, in the store
  const hostKey = !opts.sshListen
    ? null
    : opened.shared
    ? describeHostKey(await store.sharedValue("ssh-host-key", newHostKey))
    : loadOrCreateHostKey(join(opts.dataDir, "ssh_host_ed25519_key"));
  let sshPort: number | null = null;
  const audit = new AuditLog(join(opts.dataDir, "audit.log"));
  if (store.audit) audit.share(store.audit); // every replica's entries in one place
  const hub = new Hub();
  const cluster = opened.shared
    ? await Cluster.create({
      store,
      logger,
      hub,
      now: () => new Date(),
      peerCaCerts: opts.peerCa ? [opts.peerCa] : undefined,
    })
    : null;
  using relay = createRelay({
    hub,
    cluster,
    audit,
    pollAuth: true,
    authorizedKeysFile: join(opts.dataDir, "authorized_keys"),
    webhooksFile: join(opts.dataDir, "webhooks.json"),
    info: () => ({
      ssh: hostKey
        ? { port: sshPort, fingerprint: hostKey.fingerprint, hostKey: hostKey.publicLine }
        : null,
    }),
    store,
    logger,
    get baseUrl() {
      return baseUrl;
    },
    authMode: opts.authMode,
    adminTokenHash: adminHash,
    trustedProxy: opts.behindProxy,
  });
  const server = await serveGuardedHttp({
    hostname: opts.listen.hostname,
    port: opts.listen.port,
    tls: opts.tls,
    name: "https",
    limits: { ...RELAY_HTTP_LIMITS, maxConnections: httpMax },
    budget,
    logger,
    exemptAddress: opts.behindProxy,
  }, (req, info) => relay.app.fetch(req, info));
  relay.listenerStats(() => server.front.stats());
  const addr = server.addr;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  const url = `${scheme}://${host}:${addr.port}`;
  baseUrl ||= url;
  if (cluster) {
    const peerUrl = opts.peerUrl ?? url;
    await cluster.start(peerUrl);
    logger.info(`replica ${cluster.id}: peers reach it at ${peerUrl}`);
  }
  logger.info(`cw relay ${VERSION} listening on ${url}`);
  logger.info(`base URL ${baseUrl}; data dir ${opts.dataDir}; auth mode ${opts.authMode}`);
  logger.info(
    `connections: at most ${httpMax} on HTTPS, ${sshMax} on SSH (file descriptors: ${fds.limit})`,
  );
  let gateway: Awaited<ReturnType<typeof startSshGateway>> | null = null;
  if (opts.sshListen && hostKey) {
    gateway = await startSshGateway(
      {
        hostKey: hostKey.privateKey,
        logger,
        audit,
        publicKeys: relay.publicKeys,
        passwordPrincipal: relay.passwordPrincipal,
        holdSshConnection: relay.holdSshConnection,
        dialback: relay.dialback,
        speaks: relay.speaks,
        forwardingAllowed: relay.forwardingAllowed,
        budget,
        limits: { ...RELAY_SSH_LIMITS, maxConnections: sshMax },
      },
      opts.sshListen.hostname,
      opts.sshListen.port,
    );
    sshPort = gateway.port;
    const sshHost = opts.sshListen.hostname.includes(":")
      ? `[${opts.sshListen.hostname}]`
      : opts.sshListen.hostname;
    logger.info(`ssh gateway on ${sshHost}:${gateway.port}; host key ${hostKey.fingerprint}`);
    logger.info(
      `pin it: ssh-keyscan -p ${gateway.port} HOST, or add "[HOST]:${gateway.port} ${hostKey.publicLine}" to known_hosts`,
    );
  }
  if (opts.authMode === "token" && !Deno.env.get("CW_RELAY_ADMIN_TOKEN")) {
    logger.info(`admin token file: ${join(opts.dataDir, "admin.token")}`);
  }

  const stop = Promise.withResolvers<string>();
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(sig, () => stop.resolve(sig));
  }
  const reason = await stop.promise;
  logger.info(`shutting down (${reason})`);
  relay.goaway("the relay is restarting");
  await cluster?.leave(); // its nodes are not here any more: peers stop forwarding at once
  await gateway?.close().catch(() => {});
  const closed = server.shutdown();
  const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));
  // an open KV watch never finishes by itself: after a moment for requests in flight,
  // closing the store ends every watch (with `event: end`) so that none holds the shutdown
  await Promise.race([closed, delay(250)]);
  await audit.flush();
  await store[Symbol.asyncDispose]();
  await Promise.race([closed, delay(3000)]);
  await server.close(1000); // the last bytes of finished responses still travel the front
  audit.close();
  logger.info("stopped");
  removeLastResort();
  return 0;
}

/** `cw relay [flags]`: parses, runs, and turns errors into one line. */
export async function relayMain(args: string[]): Promise<number> {
  let opts: RelayOptions;
  try {
    opts = parseRelayArgs(args);
  } catch (err) {
    console.error(`cw relay: ${(err as Error).message}`);
    return 2;
  }
  try {
    return await runRelay(opts);
  } catch (err) {
    console.error(
      `cw relay: ${
        err instanceof CwError || err instanceof RangeError
          ? err.message
          : (err as Error).stack ?? err
      }`,
    );
    return 1;
  }
}
