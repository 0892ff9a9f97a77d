import type { Duplex } from "../shared/duplex.ts";
import { CwError } from "../shared/errors.ts";
import { checkHello, errorFromFrame, FramedConn, helloFrame } from "../shared/framed.ts";
import { FrameKind, type Request } from "../shared/protocol.ts";

/** Opens a fresh byte stream to a node, whatever the transport. */
export type Dialer = () => Promise<Duplex>;

/** An open streaming call: the node's first answer, then the connection. */
export interface StreamCall {
  response: Record<string, unknown>;
  conn: FramedConn;
}

/**
 * Talks the node protocol over any transport. Each call uses its own
 * connection, so a long `attach` never holds up a `list`.
 */
export class NodeClient {
  #dial: Dialer;

  /** A client that reaches its node through `dial`. */
  constructor(dial: Dialer) {
    this.#dial = dial;
  }

  /** A unary call: one request, one response. Throws {@link CwError}. */
  async request<T = Record<string, unknown>>(req: Request): Promise<T> {
    const { response, conn } = await this.stream(req);
    conn.close();
    return response as T;
  }

  /**
   * Starts a call and returns its connection for the stream that follows.
   * Aborting `signal` before the answer closes the connection (the node then
   * drops the call: a `wait` given up by its client ends).
   */
  async stream(req: Request, signal?: AbortSignal): Promise<StreamCall> {
    const conn = new FramedConn(await this.#dial());
    const abort = () => conn.close();
    signal?.addEventListener("abort", abort, { once: true });
    if (signal?.aborted) conn.close();
    try {
      await conn.sendJson(FrameKind.HELLO, helloFrame());
      checkHello(await conn.next());
      await conn.sendJson(FrameKind.REQUEST, req);
      const frame = await conn.next();
      if (!frame) throw new CwError("node_unavailable", "The node closed the connection");
      if (frame.kind === FrameKind.ERROR) throw errorFromFrame(frame.value);
      if (frame.kind !== FrameKind.RESPONSE) {
        throw new CwError("protocol_error", `Expected a response, got frame kind ${frame.kind}`);
      }
      return { response: frame.value, conn };
    } catch (err) {
      conn.close();
      if (signal?.aborted) throw new CwError("timeout", "The call was given up");
      throw err;
    } finally {
      signal?.removeEventListener("abort", abort);
    }
  }
}
