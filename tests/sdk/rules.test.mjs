// The SDK's rules, without a network: ordering, duplicates, gaps, retries, close codes, and
// the client against a fake fetch and WebSocket (room-list paging, forgotten rooms, errors).
// Run: node --test tests/sdk/

import { test } from "node:test";
import assert from "node:assert/strict";
import { RoomState, Outbox, ChatClient, closeAction, backoffDelay, isRetryable } from "../../web/sdk/chatd.js";

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
  for (const code of [1000, 1001, 1005, 1006, 1012, 4000, 4001, 4099]) assert.equal(closeAction(code), "now", `${code}`);
  const backoff = [1002, 1003, 1007, 1008, 1009, 1010, 1011, 1013, 4100, 4101, 4102, 4150, 4199];
  for (const code of backoff) assert.equal(closeAction(code), "backoff", `${code}`);
  for (const code of [0, 999, 1004, 1014, 1015, 2000, 3000, 3999, 4200, 4399, 4500, 4999, 5000]) {
    assert.equal(closeAction(code), "backoff", `unknown ${code}`);
  }
  assert.equal(closeAction(4401), "reauth");
  assert.equal(closeAction(4402), "reauth");
  for (const code of [4400, 4403, 4404, 4499]) assert.equal(closeAction(code), "stop", `${code}`);
});

test("backoff grows exponentially with full jitter, capped", () => {
  const top = (attempt) => backoffDelay(attempt, { baseMs: 100, maxMs: 5000, random: () => 0.999999 });
  assert.deepEqual([0, 1, 2, 3].map(top), [99, 199, 399, 799]);
  assert.equal(top(30), 4999);
  assert.equal(backoffDelay(5, { random: () => 0 }), 0);
  assert.ok(isRetryable("store_unavailable") && isRetryable("rate_limited"));
  assert.ok(!isRetryable("text_too_long") && !isRetryable("room_not_found"));
});

test("retryable error codes", () => {
  for (const code of ["store_unavailable", "bus_unavailable", "rate_limited", "internal", "request_timeout", "overloaded"]) {
    assert.ok(isRetryable(code), code);
  }
  for (const code of ["too_many_rooms", "text_too_long", "empty_text", "room_not_found", "forbidden", "unauthorized", "bad_field", undefined]) {
    assert.ok(!isRetryable(code), String(code));
  }
});

// ---- the client against fakes ------------------------------------------------------------

const summary = (id, createdAt, lastAt = null) => ({
  id,
  kind: "group",
  name: id,
  members: ["me"],
  createdBy: "me",
  createdAt,
  lastMessage: lastAt ? { id: `m-${id}`, room: id, seq: 1, sender: "me", clientMsgId: `c-${id}`, text: "hi", createdAt: lastAt } : null,
  lastSeq: lastAt ? 1 : 0,
  readSeq: 0,
  unread: 0,
});

/** A fake REST server: `routes` maps a path (with query) to [status, body] or a body. */
function fakeFetch(routes) {
  const calls = [];
  const fetch = async (url, init) => {
    const path = url.replace("http://chatd.test", "");
    calls.push({ method: init.method, path });
    const route = routes[path];
    if (route === undefined) throw new Error(`unexpected request ${init.method} ${path}`);
    const [status, body] = Array.isArray(route) && typeof route[0] === "number" ? route : [200, route];
    return { status, ok: status >= 200 && status < 300, json: async () => body };
  };
  return { fetch, calls };
}

class FakeWebSocket {
  static last = null;
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 1;
    this.sent = [];
    FakeWebSocket.last = this;
  }
  send(data) {
    this.sent.push(JSON.parse(data));
  }
  close() {
    this.readyState = 3;
  }
  receive(frame) {
    this.onmessage({ data: JSON.stringify(frame) });
  }
}

async function startClient(routes) {
  const { fetch, calls } = fakeFetch({ "/v1/me": { user: "me" }, ...routes });
  const client = new ChatClient({ baseUrl: "http://chatd.test", token: "t", fetch, WebSocket: FakeWebSocket });
  await client.start();
  return { client, calls, ws: FakeWebSocket.last };
}

test("the room list follows every page and is sorted most recently active first", async () => {
  const pages = {
    "/v1/rooms?limit=500": { rooms: [summary("a", "2026-01-01T00:00:00.000Z"), summary("b", "2026-01-02T00:00:00.000Z", "2026-01-05T00:00:00.000Z")], next: "b" },
    "/v1/rooms?limit=500&after=b": { rooms: [summary("c", "2026-01-03T00:00:00.000Z")], next: "c/+=" },
    "/v1/rooms?limit=500&after=c%2F%2B%3D": { rooms: [summary("d", "2026-01-04T00:00:00.000Z", "2026-01-04T12:00:00.000Z")], next: null },
  };
  const { client, calls } = await startClient(pages);
  try {
    assert.deepEqual(
      calls.map((c) => c.path),
      ["/v1/me", "/v1/rooms?limit=500", "/v1/rooms?limit=500&after=b", "/v1/rooms?limit=500&after=c%2F%2B%3D"],
    );
    assert.deepEqual(client.rooms().map((r) => r.id), ["b", "d", "c", "a"], "by lastMessage.createdAt, else createdAt, newest first");
    assert.equal(client.room("a").name, "a");
    const seen = [];
    client.on("rooms", (rooms) => seen.push(rooms.map((r) => r.id)));
    assert.deepEqual((await client.refreshRooms()).map((r) => r.id), ["b", "d", "c", "a"]);
    assert.deepEqual(seen, [["b", "d", "c", "a"]], "one rooms event per refresh");
  } finally {
    client.stop();
  }
});

test("a room-list page cursor seen before stops the paging with an error", async () => {
  const { fetch } = fakeFetch({
    "/v1/rooms?limit=500": { rooms: [], next: "x" },
    "/v1/rooms?limit=500&after=x": { rooms: [], next: "x" },
  });
  const client = new ChatClient({ baseUrl: "http://chatd.test", token: "t", fetch, WebSocket: FakeWebSocket });
  await assert.rejects(client.refreshRooms(), /repeated/);
});

test("resume's room_not_found forgets the listed rooms quietly, one rooms event", async () => {
  const rooms = ["a", "b", "c", "d"].map((id, i) => summary(id, `2026-01-0${i + 1}T00:00:00.000Z`));
  const { client, ws } = await startClient({ "/v1/rooms?limit=500": { rooms, next: null } });
  try {
    const roomEvents = [];
    const errors = [];
    client.on("rooms", (list) => roomEvents.push(list.map((r) => r.id)));
    client.on("error", (e) => errors.push(e));
    ws.receive({ type: "error", code: "room_not_found", message: "not a member", rooms: ["a", "c", "zz"] });
    assert.deepEqual(roomEvents, [["d", "b"]]);
    assert.equal(client.room("a"), undefined);
    // The older shape, one frame per room with `room`, still works.
    ws.receive({ type: "error", code: "room_not_found", message: "not a member", room: "b" });
    assert.deepEqual(roomEvents, [["d", "b"], ["d"]]);
    // Nothing known: no event.
    ws.receive({ type: "error", code: "room_not_found", message: "not a member", rooms: ["zz"] });
    assert.equal(roomEvents.length, 2);
    assert.deepEqual(errors, [], "not reported as errors");
    // With a clientMsgId it is a send's error, reported and nothing forgotten.
    ws.receive({ type: "error", code: "room_not_found", message: "not a member", room: "d", clientMsgId: "x" });
    assert.equal(errors.length, 1);
    assert.equal(errors[0].room, "d");
    assert.ok(client.room("d"));
  } finally {
    client.stop();
  }
});

test("error frames and REST errors carry requestId", async () => {
  const { client, ws } = await startClient({
    "/v1/rooms?limit=500": { rooms: [], next: null },
    "/v1/rooms": [503, { error: { code: "store_unavailable", message: "store down", requestId: "req-1" } }],
    "/v1/rooms/direct": [409, { error: { code: "too_many_rooms", message: "too many rooms" } }],
  });
  try {
    const errors = [];
    client.on("error", (e) => errors.push(e));
    ws.receive({ type: "error", code: "internal", message: "oops", requestId: "req-2" });
    assert.equal(errors[0].code, "internal");
    assert.equal(errors[0].requestId, "req-2");
    await assert.rejects(client.createGroup("g", ["x"]), (e) => e.code === "store_unavailable" && e.status === 503 && e.requestId === "req-1");
    await assert.rejects(client.openDirect("x"), (e) => e.code === "too_many_rooms" && e.status === 409 && !isRetryable(e.code));
  } finally {
    client.stop();
  }
});
