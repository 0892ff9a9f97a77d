/**
 * A `cw relay` child process for the benchmark: its pid (for /proc), its
 * open-file limit raised to the hard limit (Deno cannot call setrlimit, so a
 * shell does it before `exec`), and only the tail of its output kept.
 */
import { CW_ARGV } from "../../tests/helpers.ts";
import { ADMIN_TOKEN, type TestCerts } from "../../tests/relay_helpers.ts";

/** Output kept for error messages, in characters. */
const TAIL_CHARS = 16 * 1024;
/** How long a relay may take to listen, and to stop after SIGTERM. */
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;

/** Raises the soft open-file limit to the hard one, then runs "$@". */
const RAISE_NOFILE = `h=$(ulimit -Hn); [ "$h" = unlimited ] && h=1048576; ` +
  `ulimit -n "$h" 2>/dev/null || ulimit -n 65536 2>/dev/null; exec "$@"`;

/** The admin token the bench relays use (the tests' one). */
export { ADMIN_TOKEN };

/** A running relay. */
export class BenchRelay implements AsyncDisposable {
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  #child: Deno.ChildProcess;
  #tail: { text: string };
  #done: Promise<void>;

  private constructor(
    child: Deno.ChildProcess,
    url: string,
    tail: { text: string },
    done: Promise<void>,
  ) {
    this.#child = child;
    this.url = url;
    this.port = Number(new URL(url).port);
    this.pid = child.pid;
    this.#tail = tail;
    this.#done = done;
  }

  /**
   * Starts `cw relay` with TLS on 127.0.0.1:`port` (0 picks one) and resolves
   * once it says it listens. Throws, with its output, if it does not.
   */
  static async start(
    dataDir: string,
    certs: TestCerts,
    opts: { port?: number; extra?: string[]; env?: Record<string, string> } = {},
  ): Promise<BenchRelay> {
    const child = new Deno.Command("sh", {
      args: [
        "-c",
        RAISE_NOFILE,
        "sh",
        ...CW_ARGV,
        "relay",
        "--listen",
        `127.0.0.1:${opts.port ?? 0}`,
        "--data-dir",
        dataDir,
        "--tls-cert",
        certs.cert,
        "--tls-key",
        certs.key,
        // the SSH gateway on a port of its own choosing, never the default 0.0.0.0:2222
        "--ssh-listen",
        "127.0.0.1:0",
        ...(opts.extra ?? []),
      ],
      env: { ...Deno.env.toObject(), CW_RELAY_ADMIN_TOKEN: ADMIN_TOKEN, ...opts.env },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const tail = { text: "" };
    const listening = Promise.withResolvers<string>();
    const pump = async (stream: ReadableStream<Uint8Array>) => {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        const m = /listening on (\S+)/.exec(tail.text.slice(-200) + chunk);
        tail.text = (tail.text + chunk).slice(-TAIL_CHARS);
        if (m) listening.resolve(m[1]);
      }
    };
    const done = Promise.all([pump(child.stdout), pump(child.stderr)]).then(() => {});
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error("the relay did not listen in time")),
        START_TIMEOUT_MS,
      );
    });
    const exited = child.status.then((s) => {
      throw new Error(`the relay exited with ${s.code} before listening`);
    });
    try {
      const url = await Promise.race([listening.promise, timeout, exited]);
      return new BenchRelay(child, url, tail, done);
    } catch (err) {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await done;
      throw new Error(`${(err as Error).message}; its output:\n${tail.text}`);
    } finally {
      clearTimeout(timer);
      exited.catch(() => {});
    }
  }

  /** The last output of the relay. */
  get tail(): string {
    return this.#tail.text;
  }

  /** Graceful stop (SIGTERM, SIGKILL after a bound); resolves with the exit code. */
  async stop(): Promise<number> {
    try {
      this.#child.kill("SIGTERM");
    } catch { /* gone */ }
    const timer = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch { /* gone */ }
    }, STOP_TIMEOUT_MS);
    const status = await this.#child.status;
    clearTimeout(timer);
    await this.#done;
    return status.code;
  }

  /** SIGKILL: a replica lost with its machine. */
  async kill(): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch { /* gone */ }
    await this.#child.status;
    await this.#done;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** Soft and hard open-file limits of a process, from /proc/PID/limits (via `cat`). */
export async function openFileLimit(pid: number): Promise<{ soft: string; hard: string }> {
  const out = await new Deno.Command("cat", { args: [`/proc/${pid}/limits`], stdout: "piped" })
    .output();
  const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(new TextDecoder().decode(out.stdout));
  return { soft: m?.[1] ?? "?", hard: m?.[2] ?? "?" };
}
