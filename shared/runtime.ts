/**
 * The Deno permissions and unstable features cw runs with — the same for
 * `deno task cw`, the node it starts in the background, and `deno compile`.
 * A test checks that deno.json's tasks say exactly this.
 */
export const RUN_FLAGS: readonly string[] = [
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-run",
  "--allow-net",
  "--allow-ffi",
  "--allow-sys",
  "--unstable-worker-options",
  "--unstable-kv",
];
