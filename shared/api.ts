/**
 * The relay's HTTP API, as a spec: every route, the JSON each takes and
 * returns, and the one error model — what `shared/protocol.ts` is for the
 * node protocol. The relay serves these types and the clients (`cw nodes`,
 * `cw kv`, `cw login`, `cw relay …` against `--relay-url`) read them.
 *
 * Authentication: `Authorization: Bearer TOKEN`, where TOKEN is the admin
 * token (`cwa_…`), a node credential (`NODE.cwn_…`) or a user token
 * (`USER.cwu_…`). Unknown, revoked and expired credentials all get the same
 * 401 `unauthorized`: nobody learns that a token was once valid.
 *
 * Routes (network-scoped routes act in the caller's network; the admin names
 * one with `?network=NAME`, default `default`):
 *
 * | Method | Path                              | Who                      | Body → answer |
 * |--------|-----------------------------------|--------------------------|---------------|
 * | GET    | /healthz                          | anyone                   | `{ok, version}` |
 * | GET    | /metrics                          | admin                    | Prometheus text |
 * | GET    | /api/v1/info                      | any principal            | {@link InfoResponse} |
 * | GET    | /api/v1/whoami                    | any principal            | {@link WhoAmI} |
 * | POST   | /api/v1/register                  | invite holder            | {@link RegisterRequest} → 201 {@link RegisterResponse} |
 * | GET    | /api/v1/nodes                     | any principal            | `{nodes: NodeRow[]}` (the admin sees all networks) |
 * | DELETE | /api/v1/nodes/{name}              | admin                    | 204; the node's connections close |
 * | GET    | /api/v1/nodes/{name}/connect      | writer; read-only: reads | WebSocket: the node protocol |
 * | POST   | /api/v1/invites                   | admin                    | {@link InviteRequest} → 201 {@link InviteCreated} |
 * | GET    | /api/v1/invites                   | admin                    | `{invites: InviteRow[]}` |
 * | DELETE | /api/v1/invites/{id}              | admin                    | 204 |
 * | POST   | /api/v1/users                     | admin                    | {@link UserRequest} → 201 {@link UserCreated} |
 * | GET    | /api/v1/users                     | admin                    | `{users: UserRow[]}` |
 * | DELETE | /api/v1/users/{name}              | admin                    | 204; the user's connections close |
 * | POST   | /api/v1/ssh-keys                  | writer                   | `{key}` → 201 `{fingerprint}` (into the caller's network) |
 * | GET    | /api/v1/ssh-keys                  | any principal            | `{keys: SshKeyRow[]}` |
 * | DELETE | /api/v1/ssh-keys/{fingerprint}    | writer of that network   | 204; its SSH sessions end |
 * | GET    | /api/v1/audit?since=&limit=&follow=1 | admin                 | NDJSON {@link AuditEntry} lines |
 * | GET    | /api/v1/networks                  | admin                    | `{networks: [{network, allowForwarding}]}` |
 * | PUT    | /api/v1/networks/{name}           | admin                    | `{allowForwarding}` → 200 the settings |
 * | *      | /api/v1/kv/{ns}[/{key}]           | any principal (read-only: reads) | see relay/kv_api.ts |
 * | GET    | /node/connect                     | node                     | WebSocket: the node's link (shared/mux.ts) |
 * | GET    | /node/dialback                    | node + ticket            | WebSocket: one SSH session (shared/dialback.ts) |
 *
 * Every error is `{error: {code, message}}` with the status of
 * {@link HTTP_STATUS}; {@link errorResponse} builds it, {@link errorFromResponse}
 * reads it.
 */
import { CwError } from "./errors.ts";
import type { ErrorCode } from "./protocol.ts";

/** Version prefix of the client API. */
export const API_PREFIX = "/api/v1";

/** Paths of the API, built in one place. */
export const paths = {
  health: "/healthz",
  metrics: "/metrics",
  info: `${API_PREFIX}/info`,
  whoami: `${API_PREFIX}/whoami`,
  register: `${API_PREFIX}/register`,
  nodes: `${API_PREFIX}/nodes`,
  node: (name: string) => `${API_PREFIX}/nodes/${encodeURIComponent(name)}`,
  connect: (name: string) => `${API_PREFIX}/nodes/${encodeURIComponent(name)}/connect`,
  invites: `${API_PREFIX}/invites`,
  invite: (id: string) => `${API_PREFIX}/invites/${encodeURIComponent(id)}`,
  users: `${API_PREFIX}/users`,
  user: (name: string) => `${API_PREFIX}/users/${encodeURIComponent(name)}`,
  networks: `${API_PREFIX}/networks`,
  network: (name: string) => `${API_PREFIX}/networks/${encodeURIComponent(name)}`,
  sshKeys: `${API_PREFIX}/ssh-keys`,
  sshKey: (fp: string) => `${API_PREFIX}/ssh-keys/${encodeURIComponent(fp)}`,
  audit: `${API_PREFIX}/audit`,
  kv: (ns: string, key?: string) =>
    `${API_PREFIX}/kv/${encodeURIComponent(ns)}${
      key === undefined ? "" : `/${encodeURIComponent(key)}`
    }`,
  webCodes: `${API_PREFIX}/web/codes`,
  webLogin: `${API_PREFIX}/web/login`,
  webLogout: `${API_PREFIX}/web/logout`,
  webSessions: `${API_PREFIX}/web/sessions`,
  webSession: (id: string) => `${API_PREFIX}/web/sessions/${encodeURIComponent(id)}`,
  nodeLink: "/node/connect",
  dialback: "/node/dialback",
} as const;

/** The network every relay has; a single-user relay needs no other. */
export const DEFAULT_NETWORK = "default";

/** What a credential is. */
export type PrincipalKind = "admin" | "node" | "user";

/** `GET /api/v1/whoami`. */
export interface WhoAmI {
  kind: PrincipalKind;
  /** Node or user name; null for the admin. */
  name: string | null;
  /** The network it reaches; null for the admin (all of them). */
  network: string | null;
  readOnly: boolean;
}

/** `GET /api/v1/info`. */
export interface InfoResponse {
  version: string;
  baseUrl: string;
  ssh: { port: number | null; fingerprint: string; hostKey: string } | null;
}

/** `POST /api/v1/register`. */
export interface RegisterRequest {
  name: string;
  invite?: string;
  version?: string;
  /** The node's current credential, when it registers again under the same name. */
  previousCredential?: string;
}

/** Answer to {@link RegisterRequest}. */
export interface RegisterResponse {
  name: string;
  network: string;
  credential: string;
  baseUrl: string;
}

/** One row of `GET /api/v1/nodes`. */
export interface NodeRow {
  name: string;
  network: string;
  online: boolean;
  lastSeenAt: string | null;
  addr: string | null;
  version: string | null;
  sessions: number | null;
  connectedAt: string | null;
  /** Only in the admin's data-dir listing: revoked nodes are kept there. */
  revoked?: boolean;
}

/** `POST /api/v1/invites`. */
export interface InviteRequest {
  uses?: number;
  ttlSeconds?: number;
  network?: string;
}

/** Answer to {@link InviteRequest}: the token is shown once. */
export interface InviteCreated {
  token: string;
  id: string;
  network: string;
  usesLeft: number;
  expiresAt: string;
}

/** One row of `GET /api/v1/invites`. */
export interface InviteRow {
  id: string;
  network: string;
  usesLeft: number;
  createdAt: string;
  expiresAt: string;
}

/** `POST /api/v1/users`. */
export interface UserRequest {
  name: string;
  network?: string;
  readOnly?: boolean;
  /** Lifetime of the token; none: until revoked. */
  ttlSeconds?: number;
}

/** Answer to {@link UserRequest}: the token is shown once. */
export interface UserCreated {
  name: string;
  network: string;
  readOnly: boolean;
  token: string;
  expiresAt: string | null;
}

/** One row of `GET /api/v1/users`. */
export interface UserRow {
  name: string;
  network: string;
  readOnly: boolean;
  createdAt: string;
  expiresAt: string | null;
  revokedAt: string | null;
}

/** One row of `GET /api/v1/ssh-keys`. */
export interface SshKeyRow {
  fingerprint: string;
  line: string;
  network: string;
  addedBy: string;
  addedAt: string;
}

/** Kinds of audit events (see relay/audit.ts). */
export type AuditEvent =
  | "link_up"
  | "link_down"
  | "remote_op"
  | "stream_end"
  | "ssh_start"
  | "ssh_end"
  | "ssh_login_failed"
  | "auth_failed"
  | "invite_created"
  | "invite_revoked"
  | "node_registered"
  | "node_revoked"
  | "user_added"
  | "user_revoked"
  | "key_added"
  | "key_removed"
  | "refused"
  | "web_code_created"
  | "web_login"
  | "web_login_failed"
  | "web_session_ended";

/** `POST /api/v1/web/codes`: a one-time login link for a browser. */
export interface WebCode {
  /** Open it in a browser: the code is in the fragment, which is never sent to a server. */
  url: string;
  expiresAt: string;
}

/** One browser session, as `GET /api/v1/web/sessions` lists it (never its secret). */
export interface WebSessionRow {
  id: string;
  /** Whose credential made its login link: `node:N`, `user:N`, `admin`. */
  principal: string;
  network: string | null;
  readOnly: boolean;
  createdAt: string;
  lastUsedAt: string;
  addr: string;
  userAgent: string;
}

/** The cookie that carries a browser session (HttpOnly, Secure, SameSite=Strict). */
export const WEB_COOKIE = "cw_session";

/** One line of the audit log. Never holds a secret. */
export interface AuditEntry {
  time: string;
  event: AuditEvent;
  /** `admin`, `node:NAME`, `user:NAME`, `key:FINGERPRINT`, or null (nobody authenticated). */
  principal: string | null;
  network: string | null;
  node?: string | null;
  session?: string | null;
  addr?: string | null;
  /** Event details: `op`, `readOnly`, `bytesIn`, `bytesOut`, `exitCode`, `reason` … */
  [detail: string]: unknown;
}

/** HTTP status of each error code: the one table. */
export const HTTP_STATUS: Record<ErrorCode, number> = {
  protocol_error: 400,
  frame_too_large: 413,
  unsupported_version: 400,
  bad_request: 400,
  not_found: 404,
  invalid_name: 400,
  name_taken: 409,
  command_not_found: 400,
  dir_not_found: 400,
  not_running: 409,
  input_blocked: 409,
  spawn_failed: 500,
  shutting_down: 503,
  unsafe_data_dir: 500,
  node_unavailable: 502,
  timeout: 504,
  unauthorized: 401,
  forbidden: 403,
  invite_invalid: 403,
  rate_limited: 429,
  too_large: 413,
  precondition_failed: 412,
  method_not_allowed: 405,
  node_offline: 503,
  internal: 500,
};

/** The JSON body of an error. */
export function errorBody(code: ErrorCode, message: string): { error: WireErrorBody } {
  return { error: { code, message } };
}

/** `{code, message}` inside an error body. */
export interface WireErrorBody {
  code: ErrorCode;
  message: string;
}

/** An error response: the status from {@link HTTP_STATUS}, the body from {@link errorBody}. */
export function errorResponse(
  code: ErrorCode,
  message: string,
  headers: Record<string, string> = {},
): Response {
  return Response.json(errorBody(code, message), { status: HTTP_STATUS[code], headers });
}

/**
 * The {@link CwError} of a failed response (its body read and consumed);
 * a body that is not an API error still gives a one-line message.
 */
export async function errorFromResponse(res: Response, what = "The relay"): Promise<CwError> {
  return errorFromBody(res.status, await res.text().catch(() => ""), what);
}

/** The {@link CwError} of an error body already read as text (a refused WebSocket upgrade). */
export function errorFromBody(status: number, text: string, what = "The server"): CwError {
  let body: { error?: { code?: unknown; message?: unknown } } | null = null;
  try {
    body = JSON.parse(text);
  } catch {
    // not an API error
  }
  const code = body?.error?.code;
  const message = body?.error?.message;
  return new CwError(
    typeof code === "string" && code in HTTP_STATUS ? code as ErrorCode : "internal",
    typeof message === "string"
      ? message.slice(0, 1000).replace(/\p{Cc}/gu, " ")
      : `${what} answered HTTP ${status}`,
  );
}

/** Throws the API error of a response that is not 2xx. */
export async function checkResponse(res: Response, what?: string): Promise<void> {
  if (!res.ok) throw await errorFromResponse(res, what);
}
