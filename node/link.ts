import type { Logger } from "../shared/logger.ts";
import { Mux } from "../shared/mux.ts";
import { assertRelayTransport, type RelayConfig } from "../shared/relay_config.ts";
import { connectWebSocket } from "../shared/ws_client.ts";
import type { Notice } from "../shared/notify.ts";
import { VERSION } from "../shared/version.ts";
import { DIALBACK_FEATURES } from "../shared/dialback.ts";
import type { Duplex } from "../shared/duplex.ts";
import { type RemotePrincipal, remotePrincipalOf } from "../shared/access.ts";

/** Longest wait between reconnect attempts. */
const BACKOFF_CAP_MS = 10_000;
/** After the relay said it is restarting, retry at least this often. */
const RESTART_CAP_MS = 1_000;
/** How long the short restart cap applies after a "relay restarting" notice. */
const RESTART_WINDOW_MS = 60_000;
/** First non-immediate retry delay. */
const BACKOFF_BASE_MS = 100;
/** A link that stayed up this long resets the backoff. */
const HEALTHY_MS = 30_000;
/** How often the node reports its status on the link. */
const STATUS_INTERVAL_MS = 10_000;
/** How long one connection attempt may take. */
const CONNECT_TIMEOUT_MS = 10_000;

/** The link's state, as `info` reports it. */
export interface LinkStatus {
  url: string;
  name: string;
  state: "connecting" | "connected" | "waiting" | "stopped";
  since: string;
  lastError: string | null;
  attempts: number;
}

/** What the link needs from the node. */
export interface LinkHost {
  logger: Logger;
  /** Serves one protocol stream opened by the relay, for the principal the relay names. */
  serve(stream: Duplex, principal: RemotePrincipal | null): void;
  /** Running sessions, reported to the relay. */
  sessions(): number;
  /** The relay asks for a dial-back connection for an SSH session. */
  dialback(config: RelayConfig, ticket: string, principal: string | null): void;
}

/**
 * The node's persistent outbound link to its relay: one WebSocket to
 * `/node/connect`, authenticated by the credential in a header, carrying
 * multiplexed streams. Reconnects with jittered exponential backoff: the
 * first retry is immediate, waits grow to 10 s, a healthy period resets them,
 * and after a "relay restarting" notice retries stay within 1 s.
 */
export class RelayLink {
  #config: RelayConfig;
  #host: LinkHost;
  #abort = new AbortController();
  #mux: Mux | null = null;
  #status: LinkStatus;
  #done: Promise<void>;
  /** Which of the relay's addresses the link uses now (the config's url, then its urls). */
  #at = 0;

  /** Starts linking at once. */
  constructor(config: RelayConfig, host: LinkHost) {
    this.#config = config;
    this.#host = host;
    this.#status = {
      url: config.url,
      name: config.name,
      state: "connecting",
      since: new Date().toISOString(),
      lastError: null,
      attempts: 0,
    };
    this.#done = this.#run();
  }

  #urls(): string[] {
    return [this.#config.url, ...(this.#config.urls ?? [])];
  }

  /** A snapshot of the link's state. */
  get status(): LinkStatus {
    return { ...this.#status };
  }

  /** Closes the link for good. */
  async stop(): Promise<void> {
    this.#abort.abort();
    this.#mux?.close("node stopping");
    await this.#done;
    this.#set("stopped", null);
  }

  #set(state: LinkStatus["state"], error: string | null): void {
    if (this.#status.state !== state) this.#status.since = new Date().toISOString();
    this.#status.state = state;
    if (error !== null) this.#status.lastError = error;
  }

  async #run(): Promise<void> {
    try {
      assertRelayTransport(this.#config);
    } catch (err) {
      // a config from before --insecure existed, or edited by hand: never link
      this.#set("stopped", (err as Error).message);
      this.#host.logger.error(`relay link: ${(err as Error).message}`);
      return;
    }
    const signal = this.#abort.signal;
    let attempt = 0;
    let restarting = false;
    let restartingSince = 0;
    while (!signal.aborted) {
      this.#set("connecting", null);
      this.#status.attempts++;
      const started = Date.now();
      const outcome = await this.#connectOnce(signal);
      if (signal.aborted) return;
      // another address of the relay (a replica) after a failed attempt, picked at random:
      // the nodes of a lost replica spread over the others instead of all rushing to one
      const all = this.#urls();
      if (!outcome.connected && all.length > 1) {
        this.#at = (this.#at + 1 + Math.floor(Math.random() * (all.length - 1))) % all.length;
        this.#status.url = all[this.#at];
      }
      if (outcome.connected) {
        // a link that was healthy retries at once; a flapping one keeps backing off
        if (Date.now() - started >= HEALTHY_MS) attempt = 0;
        restarting = outcome.restarting;
        restartingSince = Date.now();
      }
      // a relay that said it was restarting but stays away gets normal backoff
      if (restarting && Date.now() - restartingSince > RESTART_WINDOW_MS) restarting = false;
      const cap = restarting ? RESTART_CAP_MS : BACKOFF_CAP_MS;
      const delay = attempt === 0
        ? 0
        : Math.min(cap, BACKOFF_BASE_MS * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2);
      attempt++;
      this.#set("waiting", outcome.error);
      if (delay > 0) {
        this.#host.logger.info(
          `relay link: retrying in ${Math.round(delay)} ms (${outcome.error})`,
        );
        await sleep(delay, signal);
      }
    }
  }

  /** One connection: resolves when it is over. */
  #connectOnce(
    signal: AbortSignal,
  ): Promise<{ connected: boolean; restarting: boolean; error: string }> {
    const base = this.#urls()[this.#at];
    const url = new URL("/node/connect", base);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const opening = connectWebSocket(url, {
      headers: { authorization: `Bearer ${this.#config.credential}` },
      caCerts: this.#config.caCert ? [this.#config.caCert] : undefined,
      timeoutMs: CONNECT_TIMEOUT_MS,
    });
    return new Promise((resolve) => {
      let connected = false;
      let restarting = false;
      let onAbort = () => {};
      const finish = (error: string) => {
        signal.removeEventListener("abort", onAbort);
        resolve({ connected, restarting, error });
      };
      opening.then((ws) => {
        onAbort = () => ws.close();
        signal.addEventListener("abort", onAbort, { once: true });
        if (signal.aborted) ws.close();
        open(ws as unknown as WebSocket);
      }, (err) => finish((err as Error).message));
      const open = (ws: WebSocket) => {
        connected = true;
        this.#set("connected", null);
        this.#host.logger.info(
          `relay link: connected to ${base} as ${this.#config.name}`,
        );
        const timers: { status?: ReturnType<typeof setInterval> } = {};
        const mux = new Mux(ws, {
          onStream: (stream, meta) => {
            if (meta.kind === "node") this.#host.serve(stream, remotePrincipalOf(meta));
            else stream.close();
          },
          onControl: (msg) => {
            if (msg.type === "dialback" && typeof msg.ticket === "string") {
              const who = typeof msg.principal === "string" ? msg.principal.slice(0, 200) : null;
              // back to the replica this link is on: the ticket is its own
              this.#host.dialback({ ...this.#config, url: base }, msg.ticket, who);
            }
          },
          onGoaway: (reason, message) => {
            restarting = reason === "relay_restarting";
            this.#host.logger.info(`relay link: relay says ${reason}: ${message}`);
          },
          onClose: (reason) => {
            clearInterval(timers.status);
            this.#mux = null;
            finish(reason);
          },
        }, { role: "dial" });
        this.#mux = mux;
        const report = () =>
          mux.control({
            type: "status",
            version: VERSION,
            sessions: this.#host.sessions(),
            features: DIALBACK_FEATURES,
          });
        report();
        timers.status = setInterval(report, STATUS_INTERVAL_MS);
      };
    });
  }

  /** Forwards a notice to the relay, if the link is up (it is not queued for later). */
  notice(notice: Notice): void {
    try {
      this.#mux?.control({ type: "notice", notice: notice as unknown as Record<string, unknown> });
    } catch {
      // the link just went down
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}
