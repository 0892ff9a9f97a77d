/**
 * The web client in a real browser: tests/web_browser_driver.ts, run in a
 * process of its own with --allow-all (playwright-core reads /proc files that
 * Deno opens only to --allow-all). Skipped, saying why, without Chromium.
 */
import assert from "node:assert/strict";
import { exists, runCommand } from "./helpers.ts";

/** (As tests/browser.ts says; not imported from there: playwright-core must not load here.) */
const CHROMIUM = "/usr/bin/chromium";

const skip = (await exists(CHROMIUM)) ? null : `no ${CHROMIUM} (apt install chromium)`;
if (skip) console.log(`SKIPPED web browser test: ${skip}`);

Deno.test({
  name:
    "web: sign in with a link, open a session, read-only until control is taken, echo hi, launch, kill, log, KV, phone width",
  ignore: skip !== null,
  async fn() {
    const driver = new URL("./web_browser_driver.ts", import.meta.url).pathname;
    const r = await runCommand(Deno.execPath(), [
      "run",
      "--allow-all",
      "--unstable-worker-options",
      "--unstable-kv",
      driver,
    ]);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  },
});
