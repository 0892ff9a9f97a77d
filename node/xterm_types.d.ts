// The little of @xterm/headless and @xterm/addon-serialize that node/model_worker.ts
// uses. Their own declarations pull the DOM's types into every file of the
// program (and so change `TextDecoderStream`'s), so the checker reads this instead.
export interface IBufferLine {
  translateToString(trimRight?: boolean): string;
}
export interface IBuffer {
  readonly type: "normal" | "alternate";
  readonly baseY: number;
  readonly cursorX: number;
  readonly cursorY: number;
  getLine(y: number): IBufferLine | undefined;
}
export class Terminal {
  constructor(
    options: { cols: number; rows: number; scrollback: number; allowProposedApi: boolean },
  );
  readonly buffer: { readonly active: IBuffer };
  readonly cols: number;
  readonly rows: number;
  resize(cols: number, rows: number): void;
  onTitleChange(listener: (title: string) => void): void;
  write(data: Uint8Array | string, callback?: () => void): void;
  loadAddon(addon: unknown): void;
  dispose(): void;
}
export class SerializeAddon {
  serialize(options?: { scrollback?: number }): string;
}
declare const module: { Terminal: typeof Terminal; SerializeAddon: typeof SerializeAddon };
export default module;
