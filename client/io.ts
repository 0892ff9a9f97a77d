import { concat } from "../shared/bytes.ts";

export { concat, writeAll } from "../shared/bytes.ts";

/** Reads a whole stream into one array. */
export async function readAll(r: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const c of r) chunks.push(c);
  return concat(chunks);
}
