/** The relay image, as the container test and bench build it (podman, local bases). */
import { exists, runCommand } from "./helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;
/** podman's settings here: runc, finite ulimits. */
export const CONTAINERS_CONF = `${ROOT}scripts/container/containers.conf`;
/** This machine's CA bundle, for the build's npm downloads (an intercepting proxy). */
const HOST_CA = "/etc/ssl/certs/ca-certificates.crt";

/** Runs podman with {@link CONTAINERS_CONF}; throws with its stderr on failure. */
export async function podman(...args: string[]): Promise<string> {
  const r = await runCommand("podman", args, { CONTAINERS_CONF });
  if (r.code !== 0) throw new Error(`podman ${args.join(" ")} failed: ${r.stderr}`);
  return r.stdout;
}

/** Builds the Containerfile as `tag` from the local bases (scripts/container/base.sh). */
export async function buildRelayImage(tag: string, extra: string[] = []): Promise<void> {
  const version = (await runCommand("deno", ["--version"])).stdout.split(/\s+/)[1];
  await podman(
    "build",
    "--network",
    "host",
    "--format",
    "docker",
    "--build-arg",
    "BASE=localhost/cw-debian-base:bookworm",
    "--build-arg",
    `DENO_IMAGE=localhost/cw-deno-bin:${version}`,
    ...(await exists(HOST_CA)
      ? ["-v", `${HOST_CA}:/run/host-ca.crt:ro`, "--build-arg", "DENO_CERT=/run/host-ca.crt"]
      : []),
    ...extra,
    "-t",
    tag,
    "-f",
    `${ROOT}Containerfile`,
    ROOT,
  );
}
