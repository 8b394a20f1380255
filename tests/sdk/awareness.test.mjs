// Presence, typing, receipts and unread counts without a network: the pure state rules
// (PresenceBook, TypingBoard, TypingReporter, Receipts, PositionReporter in rooms.js), then the client against fakes, with its clock driven by the
// test (node:test's mock timers), so that pacing and expiry are checked to the millisecond.
// Run: node --test tests/sdk/

import { test } from "node:test";
import assert from "node:assert/strict";
import { PositionReporter, PresenceBook, Receipts, TypingBoard, TypingReporter, messageStatus } from "../../web/sdk/rooms.js";
import { FakePage, onlineClient, summary, until } from "../support/fakes.mjs";

const msg = (seq, sender = "bob", room = "r") => ({ id: `m${seq}`, room, seq, sender, clientMsgId: `c${seq}`, text: `t${seq}`, createdAt: "2026-01-01T00:00:00.000Z" });

// ---- presence ------------------------------------------------------------------------------

test("presence: a change applies only over a lower v; stale and repeated ones are dropped", () => {
  const book = new PresenceBook();
  assert.deepEqual(book.apply({ snapshot: true, users: [{ user: "bob", state: "online", v: 5 }] }), [{ user: "bob", state: "online", lastSeen: null, v: 5 }]);
  const offline = { user: "bob", state: "offline", lastSeen: "2026-01-01T10:00:00.000Z", v: 7 };
  assert.deepEqual(book.apply({ snapshot: false, users: [offline] }), [offline]);
  // Two nodes' changes crossing: v 6 (away) arrives after v 7 (offline).
  assert.deepEqual(book.apply({ snapshot: false, users: [{ user: "bob", state: "away", v: 6 }] }), [], "older than held");
  assert.deepEqual(book.apply({ snapshot: false, users: [{ ...offline, state: "online" }] }), [], "same v: held");
  assert.deepEqual(book.get("bob"), offline);
  assert.equal(book.get("nobody"), undefined, "never told: unknown, not offline");
  // A change for someone not in the snapshot (a contact gained with a room) is taken.
  assert.deepEqual(book.apply({ snapshot: false, users: [{ user: "carol", state: "away", v: 1 }] }).map((e) => e.user), ["carol"]);
  // Entries without a user or a version are not presence.
  assert.deepEqual(book.apply({ snapshot: false, users: [{ state: "online", v: 9 }, { user: "dan", state: "online" }, null] }), []);
});

test("presence: a snapshot replaces everything held, whatever the versions", () => {
  const book = new PresenceBook();
  book.apply({ snapshot: true, users: [{ user: "bob", state: "online", v: 9 }, { user: "carol", state: "online", v: 2 }] });
  const applied = book.apply({ snapshot: true, users: [{ user: "bob", state: "offline", lastSeen: "2026-01-01T10:00:00.000Z", v: 3 }] });
  assert.deepEqual(applied.map((e) => [e.user, e.state]), [["bob", "offline"]]);
  assert.equal(book.get("bob").v, 3, "the snapshot's entry, though its v is lower");
  assert.equal(book.get("carol"), undefined, "no longer a contact: forgotten");
  assert.equal(book.size, 1);
});

// ---- typing --------------------------------------------------------------------------------

test("typing: each frame replaces the room's list; entries expire when not listed for the TTL", () => {
  const board = new TypingBoard({ ttlMs: 6000 });
  assert.equal(board.set("r", ["bob"], 0), true);
  assert.equal(board.set("r", ["bob"], 1000), false, "the same list: no change, bob refreshed");
  assert.equal(board.set("r", ["bob", "carol"], 2000), true);
  assert.equal(board.set("r", ["carol"], 3000), true, "replaced: bob stopped");
  assert.deepEqual(board.users("r"), ["carol"]);
  assert.deepEqual(board.users("other"), []);
  assert.deepEqual(board.expire(8999), [], "carol was listed at 3000");
  assert.deepEqual(board.expire(9000), ["r"], "6 s without a refresh");
  assert.deepEqual(board.users("r"), []);
  board.set("r", ["bob", "carol"], 10_000);
  board.set("s", ["dan"], 10_000);
  assert.deepEqual(board.clear().sort(), ["r", "s"], "the connection is gone: every room's list goes");
  assert.deepEqual(board.users("s"), []);
});

test("own typing: one start, refreshed at most every TTL/2, one stop; nothing stopped past the TTL", () => {
  const sent = [];
  let online = true;
  const reporter = new TypingReporter((room, typing) => online && sent.push([room, typing]) > 0, { ttlMs: 6000 });
  for (const at of [0, 500, 1000, 2999]) reporter.set("r", true, at);
  assert.deepEqual(sent, [["r", true]], "keystrokes within 3 s: one start");
  reporter.set("r", true, 3000);
  assert.deepEqual(sent.length, 2, "refreshed after TTL/2");
  reporter.set("r", false, 3500);
  reporter.set("r", false, 3600);
  assert.deepEqual(sent.slice(2), [["r", false]], "one stop");
  assert.equal(reporter.typing("r"), false);
  reporter.set("r", true, 4000);
  reporter.set("r", false, 10_000);
  assert.deepEqual(sent.slice(3), [["r", true]], "the server dropped that start by itself at 10 000: no stop");
  // A start that could not go out is not remembered: the next keystroke tries again.
  online = false;
  reporter.set("r", true, 11_000);
  online = true;
  reporter.set("r", true, 11_100);
  assert.deepEqual(sent.slice(4), [["r", true]]);
  reporter.reset();
  reporter.set("r", true, 11_200);
  assert.equal(sent.length, 6, "after a reconnect a keystroke starts again");
});

// ---- receipts ------------------------------------------------------------------------------

test("receipts only move forward, and a read implies delivery", () => {
  const receipts = new Receipts();
  assert.deepEqual(receipts.apply("bob", 5, 3), { user: "bob", deliveredSeq: 5, readSeq: 3 });
  assert.equal(receipts.apply("bob", 4, 2), null, "older (e.g. a REST answer after a frame): ignored");
  assert.deepEqual(receipts.apply("bob", 4, 7), { user: "bob", deliveredSeq: 7, readSeq: 7 }, "read 7: delivered 7 too");
  assert.equal(receipts.apply("carol", 0, 0), null, "nothing: no change");
  assert.deepEqual(receipts.apply("carol", undefined, 2), { user: "carol", deliveredSeq: 2, readSeq: 2 }, "an older frame without deliveredSeq");
  assert.deepEqual(receipts.get("dan"), { user: "dan", deliveredSeq: 0, readSeq: 0 });
  assert.deepEqual(receipts.list(), [{ user: "bob", deliveredSeq: 7, readSeq: 7 }, { user: "carol", deliveredSeq: 2, readSeq: 2 }]);
});

test("message status: sent, delivered, read in a direct room; k of n in a group, the sender not counted", () => {
  const receipts = new Receipts();
  const direct = ["me", "bob"];
  const status = (seq) => messageStatus("direct", receipts.readers(seq, direct, "me"));
  assert.equal(status(1), "sent");
  receipts.apply("bob", 1, 0);
  assert.deepEqual([status(1), status(2)], ["delivered", "sent"]);
  receipts.apply("bob", 2, 1);
  assert.deepEqual([status(1), status(2), status(3)], ["read", "delivered", "sent"]);
  receipts.apply("me", 9, 9); // the sender's own positions count for nothing
  assert.equal(status(3), "sent");

  const group = new Receipts();
  const members = ["me", "ann", "ben", "cat"];
  group.apply("ann", 10, 10);
  group.apply("ben", 10, 8);
  group.apply("me", 10, 10);
  assert.deepEqual(group.readers(10, members, "me"), { read: ["ann"], delivered: ["ben"], sent: ["cat"] });
  assert.deepEqual(messageStatus("group", group.readers(10, members, "me")), { delivered: 2, read: 1, of: 3 });
  assert.deepEqual(messageStatus("group", group.readers(8, members, "me")), { delivered: 2, read: 2, of: 3 });
  // Someone else's message: its sender is not counted, the user is.
  assert.deepEqual(messageStatus("group", group.readers(10, members, "ann")), { delivered: 2, read: 1, of: 3 });
});

// ---- reports: delivered and read -------------------------------------------------------------

test("position reports go forward only and are coalesced to one per room per interval", () => {
  const sent = [];
  let online = true;
  const reporter = new PositionReporter((room, seq) => online && sent.push([room, seq]) > 0, { intervalMs: 500 });
  reporter.offer("r", 1, 0);
  assert.deepEqual(sent, [["r", 1]], "the first goes at once");
  for (const seq of [2, 3, 4]) reporter.offer("r", seq, 100);
  reporter.offer("s", 9, 100);
  assert.deepEqual(sent, [["r", 1], ["s", 9]], "r waits for its pace; s has its own");
  assert.equal(reporter.nextDue(), 500);
  reporter.flush(499);
  assert.equal(sent.length, 2);
  reporter.flush(500);
  assert.deepEqual(sent.at(-1), ["r", 4], "the highest offered meanwhile, once");
  assert.equal(reporter.nextDue(), null);
  reporter.offer("r", 3, 2000);
  reporter.offer("r", 4, 2000);
  assert.equal(sent.length, 3, "never a report that does not move forward");
  reporter.known("r", 10); // the server has more already (its receipt, a read elsewhere)
  reporter.offer("r", 8, 3000);
  assert.equal(sent.length, 3);
  reporter.offer("r", 11, 3000);
  reporter.offer("r", 12, 3100);
  reporter.known("r", 12);
  reporter.flush(5000);
  assert.deepEqual(sent.slice(3), [["r", 11]], "a pending report the server has meanwhile is dropped");
  // No connection: the report stays due, and goes with the next flush that can send.
  online = false;
  reporter.offer("r", 13, 6000);
  online = true;
  reporter.flush(6001);
  assert.deepEqual(sent.at(-1), ["r", 13]);
  reporter.offer("t", 1, 7000);
  assert.equal(reporter.floor("t"), 1);
  reporter.forget("r");
  assert.equal(reporter.nextDue(), null);
});

// ---- the client against fakes, its time driven by the test ------------------------------------

const ROOM = "r";
const direct = (overrides = {}) => ({ ...summary(ROOM), kind: "direct", name: null, members: ["me", "bob"], ...overrides });

/** An online client on a fake page, its timers and clock mocked (time starts at 1 000 000).
 * The fake server answers no pings: the client is told to wait for them for ever. */
async function client(t, { rooms = [direct()], routes = {}, ...options } = {}) {
  t.mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"], now: 1_000_000 });
  const page = new FakePage();
  const online = await onlineClient({ "/v1/rooms?limit=500": { rooms, next: null }, ...routes }, { document: page, pongTimeoutMs: 1e9, ...options });
  t.after(() => online.client.stop());
  return { ...online, page };
}

const framesOf = (ws, type) => ws.sentOfType(type).map(({ type: _, ...f }) => f);

test("delivered is reported when others' messages arrive, coalesced, never for own ones or old news", async (t) => {
  const { client: c, ws, page } = await client(t);
  page.setVisible(false); // nothing is read here: only delivery
  await c.room(ROOM).load();
  ws.receive({ type: "message", ...msg(1, "me") });
  assert.deepEqual(framesOf(ws, "delivered"), [], "own messages are not reported");
  ws.receive({ type: "message", ...msg(2) });
  assert.deepEqual(framesOf(ws, "delivered"), [{ room: ROOM, seq: 2 }], "the first at once");
  for (const seq of [3, 4, 5]) ws.receive({ type: "message", ...msg(seq) });
  ws.receive({ type: "message", ...msg(7) }); // 6 is missing: not contiguous
  assert.equal(framesOf(ws, "delivered").length, 1, "a burst waits for the room's pace");
  t.mock.timers.tick(500);
  assert.deepEqual(framesOf(ws, "delivered").at(-1), { room: ROOM, seq: 5 }, "the highest contiguous, in one frame");
  ws.receive({ type: "message", ...msg(3) }); // a replay
  t.mock.timers.tick(1000);
  assert.equal(framesOf(ws, "delivered").length, 2, "nothing moved: nothing reported");
  // The user's own receipt says a device of theirs got up to 9: nothing at or below it goes.
  ws.receive({ type: "receipt", room: ROOM, user: "me", deliveredSeq: 9, readSeq: 0 });
  ws.receive({ type: "message", ...msg(6) });
  t.mock.timers.tick(1000);
  assert.equal(framesOf(ws, "delivered").length, 2);
});

test("delivered for a room not opened: live messages after the room list's last one", async (t) => {
  const { client: c, ws } = await client(t, { rooms: [direct({ lastSeq: 4, unread: 1, readSeq: 3 })] });
  assert.equal(c.room(ROOM).loaded, false);
  ws.receive({ type: "message", ...msg(5) });
  ws.receive({ type: "message", ...msg(7) }); // 6 not yet here
  t.mock.timers.tick(500);
  assert.deepEqual(framesOf(ws, "delivered"), [{ room: ROOM, seq: 5 }]);
  ws.receive({ type: "message", ...msg(6) });
  t.mock.timers.tick(500);
  assert.deepEqual(framesOf(ws, "delivered").at(-1), { room: ROOM, seq: 7 });
});

test("unread: the room list's count, one more per new message from others after the read position, replaced by unread frames", async (t) => {
  const other = { ...summary("g"), unread: 4, readSeq: 1, lastSeq: 5 };
  const { client: c, ws, page } = await client(t, { rooms: [direct({ lastSeq: 5, readSeq: 3, unread: 2 }), other] });
  page.setVisible(false);
  const events = [];
  c.on("unread", (u) => events.push(u));
  const room = c.room(ROOM);
  assert.equal(c.unreadTotal(), 6);
  ws.receive({ type: "message", ...msg(5) }); // already counted by the list
  ws.receive({ type: "message", ...msg(6) });
  ws.receive({ type: "message", ...msg(7, "me") });
  assert.equal(room.unread, 3);
  assert.deepEqual(events, [{ total: 7, rooms: { [ROOM]: 3 } }]);
  // Another device read up to 6: the server's count replaces ours, its total too.
  ws.receive({ type: "unread", room: ROOM, unread: 0, readSeq: 6, total: 4 });
  assert.equal(room.unread, 0);
  assert.equal(room.readSeq, 6);
  assert.equal(c.unreadTotal(), 4);
  assert.deepEqual(events.at(-1), { total: 4, rooms: { [ROOM]: 0 } });
  ws.receive({ type: "message", ...msg(8) });
  assert.equal(c.unreadTotal(), 5, "counting on from the server's total");
  // A total that differs from the rooms' sum (say, capped counts) is kept as the server says.
  ws.receive({ type: "unread", room: "g", unread: 4, readSeq: 1, total: 1004 });
  assert.equal(c.unreadTotal(), 1004);
  assert.deepEqual(events.at(-1), { total: 1004, rooms: { g: 4 } }, "the total changed though the room's count did not");
  c.markRead(ROOM);
  assert.equal(room.unread, 0);
  assert.equal(c.unreadTotal(), 1003);
  assert.deepEqual(framesOf(ws, "read").at(-1), { room: ROOM, seq: 8 });
  // A reloaded room list is the server's word for every room.
  await c.refreshRooms();
  assert.equal(c.unreadTotal(), 6);
});

test("a room added live counts what its first page brings (no message events), and reports it delivered", async (t) => {
  const info = { id: "n", kind: "direct", name: null, members: ["me", "bob"], createdBy: "bob", createdAt: "2026-01-01T00:00:00.000Z" };
  const { client: c, ws, page } = await client(t, {
    rooms: [],
    routes: { "/v1/rooms/n/messages?order=desc&limit=50": { messages: [msg(2, "bob", "n"), msg(1, "me", "n")], more: false } },
  });
  page.setVisible(false);
  const heard = [];
  c.on("message", (m) => heard.push(m.seq));
  ws.receive({ type: "room_added", room: info });
  await until(() => c.room("n")?.loaded, 2000, "the newest page");
  const room = c.room("n");
  assert.equal(room.unread, 1, "bob's message, which the room list never counted");
  assert.equal(room.lastMessage.seq, 2);
  assert.deepEqual(heard, [], "history is not announced as arrivals");
  ws.receive({ type: "message", ...msg(2, "bob", "n") }); // the same one, live: once
  assert.equal(room.unread, 1);
  assert.deepEqual(framesOf(ws, "delivered"), [{ room: "n", seq: 2 }]);
});

test("an unread frame answering an older read does not undo a newer one made here", async (t) => {
  const other = { ...summary("g"), unread: 2, readSeq: 0, lastSeq: 2 };
  const { client: c, ws, page } = await client(t, { rooms: [direct({ lastSeq: 0 }), other] });
  page.setVisible(false);
  const room = c.room(ROOM);
  await room.load();
  ws.receive({ type: "message", ...msg(1) });
  room.markRead(); // read(1) goes at once
  ws.receive({ type: "message", ...msg(2) });
  room.markRead(); // read(2) waits for the room's pace
  assert.deepEqual([room.unread, room.readSeq, c.unreadTotal()], [0, 2, 2]);
  // The server answers read(1) counting message 2, which arrived meanwhile.
  ws.receive({ type: "unread", room: ROOM, unread: 1, readSeq: 1, total: 3 });
  assert.deepEqual([room.unread, room.readSeq], [0, 2], "not the stale count");
  assert.equal(c.unreadTotal(), 2, "the other room's count from the server, this room's from here");
  t.mock.timers.tick(500);
  assert.deepEqual(framesOf(ws, "read").at(-1), { room: ROOM, seq: 2 });
  ws.receive({ type: "unread", room: ROOM, unread: 0, readSeq: 2, total: 2 });
  assert.deepEqual([room.unread, room.readSeq, c.unreadTotal()], [0, 2, 2]);
  // A read past the last message is held as the server will hold it: frames are not stale then.
  room.markRead(99);
  assert.equal(room.readSeq, 2);
  ws.receive({ type: "message", ...msg(3) });
  ws.receive({ type: "unread", room: ROOM, unread: 1, readSeq: 2, total: 3 });
  assert.equal(room.unread, 1);
});

test("reads happen by themselves while the room is open and the page visible", async (t) => {
  const { client: c, ws, page } = await client(t, { rooms: [direct({ lastSeq: 0 })] });
  const room = c.room(ROOM);
  await room.open();
  ws.receive({ type: "message", ...msg(1) });
  assert.deepEqual(framesOf(ws, "read"), [{ room: ROOM, seq: 1 }]);
  assert.equal(room.unread, 0);
  ws.receive({ type: "message", ...msg(2) });
  ws.receive({ type: "message", ...msg(3) });
  t.mock.timers.tick(500);
  assert.deepEqual(framesOf(ws, "read"), [{ room: ROOM, seq: 1 }, { room: ROOM, seq: 3 }], "coalesced like delivered");
  assert.deepEqual(framesOf(ws, "delivered"), [], "each read implied delivery: no delivered report needed");
  page.setVisible(false);
  ws.receive({ type: "message", ...msg(4) });
  t.mock.timers.tick(1000);
  assert.equal(framesOf(ws, "read").length, 2, "a hidden page reads nothing");
  assert.equal(room.unread, 1);
  page.setVisible(true);
  assert.deepEqual(framesOf(ws, "read").at(-1), { room: ROOM, seq: 4 }, "coming back reads what came");
  assert.equal(room.unread, 0);
  room.close();
  ws.receive({ type: "message", ...msg(5) });
  t.mock.timers.tick(1000);
  assert.equal(framesOf(ws, "read").length, 3, "a closed room is not read");
  assert.equal(room.unread, 1);
});

test("a private read moves the user's position but not the members' view; a later public read still goes", async (t) => {
  const { client: c, ws, page } = await client(t, { rooms: [direct({ lastSeq: 0 })] });
  page.setVisible(false);
  const room = c.room(ROOM);
  await room.load();
  for (const seq of [1, 2, 3]) ws.receive({ type: "message", ...msg(seq) });
  assert.equal(room.unread, 3);
  room.markRead(2, { private: true });
  assert.deepEqual(framesOf(ws, "read"), [{ room: ROOM, seq: 2, private: true }]);
  assert.equal(room.unread, 1, "3 is still unread");
  t.mock.timers.tick(1000);
  room.markRead(2);
  assert.deepEqual(framesOf(ws, "read").at(-1), { room: ROOM, seq: 2 }, "public: the members see it now");
  t.mock.timers.tick(1000);
  room.markRead(2, { private: true });
  room.markRead(1);
  t.mock.timers.tick(1000);
  assert.equal(framesOf(ws, "read").length, 2, "covered by the public read");
});

test("activity on the page reports active at most once per 20 s", async (t) => {
  const { ws, page } = await client(t);
  page.type();
  assert.equal(framesOf(ws, "active").length, 0, "the connection counts as active when it opens");
  t.mock.timers.tick(20_000);
  page.type();
  page.type();
  assert.equal(framesOf(ws, "active").length, 1);
  t.mock.timers.tick(19_999);
  page.setVisible(false);
  page.setVisible(true);
  assert.equal(framesOf(ws, "active").length, 1);
  t.mock.timers.tick(1);
  page.setVisible(true);
  assert.equal(framesOf(ws, "active").length, 2, "coming into view is activity too");
});

test("typing: own starts and stops, sending stops; others' lists replace, expire, and go with the connection", async (t) => {
  const { client: c, ws } = await client(t);
  const room = c.room(ROOM);
  c.setTyping(ROOM, true);
  t.mock.timers.tick(1000);
  c.setTyping(ROOM, true);
  t.mock.timers.tick(2000);
  c.setTyping(ROOM, true);
  assert.deepEqual(framesOf(ws, "typing"), [{ room: ROOM, typing: true }, { room: ROOM, typing: true }], "a refresh after 3 s");
  room.send("hello");
  assert.deepEqual(framesOf(ws, "typing").at(-1), { room: ROOM, typing: false }, "sending stops it");
  c.setTyping(ROOM, false);
  assert.equal(framesOf(ws, "typing").length, 3, "stopped once");

  const events = [];
  c.on("typing", (e) => events.push(e));
  ws.receive({ type: "typing", room: ROOM, users: ["bob", "me"] }); // never the user themself
  assert.deepEqual(room.typing, ["bob"]);
  ws.receive({ type: "typing", room: ROOM, users: ["bob"] });
  assert.deepEqual(events, [{ room: ROOM, users: ["bob"] }], "an unchanged list is no event");
  ws.receive({ type: "message", ...msg(1) });
  assert.deepEqual(c.typingIn(ROOM), ["bob"], "only the server's lists say who types (its stop comes as a frame)");
  ws.receive({ type: "typing", room: ROOM, users: [] });
  assert.deepEqual(c.typingIn(ROOM), []);
  ws.receive({ type: "typing", room: ROOM, users: ["bob"] });
  t.mock.timers.tick(5000);
  assert.deepEqual(c.typingIn(ROOM), ["bob"]);
  t.mock.timers.tick(1000);
  assert.deepEqual(c.typingIn(ROOM), [], "6 s with no word: expired here too");
  ws.receive({ type: "typing", room: ROOM, users: ["bob"] });
  ws.drop(1006);
  assert.deepEqual(c.typingIn(ROOM), [], "no connection: no stop would reach us");
  assert.deepEqual(events.at(-1), { room: ROOM, users: [] });
});

test("receipts: frames and the REST answer on open merge forward only, and give each message's status", async (t) => {
  const group = { ...summary("g"), members: ["me", "ann", "ben"], lastSeq: 0 };
  const { client: c, ws } = await client(t, {
    rooms: [direct({ lastSeq: 0 }), group],
    routes: { [`/v1/rooms/${ROOM}/receipts`]: { members: [{ user: "me", deliveredSeq: 2, readSeq: 2 }, { user: "bob", deliveredSeq: 1, readSeq: 0 }] } },
  });
  const seen = [];
  c.on("receipt", (r) => seen.push(r));
  ws.receive({ type: "receipt", room: ROOM, user: "bob", deliveredSeq: 2, readSeq: 1 });
  await c.room(ROOM).open();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(c.receipts(ROOM).find((r) => r.user === "bob"), { user: "bob", deliveredSeq: 2, readSeq: 1 }, "the older REST answer moved nothing back");
  assert.deepEqual(seen.map((r) => r.user), ["bob", "me"]);
  for (const seq of [1, 2, 3]) ws.receive({ type: "message", ...msg(seq, "me") });
  assert.deepEqual([1, 2, 3].map((s) => c.messageStatus(ROOM, s)), ["read", "delivered", "sent"]);

  ws.receive({ type: "receipt", room: "g", user: "ann", deliveredSeq: 5, readSeq: 5 });
  ws.receive({ type: "receipt", room: "g", user: "ben", deliveredSeq: 5, readSeq: 0 });
  assert.deepEqual(c.messageStatus("g", 5), { delivered: 2, read: 1, of: 2 });
  assert.deepEqual(c.room("g").readers(5), { read: ["ann"], delivered: ["ben"], sent: [] });
});

test("presence frames: the snapshot, then changes by version, each applied one announced", async (t) => {
  const { client: c, ws } = await client(t);
  const events = [];
  c.on("presence", (p) => events.push(p));
  ws.receive({ type: "presence", snapshot: true, users: [{ user: "bob", state: "online", v: 2 }] });
  ws.receive({ type: "presence", snapshot: false, users: [{ user: "bob", state: "offline", lastSeen: "2026-01-01T10:00:00.000Z", v: 4 }] });
  ws.receive({ type: "presence", snapshot: false, users: [{ user: "bob", state: "away", v: 3 }] });
  assert.deepEqual(c.presenceOf("bob"), { user: "bob", state: "offline", lastSeen: "2026-01-01T10:00:00.000Z", v: 4 });
  assert.deepEqual(events.map((e) => [e.snapshot, e.users.map((u) => u.state)]), [[true, ["online"]], [false, ["offline"]]], "the stale change is no event");
});
