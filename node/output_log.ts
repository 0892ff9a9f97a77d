import { join } from "node:path";

/** Name of the live log file in a session's directory. */
const CURRENT = "output.log";
/** Name of the previous log file, kept after a rotation. */
const PREVIOUS = "output.log.1";
const READ_BLOCK = 64 * 1024;

/**
 * A session's append-only output log, bounded in bytes: when the live file
 * reaches half the cap it becomes `output.log.1` (replacing the older one), so
 * the two files never hold much more than `cap` bytes together.
 *
 * Writes are synchronous: they land in the page cache in microseconds, keep
 * the log in step with the in-memory ring, and never wait on a reader.
 */
export class OutputLog {
  #dir: string;
  #half: number;
  #file: Deno.FsFile;
  #size: number;

  /** Opens (creating) the log of the session directory `dir`. */
  constructor(dir: string, cap: number) {
    this.#dir = dir;
    this.#half = Math.max(1, Math.floor(cap / 2));
    this.#file = Deno.openSync(join(dir, CURRENT), {
      append: true,
      create: true,
      mode: 0o600,
    });
    this.#size = this.#file.statSync().size;
  }

  /** Appends bytes, rotating whenever the live file reaches half the cap. */
  append(data: Uint8Array): void {
    let off = 0;
    while (off < data.byteLength) {
      if (this.#size >= this.#half) this.#rotate();
      // a big chunk is split so that no file outgrows half the cap
      const start = off;
      const end = Math.min(data.byteLength, off + this.#half - this.#size);
      while (off < end) off += this.#file.writeSync(data.subarray(off, end));
      this.#size += end - start;
    }
  }

  /** Closes the file. */
  close(): void {
    try {
      this.#file.close();
    } catch {
      // already closed
    }
  }

  #rotate(): void {
    this.#file.close();
    Deno.renameSync(join(this.#dir, CURRENT), join(this.#dir, PREVIOUS));
    this.#file = Deno.openSync(join(this.#dir, CURRENT), {
      append: true,
      create: true,
      mode: 0o600,
    });
    this.#size = 0;
  }
}

/**
 * Bytes the log files of session directory `dir` hold on disk, both files
 * together; 0 when there are none.
 */
export function logSize(dir: string): number {
  let total = 0;
  for (const name of [PREVIOUS, CURRENT]) {
    try {
      total += Deno.statSync(join(dir, name)).size;
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
  return total;
}

/**
 * Read access to a session's log files as one byte sequence (previous file
 * first). The files are opened when the reader is made, so a rotation while
 * reading changes nothing; bytes appended later are not seen. Close it.
 */
export class LogReader {
  #parts: { file: Deno.FsFile; size: number }[] = [];

  /** Opens the files of session directory `dir`. */
  constructor(dir: string) {
    for (const name of [PREVIOUS, CURRENT]) {
      try {
        const file = Deno.openSync(join(dir, name), { read: true });
        this.#parts.push({ file, size: file.statSync().size });
      } catch {
        // that file does not exist (yet)
      }
    }
  }

  /** Total bytes on disk. */
  get size(): number {
    return this.#parts.reduce((n, p) => n + p.size, 0);
  }

  /** Closes the files. */
  close(): void {
    for (const p of this.#parts) p.file.close();
    this.#parts = [];
  }

  /** Reads up to `len` bytes at virtual position `pos`, across files. */
  async readAt(pos: number, len: number): Promise<Uint8Array> {
    const out = new Uint8Array(Math.max(0, Math.min(len, this.size - pos)));
    let got = 0;
    let base = 0;
    for (const part of this.#parts) {
      const at = pos + got;
      if (got < out.byteLength && at < base + part.size) {
        await part.file.seek(at - base, Deno.SeekMode.Start);
        const end = Math.min(out.byteLength, got + base + part.size - at);
        while (got < end) {
          const n = await part.file.read(out.subarray(got, end));
          if (n === null) return out.subarray(0, got);
          got += n;
        }
      }
      base += part.size;
    }
    return out.subarray(0, got);
  }

  /**
   * Position where the last `lines` lines start. A trailing newline ends the
   * last line rather than starting an empty one.
   */
  async tailStart(lines: number): Promise<number> {
    let pos = this.size;
    if (lines <= 0) return pos;
    let seen = 0;
    let first = true;
    while (pos > 0) {
      const from = Math.max(0, pos - READ_BLOCK);
      const block = await this.readAt(from, pos - from);
      for (let i = block.byteLength - 1; i >= 0; i--) {
        if (block[i] !== 0x0a) {
          first = false;
          continue;
        }
        if (first && from + i === this.size - 1) continue; // the final newline
        first = false;
        if (++seen === lines) return from + i + 1;
      }
      pos = from;
    }
    return 0;
  }

  /** Yields the bytes from `pos` to the end in blocks. */
  async *stream(pos: number): AsyncGenerator<Uint8Array> {
    const size = this.size;
    while (pos < size) {
      const block = await this.readAt(pos, Math.min(READ_BLOCK, size - pos));
      if (block.byteLength === 0) return;
      yield block;
      pos += block.byteLength;
    }
  }
}
