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

/**
 * Most output a terminal model reads to rebuild a session's screen from cold
 * (node/screen.ts; it starts at the first mode checkpoint inside this much):
 * a full-screen program redraws well within it, and reading it takes
 * 25–80 ms on the model worker.
 */
export const SCREEN_SOURCE_BYTES = 1024 * 1024;
/** Most characters of a snapshot: it travels in one JSON frame (MAX_JSON_PAYLOAD, 256 KiB). */
export const SNAPSHOT_MAX_CHARS = 192 * 1024;
/** Most lines of scrollback a viewer may ask for. */
export const SNAPSHOT_MAX_SCROLLBACK = 10_000;
/** Lines of scrollback a model keeps at least (what the bench and most attaches ask). */
export const MODEL_SCROLLBACK = 1000;
/**
 * Most cells (scrollback and screen) of one model: it holds ~12 bytes per
 * cell, so this bounds one model near 24 MiB however wide the session or long
 * the history asked for.
 */
export const MODEL_MAX_CELLS = 2_000_000;
/**
 * Cells of all models kept between renderings (~48 MiB): a model kept warm
 * catches up with only the output since its last rendering (a re-attach costs
 * a few ms, not a rebuild); past this the least recently used is dropped.
 */
export const MODELS_MAX_CELLS = 4_000_000;
/** A model nobody rendered for this long is dropped: idle sessions cost no model. */
export const MODEL_IDLE_MS = 5 * 60_000;
/**
 * Renderings waiting at most: more are refused (`rate_limited`), so that a
 * client asking for screens in a loop cannot queue unbounded work.
 */
export const MAX_QUEUED_RENDERINGS = 8;
