import { basename, dirname, fromFileUrl, join } from "../shared/path.ts";
import { CwError } from "../shared/errors.ts";
import { ensurePrivateDir, nodePaths } from "../shared/paths.ts";
import { RUN_FLAGS } from "../shared/runtime.ts";
import type { Dialer } from "./node_client.ts";

/** How long a client waits for a node it started to answer. */
const START_TIMEOUT_MS = 10_000;

/** Connects to the node's unix socket; `null` when no node answers there. */
async function connectSocket(socket: string): Promise<Deno.UnixConn | null> {
  try {
    return await Deno.connect({ transport: "unix", path: socket });
  } catch (err) {
    if (err instanceof Deno.errors.NotFound || err instanceof Deno.errors.ConnectionRefused) {
      return null;
    }
    throw new CwError("node_unavailable", `Cannot reach the node at ${socket}: ${err}`);
  }
}

/**
 * A dialer for the local node of data directory `home`. With `autostart`, a
 * node that is not running is started in the background (in its own session,
 * so it outlives this client and its terminal) and awaited.
 */
export function localDialer(home: string, autostart: boolean): Dialer {
  const { socket, logFile } = nodePaths(home);
  return async () => {
    const conn = await connectSocket(socket);
    if (conn) return conn;
    if (!autostart) throw new CwError("node_unavailable", "No node is running");
    ensurePrivateDir(home);
    const child = startNode(home);
    let exited: Deno.CommandStatus | null = null;
    child.status.then((s) => exited = s);
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (let delay = 5; Date.now() < deadline; delay = Math.min(delay * 2, 100)) {
      await new Promise((r) => setTimeout(r, delay));
      const c = await connectSocket(socket);
      if (c) return c;
      if (exited) {
        // another client's node may have won the race for the lock
        const again = await connectSocket(socket);
        if (again) return again;
        throw new CwError(
          "node_unavailable",
          `The node failed to start: ${lastLogLine(logFile)} (see ${logFile})`,
        );
      }
    }
    throw new CwError(
      "node_unavailable",
      `The node did not start within ${START_TIMEOUT_MS / 1000} s; see ${logFile}`,
    );
  };
}

/** Whether a node answers on `home`'s socket. */
export async function nodeRunning(home: string): Promise<boolean> {
  const conn = await connectSocket(nodePaths(home).socket);
  conn?.close();
  return conn !== null;
}

function lastLogLine(logFile: string): string {
  try {
    const lines = Deno.readTextFileSync(logFile).trimEnd().split("\n");
    return lines.at(-1)?.replace(/^\S+ \S+ /, "").replace(/^node failed to start: /, "") ?? "";
  } catch {
    return "no log";
  }
}

/** Starts `cw node` detached from this process and its terminal. */
function startNode(home: string): Deno.ChildProcess {
  const [cmd, ...args] = selfCommand();
  const child = new Deno.Command(cmd, {
    args: [...args, "node"],
    env: { CW_HOME: home },
    stdin: "null",
    stdout: "null",
    stderr: "null",
    detached: true,
  }).spawn();
  child.unref();
  return child;
}

/**
 * The argv that runs this same cw: the compiled binary itself, or `deno run`
 * with cw's flags on main.ts when running from source.
 */
export function selfCommand(): string[] {
  const exe = Deno.execPath();
  if (!/^deno(\.exe)?$/.test(basename(exe))) return [exe];
  let main = fromFileUrl(Deno.mainModule);
  // the bundled client (dist/cw-client.js, scripts/cw) starts the node from the sources beside it
  if (main.endsWith(".js")) main = join(dirname(main), "..", "main.ts");
  const config = join(dirname(main), "deno.json");
  return [exe, "run", ...RUN_FLAGS, "--config", config, main];
}
