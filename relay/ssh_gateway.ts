// ssh2's callback objects are loosely typed; they stay inside this file.
// deno-lint-ignore-file no-explicit-any
/**
 * The relay's SSH gateway: `ssh dev-1@relay -p 2222` lands on node dev-1.
 * The only file that touches npm `ssh2`; its types stay here.
 *
 * The username is the node's name. Authentication: a public key registered
 * with the relay (it reaches the network it was registered in) or listed in
 * the data dir's `authorized_keys` (every network, reloaded when it changes),
 * then a password that is a node credential, a user token or the admin
 * token (its network). A login to a node outside the principal's network
 * fails exactly as a login to a node that does not exist; a read-only
 * principal gets no shell. Each session channel is bridged to a dial-back
 * connection from the node (shared/dialback.ts), and audited.
 */
import ssh2 from "ssh2";
import { createHash } from "node:crypto";
import type { Logger } from "../shared/logger.ts";
import type { AuditLog } from "./audit.ts";
import type { Principal } from "./principals.ts";
import { RateLimiter } from "../shared/rate_limit.ts";
import { CwError } from "../shared/errors.ts";
import { writeFileAtomic } from "../shared/paths.ts";
import {
  addressKey,
  type FdBudget,
  type GuardLimits,
  type GuardStats,
  listenGuarded,
  type Peer,
} from "../shared/guarded_listener.ts";
import {
  allowedEnv,
  decodeDial,
  Dial,
  DIALBACK_ACK_BATCH,
  DIALBACK_MAX_CHUNK,
  DIALBACK_WINDOW,
  type DialbackStart,
  dialCount,
  dialJson,
  encodeDial,
  FORWARD_MAX_HOST,
} from "../shared/dialback.ts";
import { parseSignal } from "../shared/signals.ts";
import {
  SSH_FORWARD_CONNECT_MS,
  SSH_MAX_COMMAND,
  SSH_MAX_ENV_BYTES,
  SSH_MAX_ENV_VALUE,
  SSH_MAX_ENV_VARS,
  SSH_MAX_FORWARDS,
  SSH_MAX_SESSIONS,
  SSH_MAX_TERM_NAME,
  SSH_MAX_TERM_SIZE,
} from "./limits.ts";

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

/** A key the gateway accepts, and the network it reaches (null: every network). */
export interface GatewayKey extends PublicKey {
  network: string | null;
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
    privateKey = newHostKey();
    writeFileAtomic(path, privateKey, 0o600);
  }
  return describeHostKey(privateKey, path);
}

/** A new ed25519 host key (OpenSSH private key text). */
export function newHostKey(): string {
  // about 1 in 256 ed25519 keys from ssh2 come out malformed here (a 31-byte public key)
  // and would never parse again: keep only a key that parses back
  for (let tries = 1;; tries++) {
    const privateKey = utils.generateKeyPairSync("ed25519").private;
    const check = utils.parseKey(privateKey);
    if (!(check instanceof Error) && !Array.isArray(check)) return privateKey;
    if (tries === 10) throw new CwError("internal", "Cannot generate an SSH host key");
  }
}

/** A host key with its public line and fingerprint; throws when it does not parse. */
export function describeHostKey(
  privateKey: string,
  from = "the store",
): { privateKey: string; publicLine: string; fingerprint: string } {
  const parsed = utils.parseKey(privateKey);
  if (parsed instanceof Error || Array.isArray(parsed)) {
    throw new CwError("internal", `Cannot read the SSH host key in ${from}`);
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
  audit: AuditLog;
  /** Keys allowed to log in (registered + authorized_keys). */
  publicKeys(): Promise<GatewayKey[]>;
  /** The principal of a password (node credential, user token, admin token), or null. */
  passwordPrincipal(password: string): Promise<Principal | null>;
  /** Ties a logged-in connection to its principal, so that revoking it cuts the connection. */
  holdSshConnection(peer: Peer, principal: Principal): void;
  /**
   * Opens a dial-back connection from node `name` for `principal`; throws
   * CwError `not_found` (also for a node outside its network),
   * `node_offline` or `timeout` with a message for the user.
   */
  dialback(name: string, principal: Principal): Promise<WebSocket>;
  /** Whether the node said it speaks a dial-back feature (e.g. "stdin-ack"). */
  speaks(name: string, feature: string): boolean;
  /**
   * Whether `ssh -L` to node `name` is allowed by its network's settings
   * (`cw relay network set NAME --allow-forwarding`); absent: never.
   */
  forwardingAllowed?(name: string): Promise<boolean>;
  /** The process's descriptors for connections, shared with the HTTPS listener. */
  budget: FdBudget;
  /** Deadlines and caps of the SSH port (the handshake mark is a successful login). */
  limits: GuardLimits;
}

/**
 * Starts the gateway on `hostname:port`. ssh2 listens on a private loopback
 * port behind a guarded front (shared/guarded_listener.ts), which holds the
 * deadlines and caps; ssh2 sees the real client through the front's peer.
 */
export function startSshGateway(
  deps: GatewayDeps,
  hostname: string,
  port: number,
): Promise<{ port: number; stats(): GuardStats; close(): Promise<void> }> {
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
    const peer: Peer | undefined = front?.peer(Number(info?.port));
    if (!peer) {
      // not through the public port: nobody but the front may use the private one
      client._sock?.destroy?.();
      return;
    }
    const addr = peer.address;
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
    let principal: Principal | null = null;
    const loggedIn = (p: Principal, how: string) => {
      deps.logger.info(
        `ssh: ${addr} logged in to ${printable(user)} ${
          how === "key" ? `with key ${p.name}` : `with a password as ${p.id}`
        } (network ${p.network ?? "*"})`,
      );
      principal = p;
      peer.trust();
      deps.holdSshConnection(peer, p);
    };
    client.on("authentication", async (ctx: any) => {
      user = String(ctx.username ?? "").slice(0, 64);
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
              loggedIn({
                kind: "key",
                id: `key:${match.fingerprint}`,
                name: match.fingerprint,
                network: match.network,
                readOnly: false,
              }, "key");
              return ctx.accept();
            }
          }
        } else if (ctx.method === "password") {
          const p = await deps.passwordPrincipal(String(ctx.password ?? ""));
          if (p) {
            loggedIn(p, "password");
            return ctx.accept();
          }
        }
      } catch (err) {
        deps.logger.warn(`ssh: authentication error: ${(err as Error).message}`);
      }
      // failures are limited per address, but a valid login always gets in: an attacker
      // behind the same NAT must not lock out its users
      if (ctx.method !== "none" && !failures.take(addressKey(addr))) {
        deps.logger.warn(`ssh: too many failed logins from ${addr}; closing`);
        return ctx.reject([]);
      }
      if (ctx.method !== "none") {
        deps.logger.warn(`ssh: failed ${ctx.method} login to ${JSON.stringify(user)} from ${addr}`);
        if (ctx.method !== "publickey" || ctx.signature) {
          deps.audit.record({
            event: "ssh_login_failed",
            principal: null,
            network: null,
            node: user,
            addr,
            method: String(ctx.method).slice(0, 32),
          });
        }
      }
      ctx.reject(["publickey", "password"]);
    });
    client.on("ready", () => {
      if (!principal) return;
      client.on("session", sessions(user, principal, addr, deps));
      // `ssh -L` (direct-tcpip); -R, -D's remote side and agent forwarding stay refused (ssh2
      // refuses requests nobody listens for)
      const who = { node: user, principal, addr };
      let forwards = 0;
      client.on("tcpip", (accept: any, reject: any, info: any) => {
        if (forwards >= SSH_MAX_FORWARDS) {
          deps.logger.warn(
            `ssh: refused a forward to "${user}": ${forwards} open on one connection`,
          );
          return reject?.();
        }
        forwards++;
        const done = () => forwards--;
        // the count holds until the forward's channel closes (or it never opened)
        const counted = (ch: any) => {
          if (ch) ch.once("close", done);
          else done();
          return ch;
        };
        forwardChannel(
          () => counted(accept?.()),
          () => {
            done();
            reject?.();
          },
          who,
          info,
          deps,
        ).catch((err) => {
          deps.logger.warn(`ssh: forward to "${user}" failed: ${(err as Error)?.message}`);
          try {
            reject?.();
          } catch { /* gone */ }
        });
      });
    });
    client.on("error", () => {});
  });
  let front: ReturnType<typeof listenGuarded> | null = null;
  return new Promise((resolve, reject) => {
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const backend = server.address().port;
      try {
        front = listenGuarded({
          hostname,
          port,
          name: "ssh",
          serverSpeaksFirst: true,
          limits: deps.limits,
          budget: deps.budget,
          logger: deps.logger,
          backendPort: () => backend,
        });
      } catch (err) {
        server.close();
        return reject(err);
      }
      const f = front;
      resolve({
        port: f.addr.port,
        stats: () => f.stats(),
        close: () =>
          new Promise<void>((r) => {
            void f.close();
            server.close(() => r());
          }),
      });
    });
  });
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && a.every((x, i) => x === b[i]);
}

/**
 * The `session` channel listener of one SSH connection: at most
 * {@link SSH_MAX_SESSIONS} open at once, as sshd's MaxSessions; more are refused.
 */
function sessions(
  node: string,
  principal: Principal,
  addr: string,
  deps: GatewayDeps,
): (accept: any, reject: any) => void {
  let open = 0;
  return (accept, reject) => {
    if (open >= SSH_MAX_SESSIONS) {
      deps.logger.warn(`ssh: refused a session to "${node}": ${open} open on one connection`);
      return reject?.();
    }
    const sess = accept?.();
    if (!sess) return;
    open++;
    sess.once("close", () => open--);
    session(sess, { node, principal, addr }, deps);
  };
}

/**
 * One session channel: its requests (pty, env, window-change, signal) are
 * checked and capped (relay/limits.ts), then shell or exec bridges it to the
 * node. A request that fails is refused and logged; the relay goes on.
 */
function session(sess: any, who: Who, deps: GatewayDeps): void {
  const node = who.node;
  let pty: DialbackStart["pty"] = null;
  const env: Record<string, string> = {};
  let envBytes = 0;
  let started = false;
  let ws: WebSocket | null = null;
  const toNode = (msg: Uint8Array) => {
    if (ws?.readyState === WebSocket.OPEN) ws.send(msg);
  };
  /** A request listener that cannot throw into ssh2: a failure refuses that request only. */
  const guard =
    (what: string, handle: (accept: any, reject: any, info: any) => void) =>
    (accept: any, reject: any, info: any) => {
      try {
        handle(accept, reject, info);
      } catch (err) {
        deps.logger.warn(`ssh: ${what} request to "${node}" failed: ${(err as Error)?.message}`);
        try {
          reject?.();
        } catch {
          // the channel is gone: nothing to refuse
        }
      }
    };
  sess.on(
    "pty",
    guard("pty", (accept, reject, info) => {
      const term = String(info?.term ?? "");
      const cols = termSize(info?.cols || 80);
      const rows = termSize(info?.rows || 24);
      if (started || term.length > SSH_MAX_TERM_NAME || !cols || !rows) return reject?.();
      pty = { term: term || "xterm-256color", cols, rows };
      accept?.();
    }),
  );
  sess.on(
    "env",
    guard("env", (accept, reject, info) => {
      const key = String(info?.key ?? "");
      const val = String(info?.val ?? "");
      if (started || !allowedEnv(key) || utf8Length(val, SSH_MAX_ENV_VALUE) > SSH_MAX_ENV_VALUE) {
        return reject?.();
      }
      const known = Object.hasOwn(env, key);
      const grows = utf8Length(key) + utf8Length(val) -
        (known ? utf8Length(key) + utf8Length(env[key]) : 0);
      if (!known && Object.keys(env).length >= SSH_MAX_ENV_VARS) return reject?.();
      if (envBytes + grows > SSH_MAX_ENV_BYTES) return reject?.();
      env[key] = val;
      envBytes += grows;
      accept?.();
    }),
  );
  sess.on(
    "window-change",
    guard("window-change", (accept, reject, info) => {
      const cols = termSize(info?.cols);
      const rows = termSize(info?.rows);
      if (!cols || !rows) return reject?.();
      accept?.();
      if (pty && !ws) Object.assign(pty, { cols, rows }); // the node is not there yet: START takes it
      toNode(encodeDial(Dial.RESIZE, { cols, rows }));
    }),
  );
  sess.on("eow", guard("eow", () => toNode(encodeDial(Dial.EOW))));
  sess.on(
    "signal",
    guard("signal", (accept, reject, info) => {
      const name = String(info?.name ?? "");
      let signal: string;
      try {
        signal = parseSignal(name.slice(0, 32));
      } catch {
        return reject?.(); // not a signal cw knows, as sshd refuses one
      }
      accept?.();
      toNode(encodeDial(Dial.SIGNAL, { signal }));
    }),
  );
  const run = (command: string | null, accept: any, reject: any, sftp = false) => {
    if (started || (command !== null && utf8Length(command, SSH_MAX_COMMAND) > SSH_MAX_COMMAND)) {
      return reject?.();
    }
    const channel = accept?.();
    if (!channel) return; // closed meanwhile, or it runs something already
    started = true;
    const start: DialbackStart = sftp
      ? { command: null, pty: null, env, subsystem: "sftp", readOnly: who.principal.readOnly }
      : { command, pty, env };
    bridge(channel, who, start, deps).then(
      (socket) => ws = socket,
      (err) => deps.logger.warn(`ssh: session on "${node}" failed: ${(err as Error)?.message}`),
    );
  };
  sess.on("shell", guard("shell", (accept, reject) => run(null, accept, reject)));
  // sftp (and scp, which speaks SFTP since OpenSSH 9): the node's SFTP server
  sess.on(
    "subsystem",
    guard("subsystem", (accept, reject, info) => {
      if (String(info?.name ?? "") !== "sftp") return reject?.();
      run(null, accept, reject, true);
    }),
  );
  sess.on(
    "exec",
    guard("exec", (accept, reject, info) => run(String(info?.command ?? ""), accept, reject)),
  );
}

/** Whose session it is, and where to. */
interface Who {
  node: string;
  principal: Principal;
  addr: string;
}

/** A terminal size from a client: an integer in 1..{@link SSH_MAX_TERM_SIZE}, else null. */
function termSize(n: unknown): number | null {
  return Number.isInteger(n) && (n as number) >= 1 && (n as number) <= SSH_MAX_TERM_SIZE
    ? n as number
    : null;
}

const utf8 = new TextEncoder();

/** Bytes of `s` in UTF-8, or Infinity past `max` (a long string is not encoded to learn it). */
function utf8Length(s: string, max = 1 << 20): number {
  return s.length > max ? Infinity : utf8.encode(s).byteLength;
}

/**
 * Connects a channel to the node; resolves with the dial-back socket once it
 * is up, or null (never rejects). Every listener here catches its own
 * failure: a node that breaks the protocol ends its session, logged in one
 * line, and nothing else.
 */
async function bridge(
  channel: any,
  who: Who,
  start: DialbackStart,
  deps: GatewayDeps,
  connected: WebSocket | null = null,
): Promise<WebSocket | null> {
  const node = who.node;
  let ws: WebSocket | null = connected;
  /** A forward (`ssh -L`): a TCP stream, with no stderr and no exit status. */
  const tcp = start.forward != null;
  let channelClosed = false;
  /** The channel got its exit status (or an error): nothing more goes to it. */
  let ended = false;
  const warn = (message: string) => deps.logger.warn(`ssh: session on "${node}": ${message}`);
  // an 'error' without a listener would be thrown out of ssh2's handlers
  channel.on("error", (err: Error) => warn(`channel error: ${err?.message}`));
  channel.stderr?.on?.("error", (err: Error) => warn(`channel error: ${err?.message}`));
  channel.on("close", () => {
    channelClosed = true;
    ws?.close();
  });
  const fail = (message: string) => {
    if (ended || channelClosed) return;
    ended = true;
    try {
      if (!tcp) {
        channel.stderr.write(`cw: ${message}\r\n`);
        channel.exit(1);
      }
      channel.end();
    } catch (err) {
      warn(`cannot tell the client: ${(err as Error)?.message}`);
    }
  };
  // read-only: SFTP in the node's read-only mode, nothing else
  if (who.principal.readOnly && start.subsystem !== "sftp") {
    fail(`${who.principal.id} is read-only: no shell or command through the SSH gateway`);
    return null;
  }
  if (!ws) {
    try {
      ws = await deps.dialback(node, who.principal);
    } catch (err) {
      fail(err instanceof CwError ? err.message : `cannot reach node "${node}"`);
      return null;
    }
  }
  const audit = {
    principal: who.principal.id,
    network: who.principal.network,
    node,
    addr: who.addr,
  };
  const started = Date.now();
  const bytes = { in: 0, out: 0 };
  deps.audit.record(
    tcp
      ? { ...audit, event: "forward_start", to: `${start.forward!.host}:${start.forward!.port}` }
      : {
        ...audit,
        event: "ssh_start",
        command: start.command === null ? null : start.command.slice(0, 200),
        subsystem: start.subsystem ?? undefined,
        readOnly: start.subsystem === "sftp" ? start.readOnly === true : undefined,
        pty: start.pty !== null,
      },
  );
  let exit: { exitCode: number | null; signal: string | null } = { exitCode: null, signal: null };
  ws.addEventListener("close", () =>
    deps.audit.record({
      ...audit,
      event: tcp ? "forward_end" : "ssh_end",
      ...(tcp ? { to: `${start.forward!.host}:${start.forward!.port}` } : exit),
      subsystem: start.subsystem ?? undefined,
      bytesIn: bytes.in,
      bytesOut: bytes.out,
      seconds: Math.round((Date.now() - started) / 100) / 10,
    }), { once: true });
  const socket = ws;
  // an older node never acknowledges stdin: do not hold its client back forever
  const stdinFlow = deps.speaks(node, "stdin-ack");
  if (channelClosed) {
    socket.close(); // the client left while the node dialled back
    return null;
  }
  /** The node broke the protocol: this session ends, nothing else. */
  const broken = (why: string) => {
    warn(`bad dial-back message (${why}); closing`);
    try {
      socket.close(4008, "bad message");
    } catch {
      // closed already
    }
    fail(`the connection to node "${node}" failed`);
  };
  const toNode = (msg: Uint8Array) => {
    if (socket.readyState === WebSocket.OPEN) socket.send(msg);
  };

  // output: acknowledged once the channel took it, so a client that stops reading stops the node
  let outstanding = 0; // received from the node and not acknowledged to it
  let taken = 0;
  let pendingAck = 0;
  /** Counts bytes the channel took; acknowledges them in batches (DIALBACK_ACK_BATCH). */
  const ack = (n: number) => {
    taken += n;
    if (taken < DIALBACK_ACK_BATCH || socket.readyState !== WebSocket.OPEN) return;
    socket.send(encodeDial(Dial.ACK, taken));
    outstanding -= taken;
    taken = 0;
  };
  const write = (stream: any, data: Uint8Array) => {
    if (stream.write(data)) ack(data.byteLength);
    else pendingAck += data.byteLength;
  };
  // stdin: at most the window unacknowledged; beyond it the channel pauses, and ssh2 then
  // stops granting the client window: a program that does not read holds its client back
  let stdinUnacked = 0;
  let stdinPaused = false;

  const onMessage = (data: unknown) => {
    if (ended || channelClosed) return;
    if (!(data instanceof ArrayBuffer)) throw new RangeError("a text message");
    const { type, payload } = decodeDial(new Uint8Array(data));
    switch (type) {
      case Dial.STDOUT:
      case Dial.STDERR:
        if (payload.byteLength > DIALBACK_MAX_CHUNK) throw new RangeError("output too large");
        outstanding += payload.byteLength;
        if (outstanding > DIALBACK_WINDOW + DIALBACK_MAX_CHUNK) {
          throw new RangeError("output beyond the window");
        }
        bytes.out += payload.byteLength;
        if (tcp && type === Dial.STDERR) ack(payload.byteLength); // a stream has no stderr
        else write(type === Dial.STDOUT ? channel : channel.stderr, payload);
        break;
      case Dial.EXIT:
      case Dial.ERROR: {
        const v = dialJson(payload);
        ended = true;
        if (tcp) {
          channel.end(); // the destination closed
          break;
        }
        if (type === Dial.ERROR) channel.stderr.write(`cw: ${printable(v.message)}\r\n`);
        const code = Number.isInteger(v.code) && v.code as number >= 0 && v.code as number <= 255
          ? v.code as number
          : 1;
        exit = {
          exitCode: code,
          signal: typeof v.signal === "string" ? v.signal.slice(0, 16) : null,
        };
        if (typeof v.signal === "string" && v.signal.length <= 16) {
          try {
            channel.exit(v.signal.replace(/^SIG/, ""), false, "");
          } catch {
            channel.exit(code); // a signal SSH has no name for (ssh2 refuses it): the code, then
          }
        } else channel.exit(code);
        channel.end();
        break;
      }
      case Dial.STDIN_ACK: {
        const n = dialCount(payload);
        if (n > stdinUnacked) throw new RangeError("STDIN_ACK for more than was sent");
        stdinUnacked -= n;
        if (stdinPaused && stdinUnacked < DIALBACK_WINDOW) {
          stdinPaused = false;
          channel.resume();
        }
        break;
      }
    }
  };
  socket.addEventListener("message", (e) => {
    try {
      onMessage(e.data);
    } catch (err) {
      broken((err as Error)?.message ?? String(err));
    }
  });
  socket.addEventListener("close", () => fail(`the connection to node "${node}" was lost`));

  /** A channel listener that cannot throw into ssh2. */
  const guarded = <A extends unknown[]>(what: string, fn: (...args: A) => void) => (...args: A) => {
    try {
      fn(...args);
    } catch (err) {
      warn(`${what}: ${(err as Error)?.message}`);
      socket.close();
    }
  };
  channel.on(
    "drain",
    guarded("drain", () => {
      if (pendingAck > 0) ack(pendingAck);
      pendingAck = 0;
    }),
  );
  channel.on(
    "data",
    guarded("stdin", (data: Uint8Array) => {
      if (socket.readyState !== WebSocket.OPEN) return;
      bytes.in += data.byteLength;
      for (let i = 0; i < data.byteLength; i += DIALBACK_MAX_CHUNK) {
        socket.send(encodeDial(Dial.STDIN, data.subarray(i, i + DIALBACK_MAX_CHUNK)));
      }
      if (!stdinFlow) return;
      stdinUnacked += data.byteLength;
      if (!stdinPaused && stdinUnacked >= DIALBACK_WINDOW) {
        stdinPaused = true;
        channel.pause();
      }
    }),
  );
  channel.on("end", guarded("eof", () => toNode(encodeDial(Dial.EOF))));
  try {
    socket.binaryType = "arraybuffer";
    // a forward's START went before the channel was accepted (forwardChannel)
    if (!connected) {
      socket.send(encodeDial(Dial.START, start as unknown as Record<string, unknown>));
    }
  } catch (err) {
    broken(`cannot start: ${(err as Error)?.message}`);
  }
  return socket;
}

/**
 * `ssh -L` (a `direct-tcpip` channel): allowed only for a writer, by the
 * node's network (relay) and by the node itself (its `forwarding` setting);
 * the channel is accepted once the node connected to the destination, so a
 * refusal reaches the client as an open failure. Each forward is audited.
 */
async function forwardChannel(
  accept: any,
  reject: any,
  who: Who,
  info: any,
  deps: GatewayDeps,
): Promise<void> {
  const host = String(info?.destIP ?? "");
  const port = Number(info?.destPort);
  const audit = {
    principal: who.principal.id,
    network: who.principal.network,
    node: who.node,
    addr: who.addr,
    to: `${host.slice(0, 255)}:${port}`,
  };
  const refuse = (reason: string) => {
    deps.audit.record({ ...audit, event: "forward_refused", reason });
    deps.logger.info(`ssh: forward to ${audit.to} on "${who.node}" refused: ${reason}`);
    reject?.();
  };
  if (
    !host || host.length > FORWARD_MAX_HOST || !Number.isInteger(port) || port < 1 || port > 65535
  ) {
    return refuse("bad destination");
  }
  if (who.principal.readOnly) return refuse(`${who.principal.id} is read-only`);
  if (!deps.forwardingAllowed || !(await deps.forwardingAllowed(who.node).catch(() => false))) {
    return refuse("the node's network does not allow port forwarding");
  }
  let ws: WebSocket;
  try {
    ws = await deps.dialback(who.node, who.principal);
  } catch (err) {
    return refuse(err instanceof CwError ? err.message : "cannot reach the node");
  }
  ws.binaryType = "arraybuffer";
  const start: DialbackStart = { command: null, pty: null, env: {}, forward: { host, port } };
  ws.send(encodeDial(Dial.START, start as unknown as Record<string, unknown>));
  // the node's first word: READY, or why not (STDERR, then EXIT); the bridge takes over after
  let off = () => {};
  const answer = await new Promise<{ ready: boolean; why: string }>((resolve) => {
    let why = "";
    // a destination that never answers (a dropped SYN) is given up, not waited on for minutes
    const timer = setTimeout(
      () =>
        resolve({ ready: false, why: `no connection within ${SSH_FORWARD_CONNECT_MS / 1000} s` }),
      SSH_FORWARD_CONNECT_MS,
    );
    const onMessage = (e: MessageEvent) => {
      if (!(e.data instanceof ArrayBuffer)) return resolve({ ready: false, why: "bad message" });
      try {
        const { type, payload } = decodeDial(new Uint8Array(e.data));
        if (type === Dial.READY) return resolve({ ready: true, why });
        if (type === Dial.STDERR) why = (why + new TextDecoder().decode(payload)).slice(0, 300);
        else if (type === Dial.EXIT || type === Dial.ERROR) resolve({ ready: false, why });
      } catch {
        resolve({ ready: false, why: "bad message" });
      }
    };
    ws.addEventListener("message", onMessage);
    ws.addEventListener("close", () => resolve({ ready: false, why: why || "the node left" }), {
      once: true,
    });
    off = () => {
      clearTimeout(timer);
      ws.removeEventListener("message", onMessage);
    };
  });
  off();
  if (!answer.ready) {
    ws.close();
    return refuse(printable(answer.why) || "the node refused");
  }
  const channel = accept?.();
  if (!channel) return ws.close();
  await bridge(channel, who, start, deps, ws);
}

/** Text from a node for the user's terminal: one bounded line, no control characters. */
function printable(v: unknown): string {
  return Array.from(String(v ?? "").slice(0, 1000), (c) => c < " " || c === "\x7f" ? " " : c)
    .join("");
}
