import { CwError } from "./errors.ts";

/** Session names: short, shell-safe, never all digits (digits mean an id). */
export const SESSION_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/;
/** Tags follow the same rule as names. */
export const TAG_RE = SESSION_NAME_RE;

/** Throws {@link CwError} `invalid_name` unless `name` is a valid session name. */
export function checkSessionName(name: string): void {
  if (!SESSION_NAME_RE.test(name) || /^[0-9]+$/.test(name)) {
    throw new CwError(
      "invalid_name",
      `Invalid session name "${name}": use 1-32 letters, digits, "_" or "-", starting with a letter or digit, not only digits`,
    );
  }
}

/** Throws {@link CwError} `invalid_name` unless `tag` is a valid tag. */
export function checkTag(tag: string): void {
  if (!TAG_RE.test(tag)) {
    throw new CwError(
      "invalid_name",
      `Invalid tag "${tag}": use 1-32 letters, digits, "_" or "-", starting with a letter or digit`,
    );
  }
}

/**
 * Node, user and network names on a relay: 1-63 of [A-Za-z0-9_-], starting
 * with a letter or digit. A node's name is also its SSH login and URL path.
 */
export const RELAY_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;

/** Throws {@link CwError} `invalid_name` unless `name` is a valid node, user or network name. */
export function checkRelayName(what: "node" | "user" | "network", name: string): void {
  if (!RELAY_NAME_RE.test(name)) {
    throw new CwError(
      "invalid_name",
      `Invalid ${what} name "${
        name.slice(0, 64).replace(/[^\x20-\x7e]/g, "?")
      }": use 1-63 of [A-Za-z0-9_-], starting with a letter or digit`,
    );
  }
}
