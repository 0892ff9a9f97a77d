/**
 * The relay as users run it: the repository's Containerfile built with podman
 * (from a local Debian base made with debootstrap, scripts/container/base.sh:
 * no image registry is reachable here) and run as a container. A node on the
 * host registers over WSS, a session is launched on it through the
 * containerised relay, `ssh NODE@127.0.0.1 -p PORT` runs a command through its
 * gateway, and after a container restart the relay's state (nodes, keys, KV,
 * SSH host key) is intact. Skipped, saying why, where podman cannot run.
 */
import assert from "node:assert/strict";
import { CwHome, runCommand, waitFor } from "./helpers.ts";
import { buildRelayImage, CONTAINERS_CONF, podman } from "./container_helpers.ts";
import {
  ADMIN_TOKEN,
  caClient,
  invite,
  makeCerts,
  setupNode,
  waitOnline,
} from "./relay_helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const IMAGE = "localhost/cw-relay:test";

/** A command with podman's settings (runc, finite ulimits) in its environment. */
function run(cmd: string, args: string[], env: Record<string, string> = {}) {
  return runCommand(cmd, args, { ...env, CONTAINERS_CONF });
}

/** Why the test cannot run here, or null. Makes the base images (cached) when it can. */
async function unavailable(): Promise<string | null> {
  if (Deno.build.os !== "linux") return "containers are tested on Linux";
  if ((await run("podman", ["--version"])).code !== 0) return "podman is not installed";
  if (Deno.uid() !== 0) return "the container test runs as root (podman with runc, as in CI)";
  const base = await run("bash", [`${ROOT}scripts/container/base.sh`]);
  if (base.code !== 0) return `no local base image (scripts/container/base.sh): ${base.stderr}`;
  return null;
}

const skip = await unavailable();
if (skip) console.log(`SKIPPED container test: ${skip}`);

Deno.test({
  name: "container: the relay image builds, serves, carries a node, SSH and KV, survives a restart",
  ignore: skip !== null,
  async fn() {
    await buildRelayImage(IMAGE);

    await using home = new CwHome();
    const dir = home.root;
    const certs = await makeCerts(`${dir}/pki`);
    // the container's user (uid 10001) reads the key and owns the state
    const data = `${dir}/data`;
    await Deno.mkdir(data, { mode: 0o700 });
    for (const f of [data, certs.cert, certs.key]) await Deno.chown(f, 10001, 10001);
    const name = `cw-test-${Deno.pid}-${Date.now()}`;
    await podman(
      "run",
      "-d",
      "--name",
      name,
      "-p",
      "127.0.0.1::8443",
      "-p",
      "127.0.0.1::2222",
      "-v",
      `${data}:/var/lib/cw`,
      "-v",
      `${dir}/pki:/tls:ro`,
      "-e",
      `CW_RELAY_ADMIN_TOKEN=${ADMIN_TOKEN}`,
      IMAGE,
      "relay",
      "--tls-cert",
      "/tls/leaf.pem",
      "--tls-key",
      "/tls/leaf.key",
    );
    const client = caClient(certs);
    try {
      const port = async (p: number) =>
        Number((await podman("port", name, String(p))).split(":")[1]);
      const url = `https://127.0.0.1:${await port(8443)}`;
      const sshPort = await port(2222);
      const relay = { url };
      const healthy = () =>
        waitFor("the relay's /healthz", async () => {
          const res = await fetch(`${url}/healthz`, { client }).catch(() => null);
          await res?.body?.cancel();
          return res?.status === 200;
        }, 20_000);
      await healthy();
      // the web client is in the image
      const page = await fetch(`${url}/`, { client });
      assert.equal(page.status, 200);
      assert.match(page.headers.get("content-security-policy") ?? "", /default-src 'self'/);
      assert.match(await page.text(), /<script type="module" src="\/web\/app\.js">/);
      // the image's own health check, and the user it runs as
      await podman("healthcheck", "run", name);
      assert.equal((await podman("exec", name, "id", "-u")).trim(), "10001");

      // a node on the host joins over WSS and runs a session through the container
      await setupNode(home, relay as never, certs, "box-1", await invite(relay as never, client));
      await waitOnline(home, "box-1");
      const ref =
        (await home.ok(["launch", "box-1", "--", "sh", "-c", "echo via-container; sleep 600"]))
          .trim();
      await waitFor(
        "the session's output",
        async () => (await home.ok(["logs", ref])).includes("via-container"),
      );

      // the SSH gateway, with a key registered through the relay
      const key = `${dir}/id_ed25519`;
      assert.equal(
        (await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key])).code,
        0,
      );
      await home.ok(["ssh-key", "add", `${key}.pub`]);
      const knownHosts = `${dir}/known_hosts`;
      const ssh = (strict: string) =>
        run("ssh", [
          "-F",
          "/dev/null",
          "-o",
          "BatchMode=yes",
          "-o",
          `UserKnownHostsFile=${knownHosts}`,
          "-o",
          `StrictHostKeyChecking=${strict}`,
          "-o",
          "IdentitiesOnly=yes",
          "-o",
          "LogLevel=ERROR",
          "-i",
          key,
          "-p",
          String(sshPort),
          "box-1@127.0.0.1",
          "echo ssh-through-the-container",
        ], { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", HOME: dir });
      const first = await ssh("accept-new");
      assert.equal(first.stdout.trim(), "ssh-through-the-container", first.stderr);
      await home.ok(["kv", "set", "kept", "across-restarts"]);

      // a restart keeps nodes, keys, KV and the host key (the volume holds them)
      await podman("restart", "--time", "10", name);
      await healthy();
      await waitOnline(home, "box-1", true, 20_000);
      assert.equal((await home.ok(["kv", "get", "kept"])).trim(), "across-restarts");
      const again = await ssh("yes"); // the known host key must still match
      assert.equal(again.stdout.trim(), "ssh-through-the-container", again.stderr);
      assert.ok((await home.ok(["logs", ref])).includes("via-container"));

      // SIGTERM stops it cleanly
      await podman("stop", "--time", "10", name);
      assert.equal((await podman("inspect", name, "--format", "{{.State.ExitCode}}")).trim(), "0");
      const logs = await run("podman", ["logs", name]); // the relay logs to stderr
      assert.match(logs.stdout + logs.stderr, /shutting down \(SIGTERM\)/);
    } finally {
      client.close();
      await run("podman", ["rm", "-f", "--time", "0", name]);
    }
  },
});
