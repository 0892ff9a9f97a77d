import { concat } from "../shared/bytes.ts";

export { concat, writeAll } from "../shared/bytes.ts";

/** Reads a whole stream into one array. */
export async function readAll(r: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const c of r) chunks.push(c);
  return concat(chunks);
}

/** Output up to this size is written to the terminal synchronously (see {@link writeOut}). */
const SYNC_WRITE_MAX = 16 * 1024;

/**
 * Writes to stdout. A small write (a keystroke's echo, a redrawn line) is
 * made synchronously on this thread: Deno's asynchronous stdout write hands
 * the bytes to another thread first, which cost ~80 µs of every echo. A
 * terminal that cannot take them at once (or a large write) gets the
 * asynchronous write, which waits without blocking this thread.
 */
export async function writeOut(data: Uint8Array): Promise<void> {
  let off = 0;
  if (data.byteLength <= SYNC_WRITE_MAX) {
    try {
      while (off < data.byteLength) off += Deno.stdout.writeSync(data.subarray(off));
      return;
    } catch {
      // would block, or interrupted: the rest asynchronously
    }
  }
  while (off < data.byteLength) off += await Deno.stdout.write(data.subarray(off));
}
