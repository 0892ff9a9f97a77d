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
  /** Input; the worker answers `input_taken` once the kernel has taken all of it. */
  | { t: "write"; id: number; data: Uint8Array }
  | { t: "resize"; id: number; cols: number; rows: number }
  | { t: "close"; id: number }
  /** Stop or restart reading the PTY (flow control from the viewers). */
  | { t: "flow"; id: number; paused: boolean }
  /** The main thread has taken the last `data` of this PTY. */
  | { t: "ack"; id: number };

/** worker → main. */
export type FromWorker =
  | { t: "ready" }
  | { t: "spawned"; id: number; pid: number }
  | { t: "spawn_error"; id: number; message: string }
  | { t: "data"; id: number; data: Uint8Array }
  /**
   * The kernel took the `bytes` of one `write` (or they were dropped: the PTY
   * is gone). Input not yet taken is what a PTY holds for a program that does
   * not read; the main thread bounds it (node/limits.ts PTY_INPUT_MAX).
   */
  | { t: "input_taken"; id: number; bytes: number }
  | { t: "exit"; id: number; exitCode: number; signal: number };
