/**
 * The guarded front (shared/guarded_listener.ts) on real TCP sockets, with
 * small limits: handshake deadline, idle timeout, lifetime of unauthenticated
 * connections, per-address and total caps, eviction of stale handshakes, the
 * real client address behind the loopback hop. (Running a process out of
 * descriptors to watch its accept loop back off is not done here: Deno 2.9.6
 * itself panics, in ext/signals, when a process has no descriptor left — the
 * reason cw keeps a reserve; tests/hostile_test.ts floods under prlimit.)
 */
import assert from "node:assert/strict";
import net from "node:net";
import {
  addressKey,
  FdBudget,
  type GuardLimits,
  listenGuarded,
  type Peer,
} from "../shared/guarded_listener.ts";
import { within } from "./helpers.ts";

const quiet = { info() {}, warn() {}, error() {} };

const LIMITS: GuardLimits = {
  handshakeMs: 300,
  idleMs: 600,
  untrustedLifetimeMs: 2_500,
  perAddress: 3,
  maxConnections: 50,
  maxUntrusted: 50,
};

/**
 * A backend that echoes, and on a line "hello" marks the handshake, on
 * "trust" trusts its client, on "who" answers the client's address as the
 * front saw it.
 */
async function withFront(
  limits: GuardLimits,
  fn: (port: number, front: ReturnType<typeof listenGuarded>) => Promise<void>,
): Promise<void> {
  const backend = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  // deno-lint-ignore prefer-const
  let front: ReturnType<typeof listenGuarded>;
  const serving = (async () => {
    for await (const conn of backend) {
      (async () => {
        const peer = (): Peer | undefined => front.peer((conn.remoteAddr as Deno.NetAddr).port);
        const buf = new Uint8Array(1024);
        try {
          for (let n; (n = await conn.read(buf)) !== null;) {
            const text = new TextDecoder().decode(buf.subarray(0, n)).trim();
            if (text === "hello") peer()?.handshakeDone();
            if (text === "trust") peer()?.trust();
            const reply = text === "who" ? `${peer()?.address}` : text;
            await conn.write(new TextEncoder().encode(reply + "\n"));
          }
        } catch { /* closed */ }
        conn.close();
      })();
    }
  })();
  front = listenGuarded({
    hostname: "127.0.0.1",
    port: 0,
    name: "test",
    limits,
    budget: new FdBudget(10_000, 0),
    logger: quiet,
    backendPort: () => (backend.addr as Deno.NetAddr).port,
  });
  try {
    await fn(front.addr.port, front);
  } finally {
    await front.close();
    backend.close();
    await serving.catch(() => {});
  }
}

/** A client socket with line helpers; `from` picks the source address. */
function connect(port: number, from = "127.0.0.1") {
  const s = net.connect({ host: "127.0.0.1", port, localAddress: from });
  let data = "";
  const ended = new Promise<void>((r) => s.on("close", () => r()));
  s.on("data", (d) => data += d.toString());
  s.on("error", () => {});
  const opened = new Promise<void>((r, j) => {
    s.on("connect", () => r());
    s.on("error", j);
  });
  return {
    opened,
    ended,
    closed: false as boolean,
    async say(line: string): Promise<string> {
      const before = data.length;
      s.write(line + "\n");
      return await within(
        new Promise<string>((resolve) => {
          const check = () => {
            const i = data.indexOf("\n", before);
            if (i >= 0) resolve(data.slice(before, i));
            else setTimeout(check, 5);
          };
          check();
        }),
        5_000,
        `an answer to ${line}`,
      );
    },
    destroy: () => s.destroy(),
  };
}

async function closesWithin(c: { ended: Promise<void> }, ms: number, what: string) {
  await within(c.ended, ms, what);
}

Deno.test("guard: silent connections meet the handshake deadline; idle ones the idle timeout", async () => {
  await withFront(LIMITS, async (port) => {
    const silent = connect(port);
    await silent.opened;
    const t0 = performance.now();
    await closesWithin(silent, 3_000, "a silent connection to be closed");
    assert.ok(performance.now() - t0 >= LIMITS.handshakeMs - 50);

    const idle = connect(port);
    await idle.opened;
    assert.equal(await idle.say("hello"), "hello");
    await closesWithin(idle, 3_000, "an idle connection to be closed");

    const trusted = connect(port);
    await trusted.opened;
    assert.equal(await trusted.say("trust"), "trust");
    // past the idle timeout and the lifetime of unauthenticated connections
    await new Promise((r) => setTimeout(r, LIMITS.untrustedLifetimeMs + 600));
    assert.equal(await trusted.say("still here"), "still here");
    trusted.destroy();
  });
});

Deno.test("guard: a busy unauthenticated connection still ends at its lifetime", async () => {
  await withFront(LIMITS, async (port) => {
    const busy = connect(port);
    await busy.opened;
    assert.equal(await busy.say("hello"), "hello");
    const chatter = setInterval(() => busy.say("x").catch(() => {}), 200);
    try {
      await closesWithin(busy, LIMITS.untrustedLifetimeMs + 2_000, "the lifetime to end it");
    } finally {
      clearInterval(chatter);
    }
  });
});

Deno.test("guard: the server sees the real client; per-address caps refuse only that address", async () => {
  await withFront(LIMITS, async (port, front) => {
    const mine = connect(port, "127.0.0.7");
    await mine.opened;
    assert.equal(await mine.say("who"), "127.0.0.7");
    const more = [connect(port, "127.0.0.7"), connect(port, "127.0.0.7")];
    for (const m of more) await m.say("hello");
    // the fourth from 127.0.0.7 is refused; 127.0.0.8 is not
    const refused = connect(port, "127.0.0.7");
    await closesWithin(refused, 2_000, "a connection over the per-address cap to be closed");
    const other = connect(port, "127.0.0.8");
    assert.equal(await other.say("who"), "127.0.0.8");
    // trusting one frees its slot
    assert.equal(await mine.say("trust"), "trust");
    const again = connect(port, "127.0.0.7");
    assert.equal(await again.say("hello"), "hello");
    assert.ok(front.stats().refused >= 1);
    for (const c of [mine, ...more, other, again]) c.destroy();
  });
});

Deno.test("guard: at the cap, a stale handshake gives way; a finished one never does", async () => {
  const limits = {
    ...LIMITS,
    handshakeMs: 10_000,
    idleMs: 10_000,
    untrustedLifetimeMs: 20_000,
    perAddress: 100,
    maxUntrusted: 3,
  };
  await withFront(limits, async (port, front) => {
    const done = connect(port);
    assert.equal(await done.say("hello"), "hello");
    const stale = [connect(port), connect(port)];
    await Promise.all(stale.map((s) => s.opened));
    await new Promise((r) => setTimeout(r, 1_200)); // older than a second, no handshake
    const fresh = connect(port);
    assert.equal(await fresh.say("hello"), "hello");
    await closesWithin(stale[0], 2_000, "the oldest stale handshake to give way");
    assert.equal(await done.say("ping"), "ping");
    assert.equal(front.stats().evicted, 1);
    for (const c of [done, stale[1], fresh]) c.destroy();
  });
});

Deno.test("guard: IPv6 addresses count per /64", () => {
  assert.equal(addressKey("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
  assert.equal(addressKey("2001:db8:1:2::ffff"), "2001:db8:1:2::/64");
  assert.equal(addressKey("::ffff:10.0.0.1"), "10.0.0.1");
  assert.equal(addressKey("10.0.0.1"), "10.0.0.1");
  assert.equal(addressKey("::1"), "0:0:0:0::/64");
});
