/**
 * The only file that touches npm `qrcode-generator`: a text as a QR code for a
 * terminal, two rows of modules per line (upper half blocks), black on white
 * with a quiet zone, whatever the terminal's own colours (a phone's camera
 * reads dark modules on light).
 */
// @ts-types="./qr_types.d.ts"
import qrcode from "qrcode-generator";

/** `text` as lines of a terminal QR code (escape sequences for its colours included). */
export function qrLines(text: string): string[] {
  const qr = qrcode(0, "M");
  qr.addData(text);
  qr.make();
  const n = qr.getModuleCount();
  const QUIET = 2;
  const dark = (y: number, x: number) => y >= 0 && y < n && x >= 0 && x < n && qr.isDark(y, x);
  const lines: string[] = [];
  for (let y = -QUIET; y < n + QUIET; y += 2) {
    let line = "";
    for (let x = -QUIET; x < n + QUIET; x++) {
      // the upper module is the foreground of ▀, the lower one its background
      const fg = dark(y, x) ? 30 : 97;
      const bg = dark(y + 1, x) ? 40 : 107;
      line += `\x1b[${fg};${bg}m▀`;
    }
    lines.push(`${line}\x1b[0m`);
  }
  return lines;
}
