/** How `cw web` shows a login link, whichever server made it (the relay, a direct node). */
import type { WebCode } from "../shared/api.ts";

/** Prints `code`: as JSON, or the link (stdout only: it is a secret for 2 minutes) and a QR code. */
export async function printWebCode(code: WebCode, json: boolean): Promise<number> {
  if (json) {
    console.log(JSON.stringify(code));
    return 0;
  }
  console.log(code.url);
  if (Deno.stdout.isTerminal()) {
    const { qrLines } = await import("./qr.ts");
    console.log(qrLines(code.url).join("\n"));
  }
  console.error(`Open it within 2 minutes (until ${code.expiresAt}); it works once.`);
  return 0;
}
