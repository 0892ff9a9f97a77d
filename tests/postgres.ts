/**
 * The PostgreSQL the tests use: `CW_TEST_POSTGRES_URL` when set (scripts/test.sh
 * starts a private one and sets it), else a private instance started here
 * once per test process with scripts/postgres.sh and stopped when it exits.
 * When none can start, tests that need it are registered as ignored with the
 * reason in their name (SKIPPED …), never passed silently.
 */
import { fileURLToPath } from "node:url";

const SCRIPT = fileURLToPath(new URL("../scripts/postgres.sh", import.meta.url));

let started: Promise<{ url: string } | { skip: string }> | null = null;

/** A URL of a PostgreSQL database the tests may use, or why there is none. */
export function testPostgres(): Promise<{ url: string } | { skip: string }> {
  const given = Deno.env.get("CW_TEST_POSTGRES_URL");
  if (given) return Promise.resolve({ url: given });
  started ??= start();
  return started;
}

async function start(): Promise<{ url: string } | { skip: string }> {
  const dir = await Deno.makeTempDir({ prefix: "cw-pg-" });
  const out = await new Deno.Command("bash", {
    args: [SCRIPT, "start", dir],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    const why = new TextDecoder().decode(out.stderr).trim().split("\n").at(-1) ?? "";
    return { skip: `PostgreSQL cannot start here: ${why.slice(0, 200)}` };
  }
  globalThis.addEventListener("unload", () => {
    new Deno.Command("bash", { args: [SCRIPT, "stop", dir], stdin: "null" }).outputSync();
  });
  return { url: new TextDecoder().decode(out.stdout).trim() };
}

/** A schema name for one test's private corner of the database (the same for the same seed). */
export function testSchema(seed: string): string {
  let h = 2166136261;
  for (const c of seed) h = Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0;
  return `t_${h.toString(16)}`;
}

/** `url` with cw's `?schema=`. */
export function withSchema(url: string, schema: string): string {
  const u = new URL(url);
  u.searchParams.set("schema", schema);
  return u.toString();
}
