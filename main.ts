/**
 * cw — one executable, three roles: the client (most commands), the node
 * daemon (`cw node`), and later the relay (`cw relay`).
 */
import { runClient } from "./client/cli.ts";
import { runNode } from "./node/daemon.ts";
import { relayCommand } from "./relay/cli.ts";
import { CwError } from "./shared/errors.ts";
import { cwHome, ensurePrivateDir, nodePaths } from "./shared/paths.ts";
import { parseArgs } from "node:util";
import { nodeToken } from "./node/ws_listener.ts";
import { fileLogger } from "./shared/logger.ts";
import { helpText } from "./client/help.ts";

/** `cw node [--listen ADDR] [--tls-cert F --tls-key F]` and `cw node token [--rotate]`. */
async function nodeCommand(args: string[]): Promise<number> {
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

async function main(args: string[]): Promise<number> {
  if (args[0] === "node") return await nodeCommand(args.slice(1));
  if (args[0] === "relay") return await relayCommand(args.slice(1));
  return await runClient(args);
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
