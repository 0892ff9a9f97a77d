/**
 * Text from others (a session's argv or name, a node's version or address,
 * an SSH key's comment) shown to a person: control characters (C0, DEL, C1)
 * and invisible format characters (bidirectional overrides, zero-width
 * joiners) are written as escapes, so such a string can never move the
 * cursor, set the title, write the clipboard (OSC 52) or hide what it says.
 */

const UNSAFE = /[\p{Cc}\p{Cf}\u2028\u2029]/gu;

/** `s` with every control or format character escaped (`\x1b`, `\u202e`). */
export function printable(s: string): string {
  return s.replace(UNSAFE, (c) => {
    const code = c.codePointAt(0)!;
    if (c === "\t") return "\\t";
    if (c === "\n") return "\\n";
    if (c === "\r") return "\\r";
    return code <= 0xff
      ? `\\x${code.toString(16).padStart(2, "0")}`
      : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}

/** A command line for a person: each argument escaped, and quoted when it holds a space or is empty. */
export function printableArgv(argv: readonly string[]): string {
  return argv.map((a) => {
    const p = printable(a);
    return p === "" || /\s|['"]/.test(p) ? `'${p.replaceAll("'", "'\\''")}'` : p;
  }).join(" ");
}
