/**
 * Command-line options, read the way `node:util`'s `parseArgs` reads them in
 * strict mode (the same results and the same first line of each error), for
 * the client's commands: importing `node:util` starts Deno's Node
 * compatibility layer, ~12 ms of every `cw list`. A test holds the two to the
 * same answers.
 *
 * `--name value`, `--name=value`, `-n value` (a `short` alias), booleans as
 * `--flag` (never `--flag=value`), `multiple` options collected in order, the
 * rest positionals; `--` ends the options.
 */

/** One option. */
export interface OptionSpec {
  type: "string" | "boolean";
  multiple?: boolean;
  short?: string;
}

/** The values of a set of options, typed by their specs. */
export type Values<T extends Record<string, OptionSpec>> = {
  [K in keyof T]?: T[K]["type"] extends "boolean"
    ? (T[K]["multiple"] extends true ? boolean[] : boolean)
    : (T[K]["multiple"] extends true ? string[] : string);
};

/** Reads `args`; throws TypeError (with node's message) on anything it does not accept. */
export function parseArgs<T extends Record<string, OptionSpec>>(config: {
  args: string[];
  options: T;
  allowPositionals?: boolean;
  strict?: boolean;
}): { values: Values<T>; positionals: string[] } {
  const { options } = config;
  let args = config.args;
  const values: Record<string, unknown> = Object.create(null);
  const positionals: string[] = [];
  const byShort = new Map<string, string>();
  for (const [name, spec] of Object.entries(options)) if (spec.short) byShort.set(spec.short, name);

  const positional = (arg: string) => {
    if (!config.allowPositionals) {
      throw new TypeError(
        `Unexpected argument '${arg}'. This command does not take positional arguments`,
      );
    }
    positionals.push(arg);
  };
  const store = (name: string, value: string | boolean) => {
    if (options[name].multiple) ((values[name] ??= []) as unknown[]).push(value);
    else values[name] = value;
  };
  const unknown = (arg: string): never => {
    throw new TypeError(
      config.allowPositionals
        ? `Unknown option '${arg}'. To specify a positional argument starting with a '-', place it at the end of the command after '--', as in '-- "${arg}"`
        : `Unknown option '${arg}'`,
    );
  };

  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      for (const rest of args.slice(i + 1)) positional(rest);
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      positional(arg);
      continue;
    }
    let name: string;
    let inline: string | undefined;
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
      inline = eq === -1 ? undefined : arg.slice(eq + 1);
      if (!Object.hasOwn(options, name)) unknown(eq === -1 ? arg : `--${name}`);
    } else {
      const long = byShort.get(arg[1]);
      if (arg.length > 2 && (!long || options[long].type !== "string")) {
        // a group (-ab, -abn VALUE, -abnVALUE): read as its letters one by one, as node does
        const expanded: string[] = [];
        for (let j = 1; j < arg.length; j++) {
          const n = byShort.get(arg[j]);
          if (n && options[n].type === "string" && j < arg.length - 1) {
            expanded.push(`-${arg.slice(j)}`);
            break;
          }
          expanded.push(`-${arg[j]}`);
        }
        args = [...args.slice(0, i), ...expanded, ...args.slice(i + 1)];
        i--;
        continue;
      }
      if (!long) unknown(`-${arg[1]}`);
      name = long!;
      inline = arg.length > 2 ? arg.slice(2) : undefined;
    }
    const short = options[name].short;
    const shown = short ? `-${short}, --${name}` : `--${name}`;
    const spec = options[name];
    if (spec.type === "boolean") {
      if (inline !== undefined) throw new TypeError(`Option '${shown}' does not take an argument`);
      store(name, true);
      continue;
    }
    if (inline !== undefined) {
      store(name, inline);
      continue;
    }
    const next = args[i + 1];
    if (next === undefined) throw new TypeError(`Option '${shown} <value>' argument missing`);
    if (next.startsWith("-") && next !== "-") {
      const raw = arg.startsWith("--") ? `--${name}` : arg;
      const example = raw.startsWith("--") ? `'${raw}=-XYZ'` : `'--${name}=-XYZ' or '${raw}-XYZ'`;
      throw new TypeError(
        `Option '${raw}' argument is ambiguous.\nDid you forget to specify the option argument for '${raw}'?\nTo specify an option argument starting with a dash use ${example}.`,
      );
    }
    store(name, next);
    i++;
  }
  return { values: values as Values<T>, positionals };
}

/**
 * Splits a command line into argv as a shell would split words — blanks,
 * 'single' and "double" quotes, backslash escapes — and nothing else: no
 * variables, globs or operators; the words are then run without a shell (the
 * web client's launch form). Throws on an unclosed quote.
 */
export function splitCommandLine(line: string): string[] {
  const out: string[] = [];
  let cur = "";
  let quote: string | null = null;
  let started = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (quote) {
      if (ch === quote) quote = null;
      else if (ch === "\\" && quote === '"' && i + 1 < line.length) cur += line[++i];
      else cur += ch;
    } else if (ch === "'" || ch === '"') {
      quote = ch;
      started = true;
    } else if (ch === "\\" && i + 1 < line.length) {
      cur += line[++i];
      started = true;
    } else if (/\s/.test(ch)) {
      if (started) out.push(cur);
      cur = "";
      started = false;
    } else {
      cur += ch;
      started = true;
    }
  }
  if (quote) throw new Error("Unclosed quote in the command");
  if (started) out.push(cur);
  return out;
}
