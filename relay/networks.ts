/**
 * A network's settings, kept in the relay's store (so every replica sees
 * them) as KV entries of a namespace no client can name: client namespaces
 * start with a letter or digit, and another network's begin with its name
 * and a colon (routes_client.ts kvSpace).
 */
import type { RelayStore } from "./store.ts";

/** Where the settings live in the store's KV. */
export const NETWORK_SETTINGS_NS = ":relay:networks";

/** What a network's admin decides. */
export interface NetworkSettings {
  /** `ssh -L` through the SSH gateway to its nodes (each node must allow it too). Off by default. */
  allowForwarding: boolean;
}

const DEFAULTS: NetworkSettings = { allowForwarding: false };

/** The settings of `network` (defaults when none were set). */
export async function networkSettings(
  store: RelayStore,
  network: string,
): Promise<NetworkSettings> {
  const entry = await store.kvGet(NETWORK_SETTINGS_NS, network, new Date());
  if (!entry) return { ...DEFAULTS };
  try {
    const v = JSON.parse(new TextDecoder().decode(entry.value));
    return { allowForwarding: v.allowForwarding === true };
  } catch {
    return { ...DEFAULTS };
  }
}

/** Replaces the settings of `network`. */
export async function setNetworkSettings(
  store: RelayStore,
  network: string,
  settings: NetworkSettings,
): Promise<void> {
  const body = new TextEncoder().encode(JSON.stringify(settings));
  const w = await store.kvSet(NETWORK_SETTINGS_NS, network, body, {}, new Date());
  if (!w.ok) throw new Error(`Cannot store the settings of network "${network}"`);
}

/** Every network with settings. */
export async function listNetworkSettings(
  store: RelayStore,
): Promise<({ network: string } & NetworkSettings)[]> {
  const out: ({ network: string } & NetworkSettings)[] = [];
  let cursor: string | null = null;
  do {
    const page = await store.kvList(NETWORK_SETTINGS_NS, "", 1000, cursor, new Date());
    for (const e of page.entries) {
      out.push({ network: e.key, ...(await networkSettings(store, e.key)) });
    }
    cursor = page.cursor;
  } while (cursor !== null);
  return out;
}
