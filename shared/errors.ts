import type { ErrorCode } from "./protocol.ts";

/**
 * An error a caller is expected to handle, with a stable {@link ErrorCode}
 * that reads the same in a wire ERROR frame, an HTTP body and a CLI message.
 *
 * @example
 * ```ts
 * throw new CwError("not_found", 'Cannot find session "7"');
 * ```
 */
export class CwError extends Error {
  /** Stable, machine-readable code. */
  readonly code: ErrorCode;
  /** Builds the error; `cause` keeps the underlying failure. */
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "CwError";
    this.code = code;
  }
}

/** Deno's errors for a connection whose peer went away. */
const PEER_GONE_ERRORS = new Set([
  "BrokenPipe",
  "ConnectionReset",
  "ConnectionAborted",
  "NotConnected",
  "UnexpectedEof",
]);

/**
 * Whether `err` only says that the peer went away mid-conversation (a write
 * to a closed connection, a reset, a closed WebSocket or stream): the normal
 * end of a connection, worth one INFO line at most, never a stack trace.
 *
 * @example
 * ```ts
 * if (isPeerGone(err)) logger.info(`client left: ${err.message}`);
 * else logger.error(`request failed: ${err.stack}`);
 * ```
 */
export function isPeerGone(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if (PEER_GONE_ERRORS.has(err.name)) return true;
  // web streams, WebSockets and the link multiplexer say it in words
  return /\b(?:stream|WebSocket|link|connection) (?:is (?:closing or is )?(?:closed|not open)|was closed)\b/i
    .test(err.message);
}
