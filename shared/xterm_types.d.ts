// The little of @xterm/headless and @xterm/addon-serialize that cw uses
// (node/model_worker.ts, client/clipped_view.ts). Their own declarations pull the DOM's types into every file of the
// program (and so change `TextDecoderStream`'s), so the checker reads this instead.
export interface IBufferCell {
  getChars(): string;
  getWidth(): number;
  getFgColor(): number;
  getBgColor(): number;
  isFgRGB(): boolean;
  isBgRGB(): boolean;
  isFgPalette(): boolean;
  isBgPalette(): boolean;
  isFgDefault(): boolean;
  isBgDefault(): boolean;
  isBold(): number;
  isItalic(): number;
  isDim(): number;
  isUnderline(): number;
  isBlink(): number;
  isInverse(): number;
  isInvisible(): number;
  isStrikethrough(): number;
}
export interface IBufferLine {
  readonly length: number;
  translateToString(trimRight?: boolean): string;
  getCell(x: number, cell?: IBufferCell): IBufferCell | undefined;
}
export interface IBuffer {
  readonly type: "normal" | "alternate";
  readonly baseY: number;
  readonly cursorX: number;
  readonly cursorY: number;
  getLine(y: number): IBufferLine | undefined;
  getNullCell(): IBufferCell;
}
export class Terminal {
  constructor(
    options: { cols: number; rows: number; scrollback: number; allowProposedApi: boolean },
  );
  readonly buffer: { readonly active: IBuffer };
  readonly cols: number;
  readonly rows: number;
  resize(cols: number, rows: number): void;
  reset(): void;
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
