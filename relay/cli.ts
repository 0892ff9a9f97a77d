import { join } from "node:path";
import { parseArgs } from "node:util";
import { parseDuration } from "../shared/duration.ts";
import { hashSecret, newToken } from "../shared/secrets.ts";
import { ensurePrivateDir } from "../shared/paths.ts";
import { isCleartextRemote } from "../shared/net.ts";
import { readSecret } from "../shared/secret_input.ts";
import { defaultDataDir, relayMain } from "./main.ts";
import { openKvStore } from "./kv_store.ts";
import type { RelayStore } from "./store.ts";

const USAGE = `Usage:
  cw relay [--listen ADDR] [--tls-cert FILE --tls-key FILE] [--base-url URL]
           [--data-dir DIR] [--auth-mode token|none] [--behind-proxy PROXY_IP]
           [--ssh-listen ADDR|off]  (SSH gateway, default 0.0.0.0:2222)
  cw relay invite [--uses N] [--ttl DURATION]      print a new invite token
  cw relay invite --list | --revoke ID|TOKEN    (ID as --list prints it)
  cw relay nodes [--json] | --revoke NAME
Admin commands work on --data-dir DIR (default ~/.codewire/relay), or on a
running relay with --relay-url URL [--ca-cert FILE] and the admin token from
--admin-token-file FILE, --admin-token - (stdin) or CW_RELAY_ADMIN_TOKEN.
Plain http:// only to loopback, unless --insecure.`;

/** `cw relay …`: the server itself, or an admin command. */
export async function relayCommand(args: string[]): Promise<number> {
  if (args[0] === "--help" || args[0] === "-h" || args[0] === "help") {
    console.log(USAGE);
    return 0;
  }
  if (args[0] !== "invite" && args[0] !== "nodes") return await relayMain(args);
  try {
    return args[0] === "invite" ? await invite(args.slice(1)) : await nodes(args.slice(1));
  } catch (err) {
    console.error(`cw relay ${args[0]}: ${(err as Error).message}`);
    return err instanceof RangeError || err instanceof TypeError ? 2 : 1;
  }
}

/** Talks to a relay's admin API or straight to its data dir. */
interface Admin {
  createInvite(uses: number, ttlSeconds: number): Promise<{ token: string; expiresAt: string }>;
  listInvites(): Promise<{ id: string; usesLeft: number; expiresAt: string }[]>;
  revokeInvite(token: string): Promise<boolean>;
  listNodes(): Promise<Record<string, unknown>[]>;
  revokeNode(name: string): Promise<boolean>;
  close(): Promise<void>;
}

function adminFlags() {
  return {
    "data-dir": { type: "string" as const },
    "relay-url": { type: "string" as const },
    "ca-cert": { type: "string" as const },
    "admin-token": { type: "string" as const },
    "admin-token-file": { type: "string" as const },
    insecure: { type: "boolean" as const },
    json: { type: "boolean" as const },
  };
}

async function openAdmin(
  values: {
    "data-dir"?: string;
    "relay-url"?: string;
    "ca-cert"?: string;
    "admin-token"?: string;
    "admin-token-file"?: string;
    insecure?: boolean;
  },
): Promise<Admin> {
  if (values["relay-url"]) {
    let url: URL;
    try {
      url = new URL(values["relay-url"]);
    } catch {
      throw new RangeError(`Invalid --relay-url "${values["relay-url"]}"`);
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") {
      throw new RangeError("--relay-url must be an https:// URL");
    }
    if (values.insecure !== true && isCleartextRemote(url)) {
      throw new RangeError(
        `Refusing to send the admin token in clear text to ${url.origin}: use an https:// URL, or add --insecure if the network to the relay is private`,
      );
    }
    const token = await readSecret({
      flag: "admin-token",
      value: values["admin-token"],
      file: values["admin-token-file"],
      envVar: "CW_RELAY_ADMIN_TOKEN",
    });
    if (token === null) {
      throw new RangeError(
        "--relay-url needs the admin token: --admin-token-file FILE, --admin-token - (stdin) or CW_RELAY_ADMIN_TOKEN",
      );
    }
    return apiAdmin(url, token, values["ca-cert"]);
  }
  const dir = values["data-dir"] ?? defaultDataDir();
  ensurePrivateDir(dir);
  return storeAdmin(await openKvStore(join(dir, "relay.kv")));
}

function storeAdmin(store: RelayStore): Admin {
  return {
    async createInvite(uses, ttlSeconds) {
      const token = newToken("cwi");
      const expiresAt = new Date(Date.now() + ttlSeconds * 1000).toISOString();
      await store.createInvite({
        tokenHash: await hashSecret(token),
        usesLeft: uses,
        createdAt: new Date().toISOString(),
        expiresAt,
      });
      return { token, expiresAt };
    },
    async listInvites() {
      return (await store.listInvites(new Date())).map((i) => ({
        id: i.tokenHash.slice(0, 16),
        usesLeft: i.usesLeft,
        expiresAt: i.expiresAt,
      }));
    },
    async revokeInvite(idOrToken) {
      // an id (a prefix of the hash, as --list prints it) or the token itself
      const hash = /^[0-9a-f]{16,64}$/.test(idOrToken) ? null : await hashSecret(idOrToken);
      const match = (await store.listInvites(new Date())).find((i) =>
        hash === null ? i.tokenHash.startsWith(idOrToken) : i.tokenHash === hash
      );
      return match !== undefined && await store.revokeInvite(match.tokenHash);
    },
    async listNodes() {
      return (await store.listNodes()).map((n) => ({
        name: n.name,
        revoked: n.revokedAt !== null,
        lastSeenAt: n.lastSeenAt,
        addr: n.lastAddr,
        version: n.version,
      }));
    },
    async revokeNode(name) {
      const node = await store.getNode(name);
      if (!node) return false;
      await store.putNode({ ...node, revokedAt: new Date().toISOString() });
      return true;
    },
    async close() {
      await store[Symbol.asyncDispose]();
    },
  };
}

function apiAdmin(url: URL, token: string, caCert?: string): Admin {
  const client = caCert
    ? Deno.createHttpClient({ caCerts: [Deno.readTextFileSync(caCert)] })
    : undefined;
  const call = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(new URL(path, url), {
      method,
      client,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body ? { "content-type": "application/json" } : {}),
      },
      body: body ? JSON.stringify(body) : undefined,
    });
    if (res.status === 204) return null;
    const json = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(json?.error?.message ?? `HTTP ${res.status}`);
    return json;
  };
  return {
    createInvite: (uses, ttlSeconds) => call("POST", "/api/v1/invites", { uses, ttlSeconds }),
    listInvites: async () => (await call("GET", "/api/v1/invites")).invites,
    async revokeInvite(t) {
      await call(
        "DELETE",
        `/api/v1/invites/${/^[0-9a-f]{16,64}$/.test(t) ? t : await hashSecret(t)}`,
      );
      return true;
    },
    listNodes: async () => (await call("GET", "/api/v1/nodes")).nodes,
    async revokeNode(name) {
      await call("DELETE", `/api/v1/nodes/${encodeURIComponent(name)}`);
      return true;
    },
    close() {
      client?.close();
      return Promise.resolve();
    },
  };
}

async function invite(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      ...adminFlags(),
      uses: { type: "string" },
      ttl: { type: "string" },
      list: { type: "boolean" },
      revoke: { type: "string" },
    },
  });
  if (positionals.length) throw new RangeError(`Unexpected argument "${positionals[0]}"`);
  const admin = await openAdmin(values);
  try {
    if (values.list) {
      const invites = await admin.listInvites();
      if (values.json) console.log(JSON.stringify(invites));
      else if (invites.length === 0) console.error("No invites.");
      else {for (const i of invites) {
          console.log(`${i.id}  uses left ${i.usesLeft}  expires ${i.expiresAt}`);
        }}
      return 0;
    }
    if (values.revoke !== undefined) {
      if (!(await admin.revokeInvite(values.revoke))) throw new Error("No such invite");
      console.error("Invite revoked.");
      return 0;
    }
    const uses = values.uses === undefined ? 1 : Number(values.uses);
    if (!Number.isSafeInteger(uses) || uses < 1 || uses > 10000) {
      throw new RangeError("--uses must be 1-10000");
    }
    const ttl = Math.round(parseDuration(values.ttl ?? "24h") / 1000);
    if (ttl < 1) throw new RangeError("--ttl must be at least 1s");
    const { token, expiresAt } = await admin.createInvite(uses, ttl);
    console.log(token);
    console.error(`Invite for ${uses} node${uses === 1 ? "" : "s"}, valid until ${expiresAt}.`);
    return 0;
  } finally {
    await admin.close();
  }
}

async function nodes(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { ...adminFlags(), revoke: { type: "string" } },
  });
  if (positionals.length) throw new RangeError(`Unexpected argument "${positionals[0]}"`);
  const admin = await openAdmin(values);
  try {
    if (values.revoke !== undefined) {
      if (!(await admin.revokeNode(values.revoke))) throw new Error(`No node "${values.revoke}"`);
      console.error(`Revoked node ${values.revoke}.`);
      return 0;
    }
    const list = await admin.listNodes();
    if (values.json) console.log(JSON.stringify(list));
    else for (const n of list) console.log(JSON.stringify(n));
    return 0;
  } finally {
    await admin.close();
  }
}
