/**
 * MCP benchmark (issue 14): the round trip of an MCP `list_sessions` call
 * (the SDK's own client talking to `cw mcp` over stdio) beside `cw list`
 * (a whole CLI process) and the same request in-process, on this machine and
 * through a relay on loopback (TLS), in one run. Writes `bench-results/mcp.json`.
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { localDialer } from "../../client/local.ts";
import { NodeClient } from "../../client/node_client.ts";
import { Targets } from "../../client/targets.ts";
import { RUN_FLAGS } from "../../shared/runtime.ts";
import { CONFIG, CwHome, MAIN } from "../../tests/helpers.ts";
import { makeCerts } from "../../tests/relay_helpers.ts";
import {
  fmtMs,
  loadAverage,
  machineInfo,
  pollUntil,
  progress,
  table,
  writeResults,
} from "./common.ts";
import { percentile, timed } from "./measure.ts";
import { ADMIN_TOKEN, BenchRelay } from "./relay_process.ts";

const NODE = "dev-1";
const SESSIONS = 20;
const CALLS = 200;
const CLI_RUNS = 20;

interface Row {
  mcpP50Ms: number;
  mcpP99Ms: number;
  inProcessP50Ms: number;
  cliP50Ms: number;
}

export async function runMcpBench(): Promise<void> {
  const machine = await machineInfo();
  const load0 = await loadAverage();
  const root = await Deno.makeTempDir({ prefix: "cw-bench-mcp-" });
  const certs = await makeCerts(`${root}/pki`);
  await using relay = await BenchRelay.start(`${root}/relay`, certs);
  await using node = new CwHome();
  await using laptop = new CwHome();
  const http = Deno.createHttpClient({ caCerts: [Deno.readTextFileSync(certs.ca)] });
  const api = async (path: string, body: unknown) => {
    const res = await fetch(`${relay.url}${path}`, {
      method: "POST",
      client: http,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    if (res.status !== 201) throw new Error(`${path}: ${res.status} ${await res.text()}`);
    return await res.json();
  };
  try {
    const { token } = await api("/api/v1/invites", { uses: 1 });
    await node.ok([
      "setup",
      "--relay-url",
      relay.url,
      "--invite",
      token,
      "--name",
      NODE,
      "--ca-cert",
      certs.ca,
    ]);
    const user = await api("/api/v1/users", { name: "bench" });
    await laptop.ok(["login", "--relay-url", relay.url, "--token", "-", "--ca-cert", certs.ca], {
      stdin: `${user.token}\n`,
    });
    for (let i = 0; i < SESSIONS; i++) await node.launch(["sleep", "600"]);
    await pollUntil(
      `${NODE} online`,
      async () => (await laptop.run(["list", NODE])).code === 0,
      15_000,
      100,
    );

    const measure = async (
      home: CwHome,
      node: string | null,
      inProcess: NodeClient,
    ): Promise<Row & { connectMs: number }> => {
      const t0 = performance.now();
      const client = new Client({ name: "bench", version: "1" });
      await client.connect(
        new StdioClientTransport({
          command: Deno.execPath(),
          args: ["run", ...RUN_FLAGS, "--config", CONFIG, MAIN, "mcp"],
          env: home.env(),
          stderr: "inherit",
        }),
      );
      await client.listTools();
      const connectMs = performance.now() - t0;
      try {
        const args = node ? { node } : {};
        const mcp: number[] = [];
        for (let i = 0; i < CALLS + 20; i++) {
          const { ms, value } = await timed(() =>
            client.callTool({ name: "list_sessions", arguments: args })
          );
          if ((value as { isError?: boolean }).isError) throw new Error("list_sessions failed");
          if (i >= 20) mcp.push(ms);
        }
        const direct: number[] = [];
        for (let i = 0; i < CALLS; i++) {
          direct.push((await timed(() => inProcess.request({ op: "list", lastLines: true }))).ms);
        }
        const cli: number[] = [];
        for (let i = 0; i < CLI_RUNS; i++) {
          const t = performance.now();
          await home.ok(node ? ["list", node] : ["list"]);
          cli.push(performance.now() - t);
        }
        return {
          connectMs,
          mcpP50Ms: percentile(mcp, 50),
          mcpP99Ms: percentile(mcp, 99),
          inProcessP50Ms: percentile(direct, 50),
          cliP50Ms: percentile(cli, 50),
        };
      } finally {
        await client.close();
      }
    };
    progress("MCP list_sessions on this machine");
    const local = await measure(node, null, new NodeClient(localDialer(node.home, false)));
    progress("MCP list_sessions through the relay");
    const remote = await measure(laptop, NODE, new Targets(laptop.home, null, false).client(NODE));
    const lines = [
      `cw mcp bench — ${
        new Date().toISOString()
      } — ${machine.cpu} ×${machine.cores}, load ${load0}`,
      "",
      table(
        [
          "list sessions (20 sessions)",
          "MCP call p50 / p99",
          "in-process request",
          "cw list (CLI)",
        ],
        [
          [
            "this machine",
            `${fmtMs(local.mcpP50Ms)} / ${fmtMs(local.mcpP99Ms)}`,
            fmtMs(local.inProcessP50Ms),
            fmtMs(local.cliP50Ms),
          ],
          [
            `through the relay (${NODE})`,
            `${fmtMs(remote.mcpP50Ms)} / ${fmtMs(remote.mcpP99Ms)}`,
            fmtMs(remote.inProcessP50Ms),
            fmtMs(remote.cliP50Ms),
          ],
        ],
      ),
      `cw mcp start-up to its tool list: ${
        fmtMs(local.connectMs)
      } (one-time, per MCP host session)`,
    ];
    console.log(lines.join("\n"));
    writeResults("mcp", { machine, local, remote });
  } finally {
    http.close();
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
}
