import { join } from "node:path";
import type { SessionInfo } from "../shared/protocol.ts";
import { writeFileAtomic } from "../shared/paths.ts";

/** What is persisted of a session: its public info. */
export type SessionMeta = SessionInfo;

/** Receives warnings about files the store had to set aside. */
export type Warn = (message: string) => void;

/**
 * Session metadata on disk: `state.json` holds the next id, each session has
 * `sessions/<id>/meta.json`. Every write is atomic (temp file + rename); a
 * file that cannot be parsed is renamed aside with a warning, never fatal.
 */
export class MetaStore {
  #stateFile: string;
  #sessionsDir: string;
  #nextId = 1;
  #warn: Warn;

  /** A store over the given files. */
  constructor(stateFile: string, sessionsDir: string, warn: Warn) {
    this.#stateFile = stateFile;
    this.#sessionsDir = sessionsDir;
    this.#warn = warn;
  }

  /** Loads every session's metadata, sorted by id. */
  load(): SessionMeta[] {
    Deno.mkdirSync(this.#sessionsDir, { recursive: true, mode: 0o700 });
    const state = this.#readJson(this.#stateFile);
    if (state && Number.isSafeInteger(state.nextId) && (state.nextId as number) > 0) {
      this.#nextId = state.nextId as number;
    }
    const metas: SessionMeta[] = [];
    for (const entry of Deno.readDirSync(this.#sessionsDir)) {
      if (!entry.isDirectory || !/^[0-9]+$/.test(entry.name)) continue;
      const id = Number(entry.name);
      // ids are never reused, even when a session's files are damaged
      this.#nextId = Math.max(this.#nextId, id + 1);
      const meta = this.#readJson(join(this.#sessionsDir, entry.name, "meta.json"));
      if (meta && isMeta(meta) && meta.id === id) metas.push(meta);
      else if (meta) this.#setAside(join(this.#sessionsDir, entry.name, "meta.json"), "invalid");
    }
    return metas.sort((a, b) => a.id - b.id);
  }

  /** Takes the next id and persists the counter before it is used. */
  allocateId(): number {
    const id = this.#nextId++;
    writeFileAtomic(this.#stateFile, JSON.stringify({ nextId: this.#nextId }));
    return id;
  }

  /** The directory of session `id`, created 0700. */
  sessionDir(id: number): string {
    const dir = join(this.#sessionsDir, String(id));
    Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
    return dir;
  }

  /** Persists a session's metadata atomically. */
  save(meta: SessionMeta): void {
    writeFileAtomic(join(this.sessionDir(meta.id), "meta.json"), JSON.stringify(meta));
  }

  #readJson(path: string): Record<string, unknown> | null {
    let text: string;
    try {
      text = Deno.readTextFileSync(path);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return null;
      throw err;
    }
    try {
      const value = JSON.parse(text);
      if (typeof value === "object" && value !== null && !Array.isArray(value)) return value;
    } catch {
      // fall through
    }
    this.#setAside(path, "corrupt");
    return null;
  }

  #setAside(path: string, why: string): void {
    const aside = `${path}.${why}-${Date.now()}`;
    try {
      Deno.renameSync(path, aside);
      this.#warn(`${path} is ${why}; moved it to ${aside}`);
    } catch (err) {
      this.#warn(`${path} is ${why} and could not be moved aside: ${err}`);
    }
  }
}

function isMeta(v: Record<string, unknown>): v is Record<string, unknown> & SessionMeta {
  return Number.isSafeInteger(v.id) && Array.isArray(v.argv) &&
    v.argv.every((a) => typeof a === "string") && typeof v.status === "string" &&
    typeof v.dir === "string" && Array.isArray(v.tags) && typeof v.startedAt === "string";
}
