/** A place to write operational messages. Never give it a secret. */
export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

/** Largest log file before it is rotated to `<path>.1`. */
export const LOG_FILE_CAP = 1024 * 1024;

/**
 * Lines of one shape (the same text once digits are set aside: addresses,
 * ports, counts) logged in one {@link LOG_REPEAT_WINDOW_MS}; beyond it they
 * are counted, not written, so a flood cannot rotate real events away.
 */
export const LOG_REPEAT_LIMIT = 10;
/** The window of {@link LOG_REPEAT_LIMIT}. */
export const LOG_REPEAT_WINDOW_MS = 60_000;
/** Shapes tracked at once (the map is bounded too). */
const LOG_SHAPES_MAX = 1000;

/**
 * Decides which lines are written: at most {@link LOG_REPEAT_LIMIT} of one
 * shape per window; the first line after a window says how many were held back.
 */
export class RepeatFilter {
  #shapes = new Map<string, { start: number; count: number; held: number }>();
  #now: () => number;

  /** A filter on the given clock. */
  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** The lines to write for `message` (none, it, or a note of held lines and it). */
  admit(message: string): string[] {
    const shape = message.replace(/\d+/g, "#").slice(0, 160);
    const now = this.#now();
    let e = this.#shapes.get(shape);
    const out: string[] = [];
    if (e && now - e.start > LOG_REPEAT_WINDOW_MS) {
      if (e.held > 0) out.push(`INFO (${e.held} more lines like "${shape}" were not written)`);
      e = undefined;
    }
    if (!e) {
      if (this.#shapes.size >= LOG_SHAPES_MAX) this.#shapes.clear();
      e = { start: now, count: 0, held: 0 };
    }
    this.#shapes.set(shape, e);
    if (++e.count > LOG_REPEAT_LIMIT) {
      e.held++;
      return out;
    }
    out.push(message);
    return out;
  }
}

/**
 * A logger appending timestamped lines to a file, rotated at
 * {@link LOG_FILE_CAP} so it stays bounded; optionally echoed to stderr.
 * Repeated lines are thinned by a {@link RepeatFilter}.
 */
export function fileLogger(path: string, echo: boolean): Logger {
  const encoder = new TextEncoder();
  const filter = new RepeatFilter();
  let size = 0;
  try {
    size = Deno.statSync(path).size;
  } catch {
    // new file
  }
  const write = (level: string, message: string) => {
    for (const m of filter.admit(`${level} ${message}`)) writeLine(m);
  };
  const writeLine = (message: string) => {
    const line = `${new Date().toISOString()} ${message}\n`;
    const bytes = encoder.encode(line);
    try {
      if (size + bytes.byteLength > LOG_FILE_CAP) {
        Deno.renameSync(path, `${path}.1`);
        size = 0;
      }
      Deno.writeFileSync(path, bytes, { append: true, create: true, mode: 0o600 });
      size += bytes.byteLength;
      if (echo) Deno.stderr.writeSync(bytes);
    } catch {
      // logging must never take the process down (a full disk, a closed stderr)
    }
  };
  return {
    info: (m) => write("INFO", m),
    warn: (m) => write("WARN", m),
    error: (m) => write("ERROR", m),
  };
}
