/** Messages between the node's main thread and its PTY worker. */

/** main → worker. */
export type ToWorker =
  | {
    t: "spawn";
    id: number;
    file: string;
    args: string[];
    cwd: string;
    env: Record<string, string>;
    cols: number;
    rows: number;
  }
  | { t: "resize"; id: number; cols: number; rows: number }
  /** Hang up the program (SIGHUP), as a closing terminal would. */
  | { t: "close"; id: number };

/** worker → main. */
export type FromWorker =
  | { t: "ready" }
  /** The program runs; `fd` is the PTY's master descriptor, the main thread's from now on. */
  | { t: "spawned"; id: number; pid: number; fd: number }
  | { t: "spawn_error"; id: number; message: string }
  | { t: "exit"; id: number; exitCode: number; signal: number };
