/**
 * Who sets a session's PTY size: its writable viewers, the most recent one
 * winning — the last to attach or to resize. When that viewer leaves, the
 * size of the most recent one still attached applies again (not the size of
 * the one that left, as before). Read-only viewers never take part.
 */

/** A writable viewer's place in the list. */
export interface ViewerSize {
  cols: number;
  rows: number;
}

/** The writable viewers of one session, most recent last. */
export class ViewerSizes {
  #viewers: ViewerSize[] = [];

  /** A viewer attached with this size: it is now the most recent. */
  join(cols: number, rows: number): ViewerSize {
    const v = { cols, rows };
    this.#viewers.push(v);
    return v;
  }

  /** `v` resized: it becomes the most recent; returns whether its size applies. */
  change(v: ViewerSize, cols: number, rows: number): boolean {
    const i = this.#viewers.indexOf(v);
    if (i === -1) return false;
    this.#viewers.splice(i, 1);
    v.cols = cols;
    v.rows = rows;
    this.#viewers.push(v);
    return true;
  }

  /**
   * `v` left. Returns the size that applies now when it was the most recent
   * (the next most recent viewer's), or null when nothing changes.
   */
  leave(v: ViewerSize): ViewerSize | null {
    const i = this.#viewers.indexOf(v);
    if (i === -1) return null;
    const wasCurrent = i === this.#viewers.length - 1;
    this.#viewers.splice(i, 1);
    return wasCurrent ? this.#viewers.at(-1) ?? null : null;
  }

  /** Viewers still attached. */
  get size(): number {
    return this.#viewers.length;
  }
}
