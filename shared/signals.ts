/** Signals cw can send, with their numbers on Linux and macOS. */
const SIGNALS: Record<string, { linux: number; darwin: number }> = {
  SIGHUP: { linux: 1, darwin: 1 },
  SIGINT: { linux: 2, darwin: 2 },
  SIGQUIT: { linux: 3, darwin: 3 },
  SIGABRT: { linux: 6, darwin: 6 },
  SIGKILL: { linux: 9, darwin: 9 },
  SIGUSR1: { linux: 10, darwin: 30 },
  SIGSEGV: { linux: 11, darwin: 11 },
  SIGUSR2: { linux: 12, darwin: 31 },
  SIGPIPE: { linux: 13, darwin: 13 },
  SIGALRM: { linux: 14, darwin: 14 },
  SIGTERM: { linux: 15, darwin: 15 },
  SIGCONT: { linux: 18, darwin: 19 },
  SIGSTOP: { linux: 19, darwin: 17 },
  SIGTSTP: { linux: 20, darwin: 18 },
  SIGWINCH: { linux: 28, darwin: 28 },
};

const platform = Deno.build.os === "darwin" ? "darwin" : "linux";

/**
 * Normalises a user's signal (`TERM`, `sigterm`, `SIGTERM`, `15`) to its name.
 * Throws RangeError for anything else.
 */
export function parseSignal(input: string): Deno.Signal {
  const upper = input.trim().toUpperCase();
  if (/^[0-9]+$/.test(upper)) {
    const name = signalName(Number(upper));
    if (name) return name as Deno.Signal;
  } else {
    const name = upper.startsWith("SIG") ? upper : `SIG${upper}`;
    if (name in SIGNALS) return name as Deno.Signal;
  }
  throw new RangeError(`Unknown signal "${input}"; use e.g. TERM, INT, KILL, HUP or a number`);
}

/** The name of a signal number on this platform, or null. */
export function signalName(num: number): string | null {
  for (const [name, nums] of Object.entries(SIGNALS)) {
    if (nums[platform] === num) return name;
  }
  return null;
}

/** The number of a signal name on this platform (for `128 + n` exit codes). */
export function signalNumber(name: string): number {
  return SIGNALS[name]?.[platform] ?? 0;
}
