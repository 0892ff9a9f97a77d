/**
 * The terminal models of a node's sessions, in their own worker: feeding a
 * model runs at ~20–40 MiB/s, so a rendering that catches up a busy session's
 * MiB would otherwise hold the node's thread (and every other session's
 * keystrokes) for tens of milliseconds. Messages are handled one at a time,
 * in order; node/screen.ts decides which models live and what they are fed.
 */

import { SerializeAddon, Terminal } from "../shared/xterm.ts";
import type { FromModel, RenderMessage, ScreenView, ToModel } from "./model_messages.ts";
import { SNAPSHOT_MAX_CHARS } from "./limits.ts";

interface Model {
  term: InstanceType<typeof Terminal>;
  serializer: InstanceType<typeof SerializeAddon>;
  /** Output offset the model has read up to. */
  offset: number;
  scrollback: number;
  title: string;
}

const models = new Map<number, Model>();

function drop(id: number): void {
  models.get(id)?.term.dispose();
  models.delete(id);
}

function create(m: RenderMessage): Model {
  const base = m.base!;
  const term = new Terminal({
    cols: base.cols,
    rows: base.rows,
    scrollback: m.scrollback,
    allowProposedApi: true,
  });
  const serializer = new SerializeAddon();
  term.loadAddon(serializer);
  const model: Model = { term, serializer, offset: base.at, scrollback: m.scrollback, title: "" };
  // queries in the output are answered into nothing: the model has no program to type into
  term.onTitleChange((t: string) => model.title = t.slice(0, 256));
  return model;
}

function write(model: Model, data: Uint8Array | string): Promise<void> {
  return new Promise((resolve) => model.term.write(data, resolve));
}

class OutOfStep extends Error {}

async function render(m: RenderMessage): Promise<string | ScreenView> {
  let model = models.get(m.id);
  if (m.base) {
    drop(m.id);
    model = create(m);
    models.set(m.id, model);
    if (m.base.prefix) await write(model, m.base.prefix);
  } else if (!model || model.offset !== m.from) {
    throw new OutOfStep(`the model of session ${m.id} is not at ${m.from}`);
  }
  // the bytes, cut where the PTY changed size: each part is drawn at its size
  let pos = m.from;
  for (const size of m.sizes) {
    if (size.at > pos) {
      await write(model, m.bytes.subarray(pos - m.from, size.at - m.from));
      pos = size.at;
    }
    if (model.term.cols !== size.cols || model.term.rows !== size.rows) {
      model.term.resize(size.cols, size.rows);
    }
  }
  if (pos < m.end) await write(model, m.bytes.subarray(pos - m.from));
  model.offset = m.end;
  return m.want.kind === "snapshot"
    ? snapshot(model, m.want.scrollback, m.want.extras)
    : screen(model, m.want.ansi);
}

/** The state as bytes: as many of `lines` of scrollback as fit, the screen, the modes. */
function snapshot(model: Model, lines: number, extras: string): string {
  for (let n = Math.min(lines, model.scrollback);; n = Math.floor(n / 2)) {
    const text = model.serializer.serialize({ scrollback: n });
    if (text.length + extras.length <= SNAPSHOT_MAX_CHARS || n === 0) {
      return text.slice(-SNAPSHOT_MAX_CHARS) + extras;
    }
  }
}

function screen(model: Model, ansi: boolean): ScreenView {
  const { term } = model;
  const buffer = term.buffer.active;
  const lines: string[] = [];
  for (let y = 0; y < term.rows; y++) {
    lines.push(buffer.getLine(buffer.baseY + y)?.translateToString(true) ?? "");
  }
  return {
    cols: term.cols,
    rows: term.rows,
    lines,
    cursor: { x: buffer.cursorX, y: buffer.cursorY },
    alternate: buffer.type === "alternate",
    title: model.title,
    ...(ansi ? { ansi: model.serializer.serialize({ scrollback: 0 }) } : {}),
  };
}

const post = (msg: FromModel) => self.postMessage(msg);
let chain = Promise.resolve();
self.onmessage = (e: MessageEvent<ToModel>) => {
  const m = e.data;
  chain = chain.then(async () => {
    if (m.t === "drop") return drop(m.id);
    try {
      post({ t: "done", req: m.req, result: await render(m) });
    } catch (err) {
      drop(m.id);
      post({ t: "failed", req: m.req, message: String(err), outOfStep: err instanceof OutOfStep });
    }
  });
};
