/**
 * Splices a client's stream onto a node's, reading just enough of the node
 * protocol on the way to decide and to audit: the client's REQUEST (checked
 * against the principal before any byte of it reaches the node) and the
 * node's first answer (a launch's session id). After that the bytes pass
 * untouched, counted; the relay never decodes a session's data.
 */
import type { Duplex } from "../shared/duplex.ts";
import { encodeJson, FrameDecoder, FrameKind, ProtocolError } from "../shared/protocol.ts";
import type { ErrorCode } from "../shared/protocol.ts";

/** Most bytes a client may send before its REQUEST (a HELLO is tiny). */
export const MAX_BYTES_BEFORE_REQUEST = 300 * 1024;

/** What the guard reports. */
export interface GuardHooks {
  /** The client's request: null lets it through, a message refuses it. */
  check(req: Record<string, unknown>): { code: ErrorCode; message: string } | null;
  /** The node's first answer to the request (RESPONSE or ERROR). */
  answered?(req: Record<string, unknown>, answer: Record<string, unknown>, ok: boolean): void;
  /** The stream ended: bytes from the client and to it. */
  ended?(req: Record<string, unknown> | null, bytes: { in: number; out: number }): void;
}

/** Runs the stream to its end; closes both sides. Never throws. */
export async function guardedSplice(
  client: Duplex,
  node: Duplex,
  hooks: GuardHooks,
): Promise<void> {
  const bytes = { in: 0, out: 0 };
  let req: Record<string, unknown> | null = null;
  let refused = false;
  const toClient = client.writable.getWriter();
  const toNode = node.writable.getWriter();

  const up = (async () => {
    const reader = client.readable.getReader();
    const decoder = new FrameDecoder();
    let held: Uint8Array[] = [];
    let heldBytes = 0;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        bytes.in += value.byteLength;
        if (req !== null) {
          await toNode.write(value);
          continue;
        }
        held.push(value);
        heldBytes += value.byteLength;
        for (const frame of decoder.push(value)) {
          if (frame.kind === FrameKind.REQUEST) {
            req = frame.value;
            break;
          }
          if (frame.kind !== FrameKind.HELLO && frame.kind !== FrameKind.PING) {
            throw new ProtocolError("protocol_error", `Expected a REQUEST, got kind ${frame.kind}`);
          }
        }
        if (req === null) {
          if (heldBytes > MAX_BYTES_BEFORE_REQUEST) {
            throw new ProtocolError("protocol_error", "No REQUEST within the first frames");
          }
          // a HELLO goes through at once: the node answers it before the client asks
          if (decoder.pending === 0) {
            for (const chunk of held) await toNode.write(chunk);
            held = [];
            heldBytes = 0;
          }
          continue;
        }
        const no = hooks.check(req);
        if (no) {
          refused = true;
          await toClient.write(encodeJson(FrameKind.ERROR, no)).catch(() => {});
          return;
        }
        for (const chunk of held) await toNode.write(chunk);
        held = [];
      }
    } catch (err) {
      if (err instanceof ProtocolError) {
        await toClient.write(encodeJson(FrameKind.ERROR, { code: err.code, message: err.message }))
          .catch(() => {});
      }
    } finally {
      reader.releaseLock();
    }
  })();

  const down = (async () => {
    const reader = node.readable.getReader();
    const decoder: FrameDecoder | null = hooks.answered ? new FrameDecoder() : null;
    let answered = false;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done || refused) return;
        if (!answered && decoder) {
          for (const frame of decoder.push(value)) {
            if (frame.kind === FrameKind.RESPONSE || frame.kind === FrameKind.ERROR) {
              answered = true;
              if (req) hooks.answered!(req, frame.value, frame.kind === FrameKind.RESPONSE);
              break;
            }
          }
        }
        bytes.out += value.byteLength;
        await toClient.write(value);
      }
    } catch {
      // either side went away: the stream is over
    } finally {
      reader.releaseLock();
    }
  })();

  await Promise.race([up, down]);
  client.close();
  node.close();
  toClient.releaseLock();
  toNode.releaseLock();
  try {
    hooks.ended?.(refused ? null : req, bytes);
  } catch {
    // auditing must not throw into the relay
  }
}
