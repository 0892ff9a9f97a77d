/**
 * Reading a secret (an invite, a token) the way a command line should take
 * it: from a file, stdin or an environment variable, so that it never has to
 * sit in argv, where `ps` and shell history show it to others.
 */
import { concat, writeAll } from "./bytes.ts";
import { CwError } from "./errors.ts";

/** Most bytes read from stdin or a file for one secret; a token is ~50. */
export const SECRET_INPUT_MAX_BYTES = 64 * 1024;

/** Where a secret may come from; see {@link readSecret}. */
export interface SecretSources {
  /** The flag's name without dashes: `--NAME VALUE|-` and `--NAME-file F`. */
  flag: string;
  /** Value of `--NAME`: the secret itself, or `-` for the first line of stdin. */
  value?: string;
  /** Value of `--NAME-file`: a file whose first line is the secret. */
  file?: string;
  /** An environment variable tried when neither flag is given. */
  envVar?: string;
  /** Environment to read `envVar` from (default `Deno.env`). */
  env?: { get(key: string): string | undefined };
  /** Standard input (default `Deno.stdin`). */
  stdin?: { readable: ReadableStream<Uint8Array>; isTerminal(): boolean };
}

/**
 * Reads a secret from `--NAME -` (stdin), `--NAME-file F`, `--NAME VALUE` or
 * the environment variable, in that order; null when none is given. Input is
 * the first line, trimmed, read up to {@link SECRET_INPUT_MAX_BYTES}.
 *
 * Throws `RangeError` (a command-line mistake) when both flags are given or
 * the secret is empty, too long or holds spaces or control characters, and
 * {@link CwError} `not_found` when the file cannot be read. Messages never
 * contain the secret.
 *
 * @example
 * ```ts
 * // cw server add … --token-file ~/.config/cw/token
 * const token = await readSecret({ flag: "token", file: values["token-file"], envVar: "CW_TOKEN" });
 * ```
 */
export async function readSecret(sources: SecretSources): Promise<string | null> {
  const { flag } = sources;
  const what = flag.replaceAll("-", " "); // "admin-token" → "admin token", for messages
  if (sources.value !== undefined && sources.file !== undefined) {
    throw new RangeError(`Give --${flag} or --${flag}-file, not both`);
  }
  if (sources.value === "-") {
    const stdin = sources.stdin ?? Deno.stdin;
    if (stdin.isTerminal()) {
      await writeAll(Deno.stderr, new TextEncoder().encode(`Paste the ${what} and press Enter: `));
    }
    const where = `stdin (--${flag} -)`;
    return checked(await firstLine(stdin.readable, where), where, what);
  }
  if (sources.value !== undefined) return checked(sources.value, `--${flag}`, what);
  if (sources.file !== undefined) {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(sources.file, { read: true });
    } catch (err) {
      throw new CwError(
        "not_found",
        `Cannot read --${flag}-file ${sources.file}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    const where = `--${flag}-file ${sources.file}`;
    return checked(await firstLine(file.readable, where), where, what);
  }
  const fromEnv = sources.envVar ? (sources.env ?? Deno.env).get(sources.envVar) : undefined;
  return fromEnv ? checked(fromEnv, sources.envVar!, what) : null;
}

/** The first line of a stream, at most {@link SECRET_INPUT_MAX_BYTES}; closes the stream. */
async function firstLine(stream: ReadableStream<Uint8Array>, where: string): Promise<string> {
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      const newline = value.indexOf(0x0a);
      const part = newline === -1 ? value : value.subarray(0, newline);
      chunks.push(part);
      total += part.byteLength;
      if (total > SECRET_INPUT_MAX_BYTES) {
        throw new RangeError(`The first line of ${where} is longer than 64 KiB`);
      }
      if (newline !== -1) break;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  return new TextDecoder().decode(concat(chunks));
}

function checked(text: string, where: string, what: string): string {
  const secret = text.trim();
  if (secret === "") throw new RangeError(`Found no ${what} in ${where}`);
  // tokens are printable ASCII; anything else would break an HTTP header
  if (!/^[\x21-\x7e]+$/.test(secret)) {
    throw new RangeError(`The ${what} in ${where} holds spaces or control characters`);
  }
  return secret;
}
