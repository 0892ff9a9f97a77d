/**
 * The only file that touches npm `@xterm/headless` and `@xterm/addon-serialize`
 * (a terminal model and its serializer). It is loaded only where a model is
 * needed — the node's model worker (node/model_worker.ts, started on first
 * use) and `cw attach` when it draws a program of another size
 * (client/clipped_view.ts) — so nothing else pays its ~50 ms of loading.
 * The checker reads ./xterm_types.d.ts: the packages' own declarations would
 * bring the DOM's types into every file of the program.
 */
// @ts-types="./xterm_types.d.ts"
import headless from "@xterm/headless";
// @ts-types="./xterm_types.d.ts"
import serialize from "@xterm/addon-serialize";

/** The headless terminal. */
export const Terminal = headless.Terminal;
/** The serializer addon: the screen as text with escape sequences. */
export const SerializeAddon = serialize.SerializeAddon;
