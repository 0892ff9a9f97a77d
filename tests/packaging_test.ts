/**
 * What users install: the systemd units (verified by systemd-analyze, which
 * must have nothing to say about them) and the install script (run against a
 * release directory served over HTTP on loopback).
 */
import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url).pathname;

async function run(cmd: string, args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(cmd, {
    args,
    env: { ...Deno.env.toObject(), ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function hasCommand(cmd: string): Promise<boolean> {
  return (await run("sh", ["-c", `command -v ${cmd}`])).code === 0;
}

const noAnalyze = await hasCommand("systemd-analyze") ? null : "systemd-analyze is not installed";
if (noAnalyze) console.log(`SKIPPED systemd unit test: ${noAnalyze}`);

Deno.test({
  name: "systemd units: the relay's system unit and the node's user unit verify cleanly",
  ignore: noAnalyze !== null,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      // verify checks that ExecStart's program exists: point it at one that does
      const cw = `${dir}/cw`;
      await Deno.writeTextFile(cw, "#!/bin/sh\nexit 0\n", { mode: 0o755 });
      const relay = (await Deno.readTextFile(`${ROOT}packaging/systemd/cw-relay.service`))
        .replaceAll("/usr/local/bin/cw", cw);
      const node = (await Deno.readTextFile(`${ROOT}packaging/systemd/cw-node.service`))
        .replaceAll("%h/.local/bin/cw", cw);
      // what the issue asks of the relay's unit is there
      for (const line of ["NoNewPrivileges=yes", "ProtectSystem=strict", "Restart=on-failure"]) {
        assert.ok(relay.includes(`\n${line}\n`), line);
      }
      assert.match(relay, /\nLimitNOFILE=\d{5,}\n/);
      assert.match(node, /\nLimitNOFILE=\d{5,}\n/);
      assert.match(node, /\nRestart=on-failure\n/);
      await Deno.writeTextFile(`${dir}/cw-relay.service`, relay);
      await Deno.writeTextFile(`${dir}/cw-node.service`, node);
      const system = await run("systemd-analyze", ["verify", `${dir}/cw-relay.service`]);
      assert.equal(system.code, 0, system.stderr);
      assert.equal(system.stderr.trim(), "", "systemd-analyze has something to say");
      await Deno.mkdir(`${dir}/run`, { mode: 0o700 });
      const user = await run("systemd-analyze", ["--user", "verify", `${dir}/cw-node.service`], {
        XDG_RUNTIME_DIR: `${dir}/run`,
      });
      assert.equal(user.code, 0, user.stderr);
      assert.equal(user.stderr.trim(), "", "systemd-analyze has something to say");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
