/**
 * The link multiplexer over a real WebSocket on loopback: streams in both
 * directions, flow control under a stalled reader, liveness, bad frames.
 */
import assert from "node:assert/strict";
import {
  decodeMux,
  encodeMux,
  Mux,
  MUX_INITIAL_WINDOW,
  MuxError,
  type MuxStream,
  MuxType,
} from "../shared/mux.ts";

interface Pair extends AsyncDisposable {
  server: Mux;
  client: Mux;
  accepted: { stream: MuxStream; meta: Record<string, unknown> }[];
  nextAccepted(): Promise<MuxStream>;
  serverClosed: Promise<string>;
}

async function pair(opts: { deadAfterMs?: number; pingIntervalMs?: number } = {}): Promise<Pair> {
  const accepted: { stream: MuxStream; meta: Record<string, unknown> }[] = [];
  let wake: (() => void) | null = null;
  let serverMux!: Mux;
  let resolveServer!: (m: Mux) => void;
  const serverReady = new Promise<Mux>((r) => resolveServer = r);
  let closedServer!: (reason: string) => void;
  const serverClosed = new Promise<string>((r) => closedServer = r);
  const httpServer = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.addEventListener("open", () => {
      serverMux = new Mux(socket, {
        onStream(stream, meta) {
          accepted.push({ stream, meta });
          wake?.();
        },
        onClose: (r) => closedServer(r),
      }, { role: "accept", ...opts });
      resolveServer(serverMux);
    });
    return response;
  });
  const ws = new WebSocket(`ws://127.0.0.1:${httpServer.addr.port}/`);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  const client = new Mux(ws, {}, { role: "dial", ...opts });
  const server = await serverReady;
  return {
    server,
    client,
    accepted,
    serverClosed,
    async nextAccepted() {
      while (accepted.length === 0) await new Promise<void>((r) => wake = r);
      return accepted.shift()!.stream;
    },
    async [Symbol.asyncDispose]() {
      client.close();
      server.close();
      await httpServer.shutdown();
    },
  };
}

async function readN(stream: MuxStream, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let got = 0;
  const reader = stream.readable.getReader();
  while (got < n) {
    const { value, done } = await reader.read();
    if (done) break;
    out.set(value, got);
    got += value.byteLength;
  }
  reader.releaseLock();
  return out.subarray(0, got);
}

Deno.test("mux: frames round-trip and bad frames are rejected", () => {
  const f = decodeMux(encodeMux(MuxType.DATA, 7, Uint8Array.of(1, 2, 3)));
  assert.deepEqual([f.type, f.stream, [...f.payload]], [MuxType.DATA, 7, [1, 2, 3]]);
  assert.throws(() => decodeMux(Uint8Array.of(1, 0)), MuxError);
  assert.throws(() => decodeMux(encodeMux(0x42, 1)), MuxError);
  assert.throws(() => decodeMux(encodeMux(MuxType.WINDOW, 1, new Uint8Array(8))), MuxError);
  assert.throws(
    () => decodeMux(encodeMux(MuxType.DATA, 1, new Uint8Array(64 * 1024 + 1))),
    MuxError,
  );
});

Deno.test("mux: streams carry bytes both ways, many at once, in order", async () => {
  await using p = await pair();
  const streams = Array.from({ length: 20 }, (_, i) => p.client.open({ kind: "test", i }));
  const accepted: MuxStream[] = [];
  for (const _ of streams) accepted.push(await p.nextAccepted());
  assert.deepEqual(p.accepted.length, 0);
  const payload = (i: number) => new Uint8Array(200_000).map((_, j) => (i * 31 + j) & 0xff);
  await Promise.all(streams.map(async (s, i) => {
    const w = s.writable.getWriter();
    await w.write(payload(i));
    w.releaseLock();
  }));
  const got = await Promise.all(accepted.map((s) => readN(s, 200_000)));
  // ids pair up in open order
  got.forEach((g, i) => assert.deepEqual(g, payload(i)));
  // and back
  const w = accepted[3].writable.getWriter();
  await w.write(Uint8Array.of(9, 9));
  assert.deepEqual([...await readN(streams[3], 2)], [9, 9]);
  streams[3].close();
  const r = accepted[3].readable.getReader();
  assert.equal((await r.read()).done, true, "close reaches the peer");
});

Deno.test("mux: a stalled reader holds one window; other streams keep flowing", async () => {
  await using p = await pair();
  const stalled = p.client.open({ kind: "stalled" });
  const busy = p.client.open({ kind: "busy" });
  await p.nextAccepted(); // never read from it
  const busyPeer = await p.nextAccepted();
  const writer = stalled.writable.getWriter();
  let written = 0;
  const writing = (async () => {
    while (written < 10 * MUX_INITIAL_WINDOW) {
      await writer.write(new Uint8Array(16 * 1024));
      written += 16 * 1024;
    }
  })();
  // the busy stream moves 8 MiB while the stalled one is blocked
  const bw = busy.writable.getWriter();
  const moving = (async () => {
    for (let i = 0; i < 128; i++) await bw.write(new Uint8Array(64 * 1024));
  })();
  const received = await readN(busyPeer, 128 * 64 * 1024);
  await moving;
  assert.equal(received.byteLength, 128 * 64 * 1024);
  assert.ok(written <= MUX_INITIAL_WINDOW + 16 * 1024, `stalled writer got ${written} bytes out`);
  stalled.close();
  await writing.catch(() => {});
});

Deno.test("mux: a silent peer is declared dead", async () => {
  let closed!: (reason: string) => void;
  const reason = new Promise<string>((r) => closed = r);
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.addEventListener("open", () => {
      new Mux(socket, { onClose: closed }, {
        role: "accept",
        pingIntervalMs: 50,
        deadAfterMs: 300,
      });
    });
    return response;
  });
  // a peer that keeps the TCP connection but never sends a frame
  const ws = new WebSocket(`ws://127.0.0.1:${server.addr.port}/`);
  const t0 = Date.now();
  assert.match(await reason, /no traffic/);
  assert.ok(Date.now() - t0 >= 250);
  ws.close();
  await server.shutdown();
});
