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
