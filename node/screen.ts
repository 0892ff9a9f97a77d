/**
 * What a session's program shows, from a terminal model (npm
 * `@xterm/headless`, behind node/xterm.ts) that lives in its own worker
 * (node/model_worker.ts), started on the first rendering.
 *
 * Models are fed lazily: output costs nothing until someone asks for a
 * screen. The first rendering of a session builds its model from a mode
 * checkpoint within the last {@link SCREEN_SOURCE_BYTES} of output
 * (node/term_history.ts: the modes are exact however old; the screen is exact
 * whenever that output holds the program's last full redraw); the model is
 * then kept, and the next rendering feeds it only the output since. Kept
 * models are bounded in cells and dropped when idle ({@link MODEL_IDLE_MS}).
 */

import { CwError } from "../shared/errors.ts";
import {
  MAX_QUEUED_RENDERINGS,
  MODEL_IDLE_MS,
  MODEL_MAX_CELLS,
  MODEL_SCROLLBACK,
  MODELS_MAX_CELLS,
  SCREEN_SOURCE_BYTES,
  SNAPSHOT_MAX_SCROLLBACK,
} from "./limits.ts";
import type { FromModel, RenderMessage, ScreenView, ToModel, Want } from "./model_messages.ts";
import { LogReader } from "./output_log.ts";
import type { Session } from "./session.ts";

export type { ScreenView } from "./model_messages.ts";

/** What the node's thread knows of a model in the worker. */
interface Kept {
  /** Offset the model will be at once the renderings posted so far are done. */
  offset: number;
  scrollback: number;
  cells: number;
  usedAt: number;
}

/** The node's terminal models; see the file's comment. */
export class Screens {
  #worker: Worker | null = null;
  #kept = new Map<number, Kept>();
  #waiting = new Map<
    number,
    { resolve(r: string | ScreenView): void; reject(e: Error): void; outOfStep?: () => void }
  >();
  #nextReq = 1;
  /** Renderings asked for and not answered yet. */
  #outstanding = 0;
  #sweep: ReturnType<typeof setInterval> | undefined;
  /** The last rendering per key (session, offset, size, what): asked again, it costs nothing. */
  #memo = new Map<string, Promise<unknown>>();

  /**
   * The session's state as bytes a viewer's terminal can be given instead of
   * the raw history, up to exactly its output's end now: `scrollback` lines
   * above the screen (as many as fit in one frame), the screen, the cursor
   * and the modes. It holds no terminal query, so a viewer's terminal never
   * answers an old one.
   */
  snapshot(s: Session, scrollback: number): Promise<string> {
    const lines = Math.max(0, Math.min(scrollback, SNAPSHOT_MAX_SCROLLBACK));
    // what the serializer does not carry comes from the live tracker, at this very offset
    const want: Want = {
      kind: "snapshot",
      scrollback: lines,
      extras: s.history.modes.restoreExtras(),
    };
    return this.#render(s, want, `snapshot ${lines}`) as Promise<string>;
  }

  /** What the program shows now, as text (and with `ansi`, as escape sequences too). */
  screen(s: Session, ansi: boolean): Promise<ScreenView> {
    return this.#render(s, { kind: "screen", ansi }, `screen ${ansi}`) as Promise<ScreenView>;
  }

  /** Stops the worker. */
  close(): void {
    clearInterval(this.#sweep);
    this.#worker?.terminate();
    this.#worker = null;
    this.#kept.clear();
    for (const w of this.#waiting.values()) {
      w.reject(new CwError("shutting_down", "The node is stopping"));
    }
    this.#waiting.clear();
  }

  #render(s: Session, want: Want, what: string): Promise<string | ScreenView> {
    const { cols, rows } = s.size;
    const key = `${s.meta.id} ${s.ring.end} ${cols}x${rows} ${what}`;
    const hit = this.#memo.get(key);
    if (hit) return hit as Promise<string | ScreenView>;
    if (this.#outstanding >= MAX_QUEUED_RENDERINGS) {
      return Promise.reject(
        new CwError("rate_limited", "The node is busy rendering screens; try again shortly"),
      );
    }
    this.#outstanding++;
    const made = this.#post(s, want).catch((err) => {
      // the model fell out of step (it failed before): build it again, once
      if (err instanceof OutOfStep) return this.#post(s, want, true);
      throw err;
    }).finally(() => this.#outstanding--);
    made.catch(() => this.#memo.delete(key));
    if (this.#memo.size >= 64) this.#memo.delete(this.#memo.keys().next().value!);
    this.#memo.set(key, made);
    return made;
  }

  /**
   * Posts one rendering of session `s` at its output's end now. The bytes it
   * needs are taken in this tick (from the ring, or a log reader opened now,
   * which ends exactly there), so the result is the state at that offset.
   */
  async #post(s: Session, want: Want, cold = false): Promise<string | ScreenView> {
    const id = s.meta.id;
    const end = s.ring.end;
    const lines = want.kind === "snapshot" ? want.scrollback : 0;
    const fits = Math.max(0, Math.floor(MODEL_MAX_CELLS / s.size.cols) - s.size.rows);
    const scrollback = Math.min(Math.max(lines, MODEL_SCROLLBACK), fits);
    const kept = cold ? undefined : this.#kept.get(id);

    const reader = new LogReader(s.dir);
    let msg: RenderMessage;
    try {
      const logStart = end - Math.min(reader.size, end);
      let base = null;
      let from: number;
      if (
        kept && kept.scrollback >= Math.min(lines, fits) &&
        end - kept.offset <= SCREEN_SOURCE_BYTES &&
        kept.offset >= Math.min(s.ring.start, logStart)
      ) {
        from = kept.offset;
      } else {
        base = s.history.baseFrom(Math.max(end - SCREEN_SOURCE_BYTES, logStart));
        from = base.at;
      }
      const bytes = from >= s.ring.start && from <= end
        ? s.ring.read(from, end - from)
        : reader.readAt(from - logStart, end - from);
      const { cols, rows } = s.size;
      msg = {
        t: "render",
        req: this.#nextReq++,
        id,
        base,
        scrollback: base ? scrollback : kept!.scrollback,
        from,
        end,
        bytes: bytes instanceof Uint8Array ? bytes : new Uint8Array(),
        sizes: s.history.sizesIn(from, end),
        want,
      };
      // a model holds every cell of its screen: a PTY sized to millions of cells (a writable
      // viewer may resize up to PTY_MAX_SIZE²) is not rendered at all
      const tooBig = [s.size, ...(base ? [base] : []), ...msg.sizes].find((z) =>
        z.cols * z.rows > MODEL_MAX_CELLS
      );
      if (tooBig) {
        this.#drop(id);
        throw new CwError(
          "too_large",
          `The session's terminal (${tooBig.cols}×${tooBig.rows}) is too large to render`,
        );
      }
      this.#kept.set(id, {
        offset: end,
        scrollback: msg.scrollback,
        cells: cols * (rows + msg.scrollback),
        usedAt: Date.now(),
      });
      this.#evict(id);
      if (!(bytes instanceof Uint8Array)) msg.bytes = await bytes;
    } finally {
      reader.close();
    }
    return await this.#send(msg);
  }

  #send(msg: RenderMessage): Promise<string | ScreenView> {
    const worker = this.#worker ??= this.#start();
    return new Promise((resolve, reject) => {
      this.#waiting.set(msg.req, { resolve, reject });
      worker.postMessage(msg satisfies ToModel, [msg.bytes.buffer as ArrayBuffer]);
    });
  }

  #start(): Worker {
    const worker = new Worker(new URL("./model_worker.ts", import.meta.url), {
      type: "module",
      // it parses what programs print: it gets no permission at all
      deno: { permissions: "none" },
    } as WorkerOptions);
    worker.onmessage = (e: MessageEvent<FromModel>) => {
      const m = e.data;
      const w = this.#waiting.get(m.req);
      this.#waiting.delete(m.req);
      if (m.t === "done") return w?.resolve(m.result);
      if (m.outOfStep) return w?.reject(new OutOfStep(m.message));
      w?.reject(new CwError("internal", `Rendering failed: ${m.message}`));
    };
    worker.onerror = (e) => {
      e.preventDefault();
      const err = new CwError("internal", `The model worker failed: ${e.message}`);
      for (const w of this.#waiting.values()) w.reject(err);
      this.#waiting.clear();
      this.#kept.clear();
      worker.terminate();
      this.#worker = null;
    };
    const sweep = setInterval(() => this.#dropIdle(), MODEL_IDLE_MS / 5);
    Deno.unrefTimer(sweep);
    this.#sweep = sweep;
    return worker;
  }

  /** Drops the least recently used models (not `keep`) until the kept cells fit. */
  #evict(keep: number): void {
    let cells = 0;
    for (const k of this.#kept.values()) cells += k.cells;
    const byAge = [...this.#kept.entries()].sort((a, b) => a[1].usedAt - b[1].usedAt);
    for (const [id, k] of byAge) {
      if (cells <= MODELS_MAX_CELLS) break;
      if (id === keep) continue;
      this.#drop(id);
      cells -= k.cells;
    }
  }

  #drop(id: number): void {
    this.#kept.delete(id);
    this.#worker?.postMessage({ t: "drop", id } satisfies ToModel);
  }

  /** Drops models idle for {@link MODEL_IDLE_MS}; with none left, stops the worker. */
  #dropIdle(): void {
    const now = Date.now();
    for (const [id, k] of this.#kept) if (now - k.usedAt >= MODEL_IDLE_MS) this.#drop(id);
    if (this.#kept.size === 0 && this.#outstanding === 0) {
      clearInterval(this.#sweep);
      this.#worker?.terminate();
      this.#worker = null;
    }
  }
}

class OutOfStep extends Error {}

/** Rows without the blank ones at the end. */
export function trimRows(lines: string[]): string[] {
  let n = lines.length;
  while (n > 0 && lines[n - 1].trim() === "") n--;
  return lines.slice(0, n);
}
