/** The node's session event fan-out (node/events.ts): filters, bounded queues, limits. */
import assert from "node:assert/strict";
import { MAX_SUBSCRIBERS, SessionEvents, SUBSCRIBER_MAX_QUEUED } from "../node/events.ts";
import type { SessionEvent } from "../shared/protocol.ts";

const ev = (session: number, tags: string[] = []): SessionEvent => ({
  type: "launched",
  session,
  name: null,
  tags,
  time: new Date(0).toISOString(),
});

Deno.test("events: each subscriber gets what its filter takes, in order", async () => {
  const bus = new SessionEvents();
  const all = bus.subscribe(() => true);
  const tagged = bus.subscribe((e) => e.tags.includes("x"));
  bus.emit(ev(1));
  bus.emit(ev(2, ["x"]));
  bus.emit(ev(3));
  assert.deepEqual(
    [await all.next(), await all.next(), await all.next()].map((e) => (e as SessionEvent).session),
    [1, 2, 3],
  );
  assert.equal(((await tagged.next()) as SessionEvent).session, 2);
  tagged.close();
  assert.equal(await tagged.next(), null);
  assert.equal(bus.size, 1);
  all.close();
  assert.equal(bus.size, 0);
});

Deno.test("events: a subscriber that stops reading gets what was queued, then 'lagged', and is dropped", async () => {
  const bus = new SessionEvents();
  const slow = bus.subscribe(() => true);
  for (let i = 0; i < SUBSCRIBER_MAX_QUEUED + 500; i++) bus.emit(ev(i));
  let got = 0;
  for (;;) {
    const e = await slow.next();
    if (e === "lagged") break;
    assert.ok(e !== null);
    got++;
  }
  assert.equal(got, SUBSCRIBER_MAX_QUEUED);
  assert.equal(await slow.next(), null);
  assert.equal(bus.size, 0, "dropped");
});

Deno.test("events: at most MAX_SUBSCRIBERS at once", () => {
  const bus = new SessionEvents();
  const subs = Array.from({ length: MAX_SUBSCRIBERS }, () => bus.subscribe(() => true));
  assert.throws(() => bus.subscribe(() => true), RangeError);
  subs[0].close();
  bus.subscribe(() => true).close();
  subs.forEach((s) => s.close());
});
