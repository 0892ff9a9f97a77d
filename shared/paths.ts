import { join } from "./path.ts";
import { CwError } from "./errors.ts";

/** Files of one node inside its data directory. */
export interface NodePaths {
  home: string;
  socket: string;
  pidFile: string;
  lockFile: string;
  logFile: string;
  stateFile: string;
  sessionsDir: string;
}

/**
 * The data directory: `$CW_HOME`, else `~/.codewire`. Everything of one node
 * lives there, so two nodes with different homes never meet.
 */
export function cwHome(env: { get(key: string): string | undefined } = Deno.env): string {
  const explicit = env.get("CW_HOME");
  if (explicit) return explicit;
  const home = env.get("HOME");
  if (!home) {
    throw new CwError("unsafe_data_dir", "Cannot find the data directory: set CW_HOME or HOME");
  }
  return join(home, ".codewire");
}

/** The well-known files of a node's data directory. */
export function nodePaths(home: string): NodePaths {
  return {
    home,
    socket: join(home, "node.sock"),
    pidFile: join(home, "node.pid"),
    lockFile: join(home, "node.lock"),
    logFile: join(home, "node.log"),
    stateFile: join(home, "state.json"),
    sessionsDir: join(home, "sessions"),
  };
}

/**
 * Creates `dir` with mode 0700 if missing, then checks that it belongs to this
 * user and that nobody else may write to it. Throws {@link CwError}
 * `unsafe_data_dir` otherwise, so that a node never trusts a directory another
 * user could plant a socket or metadata in.
 */
export function ensurePrivateDir(dir: string): void {
  try {
    Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new CwError("unsafe_data_dir", `Cannot create the data directory ${dir}: ${err}`, {
      cause: err,
    });
  }
  const info = Deno.statSync(dir);
  if (!info.isDirectory) {
    throw new CwError("unsafe_data_dir", `The data directory ${dir} is not a directory`);
  }
  const uid = Deno.uid();
  if (uid !== null && info.uid !== uid) {
    throw new CwError(
      "unsafe_data_dir",
      `Refusing to use ${dir}: it belongs to uid ${info.uid}, not to this user (uid ${uid})`,
    );
  }
  if (info.mode !== null && (info.mode & 0o022) !== 0) {
    throw new CwError(
      "unsafe_data_dir",
      `Refusing to use ${dir}: it is writable by group or others (mode ${
        (info.mode & 0o777).toString(8)
      }); run chmod 700 ${dir}`,
    );
  }
}

/** Writes a file atomically (temp file, fsync, rename) with the given mode. */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): void {
  const tmp = `${path}.tmp-${Deno.pid}`;
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const file = Deno.openSync(tmp, { write: true, create: true, truncate: true, mode });
  try {
    let written = 0;
    while (written < bytes.byteLength) written += file.writeSync(bytes.subarray(written));
    file.syncSync();
  } finally {
    file.close();
  }
  Deno.renameSync(tmp, path);
}
