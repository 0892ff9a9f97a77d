/**
 * cw — one executable, three roles: the client (most commands), the node
 * daemon (`cw node`) and the relay (`cw relay`). Each role's code is loaded
 * only when it runs: a client command never loads the relay's HTTP and SSH
 * libraries or the node's PTY code, which is most of a start-up's cost.
 */

async function main(args: string[]): Promise<number> {
  if (args.length === 1 && args[0] === "--version") {
    // the one answer that needs no role at all
    console.log(`cw ${(await import("./shared/version.ts")).VERSION}`);
    return 0;
  }
  if (args[0] === "node") return await (await import("./node/main.ts")).nodeCommand(args.slice(1));
  if (args[0] === "relay") {
    return await (await import("./relay/cli.ts")).relayCommand(args.slice(1));
  }
  return await (await import("./client/cli.ts")).runClient(args);
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
