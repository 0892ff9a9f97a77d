// ssh2's callback objects are loosely typed; they stay inside this file.
// deno-lint-ignore-file no-explicit-any
/**
 * The relay's SSH gateway: `ssh dev-1@relay -p 2222` lands on node dev-1.
 * The only file that touches npm `ssh2`; its types stay here.
 *
 * The username is the node's name. Authentication: a public key registered
 * with the relay or listed in the data dir's `authorized_keys` (reloaded when
 * it changes), then a password that is a node credential or the admin token.
 * Each session channel is bridged to a dial-back connection from the node
 * (shared/dialback.ts).
 */
import ssh2 from "ssh2";
import { createHash } from "node:crypto";
import type { Logger } from "../shared/logger.ts";
import { RateLimiter } from "../shared/rate_limit.ts";
import { CwError } from "../shared/errors.ts";
import { writeFileAtomic } from "../shared/paths.ts";
import {
  allowedEnv,
  decodeDial,
  Dial,
  DIALBACK_ACK_BATCH,
  DIALBACK_MAX_CHUNK,
  type DialbackStart,
  dialJson,
  encodeDial,
} from "../shared/dialback.ts";

const { Server, utils } = ssh2;

/** A parsed public key. */
export interface PublicKey {
  algo: string;
  /** The SSH wire blob. */
  blob: Uint8Array;
  /** `SHA256:…` as `ssh-keygen -lf` prints it. */
  fingerprint: string;
  /** The normalised `authorized_keys` line. */
  line: string;
}

function fingerprintOf(blob: Uint8Array): string {
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

/** Parses one `authorized_keys` line (options before the key are ignored); null if not a key. */
export function parsePublicKey(line: string): PublicKey | null {
  const m = /(?:^|\s)((?:ssh|ecdsa|sk)-[A-Za-z0-9@.-]+)\s+([A-Za-z0-9+/=]+)(?:\s+(.*))?$/.exec(
    line.trim(),
  );
  if (!m) return null;
  const parsed = utils.parseKey(`${m[1]} ${m[2]}`);
  if (parsed instanceof Error || Array.isArray(parsed)) return null;
  const blob = new Uint8Array(parsed.getPublicSSH());
  const comment = (m[3] ?? "").replace(/[^\x20-\x7e]/g, "").slice(0, 200);
  return {
    algo: parsed.type,
    blob,
    fingerprint: fingerprintOf(blob),
    line: `${m[1]} ${m[2]}${comment ? ` ${comment}` : ""}`,
  };
}

/** The gateway's persistent ed25519 host key, generated once (0600). */
export function loadOrCreateHostKey(
  path: string,
): { privateKey: string; publicLine: string; fingerprint: string } {
  let privateKey: string;
  try {
    privateKey = Deno.readTextFileSync(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
    // about 1 in 256 ed25519 keys from ssh2 come out malformed here (a 31-byte public key)
    // and would never parse again: save only a key that parses back
    for (let tries = 1;; tries++) {
      privateKey = utils.generateKeyPairSync("ed25519").private;
      const check = utils.parseKey(privateKey);
      if (!(check instanceof Error) && !Array.isArray(check)) break;
      if (tries === 10) throw new CwError("internal", "Cannot generate an SSH host key");
    }
    writeFileAtomic(path, privateKey, 0o600);
  }
  const parsed = utils.parseKey(privateKey);
  if (parsed instanceof Error || Array.isArray(parsed)) {
    throw new CwError("internal", `Cannot read the SSH host key ${path}`);
  }
  const blob = new Uint8Array(parsed.getPublicSSH());
  return {
    privateKey,
    publicLine: `${parsed.type} ${btoa(String.fromCharCode(...blob))}`,
    fingerprint: fingerprintOf(blob),
  };
}

/** What the gateway needs from the relay. */
export interface GatewayDeps {
  hostKey: string;
  logger: Logger;
  /** Keys allowed to log in (registered + authorized_keys). */
  publicKeys(): Promise<PublicKey[]>;
  /** Whether a password is a node credential or the admin token. */
  checkPassword(password: string): Promise<boolean>;
  /**
   * Opens a dial-back connection from node `name`; throws CwError
   * `not_found`, `node_offline` or `timeout` with a message for the user.
   */
  dialback(name: string): Promise<WebSocket>;
}

/** Starts the gateway on `hostname:port`. */
export function startSshGateway(
  deps: GatewayDeps,
  hostname: string,
  port: number,
): Promise<{ port: number; close(): Promise<void> }> {
  const failures = new RateLimiter(30, 20);
  const server = new Server({
    hostKeys: [deps.hostKey],
    // OpenSSH's client sends eow@openssh.com (`ssh … cmd | head`) only to a server that calls
    // itself OpenSSH; without it such a pipeline never ends and its program runs on
    ident: "OpenSSH_9.9 cw-relay",
    // ssh2's chacha20-poly1305 makes three node:crypto ciphers per packet and never finishes
    // them: on Deno their native memory grows with every byte sent (~50 MB per GB)
    algorithms: { cipher: { remove: "chacha20-poly1305@openssh.com" } },
  }, (client: any, info: any) => {
    const addr: string = info?.ip ?? "unknown";
    client._sock?.setNoDelay?.(true); // without it every round trip waits ~40 ms
    // ssh2 drops channel requests it does not know: hand OpenSSH's eow@openssh.com to the session
    const handlers = client._protocol?._handlers;
    const onRequest = handlers?.CHANNEL_REQUEST;
    if (onRequest) {
      handlers.CHANNEL_REQUEST = (...args: any[]) => {
        if (args[2] === "eow@openssh.com") client._chanMgr?.get(args[1])?.emit?.("eow");
        else onRequest(...args);
      };
    }
    let user = "";
    client.on("authentication", async (ctx: any) => {
      user = ctx.username;
      if (failures.exhausted(addr)) return ctx.reject([]);
      try {
        if (ctx.method === "publickey") {
          const keys = await deps.publicKeys();
          const blob = new Uint8Array(ctx.key.data);
          const match = keys.find((k) => k.algo === ctx.key.algo && equal(k.blob, blob));
          if (match) {
            if (!ctx.signature) return ctx.accept(); // the client asks whether this key would do
            const parsed = utils.parseKey(match.line);
            if (
              !(parsed instanceof Error) && !Array.isArray(parsed) &&
              parsed.verify(ctx.blob, ctx.signature, ctx.hashAlgo)
            ) {
              deps.logger.info(`ssh: ${addr} logged in to ${user} with key ${match.fingerprint}`);
              return ctx.accept();
            }
          }
        } else if (ctx.method === "password") {
          if (await deps.checkPassword(ctx.password)) {
            deps.logger.info(`ssh: ${addr} logged in to ${user} with a password`);
            return ctx.accept();
          }
        }
      } catch (err) {
        deps.logger.warn(`ssh: authentication error: ${(err as Error).message}`);
      }
      if (ctx.method !== "none") {
        failures.take(addr);
        deps.logger.warn(`ssh: failed ${ctx.method} login to ${JSON.stringify(user)} from ${addr}`);
      }
      ctx.reject(["publickey", "password"]);
    });
    client.on("ready", () => {
      client.on("session", (accept: any) => session(accept(), user, deps));
    });
    client.on("error", () => {});
  });
  return new Promise((resolve, reject) => {
    server.on("error", reject);
    server.listen(port, hostname, () => {
      const bound = server.address().port;
      resolve({
        port: bound,
        close: () => new Promise<void>((r) => server.close(() => r())),
      });
    });
  });
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && a.every((x, i) => x === b[i]);
}

function session(sess: any, node: string, deps: GatewayDeps): void {
  let pty: DialbackStart["pty"] = null;
  const env: Record<string, string> = {};
  let ws: WebSocket | null = null;
  sess.on("pty", (accept: any, _reject: any, info: any) => {
    pty = {
      term: String(info.term ?? "xterm-256color"),
      cols: info.cols || 80,
      rows: info.rows || 24,
    };
    accept?.();
  });
  sess.on("env", (accept: any, reject: any, info: any) => {
    if (allowedEnv(info.key)) {
      env[info.key] = String(info.val);
      accept?.();
    } else reject?.();
  });
  sess.on("window-change", (accept: any, _reject: any, info: any) => {
    accept?.();
    ws?.send(encodeDial(Dial.RESIZE, { cols: info.cols, rows: info.rows }));
  });
  sess.on("eow", () => ws?.send(encodeDial(Dial.EOW)));
  sess.on("signal", (accept: any, _reject: any, info: any) => {
    accept?.();
    ws?.send(encodeDial(Dial.SIGNAL, { signal: String(info.name) }));
  });
  const run = (command: string | null) => (accept: any) => {
    const channel = accept();
    bridge(channel, node, { command, pty, env }, deps).then((socket) => ws = socket);
  };
  sess.on("shell", run(null));
  sess.on("exec", (accept: any, _reject: any, info: any) => run(String(info.command))(accept));
}

/** Connects a channel to the node; resolves with the dial-back socket once it is up. */
async function bridge(
  channel: any,
  node: string,
  start: DialbackStart,
  deps: GatewayDeps,
): Promise<WebSocket | null> {
  const fail = (message: string) => {
    channel.stderr.write(`cw: ${message}\r\n`);
    channel.exit(1);
    channel.end();
  };
  let ws: WebSocket;
  try {
    ws = await deps.dialback(node);
  } catch (err) {
    fail(err instanceof CwError ? err.message : `cannot reach node "${node}"`);
    return null;
  }
  ws.binaryType = "arraybuffer";
  ws.send(encodeDial(Dial.START, start as unknown as Record<string, unknown>));
  let pendingAck = 0;
  let taken = 0;
  /** Counts bytes the channel took; acknowledges them in batches (DIALBACK_ACK_BATCH). */
  const ack = (n: number) => {
    taken += n;
    if (taken < DIALBACK_ACK_BATCH || ws.readyState !== WebSocket.OPEN) return;
    ws.send(encodeDial(Dial.ACK, taken));
    taken = 0;
  };
  channel.on("drain", () => {
    if (pendingAck > 0) ack(pendingAck);
    pendingAck = 0;
  });
  const write = (stream: any, data: Uint8Array) => {
    // acknowledged once the channel took it, so a client that stops reading stops the node
    if (stream.write(data)) ack(data.byteLength);
    else pendingAck += data.byteLength;
  };
  let exited = false;
  ws.addEventListener("message", (e) => {
    if (!(e.data instanceof ArrayBuffer)) return;
    const { type, payload } = decodeDial(new Uint8Array(e.data));
    if (type === Dial.STDOUT) write(channel, payload);
    else if (type === Dial.STDERR) write(channel.stderr, payload);
    else if (type === Dial.EXIT || type === Dial.ERROR) {
      const v = dialJson(payload);
      exited = true;
      if (type === Dial.ERROR) channel.stderr.write(`cw: ${v.message}\r\n`);
      if (typeof v.signal === "string") channel.exit(v.signal.replace(/^SIG/, ""), false, "");
      else channel.exit(typeof v.code === "number" ? v.code : 1);
      channel.end();
    }
  });
  ws.addEventListener("close", () => {
    if (!exited) fail(`the connection to node "${node}" was lost`);
  });
  channel.on("data", (data: Uint8Array) => {
    for (let i = 0; i < data.byteLength; i += DIALBACK_MAX_CHUNK) {
      if (ws.readyState === WebSocket.OPEN) {
        ws.send(encodeDial(Dial.STDIN, data.subarray(i, i + DIALBACK_MAX_CHUNK)));
      }
    }
  });
  channel.on("end", () => ws.readyState === WebSocket.OPEN && ws.send(encodeDial(Dial.EOF)));
  channel.on("close", () => ws.close());
  return ws;
}
