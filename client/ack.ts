/** Output credit of remote streams (attach, logs --follow): see the protocol's `ack`. */
import { FrameKind, type StreamEvent } from "../shared/protocol.ts";
import type { FramedConn } from "../shared/framed.ts";

/** Output credit asked for on remote transports (see the protocol's `ack`). */
export const REMOTE_WINDOW = 2 * 1024 * 1024;

/** Output is acknowledged in batches of this many bytes (a quarter of the window). */
const ACK_EVERY = REMOTE_WINDOW / 4;
const pendingAcks = new WeakMap<FramedConn, number>();

/**
 * Counts `bytes` of output as consumed and tells the node once a batch is
 * full. Batching keeps acknowledgements off the keystroke path: a small ack
 * sent right after each echo would make the next keystroke wait behind it.
 */
export function acknowledge(conn: FramedConn, bytes: number): Promise<void> {
  const pending = (pendingAcks.get(conn) ?? 0) + bytes;
  if (pending < ACK_EVERY) {
    pendingAcks.set(conn, pending);
    return Promise.resolve();
  }
  pendingAcks.set(conn, 0);
  return conn.sendJson(FrameKind.EVENT, { type: "ack", bytes: pending } satisfies StreamEvent)
    .catch(() => {});
}
