// The SDK's rules, without a network: ordering, duplicates, gaps, retries, close codes, and
// the client against a fake fetch and WebSocket (room-list paging, forgotten rooms, errors,
// Room objects, start() retrying, stop() settling sends).
// Run: node --test tests/sdk/

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as sdk from "../../web/sdk/chatd.js";
import { RoomLog, RoomState, Outbox, ChatClient, ChatError, closeAction, backoffDelay, isRetryable } from "../../web/sdk/chatd.js";
import { BASE, fakeFetch, fakeWebSockets, emptyHistory, onlineClient, summary, until } from "../support/fakes.mjs";
import { resumeChunks } from "../../web/sdk/transport.js";

const msg = (seq, room = "r") => ({ id: `m${seq}`, room, seq, sender: "a", clientMsgId: `c${seq}`, text: `t${seq}`, createdAt: "2026-01-01T00:00:00.000Z" });
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

test("out-of-order delivery is shown in seq order", () => {
  const room = new RoomLog("r");
  room.setFloor(0);
  for (const seq of [3, 1, 2, 5, 4]) room.insert(msg(seq));
  assert.deepEqual(room.list().map((m) => m.seq), [1, 2, 3, 4, 5]);
  assert.equal(room.contiguous, 5);
  assert.equal(room.gap(), null);
});

test("duplicates are dropped", () => {
  const room = new RoomLog("r");
  room.setFloor(0);
  assert.equal(room.insert(msg(1)), "new");
  assert.equal(room.insert(msg(1)), "duplicate");
  assert.equal(room.insert({ ...msg(1), text: "a replay" }), "duplicate");
  assert.equal(room.list().length, 1);
  assert.equal(room.list()[0].text, "t1");
  assert.equal(room.duplicates, 2);
});

test("a gap is reported with its age, and closes when filled", () => {
  const room = new RoomLog("r");
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
  const room = new RoomLog("r");
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
  assert.equal(closeAction(4403), "reauth"); // revoked by an administrator
  for (const code of [4400, 4404, 4499]) assert.equal(closeAction(code), "stop", `${code}`);
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


test("pages of history merge in order, overlaps and all", () => {
  const room = new RoomLog("r");
  assert.deepEqual(room.insertMany(range(91, 100).map((s) => msg(s))).map((m) => m.seq), range(91, 100), "the newest page");
  room.setFloor(90);
  room.addOlder(range(81, 92).reverse().map((s) => msg(s)), 80); // an older page, newest first, overlapping 91-92
  assert.deepEqual(room.list().map((m) => m.seq), range(81, 100));
  assert.equal(room.duplicates, 2);
  assert.equal(room.floor, 80);
  assert.equal(room.lowest(), 81);
  assert.deepEqual(room.insertMany([msg(103), msg(101), msg(103), msg(85)]).map((m) => m.seq), [101, 103], "one batch, in any order");
  assert.deepEqual(room.gap(), { after: 101, before: 103 });
  assert.equal(room.insert(msg(102)), "new");
  assert.equal(room.contiguous, 103);
  assert.deepEqual(room.list().map((m) => m.seq), range(81, 103));
  assert.equal(RoomState, RoomLog, "the former name still works");
});

test("a long history loads page by page, sorted and whole", () => {
  const room = new RoomLog("r");
  const newest = 10_000;
  room.insertMany(range(newest - 49, newest).map((s) => msg(s)));
  room.setFloor(newest - 50);
  for (let top = newest - 50; top > 0; top -= 50) {
    room.addOlder(range(Math.max(1, top - 49), top).map((s) => msg(s)), Math.max(0, top - 50));
  }
  for (let seq = newest + 1; seq <= newest + 500; seq++) room.insert(msg(seq)); // live traffic meanwhile
  const seqs = room.list().map((m) => m.seq);
  assert.equal(seqs.length, newest + 500);
  assert.ok(seqs.every((seq, i) => seq === i + 1));
  assert.equal(room.gap(), null);
  assert.equal(room.contiguous, newest + 500);
});

// ---- the client against fakes ------------------------------------------------------------

test("the room list follows every page and is sorted most recently active first", async () => {
  const pages = {
    "/v1/rooms?limit=500": { rooms: [summary("a", "2026-01-01T00:00:00.000Z"), summary("b", "2026-01-02T00:00:00.000Z", "2026-01-05T00:00:00.000Z")], next: "b" },
    "/v1/rooms?limit=500&after=b": { rooms: [summary("c", "2026-01-03T00:00:00.000Z")], next: "c/+=" },
    "/v1/rooms?limit=500&after=c%2F%2B%3D": { rooms: [summary("d", "2026-01-04T00:00:00.000Z", "2026-01-04T12:00:00.000Z")], next: null },
  };
  const { client, calls } = await onlineClient(pages);
  try {
    assert.deepEqual(
      calls.slice(0, 4).map((c) => c.path),
      ["/v1/me", "/v1/rooms?limit=500", "/v1/rooms?limit=500&after=b", "/v1/rooms?limit=500&after=c%2F%2B%3D"],
    );
    assert.ok(calls.every((c) => c.headers.authorization === "Bearer t"));
    assert.deepEqual(client.rooms().map((r) => r.id), ["b", "d", "c", "a"], "by lastMessage.createdAt, else createdAt, newest first");
    assert.equal(client.room("a").name, "a");
    assert.equal(client.room("nope"), undefined);
    assert.deepEqual(JSON.parse(JSON.stringify(client.room("a"))), summary("a", "2026-01-01T00:00:00.000Z"), "a Room serializes as its summary");
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
  const client = new ChatClient({ baseUrl: BASE, token: "t", fetch, WebSocket: fakeWebSockets().WebSocket });
  await assert.rejects(client.refreshRooms(), (e) => e instanceof ChatError && /repeated/.test(e.message));
});

test("resume's room_not_found forgets the listed rooms quietly, one rooms event", async () => {
  const rooms = ["a", "b", "c", "d"].map((id, i) => summary(id, `2026-01-0${i + 1}T00:00:00.000Z`));
  const { client, ws } = await onlineClient({ "/v1/rooms?limit=500": { rooms, next: null } });
  try {
    const roomEvents = [];
    const errors = [];
    const removed = [];
    client.room("a").on("removed", (room) => removed.push(room.id));
    client.on("rooms", (list) => roomEvents.push(list.map((r) => r.id)));
    client.on("error", (e) => errors.push(e));
    ws.receive({ type: "error", code: "room_not_found", message: "not a member", rooms: ["a", "c", "zz"] });
    assert.deepEqual(roomEvents, [["d", "b"]]);
    assert.equal(client.room("a"), undefined);
    assert.deepEqual(removed, ["a"], "the Room hears it");
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

test("error frames and REST errors are ChatErrors with requestId", async () => {
  const { client, ws } = await onlineClient({
    "POST /v1/rooms": [503, { error: { code: "store_unavailable", message: "store down", requestId: "req-1" } }],
    "/v1/rooms/direct": [409, { error: { code: "too_many_rooms", message: "too many rooms" } }],
    "/v1/rooms/x/presence": [502, "<html>bad gateway</html>"],
  });
  try {
    const errors = [];
    client.on("error", (e) => errors.push(e));
    ws.receive({ type: "error", code: "internal", message: "oops", requestId: "req-2" });
    assert.ok(errors[0] instanceof ChatError);
    assert.equal(errors[0].code, "internal");
    assert.equal(errors[0].requestId, "req-2");
    await assert.rejects(client.createGroup("g", ["x"]), (e) => e instanceof ChatError && e.code === "store_unavailable" && e.status === 503 && e.requestId === "req-1" && e.retryable);
    await assert.rejects(client.openDirect("x"), (e) => e.code === "too_many_rooms" && e.status === 409 && !e.retryable);
    await assert.rejects(client.presence("x"), (e) => e.code === "internal" && e.status === 502, "a proxy's answer");
  } finally {
    client.stop();
  }
});

test("a Room has its own events, and the client's follow them", async () => {
  const { client, ws } = await onlineClient({ "/v1/rooms?limit=500": { rooms: [summary("r")], next: null } });
  try {
    const room = client.room("r");
    const heard = [];
    const unsubscribe = room.on("message", (m) => heard.push(`message ${m.seq}`));
    room.on("messages", (r) => heard.push(`messages ${r.messages().length}`));
    room.on("receipt", (r) => heard.push(`receipt ${r.user} ${r.readSeq}`));
    room.on("members", (members) => heard.push(`members ${members.join(",")}`));
    room.on("summary", (r) => heard.push(`summary unread=${r.unread}`));
    const clientHeard = [];
    client.on("room", (id) => clientHeard.push(`room ${id}`));
    client.on("message", (m) => clientHeard.push(`message ${m.seq}`));
    await room.open();
    heard.length = 0;
    clientHeard.length = 0;
    ws.receive({ type: "message", ...msg(1, "r") });
    ws.receive({ type: "message", ...msg(1, "r") }); // a replay: nothing
    ws.receive({ type: "receipt", room: "r", user: "bob", readSeq: 1 });
    ws.receive({ type: "members", room: "r", members: ["me", "bob"] });
    assert.deepEqual(heard, ["message 1", "summary unread=1", "messages 1", "receipt bob 1", "summary unread=1", "members me,bob"]);
    assert.deepEqual(clientHeard, ["message 1", "room r"]);
    assert.deepEqual(room.members, ["me", "bob"]);
    assert.equal(room.lastMessage.seq, 1);
    assert.equal(room.duplicates, 1);
    unsubscribe();
    ws.receive({ type: "message", ...msg(2, "r") });
    assert.ok(!heard.includes("message 2"), "unsubscribed");
    room.markRead();
    assert.deepEqual(ws.sentOfType("read").at(-1), { type: "read", room: "r", seq: 2 });
    assert.equal(room.unread, 0);
    ws.receive({ type: "room_removed", room: "r" });
    assert.equal(client.room("r"), undefined);
    assert.equal(room.listed, false);
    assert.deepEqual(room.messages(), [], "nothing more of it arrives; what it held is forgotten");
  } finally {
    client.stop();
  }
});

test("a Room sends: pending at once, sent on the ack, the promise resolves", async () => {
  const { client, ws } = await onlineClient({ "/v1/rooms?limit=500": { rooms: [summary("r")], next: null } });
  try {
    const room = client.room("r");
    const sending = room.send("hello");
    assert.deepEqual(room.messages().map((m) => [m.text, m.status]), [["hello", "pending"]]);
    const frame = ws.sentOfType("send").at(-1);
    assert.deepEqual(frame, { type: "send", room: "r", clientMsgId: sending.clientMsgId, text: "hello" });
    ws.receive({ type: "ack", clientMsgId: sending.clientMsgId, room: "r", id: "m1", seq: 1, createdAt: "2026-01-01T00:00:00.000Z", duplicate: false });
    const stored = await sending;
    assert.deepEqual(stored, { id: "m1", room: "r", seq: 1, sender: "me", clientMsgId: sending.clientMsgId, kind: "message", text: "hello", createdAt: "2026-01-01T00:00:00.000Z" });
    assert.deepEqual(room.messages().map((m) => [m.seq, m.status]), [[1, "sent"]]);
  } finally {
    client.stop();
  }
});

test("openDirect and createGroup resolve with the listed Room", async () => {
  const info = { id: "g", kind: "group", name: "Trip", members: ["me", "bob"], createdBy: "me", createdAt: "2026-01-01T00:00:00.000Z" };
  const { client } = await onlineClient({ "POST /v1/rooms": [201, info] });
  try {
    const room = await client.createGroup("Trip", ["bob"]);
    assert.equal(room, client.room("g"));
    assert.equal(room.name, "Trip");
    assert.equal(room.unread, 0);
    assert.deepEqual(client.rooms(), [room]);
  } finally {
    client.stop();
  }
});

test("start() retries the first load like a reconnect: a busy server, then a dropped connection", async () => {
  let meCalls = 0;
  const { fetch } = fakeFetch({
    "/v1/me": () => (++meCalls < 3 ? [503, { error: { code: "overloaded", message: "busy" } }] : { user: "me" }),
    "/v1/rooms?limit=500": { rooms: [], next: null },
  });
  const { WebSocket, sockets } = fakeWebSockets();
  const client = new ChatClient({ baseUrl: BASE, token: "t", fetch, WebSocket, backoff: { baseMs: 1, maxMs: 5 } });
  const states = [];
  client.on("state", (s) => states.push(s));
  let settled = false;
  const started = client.start().finally(() => (settled = true));
  try {
    await until(() => sockets.length === 1, 3000, "the first connection");
    assert.equal(meCalls, 3);
    assert.deepEqual(sockets[0].protocols, ["chatd.v1", "bearer.t"]);
    sockets[0].drop(1006);
    await until(() => sockets.length === 2, 3000, "a reconnect");
    assert.equal(settled, false, "not online yet");
    sockets[1].goOnline();
    await started;
    assert.deepEqual(states, ["connecting", "reconnecting", "online"]);
  } finally {
    client.stop();
  }
});

test("start() takes a new token when one is refused, and rejects when it cannot", async () => {
  // REST refuses the first token; getToken brings a good one.
  const tokens = ["t1", "t2"];
  const { fetch, calls } = fakeFetch({
    "/v1/me": (call) => (call.headers.authorization === "Bearer t1" ? [401, { error: { code: "token_expired", message: "expired" } }] : { user: "me" }),
    "/v1/rooms?limit=500": { rooms: [], next: null },
  });
  const { WebSocket, sockets } = fakeWebSockets();
  const refreshing = new ChatClient({ baseUrl: BASE, getToken: async () => tokens.shift(), fetch, WebSocket, backoff: { baseMs: 1, maxMs: 5 } });
  const started = refreshing.start();
  await until(() => sockets.length === 1, 3000, "a connection with the new token");
  assert.deepEqual(sockets[0].protocols, ["chatd.v1", "bearer.t2"]);
  sockets[0].goOnline();
  await started;
  assert.deepEqual(calls.map((c) => c.headers.authorization).slice(0, 2), ["Bearer t1", "Bearer t2"]);
  refreshing.stop();

  // No getToken: a refused token ends start() at once, over REST or on the WebSocket.
  const refusedRest = new ChatClient({ baseUrl: BASE, token: "bad", fetch: fakeFetch({ "/v1/me": [401, { error: { code: "unauthorized", message: "bad token" } }] }).fetch, WebSocket });
  await assert.rejects(refusedRest.start(), (e) => e.code === "unauthorized" && e.status === 401);
  assert.equal(refusedRest.state, "offline");

  const ws = fakeWebSockets();
  const refusedWs = new ChatClient({ baseUrl: BASE, token: "bad", fetch: fakeFetch({ "/v1/me": { user: "me" }, "/v1/rooms?limit=500": { rooms: [], next: null } }).fetch, WebSocket: ws.WebSocket });
  const refusedStart = refusedWs.start();
  await until(() => ws.sockets.length === 1);
  ws.sockets[0].receive({ type: "error", code: "unauthorized", message: "bad token" });
  ws.sockets[0].drop(4401);
  await assert.rejects(refusedStart, (e) => e.code === "unauthorized");
  assert.equal(refusedWs.state, "offline");
  assert.equal(ws.sockets.length, 1, "no reconnect without a new token");

  // A request no retry can cure (here: no chatd at that address).
  const lost = new ChatClient({ baseUrl: BASE, token: "t", fetch: fakeFetch({ "/v1/me": [404, { error: { code: "not_found", message: "no such route" } }] }).fetch, WebSocket });
  await assert.rejects(lost.start(), (e) => e.code === "not_found");
});

test("stop() settles every send, closes with 1000, and ends a start() still under way", async () => {
  const { client, ws } = await onlineClient({ "/v1/rooms?limit=500": { rooms: [summary("r")], next: null } });
  const acked = client.send("r", "acked");
  ws.receive({ type: "ack", clientMsgId: acked.clientMsgId, room: "r", id: "m1", seq: 1, createdAt: "2026-01-01T00:00:00.000Z", duplicate: false });
  const inFlight = client.send("r", "in flight");
  ws.drop(1006); // the next one is typed while disconnected
  const unsent = client.send("r", "never sent");
  client.stop();
  assert.equal((await acked).seq, 1);
  await assert.rejects(inFlight, (e) => e instanceof ChatError && e.code === "stopped" && e.clientMsgId === inFlight.clientMsgId && /may still have been stored/.test(e.message));
  await assert.rejects(unsent, (e) => e.code === "stopped" && /not sent/.test(e.message));
  assert.deepEqual(client.messages("r").map((m) => [m.text, m.status]), [["acked", "sent"], ["in flight", "failed"], ["never sent", "failed"]]);
  assert.equal(client.state, "offline");

  const { WebSocket, sockets } = fakeWebSockets();
  const { fetch } = fakeFetch({ "/v1/me": { user: "me" }, "/v1/rooms?limit=500": { rooms: [], next: null } });
  const starting = new ChatClient({ baseUrl: BASE, token: "t", fetch, WebSocket });
  const started = starting.start();
  await until(() => sockets.length === 1);
  starting.stop();
  await assert.rejects(started, (e) => e.code === "stopped");
  assert.deepEqual(sockets[0].closedWith, { code: 1000, reason: "bye" });
});

test("the entry exports exactly the values chatd.d.ts declares", () => {
  const dts = readFileSync(new URL("../../web/sdk/chatd.d.ts", import.meta.url), "utf8");
  const declared = [...dts.matchAll(/^export declare (?:class|function|const) (\w+)/gm)].map((m) => m[1]).sort();
  assert.deepEqual(Object.keys(sdk).sort(), declared);
});

test("a resume of more rooms than one frame may name is split into frames of 1000", () => {
  const positions = Object.fromEntries(Array.from({ length: 2500 }, (_, i) => [`r${i}`, i]));
  const chunks = resumeChunks(positions);
  assert.deepEqual(chunks.map((c) => Object.keys(c).length), [1000, 1000, 500]);
  assert.deepEqual(Object.assign({}, ...chunks), positions, "every room once");
  assert.deepEqual(resumeChunks({}), [{}], "no rooms: one empty resume");
});
