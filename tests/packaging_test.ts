/**
 * What users install: the systemd units (verified by systemd-analyze, which
 * must have nothing to say about them) and the install script (run against a
 * release directory served over HTTP on loopback).
 */
import assert from "node:assert/strict";
import { TARGETS } from "../scripts/compile.ts";
import { runCommand } from "./helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;

const run = runCommand;

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

Deno.test("install script: picks this OS and CPU's binary, checks its SHA-256, refuses a mismatch", async () => {
  const dir = await Deno.makeTempDir();
  // a release directory: stand-in binaries (they print a version) and their checksums
  const release = `${dir}/release`;
  await Deno.mkdir(release);
  const sums: string[] = [];
  for (const target of TARGETS) {
    const body = `#!/bin/sh\necho "cw 9.9.9 (${target})"\n`;
    await Deno.writeTextFile(`${release}/cw-${target}`, body);
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(body));
    const hex = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0"))
      .join("");
    sums.push(`${hex}  cw-${target}\n`);
  }
  await Deno.writeTextFile(`${release}/SHA256SUMS`, sums.join(""));
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const name = new URL(req.url).pathname.slice(1);
    if (!/^[\w.-]+$/.test(name)) return new Response("no", { status: 404 });
    try {
      return new Response(await Deno.readFile(`${release}/${name}`));
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  const url = `http://127.0.0.1:${server.addr.port}`;
  // `uname` as another machine would answer it
  const fake = async (s: string, m: string) => {
    const bin = `${dir}/uname-${s}-${m}`;
    await Deno.mkdir(bin, { recursive: true });
    await Deno.writeTextFile(
      `${bin}/uname`,
      `#!/bin/sh\ncase "$1" in -s) echo ${s} ;; -m) echo ${m} ;; *) echo ${s} ;; esac\n`,
      { mode: 0o755 },
    );
    return `${bin}:${Deno.env.get("PATH")}`;
  };
  const install = (to: string, path?: string) =>
    run("sh", [`${ROOT}scripts/install.sh`], {
      CW_RELEASE_URL: url,
      CW_INSTALL_DIR: to,
      HOME: dir,
      ...(path ? { PATH: path } : {}),
    });
  try {
    // this machine
    const here = await install(`${dir}/a`);
    assert.equal(here.code, 0, here.stderr);
    assert.equal(
      (await run(`${dir}/a/cw`, ["--version"])).stdout.trim(),
      `cw 9.9.9 (${Deno.build.target})`,
    );
    assert.match(here.stdout, /installed cw 9\.9\.9/);
    // a Mac with Apple silicon gets the aarch64 macOS binary
    const mac = await install(`${dir}/b`, await fake("Darwin", "arm64"));
    assert.equal(mac.code, 0, mac.stderr);
    assert.match(
      (await run(`${dir}/b/cw`, ["--version"])).stdout,
      /\(aarch64-apple-darwin\)/,
    );
    // a CPU there is no build for: one clear line
    const riscv = await install(`${dir}/c`, await fake("Linux", "riscv64"));
    assert.equal(riscv.code, 1);
    assert.match(riscv.stderr, /^cw install: no cw build for the riscv64 CPU/);
    // a tampered binary: refused, nothing installed
    await Deno.writeTextFile(`${release}/cw-${Deno.build.target}`, "#!/bin/sh\necho evil\n");
    const bad = await install(`${dir}/d`);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /checksum mismatch .*nothing installed/);
    await assert.rejects(Deno.stat(`${dir}/d/cw`));
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("scripts/cw: client commands run bundled (made when stale) and start the node from source", async () => {
  const home = await Deno.makeTempDir();
  const cw = (args: string[]) => run(`${ROOT}scripts/cw`, args, { CW_HOME: `${home}/h` });
  try {
    assert.match((await cw(["--version"])).stdout, /^cw \d+\.\d+\.\d+\n$/);
    const bundle = await Deno.stat(`${ROOT}dist/cw-client.js`);
    // it is at least as new as every source it was made from
    for (const dir of ["client", "shared"]) {
      for await (const e of Deno.readDir(`${ROOT}${dir}`)) {
        if (!e.name.endsWith(".ts")) continue;
        const m = (await Deno.stat(`${ROOT}${dir}/${e.name}`)).mtime!;
        assert.ok(m <= bundle.mtime!, `${dir}/${e.name} is newer than the bundle`);
      }
    }
    const id = (await cw(["launch", "--", "sh", "-c", "echo bundled-ok; exit 3"])).stdout.trim();
    assert.equal((await cw(["wait", id])).code, 3);
    assert.equal((await cw(["logs", id])).stdout, "bundled-ok\n");
    // the node it started runs from the sources (main.ts), not the bundle
    const info = JSON.parse((await cw(["list", "--json"])).stdout);
    assert.equal(info.length, 1);
  } finally {
    await cw(["stop"]);
    await Deno.remove(home, { recursive: true });
  }
});
