// The SDK's rules, without a network: ordering, duplicates, gaps, retries, close codes.
// Run: node --test tests/sdk/

import { test } from "node:test";
import assert from "node:assert/strict";
import { RoomState, Outbox, closeAction, backoffDelay, isRetryable } from "../../web/sdk/chatd.js";

const msg = (seq) => ({ id: `m${seq}`, room: "r", seq, sender: "a", clientMsgId: `c${seq}`, text: `t${seq}`, createdAt: "2026-01-01T00:00:00.000Z" });

test("out-of-order delivery is shown in seq order", () => {
  const room = new RoomState("r");
  room.setFloor(0);
  for (const seq of [3, 1, 2, 5, 4]) room.insert(msg(seq));
  assert.deepEqual(room.list().map((m) => m.seq), [1, 2, 3, 4, 5]);
  assert.equal(room.contiguous, 5);
  assert.equal(room.gap(), null);
});

test("duplicates are dropped", () => {
  const room = new RoomState("r");
  room.setFloor(0);
  assert.equal(room.insert(msg(1)), "new");
  assert.equal(room.insert(msg(1)), "duplicate");
  assert.equal(room.insert({ ...msg(1), text: "a replay" }), "duplicate");
  assert.equal(room.list().length, 1);
  assert.equal(room.list()[0].text, "t1");
  assert.equal(room.duplicates, 2);
});

test("a gap is reported with its age, and closes when filled", () => {
  const room = new RoomState("r");
  room.setFloor(0);
  room.insert(msg(1), 1000);
  room.insert(msg(4), 1100);
  assert.deepEqual(room.gap(), { after: 1, before: 4 });
  assert.equal(room.gapSince, 1100);
  room.insert(msg(2), 1200);
  assert.deepEqual(room.gap(), { after: 2, before: 4 });
  room.insert(msg(3), 1300);
  assert.equal(room.gap(), null);
  assert.equal(room.gapSince, null);
  assert.equal(room.contiguous, 4);
});

test("history below the floor is not a gap; messages there are old news", () => {
  const room = new RoomState("r");
  for (const seq of [48, 49, 50]) room.insert(msg(seq));
  assert.equal(room.gap(), null, "nothing is a gap before the room is loaded");
  room.setFloor(47);
  assert.equal(room.contiguous, 50);
  assert.equal(room.insert(msg(10)), "duplicate", "below the floor");
  room.insert(msg(52));
  assert.deepEqual(room.gap(), { after: 50, before: 52 });
});

test("the outbox sends, waits for the ack, retries on timeout, on error and after reconnect", () => {
  let n = 0;
  const outbox = new Outbox({ newId: () => `id${++n}` });
  const a = outbox.add("r", "hello", "me");
  const b = outbox.add("r", "again", "me");
  assert.deepEqual(outbox.due(0, 10_000).map((i) => i.clientMsgId), ["id1", "id2"], "new ones, in order");
  outbox.markSent(a, 0);
  outbox.markSent(b, 0);
  assert.deepEqual(outbox.due(5_000, 10_000), [], "waiting for acks");
  assert.deepEqual(outbox.due(10_000, 10_000).map((i) => i.clientMsgId), ["id1", "id2"], "no ack in time: resend");
  outbox.markSent(a, 10_000);
  outbox.markSent(b, 10_000);
  outbox.retryLater("id2", 10_500);
  assert.deepEqual(outbox.due(10_400, 10_000), []);
  assert.deepEqual(outbox.due(10_500, 10_000).map((i) => i.clientMsgId), ["id2"], "retry after the server's wait");
  outbox.resendAll();
  assert.equal(outbox.due(10_600, 10_000).length, 2, "a reconnect sends everything pending");
  assert.equal(outbox.ack("id1").text, "hello");
  assert.equal(outbox.ack("id1"), undefined, "a repeated ack is ignored");
  outbox.fail("id2", new Error("too long"));
  assert.equal(outbox.forRoom("r")[0].status, "failed");
  assert.deepEqual(outbox.due(99_999, 10_000), [], "failed ones are not retried");
});

test("the outbox counts what awaits an ack, so sending can be windowed", () => {
  const outbox = new Outbox();
  const items = [1, 2, 3].map((i) => outbox.add("r", `m${i}`, "me"));
  assert.equal(outbox.inFlight(), 0);
  outbox.markSent(items[0], 0);
  outbox.markSent(items[1], 0);
  assert.equal(outbox.inFlight(), 2);
  outbox.ack(items[0].clientMsgId);
  assert.equal(outbox.inFlight(), 1);
  outbox.resendAll();
  assert.equal(outbox.inFlight(), 0, "after a reconnect nothing is in flight");
});

test("close codes decide how to reconnect", () => {
  for (const code of [1000, 1001, 1006, 1012, 4000]) assert.equal(closeAction(code), "now", `${code}`);
  for (const code of [1008, 1009, 1011, 1013, 4100, 4101, 4102, 3000]) assert.equal(closeAction(code), "backoff", `${code}`);
  assert.equal(closeAction(4401), "reauth");
  assert.equal(closeAction(4402), "reauth");
  assert.equal(closeAction(4403), "stop");
});

test("backoff grows exponentially with full jitter, capped", () => {
  const top = (attempt) => backoffDelay(attempt, { baseMs: 100, maxMs: 5000, random: () => 0.999999 });
  assert.deepEqual([0, 1, 2, 3].map(top), [99, 199, 399, 799]);
  assert.equal(top(30), 4999);
  assert.equal(backoffDelay(5, { random: () => 0 }), 0);
  assert.ok(isRetryable("store_unavailable") && isRetryable("rate_limited"));
  assert.ok(!isRetryable("text_too_long") && !isRetryable("room_not_found"));
});
