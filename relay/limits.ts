/**
 * The relay's limits, named in one place: how much a peer can make the relay
 * hold for it, each with the reason for its figure. (Wire limits — frame
 * sizes, windows — are in the protocol files in `shared/`.)
 */

// ---- SSH gateway: per connection and per session channel

/** Session channels open at once on one SSH connection; OpenSSH's sshd allows 10 (MaxSessions). */
export const SSH_MAX_SESSIONS = 10;
/**
 * Port forwards (`ssh -L`, `-W`) open at once on one SSH connection; more are
 * refused as channel-open failures (each holds a dial-back and a connection
 * on the node).
 */
export const SSH_MAX_FORWARDS = 64;
/** How long a forward may wait for the node to reach its destination (the node's dial-back included). */
export const SSH_FORWARD_CONNECT_MS = 15_000;
/** Variables kept per session: the allow-list (LANG, LANGUAGE, COLORTERM, LC_*) names ~16. */
export const SSH_MAX_ENV_VARS = 32;
/** Bytes of one variable's value: a locale or COLORTERM is a few dozen. */
export const SSH_MAX_ENV_VALUE = 256;
/** Bytes of all variables of a session, names and values. */
export const SSH_MAX_ENV_BYTES = 4 * 1024;
/** Length of a pty-req's terminal name: terminfo names are short ("xterm-256color"). */
export const SSH_MAX_TERM_NAME = 64;
/** Largest terminal width or height in cells (pty-req, window-change), as the node's. */
export const SSH_MAX_TERM_SIZE = 10_000;
/** Bytes of an exec command: Linux refuses a longer `sh -c` argument (MAX_ARG_STRLEN) anyway. */
export const SSH_MAX_COMMAND = 128 * 1024;
