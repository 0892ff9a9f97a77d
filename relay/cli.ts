import { join } from "node:path";
import { parseArgs } from "node:util";
import { parseDuration } from "../shared/duration.ts";
import { hashSecret } from "../shared/secrets.ts";
import {
  type AuditEntry,
  checkResponse,
  type InviteCreated,
  type InviteRequest,
  type InviteRow,
  type NodeRow,
  paths,
  type UserCreated,
  type UserRequest,
  type UserRow,
} from "../shared/api.ts";
import { checkRelayName } from "../shared/names.ts";
import { printable } from "../shared/printable.ts";
import * as admin from "./admin.ts";
import { type Actor, type AdminContext, MAX_INVITE_USES } from "./admin.ts";
import { AUDIT_MAX_READ, AuditLog, formatAuditEntry, parseSince } from "./audit.ts";
import { ADMIN } from "./principals.ts";
import { ensurePrivateDir } from "../shared/paths.ts";
import { isCleartextRemote } from "../shared/net.ts";
import { readSecret } from "../shared/secret_input.ts";
import { defaultDataDir, relayMain } from "./main.ts";
import { openRelayStore, storeUrlFrom } from "./open_store.ts";
import type { RelayStore } from "./store.ts";

const USAGE = `Usage:
  cw relay [--listen ADDR] [--tls-cert FILE --tls-key FILE] [--base-url URL]
           [--data-dir DIR] [--auth-mode token|none] [--behind-proxy PROXY_IP]
           [--ssh-listen ADDR|off]  (SSH gateway, default 0.0.0.0:2222)
           [--store postgres://USER@HOST/DB [--peer-url URL] [--peer-ca FILE]]
  cw relay invite [--network NAME] [--uses N] [--ttl DURATION]   print a new invite token
  cw relay invite --list | --revoke ID|TOKEN    (ID as --list prints it)
  cw relay user add NAME [--network NAME] [--read-only] [--ttl DURATION]   print a user token
  cw relay user list [--json] | revoke NAME
  cw relay nodes [--json] [--network NAME] | --revoke NAME
  cw relay network set NAME --allow-forwarding|--no-forwarding | network list [--json]
  cw relay audit [--since DURATION|TIME] [--follow] [--json]
Networks: every credential reaches only its own network (default: "default").
Admin commands work on --data-dir DIR (default ~/.codewire/relay), or on a
running relay with --relay-url URL [--ca-cert FILE] and the admin token from
--admin-token-file FILE, --admin-token - (stdin) or CW_RELAY_ADMIN_TOKEN.
Replicas: relays given the same PostgreSQL store (--store, or CW_RELAY_STORE when
the URL has a password) share every record and reach one another's nodes; each
is reached by its peers at --peer-url (default: its listening address).
Plain http:// only to loopback, unless --insecure. CW_RELAY_LISTEN sets the default
--listen (the container image: 0.0.0.0:8443).`;

const COMMANDS: Record<string, (args: string[]) => Promise<number>> = {
  network: networkCmd,
  invite,
  nodes,
  user,
  audit,
};

/** `cw relay …`: the server itself, or an admin command. */
export async function relayCommand(args: string[]): Promise<number> {
  if (args[0] === "--help" || args[0] === "-h" || args[0] === "help") {
    console.log(USAGE);
    return 0;
  }
  const command = COMMANDS[args[0]];
  if (!command) return await relayMain(args);
  try {
    return await command(args.slice(1));
  } catch (err) {
    console.error(`cw relay ${args[0]}: ${(err as Error).message}`);
    return err instanceof RangeError || err instanceof TypeError ? 2 : 1;
  }
}

/**
 * The admin's operations, on a data dir (the functions of relay/admin.ts,
 * which the HTTP routes call too) or on a running relay (its HTTP API).
 */
interface Admin {
  createInvite(req: InviteRequest): Promise<InviteCreated>;
  listInvites(): Promise<InviteRow[]>;
  revokeInvite(idOrToken: string): Promise<void>;
  addUser(req: UserRequest): Promise<UserCreated>;
  listUsers(): Promise<UserRow[]>;
  revokeUser(name: string): Promise<void>;
  listNodes(network: string | null): Promise<NodeRow[]>;
  revokeNode(name: string): Promise<void>;
  setNetwork(name: string, allowForwarding: boolean): Promise<void>;
  listNetworks(): Promise<{ network: string; allowForwarding: boolean }[]>;
  audit(opts: { since?: Date; follow: boolean; signal: AbortSignal }): AsyncIterable<AuditEntry>;
  close(): Promise<void>;
}

function adminFlags() {
  return {
    "data-dir": { type: "string" as const },
    store: { type: "string" as const },
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
    store?: string;
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
  const { store } = await openRelayStore(dir, storeUrlFrom(values.store));
  return storeAdmin(store, dir);
}

function storeAdmin(store: RelayStore, dir: string): Admin {
  const audit = new AuditLog(join(dir, "audit.log"));
  if (store.audit) audit.share(store.audit);
  const ctx: AdminContext = { store, audit, now: () => new Date() };
  // the relay running on this data dir sees each change through the store's auth version
  const by: Actor = { principal: ADMIN, addr: "local" };
  return {
    createInvite: (req) => admin.createInvite(ctx, by, req),
    listInvites: () => admin.listInvites(ctx),
    revokeInvite: (t) => admin.revokeInvite(ctx, by, t),
    addUser: (req) => admin.addUser(ctx, by, req),
    listUsers: () => admin.listUsers(ctx),
    revokeUser: (name) => admin.revokeUser(ctx, by, name),
    listNodes: async (network) =>
      (await admin.listNodeRecords(ctx)).filter((n) => network === null || n.network === network),
    revokeNode: (name) => admin.revokeNode(ctx, by, name),
    async setNetwork(name, allowForwarding) {
      await admin.setNetwork(ctx, by, name, { allowForwarding });
    },
    listNetworks: () => admin.listNetworks(ctx),
    async *audit({ since, follow, signal }) {
      yield* await audit.readAll({ since });
      if (follow && store.audit) yield* followStore(store.audit, signal);
      else if (follow) yield* audit.tail(signal);
    },
    async close() {
      await audit.flush();
      audit.close();
      await store[Symbol.asyncDispose]();
    },
  };
}

/** Every replica's new audit entries, as a shared store announces them, until `signal` aborts. */
async function* followStore(
  shared: NonNullable<RelayStore["audit"]>,
  signal: AbortSignal,
): AsyncGenerator<AuditEntry> {
  const queue: AuditEntry[] = [];
  let wake: (() => void) | null = null;
  const unwatch = shared.watchAudit((e) => {
    if (queue.length < AUDIT_MAX_READ) queue.push(e);
    wake?.();
  });
  const onAbort = () => wake?.();
  signal.addEventListener("abort", onAbort);
  try {
    while (!signal.aborted) {
      const e = queue.shift();
      if (e) yield e;
      else await new Promise<void>((r) => wake = r);
    }
  } finally {
    unwatch();
    signal.removeEventListener("abort", onAbort);
  }
}

function apiAdmin(url: URL, token: string, caCert?: string): Admin {
  const client = caCert
    ? Deno.createHttpClient({ caCerts: [Deno.readTextFileSync(caCert)] })
    : undefined;
  const send = async (method: string, path: string, body?: unknown, signal?: AbortSignal) => {
    const res = await fetch(new URL(path, url), {
      method,
      client,
      signal,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body ? { "content-type": "application/json" } : {}),
      },
      body: body ? JSON.stringify(body) : undefined,
    });
    await checkResponse(res);
    return res;
  };
  const call = async (method: string, path: string, body?: unknown) => {
    const res = await send(method, path, body);
    return res.status === 204 ? null : await res.json();
  };
  return {
    createInvite: (req) => call("POST", paths.invites, req),
    listInvites: async () => (await call("GET", paths.invites)).invites,
    async revokeInvite(t) {
      await call("DELETE", paths.invite(/^[0-9a-f]{16,64}$/.test(t) ? t : await hashSecret(t)));
    },
    addUser: (req) => call("POST", paths.users, req),
    listUsers: async () => (await call("GET", paths.users)).users,
    async revokeUser(name) {
      await call("DELETE", paths.user(name));
    },
    listNodes: async (network) =>
      (await call(
        "GET",
        network ? `${paths.nodes}?network=${encodeURIComponent(network)}` : paths.nodes,
      ))
        .nodes,
    async revokeNode(name) {
      await call("DELETE", paths.node(name));
    },
    async setNetwork(name, allowForwarding) {
      await call("PUT", paths.network(name), { allowForwarding });
    },
    listNetworks: async () => (await call("GET", paths.networks)).networks,
    async *audit({ since, follow, signal }) {
      const q = new URLSearchParams();
      if (since) q.set("since", since.toISOString());
      if (follow) q.set("follow", "1");
      const res = await send("GET", `${paths.audit}?${q}`, undefined, signal);
      let rest = "";
      try {
        for await (const chunk of res.body!.pipeThrough(new TextDecoderStream())) {
          rest += chunk;
          const lines = rest.split("\n");
          rest = lines.pop()!;
          for (const line of lines) if (line) yield JSON.parse(line) as AuditEntry;
        }
      } catch (err) {
        if (!signal.aborted) throw err;
      }
    },
    close() {
      client?.close();
      return Promise.resolve();
    },
  };
}

/** A name a peer chose, escaped before it reaches a terminal. */
const safe = (s: unknown) => printable(String(s ?? ""));

async function invite(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      ...adminFlags(),
      uses: { type: "string" },
      ttl: { type: "string" },
      network: { type: "string" },
      list: { type: "boolean" },
      revoke: { type: "string" },
    },
  });
  if (positionals.length) throw new RangeError(`Unexpected argument "${positionals[0]}"`);
  const uses = values.uses === undefined ? 1 : Number(values.uses);
  if (!Number.isSafeInteger(uses) || uses < 1 || uses > MAX_INVITE_USES) {
    throw new RangeError(`--uses must be 1-${MAX_INVITE_USES}`);
  }
  const ttl = Math.round(parseDuration(values.ttl ?? "24h") / 1000);
  if (ttl < 1) throw new RangeError("--ttl must be at least 1s");
  if (values.network !== undefined) checkName("network", values.network);
  const admin = await openAdmin(values);
  try {
    if (values.list) {
      const invites = await admin.listInvites();
      if (values.json) console.log(JSON.stringify(invites));
      else if (invites.length === 0) console.error("No invites.");
      else {
        for (const i of invites) {
          console.log(
            `${i.id}  network ${i.network}  uses left ${i.usesLeft}  expires ${i.expiresAt}`,
          );
        }
      }
      return 0;
    }
    if (values.revoke !== undefined) {
      await admin.revokeInvite(values.revoke);
      console.error("Invite revoked.");
      return 0;
    }
    const created = await admin.createInvite({ uses, ttlSeconds: ttl, network: values.network });
    console.log(created.token);
    console.error(
      `Invite for ${uses} node${
        uses === 1 ? "" : "s"
      } of network "${created.network}", valid until ${created.expiresAt}.`,
    );
    return 0;
  } finally {
    await admin.close();
  }
}

async function user(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      ...adminFlags(),
      network: { type: "string" },
      "read-only": { type: "boolean" },
      ttl: { type: "string" },
    },
  });
  const usage =
    "Usage: cw relay user add NAME [--network N] [--read-only] [--ttl D] | list | revoke NAME";
  if (sub === "add" || sub === "revoke") {
    if (positionals.length !== 1) throw new RangeError(usage);
    checkName("user", positionals[0]);
  } else if (sub !== "list" || positionals.length) throw new RangeError(usage);
  if (values.network !== undefined) checkName("network", values.network);
  const ttl = values.ttl === undefined ? undefined : Math.round(parseDuration(values.ttl) / 1000);
  if (ttl !== undefined && ttl < 1) throw new RangeError("--ttl must be at least 1s");
  const admin = await openAdmin(values);
  try {
    if (sub === "add") {
      const u = await admin.addUser({
        name: positionals[0],
        network: values.network,
        readOnly: values["read-only"] === true,
        ttlSeconds: ttl,
      });
      console.log(u.token);
      console.error(
        `User "${u.name}" of network "${u.network}"${u.readOnly ? ", read-only" : ""}${
          u.expiresAt ? `, until ${u.expiresAt}` : ""
        }: on their machine, cw login --relay-url URL --token-file FILE (or --token - from stdin).`,
      );
    } else if (sub === "revoke") {
      await admin.revokeUser(positionals[0]);
      console.error(`Revoked user ${positionals[0]}.`);
    } else {
      const users = await admin.listUsers();
      if (values.json) console.log(JSON.stringify(users));
      else if (users.length === 0) console.error("No users.");
      else {
        for (const u of users) {
          const state = u.revokedAt
            ? "revoked"
            : u.expiresAt && Date.parse(u.expiresAt) <= Date.now()
            ? "expired"
            : "active";
          console.log(
            `${safe(u.name)}  network ${u.network}  ${
              u.readOnly ? "read-only" : "read-write"
            }  ${state}`,
          );
        }
      }
    }
    return 0;
  } finally {
    await admin.close();
  }
}

/** `cw relay network set NAME --allow-forwarding|--no-forwarding` | `network list [--json]`. */
async function networkCmd(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      ...adminFlags(),
      "allow-forwarding": { type: "boolean" },
      "no-forwarding": { type: "boolean" },
    },
  });
  const usage =
    "Usage: cw relay network set NAME --allow-forwarding|--no-forwarding | network list [--json]";
  const allow = values["allow-forwarding"] === true;
  const deny = values["no-forwarding"] === true;
  if (sub === "set") {
    if (positionals.length !== 1 || allow === deny) throw new RangeError(usage);
    checkName("network", positionals[0]);
  } else if (sub !== "list" || positionals.length || allow || deny) throw new RangeError(usage);
  const admin = await openAdmin(values);
  try {
    if (sub === "set") {
      await admin.setNetwork(positionals[0], allow);
      console.error(
        `Network "${positionals[0]}": port forwarding (ssh -L) ${
          allow
            ? 'allowed (each node must allow it too: "forwarding" in its config.json)'
            : "refused"
        }.`,
      );
      return 0;
    }
    const list = await admin.listNetworks();
    if (values.json) console.log(JSON.stringify(list));
    else if (list.length === 0) {
      console.error("No network has settings (forwarding is off everywhere).");
    } else {
      for (const n of list) {
        console.log(`${safe(n.network)}  forwarding ${n.allowForwarding ? "allowed" : "refused"}`);
      }
    }
    return 0;
  } finally {
    await admin.close();
  }
}

async function nodes(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { ...adminFlags(), revoke: { type: "string" }, network: { type: "string" } },
  });
  if (positionals.length) throw new RangeError(`Unexpected argument "${positionals[0]}"`);
  if (values.network !== undefined) checkName("network", values.network);
  const admin = await openAdmin(values);
  try {
    if (values.revoke !== undefined) {
      await admin.revokeNode(values.revoke);
      console.error(`Revoked node ${values.revoke}.`);
      return 0;
    }
    const list = await admin.listNodes(values.network ?? null);
    if (values.json) console.log(JSON.stringify(list));
    else for (const n of list) console.log(JSON.stringify(n));
    return 0;
  } finally {
    await admin.close();
  }
}

async function audit(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { ...adminFlags(), since: { type: "string" }, follow: { type: "boolean" } },
  });
  if (positionals.length) throw new RangeError(`Unexpected argument "${positionals[0]}"`);
  let since: Date | undefined;
  if (values.since !== undefined) {
    since = parseSince(values.since);
    if (Number.isNaN(since.getTime())) {
      throw new RangeError(
        `Invalid --since "${values.since}": a duration (10m, 2d) or an ISO time`,
      );
    }
  }
  const admin = await openAdmin(values);
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  if (values.follow) Deno.addSignalListener("SIGINT", onSignal);
  try {
    for await (
      const e of admin.audit({ since, follow: values.follow === true, signal: stop.signal })
    ) {
      console.log(values.json ? JSON.stringify(e) : formatAuditEntry(e));
    }
    return 0;
  } finally {
    if (values.follow) Deno.removeSignalListener("SIGINT", onSignal);
    await admin.close();
  }
}

function checkName(what: "user" | "network", name: string): void {
  try {
    checkRelayName(what, name);
  } catch (err) {
    throw new RangeError((err as Error).message);
  }
}
