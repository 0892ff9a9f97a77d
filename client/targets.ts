/**
 * Which node a command talks to, and how: the local node over its unix
 * socket, a node through the relay (`dev-1:3`), or a saved direct server
 * (`--server NAME`). Each is a {@link Dialer}; the commands are written once
 * against {@link NodeClient}.
 */
import { join } from "../shared/path.ts";
import { CwError } from "../shared/errors.ts";
import { ensurePrivateDir, writeFileAtomic } from "../shared/paths.ts";
import { isCleartextRemote } from "../shared/net.ts";
import { loadRelayAccess } from "../shared/relay_config.ts";
import { paths } from "../shared/api.ts";
import { RELAY_NAME_RE } from "../shared/names.ts";
import { localDialer } from "./local.ts";
import { type Dialer, NodeClient } from "./node_client.ts";

/** Node names, as on the relay. */
export const NODE_NAME_RE = RELAY_NAME_RE;

/** A session reference split into its node (null: this machine) and session. */
export interface SessionTarget {
  node: string | null;
  session: string;
}

/**
 * Splits `NODE:SESSION`. A bare id or name is always a session on this
 * machine (or on the `--server`); a node is only ever named with the colon,
 * or as the leading argument of `list`, `launch` and `kill --tag/--all`.
 */
export function splitRef(ref: string): SessionTarget {
  const colon = ref.indexOf(":");
  if (colon === -1) return { node: null, session: ref };
  const node = ref.slice(0, colon);
  const session = ref.slice(colon + 1);
  if (!NODE_NAME_RE.test(node) || session === "") {
    throw new CwError("bad_request", `Invalid session "${ref}": use ID, NAME or NODE:ID`);
  }
  return { node, session };
}

/** A saved direct server (`cw server add`). */
export interface ServerEntry {
  name: string;
  url: string;
  token: string;
  caCert: string | null;
  /** Saved with `--insecure`: plain `ws://` to a host that is not loopback. */
  insecure?: boolean;
}

function serversPath(home: string): string {
  return join(home, "servers.json");
}

/** Saved servers of this CW_HOME. */
export function loadServers(home: string): ServerEntry[] {
  try {
    const v = JSON.parse(Deno.readTextFileSync(serversPath(home)));
    return Array.isArray(v.servers) ? v.servers : [];
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw new CwError("bad_request", `${serversPath(home)} is damaged: ${(err as Error).message}`);
  }
}

/** Saves servers (0600: they hold tokens). */
export function saveServers(home: string, servers: ServerEntry[]): void {
  ensurePrivateDir(home);
  writeFileAtomic(serversPath(home), JSON.stringify({ servers }, null, 2) + "\n", 0o600);
}

/** Opens a WebSocket with a bearer token, as a duplex, failing clearly. */
function wsDialer(url: URL, token: string, caCert: string | null, what: string): Dialer {
  return async () => {
    try {
      // loaded only for a remote target: a local command does not pay for them
      const [{ connectWebSocket }, { wsDuplex }] = await Promise.all([
        import("../shared/ws_client.ts"),
        import("../shared/ws_duplex.ts"),
      ]);
      const ws = await connectWebSocket(url, {
        headers: { authorization: `Bearer ${token}` },
        caCerts: caCert ? [caCert] : undefined,
      });
      return wsDuplex(ws as unknown as WebSocket);
    } catch (err) {
      const e = err as CwError;
      throw new CwError(e.code ?? "node_unavailable", `Cannot connect to ${what}: ${e.message}`);
    }
  };
}

/** Picks clients for a command's targets. */
export class Targets {
  #home: string;
  #server: string | null;
  #autostart: boolean;

  /** Targets of `home`; `server` is `--server`/`CW_SERVER`. */
  constructor(home: string, server: string | null, autostart: boolean) {
    this.#home = home;
    this.#server = server;
    this.#autostart = autostart;
  }

  /** Whether commands go to a saved server rather than this machine. */
  get server(): string | null {
    return this.#server;
  }

  /** A client for `node` (null: this machine, or the `--server`). */
  client(node: string | null): NodeClient {
    if (node !== null) {
      if (this.#server) {
        throw new CwError(
          "bad_request",
          `A node prefix ("${node}:") cannot be combined with --server ${this.#server}`,
        );
      }
      return new NodeClient(this.#relayDialer(node));
    }
    if (this.#server) return new NodeClient(this.#serverDialer(this.#server));
    return new NodeClient(localDialer(this.#home, this.#autostart));
  }

  /** Whether `node` names a remote target (for resume on network loss). */
  isRemote(node: string | null): boolean {
    return node !== null || this.#server !== null;
  }

  #relayDialer(node: string): Dialer {
    if (!NODE_NAME_RE.test(node)) throw new CwError("invalid_name", `Invalid node name "${node}"`);
    const access = loadRelayAccess(this.#home);
    if (!access) {
      throw new CwError(
        "not_found",
        `Cannot reach node "${node}": no relay is set up (cw login --relay-url URL, or cw setup --relay-url URL --invite-file FILE)`,
      );
    }
    const url = new URL(paths.connect(node), access.url);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return wsDialer(url, access.token, access.caCert, `the relay ${access.url}`);
  }

  #serverDialer(name: string): Dialer {
    const entry = loadServers(this.#home).find((s) => s.name === name);
    if (!entry) throw new CwError("not_found", `Unknown server "${name}": see cw server list`);
    const url = new URL(entry.url);
    if (entry.insecure !== true && isCleartextRemote(url)) {
      throw new CwError(
        "forbidden",
        `Refusing to send the token of server "${name}" in clear text to ${url.origin}: add it again with a wss:// URL (or --insecure if the network to it is private)`,
      );
    }
    return wsDialer(
      url,
      entry.token,
      entry.caCert,
      `server "${name}" (${entry.url})`,
    );
  }
}
