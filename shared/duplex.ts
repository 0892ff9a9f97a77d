/**
 * An ordered, reliable byte stream in both directions. A unix socket, a TCP or
 * TLS connection and a WebSocket wrapped by an adapter all fit, so the code
 * above them is written once.
 */
export interface Duplex {
  readonly readable: ReadableStream<Uint8Array>;
  readonly writable: WritableStream<Uint8Array>;
  /** Closes both directions; safe to call twice. */
  close(): void;
}
