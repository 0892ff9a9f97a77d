import { Hono } from "hono";
const sub = new Hono();
sub.get("/:ns/:key{.+}", (c) => c.json({ ns: c.req.param("ns"), key: c.req.param("key"), path: c.req.path }));
sub.get("/:ns", (c) => c.json({ ns: c.req.param("ns"), list: true }));
sub.all("*", (c) => c.json({ fallback: c.req.path }, 404));
const app = new Hono();
app.route("/api/v1/kv", sub);
for (const p of ["/api/v1/kv/ns/a%2Fb", "/api/v1/kv/ns/a/b/c", "/api/v1/kv/ns/%E2%82%AC", "/api/v1/kv/ns/%ZZ", "/api/v1/kv/ns/a%25b", "/api/v1/kv/ns", "/api/v1/kv/ns/", "/api/v1/kv/n%2Fs/x", "/api/v1/kv/ns/a//b", "/api/v1/kv/ns/%00", "/api/v1/kv/ns/a%3Fb"]) {
  const r = await app.request(p);
  console.log(p, r.status, await r.text());
}
