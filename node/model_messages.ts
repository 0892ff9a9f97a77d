/** Messages between the node's thread (node/screen.ts) and the model worker (node/model_worker.ts). */

import type { ModelBase, SizeAt } from "./term_history.ts";

/** A rendered screen. */
export interface ScreenView {
  cols: number;
  rows: number;
  /** One string per row, trailing blanks trimmed (as `tmux capture-pane -p`). */
  lines: string[];
  cursor: { x: number; y: number };
  /** The program is on the alternate screen (a full-screen program). */
  alternate: boolean;
  /** The window title the program set, if any (since the model's start). */
  title: string;
  /** The screen with colours and attributes as escape sequences (only when asked). */
  ansi?: string;
}

/** What a rendering returns. */
export type Want =
  /** The terminal's state as bytes for a viewer: `scrollback` lines, the screen, the modes. */
  | { kind: "snapshot"; scrollback: number; extras: string }
  | { kind: "screen"; ansi: boolean };

/** Brings session `id`'s model to output offset `end`, then renders what is wanted. */
export interface RenderMessage {
  t: "render";
  req: number;
  id: number;
  /** Start a new model here (else the model must be at `from`). */
  base: ModelBase | null;
  /** Lines of scrollback a new model keeps. */
  scrollback: number;
  from: number;
  end: number;
  /** The output in [from, end). */
  bytes: Uint8Array;
  /** PTY sizes that began in [from, end], oldest first. */
  sizes: SizeAt[];
  want: Want;
}

export type ToModel = RenderMessage | { t: "drop"; id: number };

export type FromModel =
  | { t: "done"; req: number; result: string | ScreenView }
  | { t: "failed"; req: number; message: string; outOfStep: boolean };
