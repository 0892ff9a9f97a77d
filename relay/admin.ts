/**
 * The admin's operations — invites, users, node revocation — written once:
 * the HTTP routes (relay/routes_admin.ts) and `cw relay invite|user|nodes`
 * on a data dir (relay/cli.ts) both call these. Each change is audited and
 * every revocation moves the store's auth version on, so a running relay cuts
 * the revoked principal's connections even when the change came from another process.
 */
import {
  DEFAULT_NETWORK,
  type InviteCreated,
  type InviteRequest,
  type InviteRow,
  type NodeRow,
  type UserCreated,
  type UserRequest,
  type UserRow,
} from "../shared/api.ts";
import { CwError } from "../shared/errors.ts";
import { checkRelayName } from "../shared/names.ts";
import { hashSecret, newToken } from "../shared/secrets.ts";
import type { AuditLog } from "./audit.ts";
import type { Principal } from "./principals.ts";
import type { RelayStore } from "./store.ts";
import { listNetworkSettings, type NetworkSettings, setNetworkSettings } from "./networks.ts";

/** Most nodes one invite may register. */
export const MAX_INVITE_USES = 10_000;
/** Longest invite or user token lifetime an admin may ask for. */
export const MAX_TOKEN_TTL_S = 10 * 365 * 86400;
/** Invite lifetime when none is given. */
export const DEFAULT_INVITE_TTL_S = 86400;

/** What the operations need. */
export interface AdminContext {
  store: RelayStore;
  audit: AuditLog;
  now: () => Date;
  /** A principal lost its access: a running relay closes its connections. */
  revoked?: (id: string) => void;
}

/** Who did it and from where, for the audit log. */
export interface Actor {
  principal: Principal;
  addr: string | null;
}

function network(v: unknown): string {
  if (v === undefined || v === null) return DEFAULT_NETWORK;
  if (typeof v !== "string") throw new CwError("bad_request", '"network" must be a string');
  checkRelayName("network", v);
  return v;
}

function wholeNumber(v: unknown, what: string, min: number, max: number): number {
  if (!Number.isSafeInteger(v) || (v as number) < min || (v as number) > max) {
    throw new CwError("bad_request", `"${what}" must be a whole number ${min}-${max}`);
  }
  return v as number;
}

/** Creates an invite for `uses` nodes of a network; the token is returned once. */
export async function createInvite(
  ctx: AdminContext,
  by: Actor,
  req: InviteRequest,
): Promise<InviteCreated> {
  const uses = wholeNumber(req.uses ?? 1, "uses", 1, MAX_INVITE_USES);
  const ttl = wholeNumber(req.ttlSeconds ?? DEFAULT_INVITE_TTL_S, "ttlSeconds", 1, MAX_TOKEN_TTL_S);
  const net = network(req.network);
  const token = newToken("cwi");
  const now = ctx.now();
  const invite = {
    tokenHash: await hashSecret(token),
    network: net,
    usesLeft: uses,
    createdAt: now.toISOString(),
    expiresAt: new Date(now.getTime() + ttl * 1000).toISOString(),
  };
  await ctx.store.createInvite(invite);
  const id = invite.tokenHash.slice(0, 16);
  ctx.audit.record({
    event: "invite_created",
    principal: by.principal.id,
    network: net,
    addr: by.addr,
    invite: id,
    uses,
    expiresAt: invite.expiresAt,
  });
  return { token, id, network: net, usesLeft: uses, expiresAt: invite.expiresAt };
}

/** Live invites, without their tokens. */
export async function listInvites(ctx: AdminContext): Promise<InviteRow[]> {
  return (await ctx.store.listInvites(ctx.now())).map((i) => ({
    id: i.tokenHash.slice(0, 16),
    network: i.network,
    usesLeft: i.usesLeft,
    createdAt: i.createdAt,
    expiresAt: i.expiresAt,
  }));
}

/** Revokes an invite by its id (as listed: a prefix of the hash) or by the token itself. */
export async function revokeInvite(ctx: AdminContext, by: Actor, idOrToken: string): Promise<void> {
  const byId = /^[0-9a-f]{16,64}$/.test(idOrToken);
  const hash = byId ? null : await hashSecret(idOrToken);
  const match = (await ctx.store.listInvites(ctx.now())).find((i) =>
    hash === null ? i.tokenHash.startsWith(idOrToken) : i.tokenHash === hash
  );
  if (!match || !(await ctx.store.revokeInvite(match.tokenHash))) {
    throw new CwError("not_found", "No such invite");
  }
  ctx.audit.record({
    event: "invite_revoked",
    principal: by.principal.id,
    network: match.network,
    addr: by.addr,
    invite: match.tokenHash.slice(0, 16),
  });
}

/** Adds a user (a client without a node); the token is returned once. */
export async function addUser(
  ctx: AdminContext,
  by: Actor,
  req: UserRequest,
): Promise<UserCreated> {
  if (typeof req.name !== "string") throw new CwError("bad_request", 'Missing field "name"');
  checkRelayName("user", req.name);
  const net = network(req.network);
  if (req.readOnly !== undefined && typeof req.readOnly !== "boolean") {
    throw new CwError("bad_request", '"readOnly" must be true or false');
  }
  const ttl = req.ttlSeconds === undefined
    ? null
    : wholeNumber(req.ttlSeconds, "ttlSeconds", 1, MAX_TOKEN_TTL_S);
  const existing = await ctx.store.getUser(req.name);
  if (existing && !existing.revokedAt) {
    throw new CwError(
      "name_taken",
      `The user "${req.name}" exists: revoke it first to issue a new token`,
    );
  }
  const token = `${req.name}.${newToken("cwu")}`;
  const now = ctx.now();
  const user = {
    name: req.name,
    network: net,
    readOnly: req.readOnly === true,
    tokenHash: await hashSecret(token),
    createdAt: now.toISOString(),
    expiresAt: ttl === null ? null : new Date(now.getTime() + ttl * 1000).toISOString(),
    revokedAt: null,
  };
  await ctx.store.putUser(user);
  if (existing) await ctx.store.bumpAuthVersion(); // the old token's cached answer goes
  ctx.audit.record({
    event: "user_added",
    principal: by.principal.id,
    network: net,
    addr: by.addr,
    user: user.name,
    readOnly: user.readOnly,
    expiresAt: user.expiresAt,
  });
  return {
    name: user.name,
    network: net,
    readOnly: user.readOnly,
    token,
    expiresAt: user.expiresAt,
  };
}

/** Every user, revoked ones included (they say so). */
export async function listUsers(ctx: AdminContext): Promise<UserRow[]> {
  return (await ctx.store.listUsers()).map((u) => ({
    name: u.name,
    network: u.network,
    readOnly: u.readOnly,
    createdAt: u.createdAt,
    expiresAt: u.expiresAt,
    revokedAt: u.revokedAt,
  }));
}

/** Revokes a user: its token stops working and its connections close. */
export async function revokeUser(ctx: AdminContext, by: Actor, name: string): Promise<void> {
  const user = await ctx.store.getUser(name);
  if (!user || user.revokedAt) throw new CwError("not_found", `No user "${name}"`);
  await ctx.store.putUser({ ...user, revokedAt: ctx.now().toISOString() });
  await ctx.store.bumpAuthVersion();
  ctx.revoked?.(`user:${name}`);
  ctx.audit.record({
    event: "user_revoked",
    principal: by.principal.id,
    network: user.network,
    addr: by.addr,
    user: name,
  });
}

/** Registered nodes as stored (the admin's data-dir view; revoked ones say so). */
export async function listNodeRecords(ctx: AdminContext): Promise<NodeRow[]> {
  return (await ctx.store.listNodes()).map((n) => ({
    name: n.name,
    network: n.network,
    online: false,
    lastSeenAt: n.lastSeenAt,
    addr: n.lastAddr,
    version: n.version,
    sessions: null,
    connectedAt: null,
    revoked: n.revokedAt !== null,
  }));
}

/** Revokes a node: its credential stops working, its link and every connection it made close. */
export async function revokeNode(ctx: AdminContext, by: Actor, name: string): Promise<void> {
  const node = await ctx.store.getNode(name);
  if (!node || node.revokedAt) throw new CwError("not_found", `No node "${name}"`);
  await ctx.store.putNode({ ...node, revokedAt: ctx.now().toISOString() });
  await ctx.store.bumpAuthVersion();
  ctx.revoked?.(`node:${name}`);
  ctx.audit.record({
    event: "node_revoked",
    principal: by.principal.id,
    network: node.network,
    node: name,
    addr: by.addr,
  });
}

/** Sets a network's settings (today: whether `ssh -L` may reach its nodes). */
export async function setNetwork(
  ctx: AdminContext,
  by: Actor,
  name: string,
  body: Record<string, unknown>,
): Promise<{ network: string } & NetworkSettings> {
  const net = network(name);
  if (typeof body.allowForwarding !== "boolean") {
    throw new CwError("bad_request", 'Field "allowForwarding" must be true or false');
  }
  const settings: NetworkSettings = { allowForwarding: body.allowForwarding };
  await setNetworkSettings(ctx.store, net, settings);
  ctx.audit.record({
    event: "network_set",
    principal: by.principal.id,
    network: net,
    addr: by.addr,
    allowForwarding: settings.allowForwarding,
  });
  return { network: net, ...settings };
}

/** Networks with settings. */
export function listNetworks(
  ctx: AdminContext,
): Promise<({ network: string } & NetworkSettings)[]> {
  return listNetworkSettings(ctx.store);
}
