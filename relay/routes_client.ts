/**
 * The client API: who am I, the nodes of my network, a stream to one of them
 * (the node protocol, checked and audited on the way), SSH keys and KV —
 * each scoped to the caller's network.
 */
import type { Hono } from "hono";
import type { ErrorCode } from "../shared/protocol.ts";
import {
  DEFAULT_NETWORK,
  type NodeRow,
  paths,
  type SshKeyRow,
  type WhoAmI,
} from "../shared/api.ts";
import { refusal } from "../shared/access.ts";
import { CwError } from "../shared/errors.ts";
import { STREAM_MAX_MESSAGE } from "../shared/listener_limits.ts";
import { checkRelayName } from "../shared/names.ts";
import { encodeJson, FrameKind } from "../shared/protocol.ts";
import { VERSION } from "../shared/version.ts";
import { wsDuplex } from "../shared/ws_duplex.ts";
import type { AuditLog } from "./audit.ts";
import type { Cluster } from "./cluster.ts";
import type { Gate } from "./gate.ts";
import { type Ctx, type Env, expectWebSocket, jsonBody, sameOrigin, upgrade } from "./http.ts";
import type { Hub } from "./hub.ts";
import { kvApi } from "./kv_api.ts";
import type { Metrics } from "./metrics.ts";
import { type Principal, reaches } from "./principals.ts";
import { parsePublicKey } from "./ssh_gateway.ts";
import type { RelayStore } from "./store.ts";
import { guardedSplice } from "./stream_guard.ts";

/** What the client routes need. */
export interface ClientRoutesDeps {
  store: RelayStore;
  audit: AuditLog;
  hub: Hub;
  gate: Gate;
  metrics: Metrics;
  now: () => Date;
  authMode: "token" | "none";
  baseUrl: () => string;
  info: () => Record<string, unknown>;
  /** Closes every connection of a principal id (a removed key's SSH sessions). */
  cutOff(id: string, reason: string): void;
  /** Replicas on a shared store: nodes linked to another are reached through it. */
  cluster?: Cluster | null;
}

/**
 * The network a request acts in: the caller's own, or for the admin the one
 * named by `?network=` (default `default`).
 */
export function networkOf(c: Ctx): string {
  const p = c.get("principal");
  if (p.network !== null) return p.network;
  const asked = c.req.query("network");
  if (asked === undefined) return DEFAULT_NETWORK;
  checkRelayName("network", asked);
  return asked;
}

/** Protocol operations recorded in the audit log (list, info and status are not). */
const AUDITED_OPS = new Set(["launch", "attach", "send", "kill", "logs", "wait"]);

/** Mounts the client API on `app`. */
export function clientRoutes(app: Hono<Env>, deps: ClientRoutesDeps): void {
  const any = deps.gate.require("any");
  const writer = deps.gate.require("write");

  app.get(
    paths.info,
    any,
    (c) => c.json({ version: VERSION, baseUrl: deps.baseUrl(), ...deps.info() }),
  );
  app.get(paths.whoami, any, (c) => {
    const p = c.get("principal");
    const kind = p.kind === "key" ? "user" : p.kind;
    const me: WhoAmI = { kind, name: p.name, network: p.network, readOnly: p.readOnly };
    return c.json(me);
  });

  app.get(paths.nodes, any, async (c) => {
    const p = c.get("principal");
    const only = p.network ?? c.req.query("network") ?? null;
    const nodes = (await deps.store.listNodes())
      .filter((n) => !n.revokedAt && (only === null || n.network === only));
    const elsewhere = deps.cluster ? await deps.cluster.onlineNodes() : new Set<string>();
    const rows: NodeRow[] = nodes.map((n) => {
      const live = deps.hub.get(n.name);
      return {
        name: n.name,
        network: n.network,
        online: live !== undefined || elsewhere.has(n.name),
        lastSeenAt: live ? deps.now().toISOString() : n.lastSeenAt,
        addr: live?.addr ?? n.lastAddr,
        version: live?.version ?? n.version,
        sessions: live?.sessions ?? null,
        connectedAt: live?.connectedAt.toISOString() ?? null,
      };
    });
    return c.json({ nodes: rows });
  });

  // ---- a client stream to a node: the node protocol, spliced onto a link stream
  app.get(`${paths.nodes}/:name/connect`, async (c) => {
    sameOrigin(c, deps.baseUrl());
    const p = await deps.gate.authenticate(c);
    const name = c.req.param("name") ?? "";
    expectWebSocket(c);
    deps.gate.hold(c, p);
    const record = deps.authMode === "none" ? null : await deps.store.getNode(name);
    // a node of another network is answered exactly as a node that does not exist
    const known = deps.authMode === "none" || (record !== null && reaches(p, record.network));
    const revoked = record?.revokedAt != null;
    const network = record?.network ?? DEFAULT_NETWORK;
    const addr = c.get("addr");
    // a client's input is taken as the node's stream accepts it (its mux window), so a
    // client that types into a program that does not read is held back, not queued
    const { socket, response, taken } = upgrade(c, STREAM_MAX_MESSAGE, { onTake: false });
    const client = wsDuplex(socket, { onTaken: taken });
    const answer = (code: ErrorCode, message: string) => {
      // a WebSocket client cannot read an HTTP error body: answer in the protocol
      socket.send(encodeJson(FrameKind.ERROR, { code, message }));
      socket.close(1000);
    };
    socket.addEventListener("open", async () => {
      if (!known) return answer("not_found", `Unknown node "${name}"`);
      if (revoked) return answer("forbidden", `Node "${name}" has been revoked`);
      const meta = {
        kind: "node",
        // the node checks again what this principal may do (shared/access.ts)
        principal: { id: p.id, network: p.network, readOnly: p.readOnly },
      };
      let stream;
      try {
        const live = deps.hub.get(name);
        // linked to another replica: through it (relay/cluster.ts)
        const link = live || !deps.cluster ? null : await deps.cluster.locate(name);
        if (!live && !link) return answer("node_offline", `Node "${name}" is offline`);
        stream = live ? live.mux.open(meta) : await deps.cluster!.openStream(link!, meta);
      } catch (err) {
        return answer("node_offline", `Node "${name}": ${(err as Error).message}`);
      }
      if (socket.readyState !== WebSocket.OPEN) return stream.close();
      deps.metrics.inc("cw_relay_client_streams_total", { principal: p.kind });
      const base = { principal: p.id, network, node: name, addr };
      const started = Date.now();
      void guardedSplice(client, stream, {
        check(req) {
          const why = refusal(p, req as { op: string; readOnly?: unknown });
          if (why === null) return null;
          deps.audit.record({
            ...base,
            event: "refused",
            op: String(req.op).slice(0, 32),
            reason: why,
          });
          return { code: "forbidden", message: why };
        },
        answered(req, answer, ok) {
          const op = String(req.op);
          if (!AUDITED_OPS.has(op)) return;
          const session = op === "launch"
            ? (answer.session as { id?: unknown } | undefined)?.id
            : req.session ?? (Array.isArray(req.sessions) ? req.sessions.join(",") : req.tag);
          deps.audit.record({
            ...base,
            event: "remote_op",
            op,
            session: session === undefined || session === null ? null : String(session),
            readOnly: op === "attach" ? req.readOnly === true : undefined,
            ok,
            error: ok ? undefined : String(answer.code ?? ""),
          });
        },
        ended(req, bytes) {
          if (!req || (req.op !== "attach" && req.op !== "logs")) return;
          deps.audit.record({
            ...base,
            event: "stream_end",
            op: String(req.op),
            session: req.session === undefined ? null : String(req.session),
            readOnly: req.op === "attach" ? req.readOnly === true : undefined,
            bytesIn: bytes.in,
            bytesOut: bytes.out,
            seconds: Math.round((Date.now() - started) / 100) / 10,
          });
        },
      });
    });
    return response;
  });

  // ---- SSH keys for the gateway: each in the network of the credential that added it
  app.post(paths.sshKeys, writer, async (c) => {
    const body = await jsonBody(c);
    const key = typeof body.key === "string" ? parsePublicKey(body.key) : null;
    if (!key) throw new CwError("bad_request", 'Field "key" must be an OpenSSH public key line');
    const p = c.get("principal");
    const network = networkOf(c);
    const existing = (await deps.store.listSshKeys()).find((k) =>
      k.fingerprint === key.fingerprint
    );
    if (existing && existing.network !== network) {
      // one key, one network: it must not be moved by someone who does not own it
      throw new CwError(
        "name_taken",
        `The key ${key.fingerprint} is registered in another network`,
      );
    }
    await deps.store.addSshKey({
      fingerprint: key.fingerprint,
      line: key.line,
      network,
      addedBy: p.id,
      addedAt: deps.now().toISOString(),
    });
    deps.audit.record({
      event: "key_added",
      principal: p.id,
      network,
      addr: c.get("addr"),
      fingerprint: key.fingerprint,
    });
    return c.json({ fingerprint: key.fingerprint }, 201);
  });
  app.get(paths.sshKeys, any, async (c) => {
    const p = c.get("principal");
    const keys: SshKeyRow[] = (await deps.store.listSshKeys())
      .filter((k) => p.network === null || k.network === p.network);
    return c.json({ keys });
  });
  app.delete(`${paths.sshKeys}/:fingerprint`, writer, async (c) => {
    const fp = c.req.param("fingerprint") ?? "";
    const p = c.get("principal");
    const key = (await deps.store.listSshKeys()).find((k) => k.fingerprint === fp);
    // a key of another network is answered as no key
    if (!key || !reaches(p, key.network) || !(await deps.store.removeSshKey(fp))) {
      throw new CwError("not_found", `No key ${fp.slice(0, 80)}`);
    }
    await deps.store.bumpAuthVersion();
    deps.cutOff(`key:${fp}`, "key removed"); // its SSH sessions end with it
    deps.audit.record({
      event: "key_removed",
      principal: p.id,
      network: key.network,
      addr: c.get("addr"),
      fingerprint: fp,
    });
    return c.body(null, 204);
  });

  // ---- KV: a network's namespaces are its own; read-only principals read
  app.use(`${paths.kv("x").slice(0, -2)}/*`, any, async (c, next) => {
    const p: Principal = c.get("principal");
    const m = c.req.method;
    if (p.readOnly && m !== "GET" && m !== "HEAD") {
      throw new CwError("forbidden", `${p.id} is read-only: KV writes are refused`);
    }
    await next();
  });
  app.route(
    paths.kv("x").slice(0, -2),
    kvApi(deps.store, {
      now: deps.now,
      onOp: (op) => deps.metrics.inc("cw_relay_kv_operations_total", { op }),
      space: (c) => kvSpace(networkOf(c as unknown as Ctx)),
      // a watch lives on: revoking its principal must end it
      onWatch: (c, watch) =>
        deps.gate.hold(c as unknown as Ctx, (c as unknown as Ctx).get("principal"), watch),
    }),
  );
}

/**
 * Where a network's KV namespaces live in the store: the default network's
 * as they always were (data from before networks stays readable), every
 * other's behind `NETWORK:` — a character no namespace may contain.
 */
export function kvSpace(network: string): string {
  return network === DEFAULT_NETWORK ? "" : `${network}:`;
}
