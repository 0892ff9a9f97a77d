/**
 * The last line of defence of a long-running cw process (relay, node): an
 * exception that escaped every handler is logged as the bug it is, with its
 * stack, and the process goes on. Each connection's work already catches its
 * own errors and closes only that connection; this catches what a future
 * change forgets to, so that one peer can never end a process that holds
 * other people's sessions. A process ends only for its own reasons.
 */
import type { Logger } from "./logger.ts";

/** Installs the handlers once per process; returns a function that removes them. */
export function installLastResort(logger: Logger): () => void {
  const onError = (e: ErrorEvent) => {
    e.preventDefault();
    logger.error(`uncaught exception (a bug; the process goes on): ${describe(e.error)}`);
  };
  const onRejection = (e: PromiseRejectionEvent) => {
    e.preventDefault();
    logger.error(`unhandled rejection (a bug; the process goes on): ${describe(e.reason)}`);
  };
  globalThis.addEventListener("error", onError);
  globalThis.addEventListener("unhandledrejection", onRejection);
  return () => {
    globalThis.removeEventListener("error", onError);
    globalThis.removeEventListener("unhandledrejection", onRejection);
  };
}

function describe(err: unknown): string {
  return err instanceof Error ? err.stack ?? String(err) : String(err);
}
