/** Secret tokens: random, prefixed by what they are, hashed before storage. */
import { createHash } from "node:crypto";

/** Prefixes say what a token is, so a leaked one is recognised. */
export type TokenKind = "cwn" | "cwi" | "cwa" | "cwt" | "cwu";

/** A new random token: prefix + 32 random bytes, base64url. */
export function newToken(kind: TokenKind): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return `${kind}_${bytes.toBase64({ alphabet: "base64url", omitPadding: true })}`;
}

/** Hex SHA-256 of a secret. Tokens carry 256 bits, so a fast hash is enough. */
export async function hashSecret(secret: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(secret));
  return new Uint8Array(digest).toHex();
}

/** {@link hashSecret} without a trip through the crypto worker: for the per-request path. */
export function hashSecretSync(secret: string): string {
  return createHash("sha256").update(secret).digest("hex");
}

/** Compares two strings in time that depends only on their length. */
export function constantTimeEqual(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  let diff = x.byteLength ^ y.byteLength;
  for (let i = 0; i < Math.max(x.byteLength, y.byteLength); i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}
