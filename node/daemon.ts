import { CwError } from "../shared/errors.ts";
import { fileLogger, type Logger } from "../shared/logger.ts";
import { ensurePrivateDir, type NodePaths, nodePaths, writeFileAtomic } from "../shared/paths.ts";
import { VERSION } from "../shared/version.ts";
import { loadConfig, type NodeConfig } from "./config.ts";
import { PtyHost } from "./pty_host.ts";
import { RelayLink } from "./link.ts";
import { listenWebSocket } from "./ws_listener.ts";
import { runDialback } from "./ssh_session.ts";
import { isLoopback, parseListen } from "../shared/net.ts";
import { loadRelayConfig } from "../shared/relay_config.ts";
import { SessionService } from "./service.ts";
import { type Notice, Notifier, NOTIFY_LINES } from "../shared/notify.ts";
import { trimRows } from "./screen.ts";
import type { Session } from "./session.ts";
import { SessionManager } from "./sessions.ts";
import { MetaStore } from "./store.ts";
import { raiseFdLimit } from "../shared/libc.ts";
import { installLastResort } from "../shared/last_resort.ts";
import { acceptLoop, type FdBudget } from "../shared/guarded_listener.ts";
import {
  connectionBudget,
  NODE_FD_SHARE,
  NODE_SOCKET_MAX_CONNECTIONS,
} from "../shared/listener_limits.ts";

/** Node settings; every size has a default. */
export interface NodeOptions {
  home: string;
  /** Echo the log to stderr (foreground `cw node`). */
  foreground: boolean;
  /** How long sessions get after SIGHUP at shutdown before SIGKILL. */
  graceMs?: number;
  /** `--listen` etc.; override config.json. */
  listen?: string | null;
  tlsCert?: string | null;
  tlsKey?: string | null;
}

/** How long to wait for another node's lock before giving up. */
const LOCK_WAIT_MS = 1000;

/**
 * Runs the node daemon until `cw stop`, SIGTERM or SIGINT; returns the exit
 * code. One node per data directory: a lock file makes a second one fail at
 * once, and a socket or pid file left by a crashed node is replaced.
 */
export async function runNode(opts: NodeOptions): Promise<number> {
  ensurePrivateDir(opts.home);
  const paths = nodePaths(opts.home);
  const logger = fileLogger(paths.logFile, opts.foreground);
  const config = loadConfig(opts.home);
  if (opts.listen !== undefined && opts.listen !== null) config.listen = opts.listen;
  if (opts.tlsCert) config.tlsCert = opts.tlsCert;
  if (opts.tlsKey) config.tlsKey = opts.tlsKey;
  const listen = checkListen(config);
  const lock = await takeLock(paths);
  const removeLastResort = installLastResort(logger);
  const fds = raiseFdLimit();
  if (fds.raisedFrom !== null) {
    logger.info(`file descriptor limit raised from ${fds.raisedFrom} to ${fds.limit}`);
  } else if (fds.error) logger.warn(`cannot raise the file descriptor limit: ${fds.error}`);
  const daemon = new Daemon(
    paths,
    logger,
    opts,
    config,
    connectionBudget(fds.limit, NODE_FD_SHARE),
  );
  try {
    await daemon.start();
    if (listen) await daemon.listen(listen);
    logger.info(`node ${VERSION} pid ${Deno.pid} serving ${paths.socket}`);
    await daemon.finished;
    return 0;
  } finally {
    removeLastResort();
    lock.close();
  }
}

/** Validates the direct listener settings before anything starts. */
function checkListen(config: NodeConfig): ListenSpec | null {
  if (!config.listen) return null;
  let addr: { hostname: string; port: number };
  try {
    addr = parseListen(config.listen);
  } catch (err) {
    throw new CwError("bad_request", (err as Error).message);
  }
  if ((config.tlsCert === null) !== (config.tlsKey === null)) {
    throw new CwError("bad_request", "Give both a TLS certificate and key for --listen");
  }
  const tls = config.tlsCert && config.tlsKey
    ? { cert: Deno.readTextFileSync(config.tlsCert), key: Deno.readTextFileSync(config.tlsKey) }
    : null;
  if (!tls && !isLoopback(addr.hostname)) {
    throw new CwError(
      "bad_request",
      `Refusing plain ws:// on ${addr.hostname}: give --tls-cert and --tls-key, or listen on loopback`,
    );
  }
  return { ...addr, tls };
}

/** A validated direct listener. */
interface ListenSpec {
  hostname: string;
  port: number;
  tls: { cert: string; key: string } | null;
}

async function takeLock(paths: NodePaths): Promise<Deno.FsFile> {
  const file = await Deno.open(paths.lockFile, {
    read: true,
    write: true,
    create: true,
    mode: 0o600,
  });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const locked = await Promise.race([
    file.lock(true).then(() => true),
    new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), LOCK_WAIT_MS)),
  ]);
  clearTimeout(timer);
  if (!locked) {
    let pid = "?";
    try {
      pid = Deno.readTextFileSync(paths.pidFile).trim();
    } catch {
      // unknown
    }
    throw new CwError("name_taken", `A node is already running for ${paths.home} (pid ${pid})`);
  }
  return file;
}

class Daemon {
  #paths: NodePaths;
  #logger: Logger;
  #opts: NodeOptions;
  #pty = new PtyHost();
  #manager: SessionManager;
  #listener: Deno.UnixListener | null = null;
  #link: RelayLink | null = null;
  #service: SessionService | null = null;
  #wsUrl: string | null = null;
  #wsClose: (() => Promise<void>) | null = null;
  #shutdown: Promise<void> | null = null;
  #done!: () => void;
  #startedAt = new Date();
  #budget: FdBudget;
  #notifyUrl: string | null;
  #forwarding: NodeConfig["forwarding"];
  #notifier: Notifier | null = null;
  readonly finished: Promise<void>;

  constructor(
    paths: NodePaths,
    logger: Logger,
    opts: NodeOptions,
    config: NodeConfig,
    budget: FdBudget,
  ) {
    this.#budget = budget;
    this.#notifyUrl = config.notifyUrl;
    this.#forwarding = config.forwarding;
    this.#paths = paths;
    this.#logger = logger;
    this.#opts = opts;
    this.#manager = new SessionManager({
      store: new MetaStore(paths.stateFile, paths.sessionsDir, (m) => logger.warn(m)),
      pty: this.#pty,
      ringBytes: config.sessionRingBytes,
      logBytes: config.sessionLogBytes,
    });
    this.finished = new Promise((resolve) => this.#done = resolve);
  }

  async start(): Promise<void> {
    await this.#pty.ready();
    this.#manager.load();
    // we hold the lock, so a socket or pid file here is a crashed node's
    for (const stale of [this.#paths.socket, this.#paths.pidFile]) {
      try {
        Deno.removeSync(stale);
        this.#logger.warn(`removed stale ${stale}`);
      } catch {
        // none
      }
    }
    this.#listener = Deno.listen({ transport: "unix", path: this.#paths.socket });
    Deno.chmodSync(this.#paths.socket, 0o600);
    writeFileAtomic(this.#paths.pidFile, `${Deno.pid}\n`);

    const service: SessionService = new SessionService({
      manager: this.#manager,
      logger: this.#logger,
      requestShutdown: () => void this.shutdown("cw stop"),
      info: () => ({
        version: VERSION,
        pid: Deno.pid,
        home: this.#paths.home,
        startedAt: this.#startedAt.toISOString(),
        ...this.#manager.counts(),
        relay: this.#link?.status ?? null,
        listen: this.#wsUrl,
      }),
      reloadRelay: () => this.#reloadRelay(service),
    });
    this.#service = service;
    this.#notices(service);
    await this.#reloadRelay(service);
    this.#accept(this.#listener, service);
    for (const sig of ["SIGTERM", "SIGINT"] as const) {
      Deno.addSignalListener(sig, () => void this.shutdown(sig));
    }
    // the node outlives the terminal that started it
    Deno.addSignalListener("SIGHUP", () => {});
  }

  /**
   * Sends a notice when a session starts waiting or ends (shared/notify.ts):
   * to this node's `notifyUrl`, and over the relay link (the relay delivers
   * it to the webhook of the node's network, if it has one).
   */
  #notices(service: SessionService): void {
    const notifier = this.#notifyUrl ? new Notifier(this.#notifyUrl, this.#logger) : null;
    this.#notifier = notifier;
    const send = async (s: Session, event: Notice["event"]) => {
      if (!notifier && !this.#link) return;
      let lines: string[] = [];
      try {
        lines = trimRows((await service.screens.screen(s, false)).lines).slice(-NOTIFY_LINES);
      } catch {
        // the node is busy rendering: the notice goes without its lines
      }
      const { id, name, argv, tags, status, exitCode, signal, state } = s.info();
      const notice: Notice = {
        event,
        node: loadRelayConfig(this.#paths.home)?.name ?? Deno.hostname(),
        session: { id, name, argv, tags, status, exitCode, signal, state },
        at: new Date().toISOString(),
        lines,
      };
      notifier?.send(notice);
      this.#link?.notice(notice);
    };
    this.#manager.activity.onChange((s, activity) => {
      if (activity === "waiting") void send(s, "waiting");
    });
    this.#manager.onEnd((s) => void send(s, "exited"));
  }

  /** Serves the protocol over WebSocket too (direct mode). */
  async listen(spec: ListenSpec): Promise<void> {
    const ws = await listenWebSocket({
      ...spec,
      home: this.#paths.home,
      logger: this.#logger,
      budget: this.#budget,
      serve: (duplex) => void this.#service!.serve(duplex),
    });
    this.#wsUrl = ws.url;
    this.#wsClose = ws.close;
  }

  async #reloadRelay(service: SessionService): Promise<Record<string, unknown> | null> {
    await this.#link?.stop();
    this.#link = null;
    const config = loadRelayConfig(this.#paths.home);
    if (!config || this.#shutdown) return null;
    this.#link = new RelayLink(config, {
      logger: this.#logger,
      serve: (stream, principal) => void service.serve(stream, { principal }),
      sessions: () => this.#manager.counts().running,
      dialback: (cfg, ticket, principal) => {
        this.#logger.info(
          `ssh session for ${principal ?? "an unnamed principal"} through the relay`,
        );
        void runDialback(cfg, ticket, this.#pty, this.#logger, { forwarding: this.#forwarding });
      },
    });
    return { ...this.#link.status };
  }

  /**
   * Accepts on the unix socket until shutdown. Survives a failed accept (out
   * of descriptors: back off 5 ms → 1 s and retry) and holds at most
   * {@link NODE_SOCKET_MAX_CONNECTIONS} connections, each also taking a
   * descriptor from the node's budget; the protocol's HELLO deadline bounds
   * connections that say nothing.
   */
  async #accept(listener: Deno.UnixListener, service: SessionService): Promise<void> {
    let open = 0;
    await acceptLoop(listener, {
      name: "socket",
      logger: this.#logger,
      running: () => !this.#shutdown,
      onConn: (conn) => {
        if (open >= NODE_SOCKET_MAX_CONNECTIONS || !this.#budget.take(1)) {
          this.#logger.warn(`socket: refused a connection (${open} open)`);
          conn.close();
          return;
        }
        open++;
        service.serve(conn, { local: true }).catch((err) =>
          this.#logger.error(`socket: connection failed: ${(err as Error)?.stack ?? err}`)
        ).finally(() => {
          open--;
          this.#budget.give(1);
        });
      },
    });
  }

  shutdown(reason: string): Promise<void> {
    this.#shutdown ??= (async () => {
      this.#logger.info(`shutting down (${reason})`);
      try {
        this.#listener?.close();
      } catch {
        // closed
      }
      await this.#link?.stop();
      await this.#wsClose?.().catch(() => {});
      await this.#manager.shutdown(this.#opts.graceMs ?? 3000);
      for (const file of [this.#paths.socket, this.#paths.pidFile]) {
        try {
          Deno.removeSync(file);
        } catch {
          // gone
        }
      }
      this.#pty.terminate();
      this.#service?.screens.close();
      this.#notifier?.close();
      this.#logger.info("stopped");
      this.#done();
    })();
    return this.#shutdown;
  }
}
