/**
 * A start that needs no network: with the dependencies installed (a warm
 * cache), cw's client, node and relay start and work in a network namespace
 * of their own, where nothing but loopback exists (`unshare -n`). Skipped,
 * saying why, where namespaces cannot be made.
 */
import assert from "node:assert/strict";
import { CW_SHELL, CwHome, shellQuote } from "./helpers.ts";

async function unavailable(): Promise<string | null> {
  try {
    const probe = await new Deno.Command("unshare", {
      args: ["-n", "ip", "link", "set", "lo", "up"],
      stdout: "null",
      stderr: "piped",
    }).output();
    return probe.success
      ? null
      : `unshare -n failed: ${new TextDecoder().decode(probe.stderr).trim()}`;
  } catch (err) {
    return `unshare or ip is missing (${(err as Error).message})`;
  }
}

const skip = await unavailable();
if (skip) console.log(`SKIPPED offline test: ${skip}`);

Deno.test({
  name: "offline: cw starts and works with no network but loopback (client, node, relay)",
  ignore: skip !== null,
  async fn() {
    await using home = new CwHome();
    const bin = `${home.root}/bin`;
    await Deno.mkdir(bin);
    await Deno.writeTextFile(`${bin}/cw`, `#!/bin/sh\nexec ${CW_SHELL} "$@"\n`, { mode: 0o755 });
    const relayOut = `${home.root}/relay.out`;
    // one shell in one namespace: loopback up, then the commands; nothing else is reachable
    const script = `set -e
ip link set lo up
cw --version
cw launch --name off -- sh -c 'echo offline-ok'
cw wait off
cw logs off
cw list
cw relay --listen 127.0.0.1:0 --ssh-listen 127.0.0.1:0 \\
  --data-dir ${shellQuote(`${home.root}/relay`)} > ${shellQuote(relayOut)} 2>&1 &
relay=$!
i=0
until grep -q 'listening on' ${shellQuote(relayOut)}; do
  i=$((i + 1)); [ $i -lt 400 ] || exit 9; sleep 0.05
done
kill -TERM $relay; wait $relay || true
cw stop`;
    const out = await new Deno.Command("unshare", {
      args: ["-n", "sh", "-c", script],
      env: home.env({
        PATH: `${bin}:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}`,
        CW_RELAY_ADMIN_TOKEN: "cwa_offline-test-token-0123456789",
      }),
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    const text = dec.decode(out.stdout) + dec.decode(out.stderr);
    assert.equal(out.code, 0, text);
    assert.match(text, /^cw \d+\.\d+\.\d+$/m);
    assert.match(text, /^offline-ok$/m);
    assert.match(text, /exited\s.*sh -c/);
    assert.match(await Deno.readTextFile(relayOut), /listening on http:\/\/127\.0\.0\.1:\d+/);
  },
});
