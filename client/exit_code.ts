import type { SessionInfo } from "../shared/protocol.ts";
import { signalNumber } from "../shared/signals.ts";

/** Exit code reported for a session that was lost with its node. */
export const LOST_EXIT_CODE = 255;

/**
 * The exit code a command reports for an ended session, as a shell would:
 * the code itself, 128 + signal number when killed, 255 when lost.
 */
export function exitCodeOf(end: Pick<SessionInfo, "status" | "exitCode" | "signal">): number {
  switch (end.status) {
    case "exited":
      return end.exitCode ?? 0;
    case "killed":
      return 128 + (end.signal ? signalNumber(end.signal) : 0);
    default:
      return LOST_EXIT_CODE;
  }
}
