/**
 * Helpers for relay tests: a CA + leaf certificate made per run with
 * openssl, and real `cw relay` processes on loopback.
 */
import { CW_ARGV, CwHome, waitFor } from "./helpers.ts";

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
