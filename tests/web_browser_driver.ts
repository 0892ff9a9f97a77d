/**
 * Run by tests/web_browser_test.ts in a process of its own with --allow-all
 * (playwright-core reads /proc files that Deno opens only to --allow-all;
 * the test suite runs with cw's own flags). Exits 0 when every check passed.
 *
 * The web client in a real browser (Debian's Chromium, driven by npm
 * playwright-core; never a downloaded browser): a `cw web` link signs in,
 * nodes → sessions → a session's terminal, read-only until control is taken,
 * then `echo hi` typed in the page runs and `hi` shows in the page; at a
 * phone's 390×844 nothing scrolls sideways. Skipped, saying why, without
 * Chromium. CW_SCREENSHOTS=DIR keeps a desktop and a phone screenshot there.
 */
import assert from "node:assert/strict";
import { launchChromium, screenText } from "./browser.ts";
import { CwHome, waitFor } from "./helpers.ts";
import { relayWithNode } from "./relay_helpers.ts";
import { buildWeb } from "../scripts/web_build.ts";

async function main(): Promise<void> {
  {
    await buildWeb();
    await using home = new CwHome();
    await using _rig = await relayWithNode(home);
    const browser = await launchChromium();
    try {
      await home.launch(["bash", "--norc", "--noprofile"], [
        "--name",
        "shell",
        "--env",
        "PS1=web$ ",
        "--env",
        "HISTFILE=",
      ]);
      // a link that opens on box-1's sessions
      const link = (await home.ok(["web", "box-1"])).trim();
      assert.match(link, /#login=cwl_[\w-]+&to=n\/box-1$/);

      const context = await browser.newContext({
        ignoreHTTPSErrors: true, // the test's own CA
        viewport: { width: 1000, height: 800 },
      });
      const page = await context.newPage();
      await page.goto(link);
      // signed in: the code left the address bar, the nodes are listed
      await page.locator("main a", { hasText: "shell" }).waitFor({ timeout: 15_000 });
      assert.ok(page.url().endsWith("/#/n/box-1"), page.url());
      const cookies = await context.cookies();
      const session = cookies.find((c) => c.name === "cw_session");
      assert.ok(session?.httpOnly && session.secure && session.sameSite === "Strict");

      // the nodes page lists it too
      await page.goto(new URL("/#/", link).href);
      await page.locator('main a[href="#/n/box-1"]').click();
      await page.locator("main a", { hasText: "shell" }).click();
      await page.locator("#take").waitFor();
      await waitFor(
        "the prompt in the page",
        async () => (await screenText(page)).includes("web$"),
      );
      // read-only: typing reaches nothing
      await page.locator("#term").click();
      await page.keyboard.type("echo nope\n");
      await new Promise((r) => setTimeout(r, 300)); // (nothing to wait for: it must not happen)
      assert.ok(!(await home.ok(["screen", "shell"])).includes("nope"));

      await page.locator("#take").click();
      await page.getByText("In control").waitFor();
      await page.locator("#term").click();
      await page.keyboard.type("echo hi\n");
      await waitFor(
        "hi in the page",
        async () => /^hi\s*$/m.test(await screenText(page)),
        10_000,
      );
      // the phone's key row and text box reach the program too
      await page.locator("#line").fill("echo from-the-box");
      await page.locator("#send").click();
      await waitFor(
        "the box's line in the page",
        async () => /^from-the-box\s*$/m.test(await screenText(page)),
      );
      // launch from the page (a command line split as a shell would, run without one), then kill
      await page.goto(new URL("/#/n/box-1", link).href);
      // each session's last line of output is on the list
      await page.locator("main .sub.last", { hasText: "web$" }).first().waitFor();
      await page.locator("#command").fill(`sh -c 'echo launched from the web; read x'`);
      await page.locator("#name").fill("webby");
      await page.locator("#launch button[type=submit]").click();
      await waitFor(
        "the launched session's terminal",
        async () => (await screenText(page)).includes("launched from the web"),
      );
      assert.equal(JSON.parse(await home.ok(["status", "webby", "--json"])).status, "running");
      page.once("dialog", (d) => void d.accept());
      await page.locator("#kill").click();
      await page.getByText("The session ended").waitFor();
      assert.equal(JSON.parse(await home.ok(["status", "webby", "--json"])).status, "killed");
      await page.goto(new URL("/#/n/box-1/s/1", link).href);
      await waitFor("the shell again", async () => (await screenText(page)).includes("web$"));
      // the transcript, laid out for reading, and the network's KV store
      await page.goto(new URL("/#/n/box-1/s/1/log", link).href);
      await waitFor(
        "the log",
        async () => /^from-the-box$/m.test(await page.locator("#log").textContent() ?? ""),
      );
      assert.ok(!(await page.locator("#log").textContent())?.includes("\x1b"));
      await home.ok(["kv", "set", "greeting", "hello from kv"]);
      await page.goto(new URL("/#/kv/default", link).href);
      await page.locator("main a", { hasText: "greeting" }).click();
      await page.getByText("hello from kv").waitFor();
      await page.goto(new URL("/#/n/box-1/s/1", link).href);
      await waitFor("the shell again", async () => (await screenText(page)).includes("web$"));
      const shots = Deno.env.get("CW_SCREENSHOTS");
      if (shots) await page.screenshot({ path: `${shots}/web-desktop.png` });

      // a phone: nothing wider than the screen
      const phone = await browser.newContext({
        ignoreHTTPSErrors: true,
        viewport: { width: 390, height: 844 },
        isMobile: true,
        hasTouch: true,
      });
      await phone.addCookies(cookies);
      const small = await phone.newPage();
      await small.goto(new URL("/#/n/box-1", link).href);
      await small.locator("main a", { hasText: "shell" }).click();
      await small.locator("#keys").waitFor();
      await waitFor("the phone's terminal", async () => (await screenText(small)).includes("web$"));
      const width = await small.evaluate("document.documentElement.scrollWidth") as number;
      assert.ok(width <= 390, `the page is ${width} px wide at 390`);
      if (shots) await small.screenshot({ path: `${shots}/web-phone.png` });
    } finally {
      await browser.close();
    }
  }
}

if (import.meta.main) {
  await main();
  Deno.exit(0);
}
