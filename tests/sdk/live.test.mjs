// The SDK against a real chatd node over real sockets (Node's WebSocket):
// delivery, resume after a reconnect, retries of sends made while disconnected, gaps filled
// from history, a server restart; presence, typing, receipts and unread counts across
// clients (Node has no page: reads are explicit markRead calls here).
// Run: node --experimental-websocket --test tests/sdk/   (after cargo build)

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { ChatClient } from "../../web/sdk/chatd.js";
import { startChatd, login, eventually } from "../support/servers.mjs";

// Short typing and receipt timings, so that expiry and coalescing show within a test.
const node = await startChatd("sdk-live", {
  CHATD__WEBSOCKET__RESUME_WAIT_MS: "300",
  CHATD__PRESENCE__LEAVE_GRACE_MS: "500",
  CHATD__TYPING__TTL_MS: "2000",
  CHATD__RECEIPTS__COALESCE_MS: "100",
});
after(() => node.proc.kill());

/** Node's WebSocket, keeping each client's sockets so a test can cut the current one. */
function cuttableWebSocket() {
  const sockets = [];
  class Cuttable extends WebSocket {
    constructor(...args) {
      super(...args);
      sockets.push(this);
    }
  }
  return { WebSocket: Cuttable, cut: () => sockets.at(-1).close() };
}

async function client(user, options = {}) {
  const token = await login(node.base, user);
  const { WebSocket, cut } = cuttableWebSocket();
  const c = new ChatClient({ baseUrl: node.base, token, gapWaitMs: 200, backoff: { baseMs: 50, maxMs: 500 }, WebSocket, ...options });
  await c.start(); // resolves once online
  assert.equal(c.state, "online");
  return Object.assign(c, { cut });
}

const texts = (c, room) => c.messages(room).map((m) => m.text);
const seqs = (c, room) => c.messages(room).map((m) => m.seq);

test("a message reaches the peer once and resolves the sender's promise", async () => {
  const alice = await client("sdk-alice");
  const bob = await client("sdk-bob");
  try {
    const room = await alice.openDirect("sdk-bob");
    await eventually(() => bob.room(room.id), 10000, "room_added at bob");
    await bob.open(room.id);
    const seen = [];
    bob.on("message", (m) => seen.push(m.seq));
    const stored = await alice.send(room.id, "hi bob");
    assert.equal(stored.seq, 1);
    await eventually(() => texts(bob, room.id).length === 1, 10000, "bob has the message");
    assert.deepEqual(texts(bob, room.id), ["hi bob"]);
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(seen, [1], "message event exactly once");
    assert.equal(bob.room(room.id).unread, 1);
    assert.equal(alice.messages(room.id)[0].status, "sent");
  } finally {
    alice.stop();
    bob.stop();
  }
});

test("after a dropped connection the client resumes and holds everything once, in order", async () => {
  const alice = await client("sdk-carol");
  const bob = await client("sdk-dave");
  try {
    const room = await alice.createGroup("resume", ["sdk-dave"]);
    await eventually(() => bob.room(room.id), 10000, "room at bob");
    await bob.open(room.id);
    for (let i = 1; i <= 3; i++) await alice.send(room.id, `before ${i}`);
    await eventually(() => seqs(bob, room.id).length === 3, 10000, "first three");
    bob.cut(); // the network drops; the SDK reconnects by itself
    for (let i = 1; i <= 5; i++) await alice.send(room.id, `while away ${i}`);
    await eventually(() => bob.state === "online" && seqs(bob, room.id).length === 8, 10000, "resumed");
    assert.deepEqual(seqs(bob, room.id), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.equal(bob.room(room.id).duplicates, 0, "the resume overlapped nothing");
  } finally {
    alice.stop();
    bob.stop();
  }
});

test("messages sent while disconnected stay pending and are stored once after reconnecting", async () => {
  const alice = await client("sdk-erin");
  try {
    const room = await alice.openDirect("sdk-frank");
    await alice.open(room.id);
    alice.cut();
    const first = alice.send(room.id, "typed offline 1");
    const second = alice.send(room.id, "typed offline 2");
    assert.deepEqual(alice.messages(room.id).map((m) => m.status), ["pending", "pending"]);
    const [a, b] = await Promise.all([first, second]);
    assert.deepEqual([a.seq, b.seq], [1, 2], "stored in the order typed");
    const page = await alice.api("GET", `/v1/rooms/${room.id}/messages?after=0`);
    assert.deepEqual(page.messages.map((m) => m.text), ["typed offline 1", "typed offline 2"], "each once");
    assert.deepEqual(alice.messages(room.id).map((m) => m.status), ["sent", "sent"]);
  } finally {
    alice.stop();
  }
});

test("a gap in the live stream is filled from REST history", async () => {
  const alice = await client("sdk-gina");
  try {
    const room = await alice.openDirect("sdk-hank");
    const post = (i) => alice.api("POST", `/v1/rooms/${room.id}/messages`, { clientMsgId: `g${i}`, text: `g${i}` });
    for (let i = 1; i <= 2; i++) await post(i);
    // Bob's live stream is a socket the test speaks for the server, so that it can lose
    // messages on the way: of 3, 4 and 5 only 5 arrives. REST is the real server's.
    const sockets = [];
    class LossyStream {
      constructor() {
        this.readyState = 1;
        sockets.push(this);
      }
      send() {}
      close() {}
      deliver(frame) {
        this.onmessage({ data: JSON.stringify(frame) });
      }
    }
    const bob = new ChatClient({ baseUrl: node.base, token: await login(node.base, "sdk-hank"), gapWaitMs: 100, WebSocket: LossyStream });
    try {
      const started = bob.start();
      await eventually(() => sockets.length === 1, 10000, "bob connects");
      sockets[0].deliver({ type: "welcome", v: 1, connId: "c", user: "sdk-hank", node: "test", heartbeatMs: 20000, resumeWaitMs: 300, maxTextChars: 4000 });
      sockets[0].deliver({ type: "resumed", rooms: {} });
      await started;
      const bobRoom = bob.room(room.id);
      await bobRoom.open();
      assert.deepEqual(bobRoom.messages().map((m) => m.text), ["g1", "g2"]);
      for (let i = 3; i <= 5; i++) await post(i);
      const { messages } = await alice.api("GET", `/v1/rooms/${room.id}/messages?after=4`);
      sockets[0].deliver({ type: "message", ...messages[0] });
      await eventually(() => bobRoom.messages().length === 5, 10000, "gap filled");
      assert.deepEqual(bobRoom.messages().map((m) => m.text), ["g1", "g2", "g3", "g4", "g5"]);
    } finally {
      bob.stop();
    }
  } finally {
    alice.stop();
  }
});

test("a server restart: the client shows reconnecting, comes back, and loses nothing", async () => {
  const own = await startChatd("sdk-restart");
  const token = (user) => login(own.base, user);
  const alice = new ChatClient({ baseUrl: own.base, token: await token("ivy"), backoff: { baseMs: 50, maxMs: 300 } });
  const states = [];
  alice.on("state", (s) => states.push(s));
  await alice.start();
  try {
    await eventually(() => alice.state === "online", 10000, "online");
    const room = await alice.openDirect("jack");
    await alice.open(room.id);
    await alice.send(room.id, "before restart");
    // Same database, new process: SIGTERM drains (1012), the SDK reconnects.
    const { proc } = own;
    await proc.kill("SIGTERM");
    const pending = alice.send(room.id, "while restarting");
    proc.start();
    const stored = await pending;
    assert.equal(stored.seq, 2);
    assert.ok(states.includes("reconnecting"), `states: ${states}`);
    assert.equal(alice.state, "online");
    assert.deepEqual(texts(alice, room.id), ["before restart", "while restarting"]);
  } finally {
    alice.stop();
    await own.proc.kill();
  }
});

// ---- presence, typing, receipts, unread ----------------------------------------------------------

test("two clients see each other's presence: online, offline with lastSeen, hidden", async () => {
  const alice = await client("sdk-kim");
  const bob = await client("sdk-lou");
  try {
    await alice.openDirect("sdk-lou"); // contacts now: each hears of the other
    await eventually(() => alice.presenceOf("sdk-lou")?.state === "online", 10000, "alice sees bob online");
    await eventually(() => bob.presenceOf("sdk-kim")?.state === "online", 10000, "bob sees alice online");
    const changes = [];
    alice.on("presence", (p) => changes.push(...p.users.filter((u) => u.user === "sdk-lou")));
    const before = Date.now();
    bob.stop(); // a clean close: offline at once
    await eventually(() => alice.presenceOf("sdk-lou")?.state === "offline", 10000, "alice sees bob offline");
    const seen = Date.parse(alice.presenceOf("sdk-lou").lastSeen);
    assert.ok(seen >= before - 1000 && seen <= Date.now() + 1000, `lastSeen ${alice.presenceOf("sdk-lou").lastSeen}`);
    assert.ok(changes.every((c, i) => i === 0 || c.v > changes[i - 1].v), "versions only grow");

    await bob.start();
    await eventually(() => alice.presenceOf("sdk-lou")?.state === "online", 10000, "bob is back");
    assert.deepEqual(await bob.updateSettings({ hidePresence: true }), { hidePresence: true });
    await eventually(() => alice.presenceOf("sdk-lou")?.state === "offline", 10000, "hidden: offline");
    assert.equal(alice.presenceOf("sdk-lou").lastSeen, null, "hidden: no lastSeen");
    assert.deepEqual(await bob.settings(), { hidePresence: true });
    await bob.updateSettings({ hidePresence: false });
    await eventually(() => alice.presenceOf("sdk-lou")?.state === "online", 10000, "visible again");
  } finally {
    alice.stop();
    bob.stop();
  }
});

test("typing reaches the other member, and ends when the message is sent", async () => {
  const alice = await client("sdk-max");
  const bob = await client("sdk-ned");
  try {
    const room = await alice.openDirect("sdk-ned");
    await eventually(() => bob.room(room.id), 10000, "room at bob");
    const lists = [];
    alice.on("typing", (t) => t.room === room.id && lists.push(t.users));
    bob.setTyping(room.id, true);
    await eventually(() => alice.typingIn(room.id).includes("sdk-ned"), 10000, "alice sees bob typing");
    assert.deepEqual(bob.typingIn(room.id), [], "never told of one's own typing");
    await bob.send(room.id, "there you go");
    await eventually(() => alice.typingIn(room.id).length === 0, 10000, "the send stopped it");
    // A start with no stop expires (the server's TTL here is 2 s).
    bob.setTyping(room.id, true);
    await eventually(() => alice.typingIn(room.id).length === 1, 10000, "typing again");
    await eventually(() => alice.typingIn(room.id).length === 0, 10000, "expired");
    assert.deepEqual(lists.at(-1), []);
  } finally {
    alice.stop();
    bob.stop();
  }
});

test("an own message goes sent, delivered (by the peer's SDK by itself), read", async () => {
  const alice = await client("sdk-oli");
  const bob = await client("sdk-pat");
  try {
    const room = await alice.openDirect("sdk-pat");
    await alice.open(room.id);
    await eventually(() => bob.room(room.id)?.loaded, 10000, "room loaded at bob");
    const statuses = [];
    alice.on("receipt", () => statuses.push(alice.messageStatus(room.id, 1)));
    const stored = await alice.send(room.id, "did you get this?");
    await eventually(() => alice.messageStatus(room.id, stored.seq) === "delivered", 10000, "delivered");
    bob.markRead(room.id);
    await eventually(() => alice.messageStatus(room.id, stored.seq) === "read", 10000, "read");
    const order = statuses.map((st) => ["sent", "delivered", "read"].indexOf(st));
    assert.ok(order.every((o, i) => o >= 0 && (i === 0 || o >= order[i - 1])), `only forward: ${statuses}`);
    // The REST view agrees, and the sender's SDK holds the same positions.
    const page = await alice.api("GET", `/v1/rooms/${room.id}/receipts`);
    const bobs = page.members.find((m) => m.user === "sdk-pat");
    assert.deepEqual(bobs, { user: "sdk-pat", deliveredSeq: 1, readSeq: 1 });
    assert.deepEqual(alice.receipts(room.id).find((r) => r.user === "sdk-pat"), bobs);
  } finally {
    alice.stop();
    bob.stop();
  }
});

test("in a group: delivered to k of n and read by k of n, the sender not counted; a private read shows nothing", async () => {
  const [ann, ben, cat] = await Promise.all(["sdk-qa", "sdk-rb", "sdk-sc"].map((u) => client(u)));
  try {
    const room = await ann.createGroup("receipts", ["sdk-rb", "sdk-sc"]);
    await ann.open(room.id);
    await eventually(() => ben.room(room.id)?.loaded && cat.room(room.id)?.loaded, 10000, "room loaded at ben and cat");
    const { seq } = await ann.send(room.id, "who reads this?");
    await eventually(() => ann.messageStatus(room.id, seq).delivered === 2, 10000, "delivered to both");
    assert.deepEqual(ann.messageStatus(room.id, seq), { delivered: 2, read: 0, of: 2 });
    cat.markRead(room.id, seq, { private: true });
    const catsList = async () => (await cat.api("GET", "/v1/rooms")).rooms.find((r) => r.id === room.id);
    await eventually(async () => (await catsList()).readSeq === seq, 10000, "cat's own position moved on the server");
    assert.equal((await catsList()).unread, 0);
    ben.markRead(room.id);
    await eventually(() => ann.messageStatus(room.id, seq).read === 1, 10000, "read by ben");
    assert.deepEqual(ann.room(room.id).readers(seq), { read: ["sdk-rb"], delivered: ["sdk-sc"], sent: [] }, "cat's private read shows nothing");
    const fresh = await ann.loadReceipts(room.id);
    assert.equal(fresh.find((r) => r.user === "sdk-sc").readSeq, 0, "nor over REST");
  } finally {
    for (const c of [ann, ben, cat]) c.stop();
  }
});

test("unread counts: others' messages count, and a read on one device clears every device", async () => {
  const alice = await client("sdk-tom");
  const phone = await client("sdk-uma");
  const laptop = await client("sdk-uma");
  try {
    const room = await alice.openDirect("sdk-uma");
    await eventually(() => phone.room(room.id) && laptop.room(room.id), 10000, "room on both devices");
    await alice.send(room.id, "one");
    await alice.send(room.id, "two");
    for (const device of [phone, laptop]) {
      await eventually(() => device.room(room.id).unread === 2 && device.unreadTotal() === 2, 10000, "2 unread on each device");
    }
    assert.equal(alice.room(room.id).unread, 0, "own messages are not unread");
    const cleared = [];
    laptop.on("unread", (u) => cleared.push(u));
    phone.markRead(room.id);
    await eventually(() => laptop.room(room.id).unread === 0, 10000, "the laptop hears of the phone's read");
    assert.equal(laptop.unreadTotal(), 0);
    assert.deepEqual(cleared.at(-1), { total: 0, rooms: { [room.id]: 0 } });
    assert.equal(laptop.room(room.id).readSeq, 2);
    await alice.send(room.id, "three");
    await eventually(() => laptop.unreadTotal() === 1 && phone.unreadTotal() === 1, 10000, "counting on");
  } finally {
    alice.stop();
    phone.stop();
    laptop.stop();
  }
});
