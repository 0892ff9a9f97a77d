/**
 * The web client (`--only web`), in Debian's Chromium on loopback: the
 * session page's first paint (from navigation to the program's prompt in the
 * page) and the bytes it transfers; keystroke echo typed in the page until
 * the page shows it, beside the browser automation's own round trip (`cw
 * attach` is measured by the standalone and remote parts); and notice latency (a
 * session's end → the webhook has it). Says SKIPPED without Chromium.
 *
 * `deno task bench` runs this file in a process of its own with --allow-all
 * (playwright-core reads /proc files that Deno opens only to --allow-all).
 */
import { CHROMIUM, launchChromium } from "../../tests/browser.ts";
import { CwHome, exists } from "../../tests/helpers.ts";
import { relayWithNode } from "../../tests/relay_helpers.ts";
import { buildWeb } from "../web_build.ts";
import { measureEcho, percentile, timed } from "./measure.ts";
import { Terminal } from "./terminal.ts";
import { CW_ARGV } from "../../tests/helpers.ts";
import { fmtMs, outerEnv, progress, table } from "./common.ts";

const ECHO_SAMPLES = 100;
const PAINT_RUNS = 5;

/** Runs the web bench and prints its report. */
export async function runWebBench(): Promise<void> {
  if (!(await exists(CHROMIUM))) {
    console.log(`web: SKIPPED (no ${CHROMIUM})`);
    return;
  }
  await buildWeb();
  await using home = new CwHome();
  await using _rig = await relayWithNode(home);
  const browser = await launchChromium();
  try {
    await home.launch(["sh", "-c", "stty raw -echo; printf 'READY\\n'; exec cat"], [
      "--name",
      "echo",
    ]);
    const link = (await home.ok(["web"])).trim();
    // bypassCSP: waitForFunction evaluates its text in the page, which the CSP (rightly) forbids
    const context = await browser.newContext({ ignoreHTTPSErrors: true, bypassCSP: true });
    const page = await context.newPage();
    await page.goto(link);
    await page.locator('main a[href="#/n/box-1"]').waitFor();
    const text = () =>
      page.evaluate(
        `Array.from(document.querySelectorAll(".xterm-rows > div"), (d) => d.textContent ?? "").join("\\n")`,
      ) as Promise<string>;

    // first paint of the session page, and what it transferred
    const paints: number[] = [];
    let bytes = 0;
    const url = new URL("/#/n/box-1/s/1", link).href;
    for (let i = 0; i < PAINT_RUNS; i++) {
      const fresh = await context.newPage();
      const { ms } = await timed(async () => {
        await fresh.goto(url);
        await fresh.waitForFunction(
          `Array.from(document.querySelectorAll(".xterm-rows > div")).some((d) => d.textContent.includes("READY"))`,
        );
      });
      paints.push(ms);
      bytes = await fresh.evaluate(
        `performance.getEntriesByType("navigation").concat(performance.getEntriesByType("resource")).reduce((n, e) => n + (e.transferSize || 0), 0)`,
      ) as number;
      await fresh.close();
    }
    progress(`web: first paint p50 ${fmtMs(percentile(paints, 50))}`);

    // echo, typed in the page until the page shows it
    await page.goto(url);
    await page.locator("#take").click();
    await page.getByText("In control").waitFor();
    await page.locator("#term").click();
    const echoes: number[] = [];
    const noop: number[] = [];
    const letters = "abcdefghijklmnopqrstuvwxyz";
    for (let i = 0; i < ECHO_SAMPLES + 10; i++) {
      const before = (await text()).length;
      const ch = letters[i % letters.length];
      const { ms } = await timed(async () => {
        await page.keyboard.type(ch);
        await page.waitForFunction(
          `Array.from(document.querySelectorAll(".xterm-rows > div"), (d) => d.textContent).join("\\n").length > ${before}`,
          undefined,
          { polling: "raf" },
        );
      });
      if (i >= 10) echoes.push(ms);
      noop.push((await timed(() => page.evaluate("1"))).ms);
    }
    progress(`web: echo p50 ${fmtMs(percentile(echoes, 50))}`);

    // cw attach of the same session in the same run, locally and through the relay
    const attachEcho = async (target: string) => {
      const [file, ...args] = [...CW_ARGV, "attach", target];
      await using term = new Terminal(file, args, {
        cols: 100,
        rows: 30,
        env: outerEnv({ CW_HOME: home.home }),
        cwd: home.root,
      });
      await term.expectText("READY", { timeoutMs: 20_000 });
      await term.settle(200, 3000);
      return (await measureEcho(term, 20, ECHO_SAMPLES)).p50Ms;
    };
    const localAttach = await attachEcho("echo");
    const remoteAttach = await attachEcho("box-1:echo");

    // notice latency: a session's end until the webhook has it
    const notices: number[] = [];
    const received: ((at: number) => void)[] = [];
    const hook = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
      const body = await req.json();
      if (body.event === "exited") received.shift()?.(performance.now());
      return new Response(null, { status: 204 });
    });
    await using noticeHome = new CwHome();
    await Deno.mkdir(noticeHome.home, { mode: 0o700 });
    await Deno.writeTextFile(
      `${noticeHome.home}/config.json`,
      JSON.stringify({ notifyUrl: `http://127.0.0.1:${hook.addr.port}/` }),
    );
    for (let i = 0; i < 5; i++) {
      const id = await noticeHome.launch(["sh", "-c", "read x"]);
      const got = new Promise<number>((resolve) => received.push(resolve));
      const t0 = performance.now();
      await noticeHome.ok(["send", String(id), ""]);
      notices.push((await got) - t0);
    }
    await noticeHome.ok(["stop"]);
    await hook.shutdown();

    console.log("cw web client (Chromium on loopback, through a relay with TLS)");
    console.log(table(["what", "figure", "notes"], [
      [
        "session page first paint",
        fmtMs(percentile(paints, 50)),
        `p50 of ${PAINT_RUNS}: navigation to the program's text in the page; ${
          (bytes / 1024).toFixed(0)
        } KiB transferred`,
      ],
      [
        "echo typed in the page",
        fmtMs(percentile(echoes, 50)),
        `p50 of ${ECHO_SAMPLES}, through the relay; the automation's own round trip ${
          fmtMs(percentile(noop, 50))
        }; the same session's cw attach, same run: local ${fmtMs(localAttach)}, through the relay ${
          fmtMs(remoteAttach)
        }`,
      ],
      [
        "notice latency (exit → webhook)",
        fmtMs(percentile(notices, 50)),
        "p50 of 5 (`waiting` comes 3 s after the last output, by design)",
      ],
    ]));
  } finally {
    await browser.close();
  }
}

if (import.meta.main) {
  await runWebBench();
  Deno.exit(0);
}
