/**
 * The relay image (`--only container`): build time (from scratch, and again
 * with only the sources changed), image size, and the time from `podman run`
 * to the first 200 of /healthz, beside the same relay started as a process on
 * the host. Needs podman and the local base images (scripts/container/base.sh);
 * says SKIPPED otherwise.
 */
import { CwHome, runCommand } from "../../tests/helpers.ts";
import { buildRelayImage, CONTAINERS_CONF, podman } from "../../tests/container_helpers.ts";
import { caClient, makeCerts, RelayProcess } from "../../tests/relay_helpers.ts";
import { percentile, timed } from "./measure.ts";
import { fmtMs, progress, table } from "./common.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const IMAGE = "localhost/cw-relay:bench";
const RUNS = 5;

/** Polls `url` every 10 ms until it answers 200 (30 s at most). */
async function healthy(url: string, client: Deno.HttpClient): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const res = await fetch(url, { client, signal: AbortSignal.timeout(2000) }).catch(() => null);
    await res?.body?.cancel();
    if (res?.status === 200) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`${url} did not answer within 30 s`);
}

/** Runs the container bench and prints its report. */
export async function runContainerBench(): Promise<void> {
  if ((await runCommand("podman", ["--version"])).code !== 0 || Deno.uid() !== 0) {
    console.log("container: SKIPPED (needs podman, run as root)");
    return;
  }
  const base = await runCommand("bash", [`${ROOT}scripts/container/base.sh`]);
  if (base.code !== 0) {
    console.log(`container: SKIPPED (no local base image: ${base.stderr.trim()})`);
    return;
  }
  const fresh = await timed(() => buildRelayImage(IMAGE, ["--no-cache"]));
  progress(`container: built from scratch in ${fmtMs(fresh.ms)}`);
  const again = await timed(() => buildRelayImage(IMAGE));
  const size = Number((await podman("image", "inspect", IMAGE, "--format", "{{.Size}}")).trim());

  await using home = new CwHome();
  const certs = await makeCerts(`${home.root}/pki`);
  for (const f of [certs.cert, certs.key]) await Deno.chown(f, 10001, 10001);
  const client = caClient(certs);
  const firstHealthz: number[] = [];
  const hostFirst: number[] = [];
  try {
    for (let i = 0; i < RUNS; i++) {
      const name = `cw-bench-${Deno.pid}-${i}`;
      const data = `${home.root}/data${i}`;
      await Deno.mkdir(data, { mode: 0o700 });
      await Deno.chown(data, 10001, 10001);
      const t0 = performance.now();
      await podman(
        "run",
        "-d",
        "--name",
        name,
        "-p",
        "127.0.0.1::8443",
        "-v",
        `${data}:/var/lib/cw`,
        "-v",
        `${home.root}/pki:/tls:ro`,
        "-e",
        "CW_RELAY_ADMIN_TOKEN=cwa_bench-token-0123456789abcdef",
        IMAGE,
        "relay",
        "--ssh-listen",
        "off",
        "--tls-cert",
        "/tls/leaf.pem",
        "--tls-key",
        "/tls/leaf.key",
      );
      try {
        const port = (await podman("port", name, "8443")).trim().split(":")[1];
        await healthy(`https://127.0.0.1:${port}/healthz`, client);
        firstHealthz.push(performance.now() - t0);
      } finally {
        await runCommand("podman", ["rm", "-f", "--time", "0", name], { CONTAINERS_CONF });
      }
      // the same relay as a process on the host
      const h0 = performance.now();
      const relay = await RelayProcess.start(`${home.root}/host${i}`, certs, {
        extra: ["--ssh-listen", "off"],
      });
      await healthy(`${relay.url}/healthz`, client);
      hostFirst.push(performance.now() - h0);
      await relay.stop();
    }
  } finally {
    client.close();
  }
  console.log("cw relay container (podman, runc; base: debootstrap bookworm minbase)");
  console.log(table(["what", "figure", "notes"], [
    ["build from scratch", fmtMs(fresh.ms), "--no-cache; npm packages fetched"],
    [
      "build again",
      fmtMs(again.ms),
      "every layer cached (a source change rebuilds from the COPY of the sources)",
    ],
    [
      "image size",
      `${(size / 1024 / 1024).toFixed(0)} MiB`,
      "Debian minbase 121 MiB + deno ~92 MiB",
    ],
    [
      "podman run → first /healthz",
      fmtMs(percentile(firstHealthz, 50)),
      `p50 of ${RUNS}; the same relay as a host process: ${fmtMs(percentile(hostFirst, 50))}`,
    ],
  ]));
}
