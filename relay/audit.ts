/**
 * The relay's audit log: one JSON line per security-relevant event (see
 * {@link AuditEntry}), appended to `audit.log` in the data dir (0600). The
 * file is rotated at {@link AUDIT_MAX_BYTES} to `audit.log.1`, so the log
 * never holds more than twice that. A running relay and an admin command on
 * the same data dir append to the same file; each line is one `write`.
 *
 * Nothing secret is ever passed in: entries name principals (`node:NAME`,
 * `user:NAME`, `key:SHA256:…`, `admin`), never tokens. Strings are cut to
 * {@link AUDIT_MAX_FIELD} characters.
 */
import type { AuditEntry } from "../shared/api.ts";
import type { AuditStore } from "./store.ts";
import { printable } from "../shared/printable.ts";
import { parseDuration } from "../shared/duration.ts";

/** Size at which the log is rotated. */
export const AUDIT_MAX_BYTES = 8 * 1024 * 1024;
/** Longest string field of an entry. */
export const AUDIT_MAX_FIELD = 256;
/** Most entries one read returns. */
export const AUDIT_MAX_READ = 10_000;
/** Most live followers (`GET /api/v1/audit?follow=1`) at once. */
export const AUDIT_MAX_FOLLOWERS = 16;
/** Entries waiting for a shared store; past this they are dropped (and counted), never held without end. */
export const AUDIT_STORE_QUEUE = 10_000;
/** Most entries sent to a shared store in one write. */
const AUDIT_STORE_BATCH = 500;

/** An event to record; the time is added. */
export type AuditRecord = Omit<AuditEntry, "time">;

/** Appends to, reads and follows an audit log file. */
export class AuditLog {
  #path: string;
  #maxBytes: number;
  #now: () => Date;
  #file: Deno.FsFile | null = null;
  #ino: number | null = null;
  #size = 0;
  #listeners = new Set<(e: AuditEntry) => void>();
  #failed = false;
  #shared: AuditStore | null = null;
  #pending: AuditEntry[] = [];
  #flushing: Promise<void> | null = null;
  #dropped = 0;
  #unwatch: (() => void) | null = null;

  /** A log at `path` (created 0600 on the first record). */
  constructor(path: string, opts: { now?: () => Date; maxBytes?: number } = {}) {
    this.#path = path;
    this.#now = opts.now ?? (() => new Date());
    this.#maxBytes = opts.maxBytes ?? AUDIT_MAX_BYTES;
  }

  /** Where the log is. */
  get path(): string {
    return this.#path;
  }

  /**
   * Appends one entry. Never throws: a full disk must not stop the relay,
   * so a failure is reported once on stderr and the entry still reaches followers.
   */
  record(rec: AuditRecord): AuditEntry {
    const entry = { time: this.#now().toISOString(), ...clean(rec) } as AuditEntry;
    const line = new TextEncoder().encode(JSON.stringify(entry) + "\n");
    try {
      this.#open();
      if (this.#size + line.byteLength > this.#maxBytes && this.#size > 0) {
        this.#rotate();
        this.#open();
      }
      this.#file!.writeSync(line);
      this.#size += line.byteLength;
      this.#failed = false;
    } catch (err) {
      if (!this.#failed) console.error(`cw relay: cannot write the audit log: ${err}`);
      this.#failed = true;
      this.#close();
    }
    if (this.#shared) {
      // followers hear it back from the store, with every other replica's entries
      if (this.#pending.length < AUDIT_STORE_QUEUE) this.#pending.push(entry);
      else if (this.#dropped++ === 0) {
        console.error("cw relay: the audit store is behind; dropping");
      }
      this.#flushing ??= this.#flush();
    } else {
      for (const fn of this.#listeners) fn(entry);
    }
    return entry;
  }

  /**
   * Also keeps entries in a shared store (PostgreSQL: every replica's log in
   * one place). Followers then hear every replica's entries; reads come from the store.
   */
  share(store: AuditStore): void {
    this.#shared = store;
    this.#unwatch = store.watchAudit((e) => {
      for (const fn of this.#listeners) fn(e);
    });
  }

  /** Resolves once every entry recorded so far reached the shared store (or failed to). */
  async flush(): Promise<void> {
    while (this.#flushing) await this.#flushing;
  }

  async #flush(): Promise<void> {
    try {
      while (this.#pending.length > 0 && this.#shared) {
        const batch = this.#pending.splice(0, AUDIT_STORE_BATCH);
        try {
          await this.#shared.appendAudit(batch);
          this.#failed = false;
        } catch (err) {
          if (!this.#failed) console.error(`cw relay: cannot write the audit store: ${err}`);
          this.#failed = true;
          this.#dropped += batch.length;
        }
      }
    } finally {
      this.#flushing = null;
    }
  }

  /** Entries at or after `since` (oldest first), at most `limit`: from the shared store if any. */
  async readAll(opts: { since?: Date; limit?: number } = {}): Promise<AuditEntry[]> {
    if (!this.#shared) return this.read(opts);
    await this.flush();
    const limit = Math.min(opts.limit ?? AUDIT_MAX_READ, AUDIT_MAX_READ);
    return await this.#shared.readAudit(opts.since?.toISOString() ?? "", limit);
  }

  /**
   * Calls `fn` with every entry recorded from now on in this process; returns
   * the unsubscriber, or null when {@link AUDIT_MAX_FOLLOWERS} already follow.
   */
  subscribe(fn: (e: AuditEntry) => void): (() => void) | null {
    if (this.#listeners.size >= AUDIT_MAX_FOLLOWERS) return null;
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** Entries at or after `since` (oldest first), at most `limit` (the latest ones). */
  read(opts: { since?: Date; limit?: number } = {}): AuditEntry[] {
    const limit = Math.min(opts.limit ?? AUDIT_MAX_READ, AUDIT_MAX_READ);
    const since = opts.since?.toISOString() ?? "";
    const out: AuditEntry[] = [];
    for (const file of [`${this.#path}.1`, this.#path]) {
      let text: string;
      try {
        text = Deno.readTextFileSync(file);
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) continue;
        throw err;
      }
      for (const line of text.split("\n")) {
        const e = parseLine(line);
        if (e && e.time >= since) out.push(e);
      }
    }
    return out.slice(-limit);
  }

  /**
   * Follows the file as `tail -f` does (for an admin command on the data
   * dir, where the relay writing it is another process), from its current
   * end, until `signal` aborts.
   */
  async *tail(signal: AbortSignal, pollMs = 250): AsyncGenerator<AuditEntry> {
    let ino: number | null = null;
    let offset = 0;
    const statNow = () => {
      try {
        const st = Deno.statSync(this.#path);
        return { ino: st.ino, size: st.size };
      } catch {
        return null;
      }
    };
    const first = statNow();
    if (first) ({ ino, size: offset } = first);
    let rest = "";
    while (!signal.aborted) {
      const st = statNow();
      if (st && (st.ino !== ino || st.size < offset)) {
        ino = st.ino; // rotated: the new file from its start
        offset = 0;
        rest = "";
      }
      if (st && st.size > offset) {
        const f = await Deno.open(this.#path);
        try {
          await f.seek(offset, Deno.SeekMode.Start);
          const buf = new Uint8Array(Math.min(st.size - offset, 1 << 20));
          const n = (await f.read(buf)) ?? 0;
          offset += n;
          rest += new TextDecoder().decode(buf.subarray(0, n));
        } finally {
          f.close();
        }
        const lines = rest.split("\n");
        rest = lines.pop()!;
        for (const line of lines) {
          const e = parseLine(line);
          if (e) yield e;
        }
        continue;
      }
      await new Promise<void>((r) => {
        const t = setTimeout(r, pollMs);
        signal.addEventListener("abort", () => {
          clearTimeout(t);
          r();
        }, { once: true });
      });
    }
  }

  /** Closes the file. */
  close(): void {
    this.#close();
    this.#listeners.clear();
    this.#unwatch?.();
  }

  #open(): void {
    if (this.#file) {
      // another process (an admin command) may have rotated the file under us
      const st = statOrNull(this.#path);
      if (st && st.ino === this.#ino) {
        this.#size = Math.max(this.#size, st.size);
        return;
      }
      this.#close();
    }
    this.#file = Deno.openSync(this.#path, { append: true, create: true, mode: 0o600 });
    const st = this.#file.statSync();
    this.#ino = st.ino;
    this.#size = st.size;
  }

  #rotate(): void {
    this.#close();
    Deno.renameSync(this.#path, `${this.#path}.1`);
  }

  #close(): void {
    try {
      this.#file?.close();
    } catch {
      // closed already
    }
    this.#file = null;
    this.#ino = null;
  }
}

function statOrNull(path: string): Deno.FileInfo | null {
  try {
    return Deno.statSync(path);
  } catch {
    return null;
  }
}

function parseLine(line: string): AuditEntry | null {
  if (!line) return null;
  try {
    const v = JSON.parse(line);
    return typeof v?.time === "string" && typeof v?.event === "string" ? v : null;
  } catch {
    return null; // a line cut by a crash: skipped
  }
}

/** Bounded strings, no undefined fields. */
function clean(rec: AuditRecord): AuditRecord {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(rec)) {
    if (v === undefined) continue;
    out[k] = typeof v === "string" && v.length > AUDIT_MAX_FIELD
      ? `${v.slice(0, AUDIT_MAX_FIELD)}…`
      : v;
  }
  return out as AuditRecord;
}

/** `since` as people write it: a duration back from now (`10m`, `2d`) or an ISO time. */
export function parseSince(since: string): Date {
  try {
    return new Date(Date.now() - parseDuration(since));
  } catch {
    return new Date(since);
  }
}

/** One line for a person: time, event, who, where, and the details. */
export function formatAuditEntry(e: AuditEntry): string {
  const { time, event, principal, network, node, session, addr, ...rest } = e;
  const parts = [time, event.padEnd(16), principal ?? "-"];
  if (network) parts.push(`network=${network}`);
  if (node) parts.push(`node=${node}`);
  if (session) parts.push(`session=${session}`);
  if (addr) parts.push(`from=${addr}`);
  for (const [k, v] of Object.entries(rest)) parts.push(`${k}=${JSON.stringify(v)}`);
  // entries hold names a peer chose: no control characters reach a terminal
  return printable(parts.join(" "));
}
