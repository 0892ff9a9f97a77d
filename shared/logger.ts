/** A place to write operational messages. Never give it a secret. */
export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

/** Largest log file before it is rotated to `<path>.1`. */
export const LOG_FILE_CAP = 1024 * 1024;

/**
 * A logger appending timestamped lines to a file, rotated at
 * {@link LOG_FILE_CAP} so it stays bounded; optionally echoed to stderr.
 */
export function fileLogger(path: string, echo: boolean): Logger {
  const encoder = new TextEncoder();
  let size = 0;
  try {
    size = Deno.statSync(path).size;
  } catch {
    // new file
  }
  const write = (level: string, message: string) => {
    const line = `${new Date().toISOString()} ${level} ${message}\n`;
    const bytes = encoder.encode(line);
    try {
      if (size + bytes.byteLength > LOG_FILE_CAP) {
        Deno.renameSync(path, `${path}.1`);
        size = 0;
      }
      Deno.writeFileSync(path, bytes, { append: true, create: true, mode: 0o600 });
      size += bytes.byteLength;
    } catch {
      // logging must never take the process down
    }
    if (echo) Deno.stderr.writeSync(bytes);
  };
  return {
    info: (m) => write("INFO", m),
    warn: (m) => write("WARN", m),
    error: (m) => write("ERROR", m),
  };
}
