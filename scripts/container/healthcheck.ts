/**
 * The container's health check: exits 0 when the relay in this container
 * answers GET /healthz on 127.0.0.1 (HTTPS, or HTTP behind a proxy), on port
 * CW_HEALTH_PORT (default 8443). Run by the image's HEALTHCHECK.
 */
const port = Deno.env.get("CW_HEALTH_PORT") ?? "8443";
for (const scheme of ["https", "http"]) {
  try {
    const res = await fetch(`${scheme}://127.0.0.1:${port}/healthz`, {
      signal: AbortSignal.timeout(3000),
    });
    await res.body?.cancel();
    if (res.ok) Deno.exit(0);
  } catch {
    // not this scheme, or not up
  }
}
Deno.exit(1);
