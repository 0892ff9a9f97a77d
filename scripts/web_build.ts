/**
 * Builds the web client into web/dist/: web/app.ts bundled for browsers
 * (`deno bundle`, esbuild inside Deno; @xterm/xterm included), its page, its
 * styles and xterm's. The relay serves web/dist/ (relay/web_assets.ts); a
 * compiled cw carries it.
 *
 * Usage: deno task web
 */
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const dist = `${root}web/dist`;

/** Builds web/dist/; throws with deno bundle's output when it fails. */
export async function buildWeb(): Promise<string> {
  await Deno.mkdir(dist, { recursive: true });
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "bundle",
      "--quiet",
      "--platform",
      "browser",
      "--minify",
      "--config",
      `${root}deno.json`,
      "-o",
      `${dist}/app.js`,
      `${root}web/app.ts`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`deno bundle failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  await Deno.copyFile(`${root}web/index.html`, `${dist}/index.html`);
  await Deno.copyFile(`${root}web/app.css`, `${dist}/app.css`);
  await Deno.copyFile(`${root}node_modules/@xterm/xterm/css/xterm.css`, `${dist}/xterm.css`);
  return dist;
}

if (import.meta.main) console.log(`built ${await buildWeb()}`);
