/**
 * `cw mcp`: a Model Context Protocol server on stdio, so that an agent can
 * run, watch and answer programs on this machine and on every node it can
 * reach — with this machine's credentials and their limits. The official
 * npm `@modelcontextprotocol/sdk` speaks the protocol (its imports stay in
 * this file); the tools are client/mcp_tools.ts.
 *
 * stdout carries the protocol only: nothing else may be printed there.
 */
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import {
  type CallToolRequest,
  CallToolRequestSchema,
  ListToolsRequestSchema,
  type ServerNotification,
} from "@modelcontextprotocol/sdk/types.js";
import process from "node:process";
import { CwError } from "../shared/errors.ts";
import { VERSION } from "../shared/version.ts";
import { checkArgs, TOOLS } from "./mcp_tools.ts";

/** Tool calls running at once; more wait (an agent's burst never floods the node). */
const MCP_MAX_CONCURRENT_CALLS = 16;

const INSTRUCTIONS =
  `cw runs programs (AI agents, builds, servers) in persistent terminal sessions on this machine and on nodes reached through a relay. Start one with launch, see it with screen (what it shows now) or read_output (what it printed), answer it with send, and wait for it with wait (until: "exit" or "waiting" for input). Sessions are named ID or NAME on this machine, NODE:ID on a node (list_nodes).`;

/** Serves MCP on stdin/stdout until stdin closes. */
export async function runMcp(args: string[], home: string): Promise<number> {
  if (args.length) {
    console.error(
      `cw mcp: unexpected argument "${args[0]}" (cw mcp takes none; use it from an MCP client)`,
    );
    return 2;
  }
  const server = new Server(
    { name: "cw", title: "cw — persistent terminal sessions", version: VERSION },
    { capabilities: { tools: {} }, instructions: INSTRUCTIONS },
  );
  const byName = new Map(TOOLS.map((t) => [t.name, t]));
  let running = 0;
  const queue: (() => void)[] = [];
  const slot = async () => {
    if (running >= MCP_MAX_CONCURRENT_CALLS) await new Promise<void>((r) => queue.push(r));
    running++;
  };
  const release = () => {
    running--;
    queue.shift()?.();
  };

  server.setRequestHandler(ListToolsRequestSchema, () => ({
    tools: TOOLS.map((t) => ({
      name: t.name,
      title: t.title,
      description: t.description,
      inputSchema: t.inputSchema as { type: "object" },
      annotations: {
        title: t.title,
        readOnlyHint: t.readOnly,
        destructiveHint: t.name === "kill" || t.name === "kv_delete",
        openWorldHint: false,
      },
    })),
  }));

  server.setRequestHandler(CallToolRequestSchema, async (request: CallToolRequest, extra: {
    signal: AbortSignal;
    sendNotification(n: ServerNotification): Promise<void>;
  }) => {
    const tool = byName.get(request.params.name);
    if (!tool) return failure("not_found", `Unknown tool "${request.params.name.slice(0, 64)}"`);
    const token = request.params._meta?.progressToken;
    await slot();
    try {
      const args = checkArgs(tool.inputSchema, request.params.arguments);
      const result = await tool.run(args, {
        home,
        signal: extra.signal,
        progress: async (progress, total, message) => {
          if (token === undefined) return;
          await extra.sendNotification({
            method: "notifications/progress",
            params: { progressToken: token, progress, total, message },
          }).catch(() => {});
        },
      });
      return {
        content: [{ type: "text" as const, text: result.text }],
        structuredContent: result.structured,
      };
    } catch (err) {
      if (err instanceof CwError) return failure(err.code, err.message);
      return failure("internal", (err as Error)?.message ?? String(err));
    } finally {
      release();
    }
  });

  const transport = new StdioServerTransport();
  const closed = new Promise<void>((resolve) => {
    transport.onclose = () => resolve();
  });
  await server.connect(transport);
  // the client closing stdin ends the server
  await Promise.race([closed, stdinClosed()]);
  await server.close().catch(() => {});
  return 0;
}

/** A tool error: MCP's `isError` result, carrying cw's stable code. */
function failure(code: string, message: string) {
  return {
    isError: true,
    content: [{ type: "text" as const, text: `${code}: ${message}` }],
    structuredContent: { error: { code, message } },
  };
}

/** Resolves when stdin reaches its end (the SDK's transport does not say so itself). */
function stdinClosed(): Promise<void> {
  return new Promise((resolve) => process.stdin.once("end", () => resolve()));
}
