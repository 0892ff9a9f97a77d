/**
 * Client commands that talk to the relay over HTTPS: `cw setup`, `cw login`,
 * `cw nodes`, `cw kv`, `cw ssh-key`. They use the user token saved by
 * `cw login`, or else the node credential saved by `cw setup`.
 */
import { parseArgs } from "../shared/args.ts";
import { CwError } from "../shared/errors.ts";
import { parseDuration } from "../shared/duration.ts";
import {
  loadRelayAccess,
  loadRelayConfig,
  RELAY_MAX_URLS,
  type RelayAccess,
  relayHttpClient,
  removeLogin,
  removeRelayConfig,
  saveLogin,
  saveRelayConfig,
} from "../shared/relay_config.ts";
import {
  checkResponse,
  type NodeRow,
  paths,
  type WebCode,
  type WebSessionRow,
  type WhoAmI,
} from "../shared/api.ts";
import { RELAY_NAME_RE } from "../shared/names.ts";
import { printable } from "../shared/printable.ts";
import { VERSION } from "../shared/version.ts";
import { ensurePrivateDir } from "../shared/paths.ts";
import { isCleartextRemote } from "../shared/net.ts";
import { readSecret } from "../shared/secret_input.ts";
import { readAll, writeAll } from "./io.ts";
import type { NodeClient } from "./node_client.ts";
import { RelayUsageError } from "./usage.ts";
import { printWebCode } from "./web_link.ts";

export { RelayUsageError };

function parse<T extends Record<string, { type: "string" | "boolean"; multiple?: boolean }>>(
  args: string[],
  options: T,
) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new RelayUsageError((err as Error).message.split("\n")[0]);
  }
}

/** How this machine reaches its relay, or a clear error telling to run `cw login` or `cw setup`. */
export function requireRelay(home: string): RelayAccess {
  const access = loadRelayAccess(home);
  if (!access) {
    throw new CwError(
      "not_found",
      "This machine has no relay: cw login --relay-url URL --token-file FILE (a user), or cw setup --relay-url URL --invite-file FILE (a node)",
    );
  }
  return access;
}

/** fetch against the relay with this machine's token; a failed connection becomes a CwError. */
export async function relayFetch(
  access: Pick<RelayAccess, "url" | "token" | "caCert">,
  path: string,
  init: RequestInit = {},
): Promise<Response> {
  const client = relayHttpClient(access);
  try {
    const res = await fetch(new URL(path, access.url), {
      ...init,
      client,
      headers: { authorization: `Bearer ${access.token}`, ...(init.headers ?? {}) },
    } as RequestInit);
    return res;
  } catch (err) {
    client?.close();
    throw new CwError(
      "node_unavailable",
      `Cannot reach the relay at ${access.url}: ${(err as Error).message}`,
    );
  }
}

/** Throws the JSON error of a failed response as a CwError. */
export async function throwForStatus(res: Response): Promise<void> {
  await checkResponse(res);
}

/** A relay URL from a flag: https, or http to loopback (or anywhere with --insecure). */
function relayUrl(url: string | undefined, insecure: boolean, what: string): URL {
  if (!url) throw new RelayUsageError("Missing --relay-url URL");
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new RelayUsageError(`Invalid --relay-url "${url}"`);
  }
  if (parsed.protocol !== "https:" && parsed.protocol !== "http:") {
    throw new RelayUsageError(
      "--relay-url must be an https:// URL (http:// only for a relay on loopback)",
    );
  }
  if (!insecure && isCleartextRemote(parsed)) {
    throw new RelayUsageError(
      `Refusing to send the ${what} in clear text to ${parsed.origin}: use an https:// URL, or add --insecure if the network to the relay is private`,
    );
  }
  return parsed;
}

async function readCaCert(path: string | undefined): Promise<string | null> {
  if (!path) return null;
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    throw new CwError("not_found", `Cannot read --ca-cert ${path}: ${(err as Error).message}`);
  }
}

// ---------------------------------------------------------------- login

/**
 * `cw login --relay-url URL [--token-file F | --token - | CW_USER_TOKEN]
 * [--ca-cert FILE] [--insecure]`: checks the user token with the relay and
 * saves it (0600), so this machine is a client of that network without
 * being a node. Without a token flag the token is read from stdin.
 */
export async function login(args: string[], home: string): Promise<number> {
  const { values, positionals } = parse(args, {
    "relay-url": { type: "string" },
    token: { type: "string" },
    "token-file": { type: "string" },
    "ca-cert": { type: "string" },
    insecure: { type: "boolean" },
  });
  if (positionals.length) throw new RelayUsageError(`Unexpected argument "${positionals[0]}"`);
  const insecure = values.insecure === true;
  const url = relayUrl(values["relay-url"], insecure, "user token");
  const given = values.token !== undefined || values["token-file"] !== undefined;
  const token = await readSecret({
    flag: "token",
    value: given ? values.token : Deno.env.get("CW_USER_TOKEN") ? undefined : "-",
    file: values["token-file"],
    envVar: "CW_USER_TOKEN",
  });
  if (!token) throw new RelayUsageError("Missing the token: --token-file FILE or --token -");
  const caCert = await readCaCert(values["ca-cert"]);
  const access = { url: url.origin, token, caCert, insecure };
  const res = await relayFetch(access, paths.whoami);
  await checkResponse(res);
  const me = await res.json() as WhoAmI;
  ensurePrivateDir(home);
  saveLogin(home, access);
  console.error(
    `Logged in to ${url.origin} as ${me.kind}${me.name ? ` "${me.name}"` : ""}${
      me.network ? ` of network "${me.network}"` : ""
    }${me.readOnly ? " (read-only)" : ""}.`,
  );
  return 0;
}

/** `cw logout`: forgets the saved user token. */
export function logout(args: string[], home: string): Promise<number> {
  if (args.length) throw new RelayUsageError(`Unexpected argument "${args[0]}"`);
  console.error(removeLogin(home) ? "Logged out." : "Not logged in.");
  return Promise.resolve(0);
}

// ---------------------------------------------------------------- setup

/**
 * `cw setup --relay-url URL --invite-file F | --invite -|TOKEN [--name NAME]
 * [--ca-cert FILE] [--insecure]` (or the invite in `CW_INVITE`), or `--remove`.
 */
export async function setup(args: string[], home: string, client: NodeClient): Promise<number> {
  const { values, positionals } = parse(args, {
    "relay-url": { type: "string" },
    invite: { type: "string" },
    "invite-file": { type: "string" },
    name: { type: "string" },
    "ca-cert": { type: "string" },
    insecure: { type: "boolean" },
    remove: { type: "boolean" },
  });
  if (positionals.length) throw new RelayUsageError(`Unexpected argument "${positionals[0]}"`);
  if (values.remove) {
    const had = removeRelayConfig(home);
    await client.request({ op: "relay_reload" });
    console.error(
      had ? "Forgot the relay; the node no longer links to it." : "No relay was set up.",
    );
    return 0;
  }
  const insecure = values.insecure === true;
  // several addresses of one relay (its replicas), comma-separated: the node tries each in turn
  const given = (values["relay-url"] ?? "").split(",").map((u) => u.trim()).filter(Boolean);
  if (given.length > RELAY_MAX_URLS) {
    throw new RelayUsageError(`At most ${RELAY_MAX_URLS} relay URLs`);
  }
  const parsed = relayUrl(given[0], insecure, "invite");
  const more = given.slice(1).map((u) => relayUrl(u, insecure, "invite").origin);
  const invite = await readSecret({
    flag: "invite",
    value: values.invite,
    file: values["invite-file"],
    envVar: "CW_INVITE",
  });
  const name = values.name ?? defaultNodeName();
  if (!RELAY_NAME_RE.test(name)) {
    throw new RelayUsageError(
      `Invalid node name "${name}": use 1-63 of [A-Za-z0-9_-], starting with a letter or digit`,
    );
  }
  const caCert = await readCaCert(values["ca-cert"]);
  const base = parsed.origin;
  const previous = loadRelayConfig(home);
  ensurePrivateDir(home); // before the invite is spent, so the credential has a home
  const res = await relayFetch(
    { url: base, token: "", caCert },
    paths.register,
    {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        invite: invite ?? undefined,
        name,
        version: VERSION,
        // proves this node already holds the name, so it may re-register; only
        // ever to the relay that issued it
        previousCredential: previous?.url === base ? previous.credential : undefined,
      }),
    },
  );
  try {
    await throwForStatus(res);
  } catch (err) {
    // a relay with --auth-mode none needs no invite; any other asks for one
    if (invite === null && err instanceof CwError && err.code === "bad_request") {
      throw new RelayUsageError(
        "Missing the invite: give --invite-file FILE, --invite - (stdin) or CW_INVITE",
      );
    }
    throw err;
  }
  const { credential } = await res.json();
  saveRelayConfig(home, {
    url: base,
    name,
    credential,
    caCert,
    insecure,
    ...(more.length ? { urls: more } : {}),
  });
  await client.request({ op: "relay_reload" });
  // wait (bounded) for the link to come up so the user knows it works
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const info = await client.request<
      { relay: { state: string; lastError: string | null } | null }
    >({ op: "info" });
    if (info.relay?.state === "connected") {
      console.error(`Registered as "${name}" and connected to ${base}.`);
      return 0;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  console.error(
    `Registered as "${name}"; the node is still connecting to ${base} (see cw node log).`,
  );
  return 0;
}

function defaultNodeName(): string {
  const host = Deno.hostname().split(".")[0].replace(/[^A-Za-z0-9_-]/g, "-").replace(
    /^[^A-Za-z0-9]+/,
    "",
  );
  return host.slice(0, 63) || "node";
}

// ---------------------------------------------------------------- nodes

/** `cw nodes [--json]`. */
export async function nodes(args: string[], home: string): Promise<number> {
  const { values, positionals } = parse(args, { json: { type: "boolean" } });
  if (positionals.length) throw new RelayUsageError(`Unexpected argument "${positionals[0]}"`);
  const config = requireRelay(home);
  const res = await relayFetch(config, paths.nodes);
  await throwForStatus(res);
  const { nodes } = await res.json() as { nodes: NodeRow[] };
  if (values.json) {
    console.log(JSON.stringify(nodes));
    return 0;
  }
  // addresses and versions are what nodes reported: shown escaped
  const rows = nodes.map((n) => [
    printable(n.name),
    printable(n.network ?? "default"),
    n.online ? "online" : "offline",
    printable(n.lastSeenAt ?? "never"),
    printable(n.addr ?? "-"),
    printable(n.version ?? "-"),
    n.sessions === null ? "-" : String(n.sessions),
  ]);
  const head = ["NAME", "NETWORK", "STATE", "LAST SEEN", "ADDRESS", "VERSION", "SESSIONS"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  for (const r of [head, ...rows]) {
    console.log(r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd());
  }
  return 0;
}

// ---------------------------------------------------------------- kv

const KV_USAGE = "cw kv set|get|list|delete|watch …";

const kvPath = paths.kv;

/** `cw kv set|get|list|delete|watch`. */
export async function kv(args: string[], home: string): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals } = parse(rest, {
    ns: { type: "string" },
    ttl: { type: "string" },
    "if-version": { type: "string" },
    file: { type: "string" },
    stdin: { type: "boolean" },
    json: { type: "boolean" },
    prefix: { type: "string" },
    limit: { type: "string" },
  });
  const ns = values.ns ?? "default";
  const config = requireRelay(home);
  switch (sub) {
    case "set": {
      const [key, value, ...extra] = positionals;
      if (!key) {
        throw new RelayUsageError(
          "Usage: cw kv set KEY VALUE|--file F|--stdin [--ns NS] [--ttl D] [--if-version V]",
        );
      }
      const sources =
        [value !== undefined, values.file !== undefined, values.stdin === true].filter(Boolean)
          .length;
      if (sources !== 1 || extra.length) {
        throw new RelayUsageError("Give exactly one of VALUE, --file F or --stdin");
      }
      const body = values.file !== undefined
        ? await Deno.readFile(values.file)
        : values.stdin
        ? await readAll(Deno.stdin.readable)
        : new TextEncoder().encode(value);
      const query = values.ttl
        ? `?ttl=${Math.max(1, Math.round(parseDuration(values.ttl) / 1000))}`
        : "";
      const headers: Record<string, string> = { "content-type": "application/octet-stream" };
      if (values["if-version"]) headers["if-match"] = `"${values["if-version"]}"`;
      const res = await relayFetch(config, kvPath(ns, key) + query, {
        method: "PUT",
        body: body as BodyInit,
        headers,
      });
      await throwForStatus(res);
      const out = await res.json();
      console.log(out.version);
      return 0;
    }
    case "get": {
      const [key] = positionals;
      if (!key || positionals.length > 1) {
        throw new RelayUsageError("Usage: cw kv get KEY [--ns NS]");
      }
      const res = await relayFetch(config, kvPath(ns, key));
      if (res.status === 404) {
        await res.body?.cancel();
        console.error(`cw: no key "${key}" in namespace "${ns}"`);
        return 1;
      }
      await throwForStatus(res);
      await writeAll(Deno.stdout, new Uint8Array(await res.arrayBuffer()));
      return 0;
    }
    case "delete": {
      const [key] = positionals;
      if (!key || positionals.length > 1) {
        throw new RelayUsageError("Usage: cw kv delete KEY [--ns NS]");
      }
      const headers: Record<string, string> = {};
      if (values["if-version"]) headers["if-match"] = `"${values["if-version"]}"`;
      const res = await relayFetch(config, kvPath(ns, key), { method: "DELETE", headers });
      if (res.status === 404) {
        await res.body?.cancel();
        console.error(`cw: no key "${key}" in namespace "${ns}"`);
        return 1;
      }
      await throwForStatus(res);
      return 0;
    }
    case "list": {
      const prefix = positionals[0] ?? values.prefix ?? "";
      const all: { key: string; version: string; expiresAt: string | null; size: number }[] = [];
      let cursor: string | null = null;
      do {
        const q = new URLSearchParams({ prefix, limit: "1000", ...(cursor ? { cursor } : {}) });
        const res = await relayFetch(config, `${kvPath(ns)}?${q}`);
        await throwForStatus(res);
        const page = await res.json();
        all.push(...page.entries);
        cursor = page.cursor;
      } while (cursor);
      if (values.json) console.log(JSON.stringify(all));
      else for (const e of all) console.log(e.key);
      return 0;
    }
    case "watch": {
      const key = positionals[0];
      if ((key === undefined) === (values.prefix === undefined)) {
        throw new RelayUsageError("Usage: cw kv watch KEY | --prefix P [--ns NS]");
      }
      const path = key !== undefined
        ? `${kvPath(ns, key)}?watch=1`
        : `${kvPath(ns)}?${new URLSearchParams({ prefix: values.prefix!, watch: "1" })}`;
      const res = await relayFetch(config, path, { headers: { accept: "text/event-stream" } });
      await throwForStatus(res);
      // print each event's data line as one JSON line
      let buf = "";
      for await (const chunk of res.body!.pipeThrough(new TextDecoderStream())) {
        buf += chunk;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const event = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) =>
            l.slice(5).trim()
          ).join("");
          if (/^event:\s*end$/m.test(event)) {
            // the relay ended the watch (it is stopping, or this watcher fell behind)
            let message = "The relay ended this watch";
            try {
              message = JSON.parse(data).message ?? message;
            } catch { /* not JSON: keep the default */ }
            throw new CwError("node_unavailable", message);
          }
          if (data) console.log(data);
        }
      }
      return 0;
    }
    default:
      throw new RelayUsageError(`Unknown kv command "${sub ?? ""}": ${KV_USAGE}`);
  }
}

// ---------------------------------------------------------------- ssh-key

/** `cw ssh-key add [PATH] | list [--json] | remove FINGERPRINT`: keys for the relay's SSH gateway. */
export async function sshKey(args: string[], home: string): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals } = parse(rest, { json: { type: "boolean" } });
  const config = requireRelay(home);
  switch (sub) {
    case "add": {
      if (positionals.length > 1) throw new RelayUsageError("Usage: cw ssh-key add [PATH]");
      const path = positionals[0] ?? `${Deno.env.get("HOME") ?? ""}/.ssh/id_ed25519.pub`;
      let line: string;
      try {
        line = (await Deno.readTextFile(path)).trim();
      } catch (err) {
        throw new CwError("not_found", `Cannot read ${path}: ${(err as Error).message}`);
      }
      if (/PRIVATE KEY/.test(line)) {
        throw new RelayUsageError(`${path} is a private key; give the .pub file`);
      }
      const res = await relayFetch(config, paths.sshKeys, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ key: line.split("\n")[0] }),
      });
      await throwForStatus(res);
      const { fingerprint } = await res.json();
      console.log(fingerprint);
      console.error(
        `Added ${fingerprint}: ssh ${config.node ?? "NODE"}@${
          new URL(config.url).hostname
        } -p 2222`,
      );
      return 0;
    }
    case "list": {
      if (positionals.length) throw new RelayUsageError("Usage: cw ssh-key list [--json]");
      const res = await relayFetch(config, paths.sshKeys);
      await throwForStatus(res);
      const { keys } = await res.json() as {
        keys: { fingerprint: string; line: string; addedBy: string; addedAt: string }[];
      };
      if (values.json) console.log(JSON.stringify(keys));
      else if (keys.length === 0) console.error("No keys.");
      else {
        for (const k of keys) {
          console.log(
            `${printable(k.fingerprint)}  ${
              printable(k.line.split(" ").slice(2).join(" ")) || "-"
            }  added by ${printable(k.addedBy)}`,
          );
        }
      }
      return 0;
    }
    case "remove": {
      const [fp] = positionals;
      if (!fp || positionals.length > 1) {
        throw new RelayUsageError("Usage: cw ssh-key remove FINGERPRINT");
      }
      const res = await relayFetch(config, paths.sshKey(fp), {
        method: "DELETE",
      });
      await throwForStatus(res);
      console.error(`Removed ${fp}.`);
      return 0;
    }
    default:
      throw new RelayUsageError(
        "Usage: cw ssh-key add [PATH] | list [--json] | remove FINGERPRINT",
      );
  }
}

// ---------------------------------------------------------------- web

const WEB_USAGE = "cw web [NODE] [--json] | cw web sessions [--json] | cw web revoke ID";

/**
 * `cw web`: a one-time login link for a browser (2 minutes, once), printed
 * with a QR code for a phone; `cw web sessions`, `cw web revoke ID`.
 */
export async function web(args: string[], home: string): Promise<number> {
  const [sub] = args;
  const rest = sub === "sessions" || sub === "revoke" ? args.slice(1) : args;
  const { values, positionals } = parse(rest, { json: { type: "boolean" } });
  const config = requireRelay(home);
  if (sub === "sessions") {
    if (positionals.length) throw new RelayUsageError(`Usage: ${WEB_USAGE}`);
    const res = await relayFetch(config, paths.webSessions);
    await throwForStatus(res);
    const { sessions } = await res.json() as { sessions: WebSessionRow[] };
    if (values.json) {
      console.log(JSON.stringify(sessions));
      return 0;
    }
    if (sessions.length === 0) {
      console.error("No browser sessions.");
      return 0;
    }
    const head = ["ID", "PRINCIPAL", "SINCE", "LAST USED", "ADDRESS", "BROWSER"];
    const rows = sessions.map((s) => [
      printable(s.id),
      printable(s.principal) + (s.readOnly ? " (read-only)" : ""),
      printable(s.createdAt),
      printable(s.lastUsedAt),
      printable(s.addr),
      printable(s.userAgent.slice(0, 40)),
    ]);
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
    for (const r of [head, ...rows]) {
      console.log(r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd());
    }
    return 0;
  }
  if (sub === "revoke") {
    if (positionals.length !== 1) throw new RelayUsageError(`Usage: ${WEB_USAGE}`);
    const res = await relayFetch(config, paths.webSession(positionals[0]), { method: "DELETE" });
    await throwForStatus(res);
    console.error(`Ended browser session ${printable(positionals[0])}.`);
    return 0;
  }
  if (positionals.length > 1) throw new RelayUsageError(`Usage: ${WEB_USAGE}`);
  const node = positionals[0];
  if (node !== undefined && !RELAY_NAME_RE.test(node)) {
    throw new RelayUsageError(`Invalid node name "${printable(node)}"`);
  }
  const res = await relayFetch(config, paths.webCodes, { method: "POST" });
  await throwForStatus(res);
  const code = await res.json() as WebCode;
  // a node named: the page opens on its sessions
  if (node !== undefined) code.url += `&to=n/${node}`;
  return await printWebCode(code, values.json === true);
}
