/** The cw release; reported by `cw --version` and in the protocol HELLO. */
export const VERSION = "0.1.0";
