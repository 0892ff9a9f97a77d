/**
 * `cw node`: the node daemon's command line, parsed here (node/), and the
 * daemon started. Loaded only for this role (see main.ts).
 */
import { parseArgs } from "node:util";
import { CwError } from "../shared/errors.ts";
import { cwHome, ensurePrivateDir, nodePaths } from "../shared/paths.ts";
import { fileLogger } from "../shared/logger.ts";
import { helpText } from "../shared/help.ts";
import { runNode } from "./daemon.ts";
import { nodeToken } from "./ws_listener.ts";

/** `cw node [--listen ADDR] [--tls-cert F --tls-key F]` and `cw node token [--rotate]`. */
export async function nodeCommand(args: string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(helpText("node"));
    return 0;
  }
  let values;
  let positionals;
  try {
    ({ values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: {
        listen: { type: "string" },
        "tls-cert": { type: "string" },
        "tls-key": { type: "string" },
        rotate: { type: "boolean" },
      },
    }));
  } catch (err) {
    console.error(
      `cw: ${(err as Error).message.split("\n")[0]}\n${helpText("node").split("\n")[0]}`,
    );
    return 2;
  }
  try {
    if (positionals[0] === "token" && positionals.length === 1) {
      const home = cwHome();
      ensurePrivateDir(home);
      console.log(nodeToken(home, values.rotate === true));
      if (values.rotate) console.error("Rotated the node token; clients need the new one.");
      return 0;
    }
    if (positionals.length > 0 || values.rotate) {
      console.error(
        `cw: unexpected argument "${positionals[0] ?? "--rotate"}"\n${
          helpText("node").split("\n")[0]
        }`,
      );
      return 2;
    }
    return await runNode({
      home: cwHome(),
      foreground: Deno.stderr.isTerminal(),
      listen: values.listen,
      tlsCert: values["tls-cert"],
      tlsKey: values["tls-key"],
    });
  } catch (err) {
    const message = err instanceof CwError ? err.message : (err as Error)?.stack ?? String(err);
    console.error(`cw: ${message}`);
    // a node started in the background has no stderr: leave the reason in its log
    if (!(err instanceof CwError && err.code === "unsafe_data_dir")) {
      try {
        fileLogger(nodePaths(cwHome()).logFile, false).error(`node failed to start: ${message}`);
      } catch {
        // no data dir to log into
      }
    }
    return 1;
  }
}
