// The SDK against a real chatd node over real sockets (Node's WebSocket):
// delivery, resume after a reconnect, retries of sends made while disconnected, gaps filled
// from history, a server restart.
// Run: node --experimental-websocket --test tests/sdk/   (after cargo build)

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { ChatClient } from "../../web/sdk/chatd.js";
import { startChatd, login, eventually } from "../support/servers.mjs";

const node = await startChatd("sdk-live", { CHATD__WEBSOCKET__RESUME_WAIT_MS: "300" });
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
