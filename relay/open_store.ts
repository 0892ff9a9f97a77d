/**
 * Which store a relay (or an admin command) uses: Deno KV in the data dir by
 * default, or PostgreSQL when a store URL is given with `--store` or the
 * {@link STORE_ENV} environment variable. Only PostgreSQL can be shared by
 * several replicas (relay/cluster.ts).
 */
import { join } from "node:path";
import { openKvStore } from "./kv_store.ts";
import type { RelayStore } from "./store.ts";

/** The environment variable that names the store (it may carry a password). */
export const STORE_ENV = "CW_RELAY_STORE";

/**
 * The store URL from `--store` or {@link STORE_ENV}; null for Deno KV.
 * A password on the command line is refused: other users of the machine can
 * read a process's arguments.
 */
export function storeUrlFrom(flag: string | undefined): string | null {
  if (flag !== undefined) {
    let password = "";
    try {
      password = new URL(flag).password;
    } catch {
      throw new RangeError("--store is not a URL: use postgres://USER@HOST:PORT/DB");
    }
    if (password) {
      throw new RangeError(
        `Refusing a password in --store (the command line is visible to other users): put the URL in ${STORE_ENV}, or the password in PGPASSWORD or ~/.pgpass`,
      );
    }
    return flag;
  }
  return Deno.env.get(STORE_ENV) || null;
}

/** An open store, and whether other relays may share it. */
export interface OpenedStore {
  store: RelayStore;
  shared: boolean;
  /** Where it is, for logs (no password). */
  where: string;
}

/** Opens the store: PostgreSQL at `url`, else Deno KV in `dataDir`. */
export async function openRelayStore(dataDir: string, url: string | null): Promise<OpenedStore> {
  if (url === null) {
    const path = join(dataDir, "relay.kv");
    return { store: await openKvStore(path), shared: false, where: path };
  }
  // loaded only when asked for: the default relay never loads the PostgreSQL driver
  const { openPgStore, redactStoreUrl } = await import("./store_pg.ts");
  return { store: await openPgStore(url), shared: true, where: redactStoreUrl(url) };
}
