/** Help texts of every command, shown by `cw help [COMMAND]` and `--help`. */
const HELP: Record<string, { usage: string; text: string }> = {
  launch: {
    usage:
      "cw launch [--name NAME] [--dir DIR] [--tag TAG]... [--env K=V]... [--json] -- COMMAND [ARGS...]",
    text: `Start COMMAND in a new persistent session and print its id on stdout.
The command is an argv list (no shell); it must exist on PATH or as a path.
The session gets this shell's environment plus --env, and CW_SESSION_ID,
CW_SESSION_NAME and TERM. Names: 1-32 of [A-Za-z0-9_-], not only digits,
unique among running sessions.`,
  },
  list: {
    usage: "cw list [--json] [--tag TAG] [--status running|exited|killed|lost]",
    text: "List sessions: id, name, status, exit code or signal, age, tags, command.",
  },
  attach: {
    usage: "cw attach [--read-only] [--history N | --no-history | --raw-history] SESSION",
    text: `Connect this terminal to a session: its current screen, live output and input.
The node renders the program's screen and modes with a terminal model and sends
them with --history N lines of scrollback above (default 200; --no-history: the
screen alone); --raw-history replays the raw bytes instead, as cw did before.
Detach with Ctrl+B then d; Ctrl+B Ctrl+B sends a literal Ctrl+B; detaching
turns off every mode the program set in your terminal.
--read-only: watch without typing (enforced by the node).
When the session ends, attach exits with the session's exit code; when the
node goes away under it (and, for a remote one, stays away), with 255.`,
  },
  logs: {
    usage: "cw logs SESSION [--tail N] [--follow] [--raw]",
    text: `Print a session's output log. Terminal escapes are stripped unless --raw.
--follow keeps printing new output and ends when the session ends.`,
  },
  send: {
    usage: "cw send SESSION [TEXT...] [--stdin] [--file F] [--no-newline]",
    text: `Type input into a session. TEXT is followed by Enter (a carriage return)
unless --no-newline; --stdin and --file send their bytes exactly.`,
  },
  watch: {
    usage: "cw watch SESSION [--tail N] [--timeout S] [--raw]",
    text: `Follow a session's output without attaching (last 20 lines first, escapes
stripped). Ends when the session ends, with its exit code; 124 on timeout.`,
  },
  wait: {
    usage: "cw wait SESSION... | --tag TAG [--condition all|any] [--idle [--for D]] [--timeout S]",
    text: `Wait for sessions to end. Exits with the session's exit code (for several:
the first non-zero; with --condition any: the first to end). Killed sessions
give 128+signal, lost ones 255, a timeout 124. --idle: also done when a session
is waiting (quiet for 3 s and not using CPU: waiting for you), for D more
with --for; a waiting session gives 0.`,
  },
  kill: {
    usage: "cw kill SESSION... | --tag TAG | --all [--signal SIG]",
    text: `Signal the whole process group of running sessions. Without --signal: SIGHUP
then SIGTERM, as when a terminal closes. Waits up to 5 s for them to end.`,
  },
  mcp: {
    usage: "cw mcp",
    text: `Serve the Model Context Protocol on stdin/stdout, for AI agents (Claude Code,
Codex, …): tools to list machines and sessions, launch, read output and the
screen, type (text and named keys), wait for exit or for input, kill, status,
session events and the relay's KV — on this machine, relay nodes (NODE:ID) and
saved servers, with this machine's credentials. See the README for set-up.`,
  },
  events: {
    usage: "cw events [NODE] [--session S]... [--tag T] [--json]",
    text: `Print what happens to sessions as it happens, until interrupted: launched,
working/waiting, exited (with the code), a viewer attached or detached. --session
and --tag narrow it; --json prints one object per line. Works through the relay
(NODE, or NODE:S) and with --server.`,
  },
  screen: {
    usage: "cw screen SESSION [--ansi] [--json]",
    text: `Print what the session's program shows right now, rendered by a terminal model
at the session's size: one line per row (as tmux capture-pane -p); --ansi keeps
colours and attributes as escape sequences; --json adds the cursor, the
alternate-screen flag and the title. Works with NODE:SESSION and --server.`,
  },
  status: {
    usage: "cw status SESSION [--json] [--lines N]",
    text: "Show a session's pid, directory, output size, exit code and last lines.",
  },
  node: {
    usage: "cw node [--listen ADDR [--tls-cert F --tls-key F]] | cw node token [--rotate]",
    text: `Run the node daemon in the foreground. Session commands start it in the
background when needed. Data lives in $CW_HOME (default ~/.codewire).
--listen also serves the protocol over WebSocket (wss://ADDR/; plain ws:// only
on loopback), authenticated by the node token that "cw node token" prints
(--rotate replaces it). "listen", "tlsCert", "tlsKey" in config.json do the same.`,
  },
  server: {
    usage:
      "cw server add NAME URL --token-file F | --token - [--ca-cert FILE] [--insecure] | remove NAME | list [--json]",
    text: `Save nodes reached directly over WebSocket (no relay); then run any session
command against one with cw --server NAME COMMAND … (or CW_SERVER=NAME).
The token comes from --token-file F, --token - (first line of stdin), CW_TOKEN,
or --token TOKEN (visible to other users in ps). URL is wss://; plain ws:// only
to loopback, or with --insecure when the network to the node is private.`,
  },
  stop: {
    usage: "cw stop",
    text: "Stop the node gracefully: sessions get SIGHUP, metadata is saved.",
  },
  setup: {
    usage:
      "cw setup --relay-url URL --invite-file F | --invite - [--name NAME] [--ca-cert FILE] [--insecure] | --remove",
    text: `Register this node with a relay (name defaults to the hostname), save the
relay URL, name, credential (0600) and CA in $CW_HOME, and make the node link
to the relay now. Run again with a new invite to re-register; --remove forgets
the relay. The invite comes from --invite-file F, --invite - (first line of
stdin), CW_INVITE, or --invite TOKEN (visible to other users in ps). URL is
https://; plain http:// only to loopback, or with --insecure when the network
to the relay is private.`,
  },
  login: {
    usage: "cw login --relay-url URL [--token-file F | --token -] [--ca-cert FILE] [--insecure]",
    text: `Make this machine a client of a relay network without making it a node: the
token from cw relay user add (read from --token-file F, --token - or stdin, or
CW_USER_TOKEN) is checked with the relay and saved 0600 in $CW_HOME/login.json.
Then cw nodes, cw list NODE, cw attach NODE:ID, cw kv … and cw ssh-key use it
(it is preferred over this machine's node credential). cw logout forgets it.`,
  },
  logout: {
    usage: "cw logout",
    text: "Forget the user token saved by cw login.",
  },
  nodes: {
    usage: "cw nodes [--json]",
    text:
      "List the nodes of your relay network: network, online state, last seen, address, version, sessions.",
  },
  kv: {
    usage:
      "cw kv set KEY VALUE|--file F|--stdin [--ns NS] [--ttl D] [--if-version V] | get KEY | list [PREFIX] [--json] | delete KEY | watch KEY|--prefix P",
    text: `The relay's shared key-value store (namespace "default" unless --ns); each
network has its own namespaces, and a read-only user may only read.
get prints the value alone (exit 1 if missing); set prints the new version;
--if-version makes set a compare-and-set; watch prints one JSON line per change.`,
  },
  "ssh-key": {
    usage: "cw ssh-key add [PATH] | list [--json] | remove FINGERPRINT",
    text: `Manage the public keys that may log in through the relay's SSH gateway
(ssh NODE@relay -p 2222). add defaults to ~/.ssh/id_ed25519.pub.`,
  },
  web: {
    usage: "cw web [NODE] [--json] | cw web sessions [--json] | cw web revoke ID",
    text: `A login link for a browser on the relay (a phone: scan its QR code). It is
good for 2 minutes, once, and signs the browser in as this machine's relay
credential (its network; read-only stays read-only); with NODE the page opens
on that node's sessions. The session ends after an
idle day or a week; sessions lists yours (the admin: all), revoke ends one.`,
  },
  relay: {
    usage:
      "cw relay [--listen ADDR] [--tls-cert F --tls-key F] [--base-url URL] [--data-dir DIR] [--auth-mode token|none]",
    text: `Run the relay, or administer it:
  cw relay invite [--network NAME] [--uses N] [--ttl D] | --list | --revoke ID
  cw relay user add NAME [--network NAME] [--read-only] [--ttl D] | list | revoke NAME
  cw relay nodes [--json] [--network NAME] | --revoke NAME
  cw relay audit [--since D|TIME] [--follow] [--json]
Admin commands use --data-dir DIR, or --relay-url URL with the admin token from
--admin-token-file F, --admin-token - (stdin) or CW_RELAY_ADMIN_TOKEN.`,
  },
};

/** Every command name. */
export const COMMANDS = Object.keys(HELP);

/** The help page of a command, or the overview for `null`. */
export function helpText(command: string | null): string {
  if (command !== null) {
    const h = HELP[command];
    return `Usage: ${h.usage}\n\n${h.text}`;
  }
  const lines = Object.values(HELP).map((h) => `  ${h.usage}`);
  return `cw — keep terminal programs alive and reachable

Usage: cw COMMAND [OPTIONS]

${lines.join("\n")}
  cw help [COMMAND]    cw --version

SESSION is a session id or name on this machine, or NODE:SESSION on a relay node;
list, launch and kill --tag/--all take a leading NODE. cw --server NAME COMMAND
runs a command against a saved direct server. Data: $CW_HOME (default ~/.codewire).`;
}

/** The one-line hint printed after a usage error. */
export function usageError(command: string | null): string {
  return command ? `Usage: ${HELP[command].usage}` : "Run 'cw help' for the list of commands.";
}
