import { join } from "./path.ts";
import { CwError } from "./errors.ts";
import { isCleartextRemote } from "./net.ts";
import { writeFileAtomic } from "./paths.ts";

/** What `cw setup` saves: how this node reaches its relay. The file is 0600. */
export interface RelayConfig {
  /** The relay's base URL, e.g. `https://relay.example.com`. */
  url: string;
  /** This node's name on the relay. */
  name: string;
  /** The node credential (`NAME.cwn_…`); a secret. */
  credential: string;
  /** PEM of a CA to trust for the relay, when not a public one. */
  caCert: string | null;
  /** The user accepted plain `http://` to a host that is not loopback (`--insecure`). */
  insecure?: boolean;
  /**
   * More addresses of the same relay (its replicas, relay/cluster.ts): when
   * the link cannot reach one, it tries the next ({@link RELAY_MAX_URLS} in all).
   */
  urls?: string[];
}

/** Most addresses a node keeps for its relay. */
export const RELAY_MAX_URLS = 8;

/** Path of the relay config in a data dir. */
export function relayConfigPath(home: string): string {
  return join(home, "relay.json");
}

/** Reads the relay config; null when this node has none. */
export function loadRelayConfig(home: string): RelayConfig | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(relayConfigPath(home));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
  try {
    const v = JSON.parse(text);
    if (
      typeof v.url === "string" && typeof v.name === "string" && typeof v.credential === "string"
    ) {
      return {
        url: v.url,
        name: v.name,
        credential: v.credential,
        caCert: typeof v.caCert === "string" ? v.caCert : null,
        insecure: v.insecure === true,
        urls: Array.isArray(v.urls)
          ? v.urls.filter((u: unknown): u is string => typeof u === "string")
            .slice(0, RELAY_MAX_URLS - 1)
          : undefined,
      };
    }
  } catch {
    // fall through
  }
  throw new CwError("bad_request", `${relayConfigPath(home)} is damaged; run cw setup again`);
}

/**
 * Throws {@link CwError} `forbidden` when the config would send the node
 * credential in clear text to another host: a plain `http://` URL that is not
 * loopback, saved without `--insecure` (by hand, or by an older cw).
 */
export function assertRelayTransport(
  config: Pick<RelayConfig, "url" | "insecure" | "urls">,
): void {
  for (const url of [config.url, ...(config.urls ?? [])]) {
    assertOneTransport(url, config.insecure);
  }
}

function assertOneTransport(url: string, insecure: boolean | undefined): void {
  const config = { url, insecure };
  if (!config.insecure && isCleartextRemote(new URL(config.url))) {
    throw new CwError(
      "forbidden",
      `Refusing to send the node credential in clear text to ${config.url}: run cw setup again with an https:// URL (or --insecure if the network to the relay is private)`,
    );
  }
}

/** Saves the relay config atomically with mode 0600. */
export function saveRelayConfig(home: string, config: RelayConfig): void {
  writeFileAtomic(relayConfigPath(home), JSON.stringify(config, null, 2) + "\n", 0o600);
}

/** Removes the relay config; false if there was none. */
export function removeRelayConfig(home: string): boolean {
  try {
    Deno.removeSync(relayConfigPath(home));
    return true;
  } catch {
    return false;
  }
}

/** An HTTP client trusting the config's CA (for fetch and WebSocket), if it has one. */
export function relayHttpClient(config: Pick<RelayConfig, "caCert">): Deno.HttpClient | undefined {
  return config.caCert ? Deno.createHttpClient({ caCerts: [config.caCert] }) : undefined;
}

/** What `cw login` saves: a user token for a relay, for a machine without a node. 0600. */
export interface LoginConfig {
  url: string;
  /** The user token (`NAME.cwu_…`); a secret. */
  token: string;
  caCert: string | null;
  insecure?: boolean;
}

/** Path of the login in a data dir. */
export function loginPath(home: string): string {
  return join(home, "login.json");
}

/** Reads the login; null when there is none. */
export function loadLogin(home: string): LoginConfig | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(loginPath(home));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
  try {
    const v = JSON.parse(text);
    if (typeof v.url === "string" && typeof v.token === "string") {
      return {
        url: v.url,
        token: v.token,
        caCert: typeof v.caCert === "string" ? v.caCert : null,
        insecure: v.insecure === true,
      };
    }
  } catch {
    // fall through
  }
  throw new CwError("bad_request", `${loginPath(home)} is damaged; run cw login again`);
}

/** Saves the login atomically with mode 0600. */
export function saveLogin(home: string, login: LoginConfig): void {
  writeFileAtomic(loginPath(home), JSON.stringify(login, null, 2) + "\n", 0o600);
}

/** Removes the login; false if there was none. */
export function removeLogin(home: string): boolean {
  try {
    Deno.removeSync(loginPath(home));
    return true;
  } catch {
    return false;
  }
}

/** How this machine's client reaches a relay: a login, else the node's own credential. */
export interface RelayAccess {
  url: string;
  /** The bearer token: a user token or the node credential. */
  token: string;
  caCert: string | null;
  insecure?: boolean;
  /** This node's name when the access is the node's credential. */
  node: string | null;
}

/**
 * The relay access of a data dir: `cw login`'s token if there is one (a
 * person says who they are), else the node credential of `cw setup`; null
 * when neither. Throws `forbidden` for a clear-text URL saved without `--insecure`.
 */
export function loadRelayAccess(home: string): RelayAccess | null {
  const login = loadLogin(home);
  if (login) {
    if (!login.insecure && isCleartextRemote(new URL(login.url))) {
      throw new CwError(
        "forbidden",
        `Refusing to send the user token in clear text to ${login.url}: run cw login again with an https:// URL (or --insecure if the network to the relay is private)`,
      );
    }
    return { ...login, node: null };
  }
  const config = loadRelayConfig(home);
  if (!config) return null;
  assertRelayTransport(config);
  return {
    url: config.url,
    token: config.credential,
    caCert: config.caCert,
    insecure: config.insecure,
    node: config.name,
  };
}
