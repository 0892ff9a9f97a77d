/** `cw server add|remove|list`: saved direct WebSocket servers (no relay). */
import { parseArgs } from "../shared/args.ts";
import { CwError } from "../shared/errors.ts";
import { loadServers, NODE_NAME_RE, saveServers } from "./targets.ts";
import { RelayUsageError } from "./usage.ts";
import { printWebCode } from "./web_link.ts";
import { isCleartextRemote } from "../shared/net.ts";
import { readSecret } from "../shared/secret_input.ts";
import { checkResponse, type WebCode } from "../shared/api.ts";

const USAGE =
  "cw server add NAME URL --token-file F | --token -|TOKEN [--ca-cert FILE] [--insecure] | remove NAME | list [--json]";

/** Runs a `cw server` subcommand. */
export async function serverCmd(args: string[], home: string): Promise<number> {
  const [sub, ...rest] = args;
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      allowPositionals: true,
      options: {
        token: { type: "string" },
        "token-file": { type: "string" },
        "ca-cert": { type: "string" },
        insecure: { type: "boolean" },
        json: { type: "boolean" },
      },
    });
  } catch (err) {
    throw new RelayUsageError((err as Error).message.split("\n")[0]);
  }
  const { values, positionals } = parsed;
  const servers = loadServers(home);
  switch (sub) {
    case "add": {
      const [name, url, ...extra] = positionals;
      if (!name || !url || extra.length) throw new RelayUsageError(`Usage: ${USAGE}`);
      if (!NODE_NAME_RE.test(name)) throw new RelayUsageError(`Invalid server name "${name}"`);
      let parsedUrl: URL;
      try {
        parsedUrl = new URL(url);
      } catch {
        throw new RelayUsageError(`Invalid URL "${url}"`);
      }
      if (parsedUrl.protocol !== "wss:" && parsedUrl.protocol !== "ws:") {
        throw new RelayUsageError("The URL must be wss://HOST:PORT (ws:// only for loopback)");
      }
      const insecure = values.insecure === true;
      if (!insecure && isCleartextRemote(parsedUrl)) {
        throw new RelayUsageError(
          `Refusing to send the token in clear text to ${parsedUrl.origin}: use a wss:// URL (cw node --listen with --tls-cert/--tls-key), or add --insecure if the network to it is private`,
        );
      }
      const token = await readSecret({
        flag: "token",
        value: values.token,
        file: values["token-file"],
        envVar: "CW_TOKEN",
      });
      if (token === null) {
        throw new RelayUsageError(
          "Missing the token: give --token-file FILE, --token - (stdin) or CW_TOKEN (cw node token prints it on the server)",
        );
      }
      let caCert: string | null = null;
      if (values["ca-cert"]) {
        try {
          caCert = await Deno.readTextFile(values["ca-cert"]);
        } catch (err) {
          throw new CwError("not_found", `Cannot read --ca-cert: ${(err as Error).message}`);
        }
      }
      const others = servers.filter((s) => s.name !== name);
      saveServers(home, [...others, { name, url: parsedUrl.href, token, caCert, insecure }]);
      console.error(
        `${
          others.length === servers.length ? "Added" : "Updated"
        } server "${name}" (${parsedUrl.href}).`,
      );
      return 0;
    }
    case "remove": {
      const [name] = positionals;
      if (!name || positionals.length > 1) throw new RelayUsageError(`Usage: ${USAGE}`);
      if (!servers.some((s) => s.name === name)) {
        throw new CwError("not_found", `Unknown server "${name}"`);
      }
      saveServers(home, servers.filter((s) => s.name !== name));
      console.error(`Removed server "${name}".`);
      return 0;
    }
    case "list": {
      if (positionals.length) throw new RelayUsageError(`Usage: ${USAGE}`);
      // tokens are never printed
      const rows = servers.map((s) => ({ name: s.name, url: s.url, caCert: s.caCert !== null }));
      if (values.json) console.log(JSON.stringify(rows));
      else if (rows.length === 0) console.error("No servers.");
      else for (const r of rows) console.log(`${r.name}  ${r.url}${r.caCert ? "  (own CA)" : ""}`);
      return 0;
    }
    default:
      throw new RelayUsageError(`Usage: ${USAGE}`);
  }
}

/**
 * `cw --server NAME web`: a one-time login link for a browser on that node's
 * own listener (direct mode), as `cw web` makes one on the relay.
 */
export async function webLink(args: string[], home: string, name: string): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: { json: { type: "boolean" } },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length) throw new RelayUsageError("Usage: cw --server NAME web [--json]");
  const entry = loadServers(home).find((s) => s.name === name);
  if (!entry) throw new CwError("not_found", `Unknown server "${name}": see cw server list`);
  const url = new URL("/api/v1/web/codes", entry.url);
  url.protocol = url.protocol === "wss:" ? "https:" : "http:";
  if (entry.insecure !== true && isCleartextRemote(url)) {
    throw new CwError("forbidden", `Refusing to send the token of server "${name}" in clear text`);
  }
  const client = entry.caCert ? Deno.createHttpClient({ caCerts: [entry.caCert] }) : undefined;
  let res: Response;
  try {
    res = await fetch(url, {
      method: "POST",
      headers: { authorization: `Bearer ${entry.token}` },
      client,
    } as RequestInit);
  } catch (err) {
    throw new CwError("node_unavailable", `Cannot reach ${entry.url}: ${(err as Error).message}`);
  } finally {
    client?.close();
  }
  await checkResponse(res);
  const code = await res.json() as WebCode;
  return await printWebCode(code, values.json === true);
}
