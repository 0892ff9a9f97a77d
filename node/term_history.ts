/**
 * What a terminal model needs to rebuild a session's screen from a point of
 * its output rather than from its first byte: every output byte passes
 * through a mode tracker (shared/term_modes.ts, ~400 MiB/s), which is
 * checkpointed every {@link CHECKPOINT_BYTES}; the PTY's sizes are kept with
 * the offset where each began. A model started at a checkpoint, put into the
 * checkpoint's modes and fed the bytes after it (resizing where the PTY did)
 * has the program's modes however old (vim's alternate screen and mouse after
 * megabytes of output) and its screen whenever the bytes since hold the
 * program's last full redraw.
 */

import { TerminalModes } from "../shared/term_modes.ts";

/** Output between two checkpoints of the modes. */
export const CHECKPOINT_BYTES = 256 * 1024;
/** Checkpoints kept: enough to start a model anywhere in the last MiB and more. */
const CHECKPOINTS_KEPT = 6;
/** PTY sizes kept (a window being dragged makes many). */
const SIZES_KEPT = 64;

/** A size of the PTY, in effect from output offset `at`. */
export interface SizeAt {
  at: number;
  cols: number;
  rows: number;
}

/** Where a model may start: an offset, the modes there (as bytes) and the size. */
export interface ModelBase extends SizeAt {
  /** Bytes that put a fresh terminal in the modes the program had at `at`. */
  prefix: string;
}

/** A session's modes and sizes along its output; see the file's comment. */
export class TermHistory {
  /** The modes at the end of the output, live. */
  readonly modes = new TerminalModes();
  #checkpoints: ModelBase[] = [];
  #sizes: SizeAt[] = [];
  #nextCheckpoint: number;

  /**
   * History from output offset `end` on, at `cols`×`rows`. A session read
   * back from disk starts with no modes known (its program's modes died with
   * the node that ran it).
   */
  constructor(end: number, cols: number, rows: number) {
    this.#sizes.push({ at: end, cols, rows });
    this.#checkpoints.push({ at: end, cols, rows, prefix: "" });
    this.#nextCheckpoint = end + CHECKPOINT_BYTES;
  }

  /** Reads `chunk`, which ends at output offset `end`. */
  feed(chunk: Uint8Array, end: number): void {
    this.modes.feed(chunk);
    if (end < this.#nextCheckpoint) return;
    // a sequence cut by this chunk's end is not in the modes yet: the model reads it whole
    const at = end - this.modes.held;
    const { cols, rows } = this.sizeAt(at);
    this.#checkpoints.push({ at, cols, rows, prefix: this.modes.restoreAll() });
    if (this.#checkpoints.length > CHECKPOINTS_KEPT) this.#checkpoints.shift();
    this.#nextCheckpoint = end + CHECKPOINT_BYTES;
  }

  /** The PTY became `cols`×`rows` when the output was at offset `at`. */
  resized(at: number, cols: number, rows: number): void {
    const last = this.#sizes[this.#sizes.length - 1];
    if (last.cols === cols && last.rows === rows) return;
    if (last.at === at) this.#sizes.pop();
    this.#sizes.push({ at, cols, rows });
    if (this.#sizes.length > SIZES_KEPT) this.#sizes.shift();
    // a checkpoint taken at this very offset starts at the new size
    const c = this.#checkpoints[this.#checkpoints.length - 1];
    if (c.at === at) Object.assign(c, { cols, rows });
  }

  /** The size in effect at offset `at` (the oldest known before the oldest kept). */
  sizeAt(at: number): { cols: number; rows: number } {
    for (let i = this.#sizes.length - 1; i >= 0; i--) {
      if (this.#sizes[i].at <= at) return this.#sizes[i];
    }
    return this.#sizes[0];
  }

  /** The sizes that began in [from, to], oldest first. */
  sizesIn(from: number, to: number): SizeAt[] {
    return this.#sizes.filter((s) => s.at >= from && s.at <= to);
  }

  /**
   * Where to start a model that should read at most the bytes from `earliest`
   * on: the oldest checkpoint at or after it (or, with none, `earliest` itself
   * with no modes known).
   */
  baseFrom(earliest: number): ModelBase {
    const c = this.#checkpoints.find((c) => c.at >= earliest);
    if (c) return c;
    return { at: earliest, ...this.sizeAt(earliest), prefix: "" };
  }
}
