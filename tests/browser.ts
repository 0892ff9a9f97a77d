/** Chromium for the web client's test and bench: Debian's, never a downloaded one. */
import { type Browser, chromium, type Page } from "playwright-core";

/** Where Debian puts Chromium. */
export const CHROMIUM = "/usr/bin/chromium";

/** Chromium as these machines need it: no sandbox as root, no network chatter. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** The text the page's terminal shows (xterm's DOM renderer). */
export function screenText(page: Page): Promise<string> {
  // (evaluated in the page: given as text, since these programs have no DOM types)
  return page.evaluate(
    `Array.from(document.querySelectorAll(".xterm-rows > div"), (d) => d.textContent ?? "").join("\\n")`,
  ) as Promise<string>;
}
