/**
 * The admin's routes: invites, users, node revocation, the audit log and
 * metrics. Each calls the operation of relay/admin.ts that `cw relay …` on a
 * data dir calls too.
 */
import type { Hono } from "hono";
import { type InviteRequest, paths, type UserRequest } from "../shared/api.ts";
import { CwError } from "../shared/errors.ts";
import * as admin from "./admin.ts";
import { AUDIT_MAX_FOLLOWERS, AUDIT_MAX_READ, type AuditLog, parseSince } from "./audit.ts";
import type { Gate } from "./gate.ts";
import { type Ctx, type Env, jsonBody } from "./http.ts";
import type { Metrics } from "./metrics.ts";

/** What the admin routes need. */
export interface AdminRoutesDeps {
  gate: Gate;
  admin: admin.AdminContext;
  audit: AuditLog;
  metrics: Metrics;
}

/** Bytes of audit lines queued for a follower that does not read before it is dropped. */
export const AUDIT_FOLLOW_MAX_QUEUED = 1024 * 1024;

const actor = (c: Ctx): admin.Actor => ({ principal: c.get("principal"), addr: c.get("addr") });

/** Mounts the admin routes on `app`. */
export function adminRoutes(app: Hono<Env>, deps: AdminRoutesDeps): void {
  const onlyAdmin = deps.gate.require("admin");

  app.get(
    paths.metrics,
    onlyAdmin,
    (c) => c.text(deps.metrics.render(), 200, { "content-type": "text/plain; version=0.0.4" }),
  );

  app.post(paths.invites, onlyAdmin, async (c) => {
    const body = await jsonBody(c);
    return c.json(await admin.createInvite(deps.admin, actor(c), body as InviteRequest), 201);
  });
  app.get(
    paths.invites,
    onlyAdmin,
    async (c) => c.json({ invites: await admin.listInvites(deps.admin) }),
  );
  app.delete(`${paths.invites}/:id`, onlyAdmin, async (c) => {
    await admin.revokeInvite(deps.admin, actor(c), c.req.param("id") ?? "");
    return c.body(null, 204);
  });

  app.post(paths.users, onlyAdmin, async (c) => {
    const body = await jsonBody(c);
    return c.json(
      await admin.addUser(deps.admin, actor(c), body as unknown as UserRequest),
      201,
    );
  });
  app.get(
    paths.users,
    onlyAdmin,
    async (c) => c.json({ users: await admin.listUsers(deps.admin) }),
  );
  app.delete(`${paths.users}/:name`, onlyAdmin, async (c) => {
    await admin.revokeUser(deps.admin, actor(c), c.req.param("name") ?? "");
    return c.body(null, 204);
  });

  app.get(
    paths.networks,
    onlyAdmin,
    async (c) => c.json({ networks: await admin.listNetworks(deps.admin) }),
  );
  app.put(`${paths.networks}/:name`, onlyAdmin, async (c) => {
    const body = await jsonBody(c);
    return c.json(await admin.setNetwork(deps.admin, actor(c), c.req.param("name") ?? "", body));
  });

  app.delete(`${paths.nodes}/:name`, onlyAdmin, async (c) => {
    await admin.revokeNode(deps.admin, actor(c), c.req.param("name") ?? "");
    return c.body(null, 204);
  });

  // NDJSON, oldest first; follow=1 keeps the response open with new entries
  app.get(paths.audit, onlyAdmin, async (c) => {
    const since = c.req.query("since");
    const limitText = c.req.query("limit");
    let sinceDate: Date | undefined;
    if (since !== undefined) {
      sinceDate = parseSince(since);
      if (Number.isNaN(sinceDate.getTime())) {
        throw new CwError(
          "bad_request",
          `Invalid since "${since.slice(0, 40)}": a duration or an ISO time`,
        );
      }
    }
    const limit = limitText === undefined ? AUDIT_MAX_READ : Number(limitText);
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > AUDIT_MAX_READ) {
      throw new CwError("bad_request", `"limit" must be 1-${AUDIT_MAX_READ}`);
    }
    const follow = c.req.query("follow") === "1";
    const past = await deps.audit.readAll({ since: sinceDate, limit });
    const encoder = new TextEncoder();
    const lines = (es: unknown[]) =>
      encoder.encode(es.map((e) => JSON.stringify(e) + "\n").join(""));
    if (!follow) {
      return new Response(lines(past), { headers: { "content-type": "application/x-ndjson" } });
    }
    let ctrl!: ReadableStreamDefaultController<Uint8Array>;
    const unsubscribe = deps.audit.subscribe((e) => {
      // a follower that does not read is dropped, not buffered without end
      if ((ctrl.desiredSize ?? 0) < -AUDIT_FOLLOW_MAX_QUEUED) {
        unsubscribe?.();
        ctrl.error(new Error("audit follower too slow"));
        return;
      }
      ctrl.enqueue(lines([e]));
    });
    if (!unsubscribe) {
      throw new CwError("rate_limited", `${AUDIT_MAX_FOLLOWERS} followers already; try later`);
    }
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        ctrl = c;
        ctrl.enqueue(lines(past));
      },
      cancel() {
        unsubscribe();
      },
    }, new ByteLengthQueuingStrategy({ highWaterMark: 0 }));
    return new Response(body, {
      headers: { "content-type": "application/x-ndjson", "cache-control": "no-store" },
    });
  });
}
