/**
 * The node's limits, named in one place: how much a peer can make the node
 * hold for it, in bytes or time, each with the reason for its figure.
 * (The wire's own limits — frame sizes, windows — are in the protocol files
 * in `shared/`.)
 */

/**
 * Input waiting for one PTY's program: written to the PTY but not yet taken
 * by the kernel, which holds only a few KiB itself. Beyond it, writers wait
 * (an attach stops reading its client; `send` waits {@link SEND_ROOM_WAIT_MS}).
 * 1 MiB is the size of a session's output ring (the same order of memory per
 * session), ~8 `send` requests or a large paste, so a program that reads at
 * all never meets it, while one that never reads (`sleep`) holds at most
 * this. (Before this bound, 256 MiB sent to `sleep 600` took the node from
 * 84 to 552 MiB of RSS, never given back.)
 */
export const PTY_INPUT_MAX = 1024 * 1024;

/**
 * How long a `send` request waits for room in a PTY's input before it is
 * answered `input_blocked`: long enough for a busy program to catch up on a
 * burst, short enough for a script to learn that the session is stuck.
 */
export const SEND_ROOM_WAIT_MS = 5_000;

/** Input accepted in one `send` request, in bytes (the client sends 96 KiB parts). */
export const MAX_SEND_BYTES = 128 * 1024;

/**
 * Largest width or height of a PTY, in cells, whatever asks (attach, launch,
 * SSH): no screen is wider, and programs size buffers by it.
 */
export const PTY_MAX_SIZE = 10_000;

/**
 * Bytes of output `cw status` shows at most, whatever its line count: its
 * answer is one JSON frame (256 KiB), and base64 adds a third.
 */
export const STATUS_MAX_BYTES = 64 * 1024;
