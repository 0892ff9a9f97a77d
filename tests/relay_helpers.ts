/**
 * Helpers for relay tests: a CA + leaf certificate made per run with
 * openssl, and real `cw relay` processes on loopback.
 */
import assert from "node:assert/strict";
import { CW_ARGV, CwHome, waitFor, within } from "./helpers.ts";
import { Mux } from "../shared/mux.ts";

/** Paths of a test PKI. */
export interface TestCerts {
  ca: string;
  cert: string;
  key: string;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command("openssl", { args, cwd, stdout: "null", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(`openssl ${args[0]} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/**
 * Makes a CA and a leaf for 127.0.0.1/localhost/::1 in `dir`. (Deno rejects a
 * self-signed CA:TRUE certificate used as the server's own, hence two.)
 */
export async function makeCerts(dir: string): Promise<TestCerts> {
  await Deno.mkdir(dir, { recursive: true });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  await openssl([
    "req",
    "-x509",
    ...ec,
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "2",
    "-subj",
    "/CN=cw test CA",
  ], dir);
  await openssl(
    ["req", ...ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost"],
    dir,
  );
  await Deno.writeTextFile(
    `${dir}/ext.cnf`,
    "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
  );
  await openssl(
    [
      "x509",
      "-req",
      "-in",
      "leaf.csr",
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      "leaf.pem",
      "-days",
      "2",
      "-extfile",
      "ext.cnf",
    ],
    dir,
  );
  return { ca: `${dir}/ca.pem`, cert: `${dir}/leaf.pem`, key: `${dir}/leaf.key` };
}

/** The admin token every test relay uses. */
export const ADMIN_TOKEN = "cwa_test-admin-token-0123456789";

/** A running `cw relay`. */
export class RelayProcess implements AsyncDisposable {
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  #child: Deno.ChildProcess;
  #output: Promise<string>;

  private constructor(
    child: Deno.ChildProcess,
    url: string,
    dataDir: string,
    output: Promise<string>,
  ) {
    this.#child = child;
    this.url = url;
    this.port = Number(new URL(url).port);
    this.dataDir = dataDir;
    this.#output = output;
  }

  /**
   * Starts a relay with TLS on 127.0.0.1 (`port` 0 picks one) and waits until
   * it listens. `extra` adds flags; `env` adds variables.
   */
  static async start(
    dataDir: string,
    certs: TestCerts | null,
    opts: {
      port?: number;
      extra?: string[];
      env?: Record<string, string>;
      /** A command the relay runs under (e.g. `prlimit --nofile=256 --`). */
      wrap?: string[];
    } = {},
  ): Promise<RelayProcess> {
    const [cmd, ...pre] = [...(opts.wrap ?? []), ...CW_ARGV];
    const tls = certs ? ["--tls-cert", certs.cert, "--tls-key", certs.key] : [];
    const child = new Deno.Command(cmd, {
      args: [
        ...pre,
        "relay",
        "--listen",
        `127.0.0.1:${opts.port ?? 0}`,
        "--data-dir",
        dataDir,
        ...tls,
        // the SSH gateway on a port of its own choosing, unless the test says otherwise
        ...(opts.extra?.some((a) => a.startsWith("--ssh-listen"))
          ? []
          : ["--ssh-listen", "127.0.0.1:0"]),
        ...(opts.extra ?? []),
      ],
      env: { ...Deno.env.toObject(), CW_RELAY_ADMIN_TOKEN: ADMIN_TOKEN, ...(opts.env ?? {}) },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let text = "";
    let resolveUrl!: (u: string) => void;
    const urlSeen = new Promise<string>((r) => resolveUrl = r);
    const pump = async (stream: ReadableStream<Uint8Array>) => {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        text += chunk;
        const m = /listening on (\S+)/.exec(text);
        if (m) resolveUrl(m[1]);
      }
    };
    const output = Promise.all([pump(child.stdout), pump(child.stderr)]).then(() => text);
    const timeout = new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error(`relay did not start:\n${text}`)), 20_000)
    );
    const exited = child.status.then((s) => {
      throw new Error(`relay exited with ${s.code} before listening:\n${text}`);
    });
    let url: string;
    try {
      url = await Promise.race([urlSeen, timeout, exited]);
    } catch (err) {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await output;
      throw err;
    }
    exited.catch(() => {});
    return new RelayProcess(child, url, dataDir, output);
  }

  /** The relay's process id. */
  get pid(): number {
    return this.#child.pid;
  }

  /** Graceful stop (SIGTERM); resolves with the exit code and the output. */
  async stop(): Promise<{ code: number; output: string }> {
    try {
      this.#child.kill("SIGTERM");
    } catch { /* gone */ }
    const timer = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 10_000);
    const status = await this.#child.status;
    clearTimeout(timer);
    return { code: status.code, output: await this.#output };
  }

  /** Hard kill (SIGKILL). */
  async kill(): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch { /* gone */ }
    await this.#child.status;
    await this.#output;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** An HTTP client trusting the test CA. */
export function caClient(certs: TestCerts): Deno.HttpClient {
  return Deno.createHttpClient({ caCerts: [Deno.readTextFileSync(certs.ca)] });
}

/** Makes an invite with the admin API; returns the token. */
export async function invite(
  relay: RelayProcess,
  client: Deno.HttpClient,
  uses = 1,
  ttlSeconds = 3600,
): Promise<string> {
  const res = await fetch(`${relay.url}/api/v1/invites`, {
    method: "POST",
    client,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ uses, ttlSeconds }),
  });
  if (res.status !== 201) throw new Error(`invite failed: ${res.status} ${await res.text()}`);
  return (await res.json()).token;
}

/** Registers `home`'s node as `name` with `cw setup` (real CLI). */
export async function setupNode(
  home: CwHome,
  relay: RelayProcess,
  certs: TestCerts,
  name: string,
  token: string,
): Promise<void> {
  await home.ok([
    "setup",
    "--relay-url",
    relay.url,
    "--invite",
    token,
    "--name",
    name,
    "--ca-cert",
    certs.ca,
  ]);
}

/** Waits until `cw nodes` (run in `home`) shows `name` with the given online state. */
export async function waitOnline(
  home: CwHome,
  name: string,
  online = true,
  timeoutMs = 10_000,
): Promise<void> {
  await waitFor(`${name} to be ${online ? "online" : "offline"}`, async () => {
    const r = await home.run(["nodes", "--json"]);
    if (r.code !== 0) return false;
    const n = (JSON.parse(r.stdout) as { name: string; online: boolean }[]).find((x) =>
      x.name === name
    );
    return n?.online === online;
  }, timeoutMs);
}

/** A relay and an HTTP client that trusts its CA. */
export interface RelayRig {
  relay: RelayProcess;
  client: Deno.HttpClient;
}

/**
 * Opens a WebSocket with headers through the test CA; resolves with it, or
 * null if refused. `onFirst` gets the first message, which may come with the
 * upgrade itself (before a listener added after `open` could see it).
 */
export function openSocket(
  rig: RelayRig,
  path: string,
  headers: Record<string, string>,
  onFirst?: (m: MessageEvent) => void,
): Promise<WebSocket | null> {
  const url = new URL(path, rig.relay.url);
  url.protocol = "wss:";
  const ws = new WebSocket(url, { headers, client: rig.client } as unknown as string[]);
  ws.binaryType = "arraybuffer";
  if (onFirst) ws.addEventListener("message", onFirst, { once: true });
  return within(
    new Promise<WebSocket | null>((resolve) => {
      ws.addEventListener("open", () => resolve(ws), { once: true });
      ws.addEventListener("error", () => resolve(null), { once: true });
      ws.addEventListener("close", () => resolve(null), { once: true });
    }),
    5_000,
    `a WebSocket to ${path}`,
  );
}

/**
 * A node played by the test: registered by invite, linked with the real
 * link protocol (Mux, role "dial"), handing over the dial-back tickets the
 * relay sends instead of answering them.
 */
export class FakeNode implements Disposable {
  readonly name: string;
  readonly credential: string;
  #mux: Mux;
  #tickets: string[] = [];
  #waiting: ((t: string) => void)[] = [];

  private constructor(name: string, credential: string, ws: WebSocket) {
    this.name = name;
    this.credential = credential;
    this.#mux = new Mux(ws, {
      onControl: (msg) => {
        if (msg.type !== "dialback" || typeof msg.ticket !== "string") return;
        const w = this.#waiting.shift();
        if (w) w(msg.ticket);
        else this.#tickets.push(msg.ticket);
      },
    }, { role: "dial" });
  }

  /** Registers `name` with a fresh invite and links it. */
  static async register(rig: RelayRig, name: string): Promise<FakeNode> {
    const res = await fetch(`${rig.relay.url}/api/v1/register`, {
      method: "POST",
      client: rig.client,
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name, invite: await invite(rig.relay, rig.client) }),
    });
    assert.equal(res.status, 201);
    const { credential } = await res.json();
    const ws = await openSocket(rig, "/node/connect", { authorization: `Bearer ${credential}` });
    assert.ok(ws, "the fake node links");
    return new FakeNode(name, credential, ws);
  }

  /** The next ticket the relay sends. */
  ticket(): Promise<string> {
    const t = this.#tickets.shift();
    if (t) return Promise.resolve(t);
    return within(new Promise((r) => this.#waiting.push(r)), 5_000, `a ticket for ${this.name}`);
  }

  /** Headers of a dial-back with `credential` (this node's by default). */
  headers(ticket: string, credential = this.credential): Record<string, string> {
    return { authorization: `Bearer ${credential}`, "x-cw-ticket": ticket };
  }

  [Symbol.dispose](): void {
    this.#mux.close();
  }
}

/** A relay on loopback (TLS, a CA of its own) with `home`'s node registered and online. */
export interface RelayWithNode extends AsyncDisposable {
  certs: TestCerts;
  relay: RelayProcess;
  /** An HTTP client that trusts the relay's CA. */
  client: Deno.HttpClient;
}

/**
 * Starts a relay in `home`'s directory (`prepare` runs on its data dir first,
 * e.g. to write a webhooks.json) and registers `home`'s node on it as `name`.
 */
export async function relayWithNode(
  home: CwHome,
  name = "box-1",
  prepare?: (dataDir: string) => Promise<void>,
): Promise<RelayWithNode> {
  const certs = await makeCerts(`${home.root}/pki`);
  const dataDir = `${home.root}/relay`;
  if (prepare) {
    await Deno.mkdir(dataDir, { recursive: true, mode: 0o700 });
    await prepare(dataDir);
  }
  const relay = await RelayProcess.start(dataDir, certs);
  const client = caClient(certs);
  const rig: RelayWithNode = {
    certs,
    relay,
    client,
    async [Symbol.asyncDispose]() {
      client.close();
      await relay.stop();
    },
  };
  try {
    await setupNode(home, relay, certs, name, await invite(relay, client));
    await waitOnline(home, name);
  } catch (err) {
    await rig[Symbol.asyncDispose]();
    throw err;
  }
  return rig;
}
