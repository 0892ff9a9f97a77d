/**
 * The only file that touches npm `@xterm/headless` and `@xterm/addon-serialize`
 * (a terminal model and its serializer). node/model_worker.ts loads it (a worker started on first use),
 * so a node that never renders a screen does not pay its ~50 ms of loading.
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
