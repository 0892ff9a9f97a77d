/**
 * cw — one executable, three roles: the client (most commands), the node
 * daemon (`cw node`), and later the relay (`cw relay`).
 */
import { runClient } from "./client/cli.ts";
import { runNode } from "./node/daemon.ts";
import { relayCommand } from "./relay/cli.ts";
import { CwError } from "./shared/errors.ts";
import { cwHome, nodePaths } from "./shared/paths.ts";
import { fileLogger } from "./shared/logger.ts";
import { helpText } from "./client/help.ts";

async function main(args: string[]): Promise<number> {
  if (args[0] === "node") {
    if (args.includes("--help") || args.includes("-h")) {
      console.log(helpText("node"));
      return 0;
    }
    if (args.length > 1) {
      console.error(`cw: unexpected argument "${args[1]}"\n${helpText("node").split("\n")[0]}`);
      return 2;
    }
    try {
      return await runNode({ home: cwHome(), foreground: Deno.stderr.isTerminal() });
    } catch (err) {
      const message = err instanceof CwError ? err.message : (err as Error)?.stack ?? String(err);
      console.error(`cw: ${message}`);
      // a node started in the background has no stderr: leave the reason in its log
      if (!(err instanceof CwError && err.code === "unsafe_data_dir")) {
        fileLogger(nodePaths(cwHome()).logFile, false).error(`node failed to start: ${message}`);
      }
      return 1;
    }
  }
  if (args[0] === "relay") return await relayCommand(args.slice(1));
  return await runClient(args);
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
