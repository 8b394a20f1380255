// The SDK against docs/protocol-rules.json, the rules table the protocol crate writes: close
// actions, retryable codes, sample frames of every type, and a sample of the fold (log
// entries and the state the server folds from them). If the server's rules change, the table
// changes with them, and these tests say where the SDK has to follow.
// Run: node --test tests/sdk/

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { PROTOCOL, PROTOCOL_VERSION, closeAction, isRetryable, ChatError, MessageFold } from "../../web/sdk/chatd.js";
import { CLOSE_RULES, RETRYABLE_CODES, requestFailureAction } from "../../web/sdk/rules.js";
import { onlineClient, summary } from "../support/fakes.mjs";

const table = JSON.parse(readFileSync(new URL("../../docs/protocol-rules.json", import.meta.url), "utf8"));
const server = table.frames.server;
const client = table.frames.client;

/** The table's own answer for a close code: the first range that holds it, else otherwise. */
const tableAction = (code) => table.close.ranges.find((r) => code >= r.from && code <= r.to)?.action ?? table.close.otherwise;

test("the table is consistent: each listed close code's action is what the ranges say", () => {
  for (const [code, { action }] of Object.entries(table.close.codes)) assert.equal(tableAction(Number(code)), action, code);
});

test("closeAction follows the table for every listed code, at every range boundary, and outside", () => {
  for (const [code, { action }] of Object.entries(table.close.codes)) assert.equal(closeAction(Number(code)), action, `listed ${code}`);
  for (const { from, to } of table.close.ranges) {
    for (const code of [from - 1, from, to, to + 1]) assert.equal(closeAction(code), tableAction(code), `boundary ${code}`);
  }
  for (const code of [0, 999, 1003, 1004, 1014, 1015, 2000, 3000, 3999, 4100, 4199, 4200, 4399, 4500, 4999, 5000, 65535]) {
    assert.equal(closeAction(code), tableAction(code), `outside ${code}`);
  }
  assert.deepEqual(JSON.parse(JSON.stringify(CLOSE_RULES)), { ranges: table.close.ranges, otherwise: table.close.otherwise }, "the same rules, as data");
});

test("isRetryable matches the table for every error code", () => {
  for (const [code, { retryable }] of Object.entries(table.errors)) assert.equal(isRetryable(code), retryable, code);
  const retryable = Object.keys(table.errors).filter((code) => table.errors[code].retryable);
  assert.deepEqual([...RETRYABLE_CODES].sort(), retryable.sort(), "no retryable code the table does not know");
});

test("a failed REST request is retried by the same actions as a close", () => {
  for (const [code, { retryable }] of Object.entries(table.errors)) {
    const expected = code === "unauthorized" || code === "token_expired" ? "reauth" : retryable ? "backoff" : "stop";
    assert.equal(requestFailureAction(code), expected, code);
  }
  assert.equal(requestFailureAction(undefined), closeAction(1006), "no answer at all: like a dropped connection");
});

test("the subprotocol and version are the table's", () => {
  assert.equal(PROTOCOL, table.subprotocol);
  assert.equal(server.welcome.v, PROTOCOL_VERSION);
});

test("the table has a sample of every frame type, each field present", () => {
  assert.deepEqual(Object.keys(client).sort(), ["active", "delete", "delivered", "edit", "ping", "react", "read", "resume", "send", "typing"]);
  assert.deepEqual(Object.keys(server).sort(), [
    "ack", "error", "members", "message", "pong", "presence", "receipt", "resumed", "room_added", "room_removed", "typing", "unread", "welcome",
  ]);
  for (const [type, frame] of [...Object.entries(client), ...Object.entries(server)]) assert.equal(frame.type, type);
  for (const field of ["code", "message", "clientMsgId", "room", "rooms", "retryAfterMs", "requestId"]) assert.ok(field in server.error, `error.${field}`);
});

// ---- the SDK takes every server frame ------------------------------------------------------

/** Every room a sample names, so that a client can hold them all. */
const sampleRooms = [
  ...new Set([
    server.message.room, server.ack.room, server.receipt.room, server.members.room, server.room_removed.room, server.error.room,
    server.typing.room, server.unread.room, ...Object.keys(server.resumed.rooms),
  ]),
];

/** A client online with every sample room listed (or with none), and the errors it reports. */
async function clientFor({ listed = true } = {}) {
  const rooms = listed ? sampleRooms.map((id) => summary(id)) : [];
  const online = await onlineClient({ "/v1/rooms?limit=500": { rooms, next: null } });
  const errors = [];
  online.client.on("error", (e) => errors.push(e));
  return { ...online, errors };
}

/** Feeds one frame as the server would; fails the test on a listener that threw. */
function feed(ws, frame) {
  const logged = [];
  const original = console.error;
  console.error = (...args) => logged.push(args);
  try {
    ws.receive(frame);
  } finally {
    console.error = original;
  }
  assert.deepEqual(logged, [], `${frame.type}: nothing went wrong inside the SDK`);
}

/** For each server frame type: what taking the sample must do to a client. */
const effects = {
  async welcome(c) {
    c.ws.sent.length = 0;
    feed(c.ws, server.welcome);
    assert.equal(c.client.user, server.welcome.user);
    assert.equal(c.client.node, server.welcome.node);
    assert.equal(c.ws.sentOfType("resume").length, 1, "a welcome is answered with a resume");
  },
  async resumed(c) {
    feed(c.ws, server.resumed);
    assert.equal(c.client.state, "online");
  },
  async message(c) {
    const seen = [];
    c.client.on("message", (m) => seen.push(m));
    feed(c.ws, server.message);
    const { type, ...message } = server.message;
    assert.deepEqual(seen, [message]);
    assert.deepEqual(
      c.client.messages(message.room).map(({ status, ...m }) => m),
      [{ ...message, reactions: [] }], // as it stands: nobody reacted
    );
  },
  async ack(c) {
    const sending = c.client.send(server.ack.room, "hi");
    feed(c.ws, { ...server.ack, clientMsgId: sending.clientMsgId }); // the sample's shape, our message
    const stored = await sending;
    assert.equal(stored.seq, server.ack.seq);
    assert.equal(stored.id, server.ack.id);
    assert.equal(stored.createdAt, server.ack.createdAt);
  },
  async pong(c) {
    feed(c.ws, server.pong);
    assert.equal(c.client.state, "online");
  },
  async receipt(c) {
    const seen = [];
    c.client.on("receipt", (r) => seen.push(r));
    feed(c.ws, server.receipt);
    const { type, ...receipt } = server.receipt;
    assert.deepEqual(seen, [receipt]);
    const { room, ...positions } = receipt;
    assert.deepEqual(c.client.receipts(room), [positions]);
  },
  async unread(c) {
    const seen = [];
    c.client.on("unread", (u) => seen.push(u));
    feed(c.ws, server.unread);
    const room = c.client.room(server.unread.room);
    assert.equal(room.unread, server.unread.unread);
    assert.equal(room.readSeq, server.unread.readSeq);
    assert.equal(c.client.unreadTotal(), server.unread.total);
    assert.deepEqual(seen, [{ total: server.unread.total, rooms: { [room.id]: server.unread.unread } }]);
  },
  async presence(c) {
    const seen = [];
    c.client.on("presence", (p) => seen.push(p));
    feed(c.ws, server.presence);
    const held = server.presence.users.map(({ user, state, lastSeen, v }) => ({ user, state, lastSeen: lastSeen ?? null, v }));
    for (const entry of held) assert.deepEqual(c.client.presenceOf(entry.user), entry);
    assert.deepEqual(seen, [{ snapshot: server.presence.snapshot, users: held }]);
  },
  async typing(c) {
    const seen = [];
    c.client.on("typing", (t) => seen.push(t));
    feed(c.ws, server.typing);
    assert.deepEqual(c.client.typingIn(server.typing.room), server.typing.users);
    assert.deepEqual(c.client.room(server.typing.room).typing, server.typing.users);
    assert.deepEqual(seen, [{ room: server.typing.room, users: server.typing.users }]);
  },
  async room_added(c) {
    feed(c.ws, server.room_added);
    const room = c.client.room(server.room_added.room.id);
    assert.ok(room, "listed");
    for (const [field, value] of Object.entries(server.room_added.room)) assert.deepEqual(room[field], value, field);
  },
  async room_removed(c) {
    assert.ok(c.client.room(server.room_removed.room));
    feed(c.ws, server.room_removed);
    assert.equal(c.client.room(server.room_removed.room), undefined);
  },
  async members(c) {
    feed(c.ws, server.members);
    const room = c.client.room(server.members.room);
    assert.deepEqual(room.members, server.members.members);
    assert.deepEqual(room.roles, server.members.roles);
    for (const [user, role] of Object.entries(server.members.roles)) assert.equal(room.roleOf(user), role);
  },
  async error(c) {
    feed(c.ws, server.error);
    assert.equal(c.errors.length, 1);
    const error = c.errors[0];
    assert.ok(error instanceof ChatError);
    for (const field of ["code", "message", "clientMsgId", "room", "retryAfterMs", "requestId"]) assert.equal(error[field], server.error[field], field);
  },
};

for (const type of Object.keys(server)) {
  test(`the SDK takes the sample ${type} frame`, async () => {
    assert.ok(effects[type], `no expectation written for ${type}: add one`);
    const c = await clientFor({ listed: type !== "room_added" });
    try {
      await effects[type](c);
    } finally {
      c.client.stop();
    }
  });
}

// ---- what the SDK sends has the samples' shape ---------------------------------------------

const keys = (frame) => Object.keys(frame).sort();

test("the frames the SDK sends have exactly the samples' keys", async (t) => {
  t.mock.timers.enable({ apis: ["setInterval"] }); // the heartbeat runs on the client's 1 s tick
  const room = sampleRooms[0];
  // activeEveryMs 0: `active` goes out at once, not 20 s after connecting.
  const { client: sdk, ws } = await onlineClient({ "/v1/rooms?limit=500": { rooms: [summary(room)], next: null } }, { activeEveryMs: 0 });
  try {
    await sdk.room(room).open();
    ws.goOnline(); // as after a reconnect: the resume names every loaded room
    sdk.setTyping(room, true);
    sdk.send(room, "hi", { replyTo: 1 });
    sdk.room(room).edit(1, "hi there");
    sdk.room(room).delete(1);
    sdk.room(room).react(1, "👍");
    ws.receive({ ...server.message, room, seq: 1, sender: "someone else" }); // delivered, then read
    sdk.markRead(room);
    sdk.activity();
    t.mock.timers.tick(1000);
    const sent = (type) => {
      const frames = ws.sentOfType(type);
      assert.ok(frames.length > 0, `the SDK sent a ${type}`);
      return frames.at(-1);
    };
    assert.deepEqual(keys(sent("send")), keys(client.send));
    assert.deepEqual(keys(sent("edit")), keys(client.edit));
    assert.deepEqual(keys(sent("delete")), keys(client.delete));
    assert.deepEqual(keys(sent("react")), keys(client.react));
    assert.deepEqual(keys(sent("resume")), keys(client.resume));
    assert.deepEqual(Object.keys(sent("resume").rooms), [room]);
    assert.deepEqual(keys(sent("read")), keys(client.read));
    assert.deepEqual(keys(sent("ping")), keys(client.ping));
    assert.deepEqual(keys(sent("delivered")), keys(client.delivered));
    assert.deepEqual(keys(sent("typing")), keys(client.typing));
    assert.deepEqual(keys(sent("active")), keys(client.active));
  } finally {
    sdk.stop();
  }
});

// ---- the fold: the server's state from the same entries ---------------------------------

const { fold } = table;
/** A state as compared: the SDK's own marks (status, changing) are not the server's. */
const asState = ({ status, changing, ...state }) => state;

test("the table's fold sample: entries of every kind, and the state the server folds from them", () => {
  assert.ok(fold && Array.isArray(fold.entries) && Array.isArray(fold.state), "docs/protocol-rules.json has a fold sample");
  assert.deepEqual(new Set(fold.entries.map((e) => e.kind)), new Set(["message", "edit", "delete", "react", "unreact"]));
  assert.ok(fold.entries.some((e) => e.deleted) && fold.entries.some((e) => e.replyTo !== undefined));
});

test("MessageFold folds the sample to the server's state, in the order given and in reverse", () => {
  for (const [order, entries] of [["given", fold.entries], ["reverse", [...fold.entries].reverse()]]) {
    const folded = new MessageFold();
    folded.apply(entries);
    assert.deepEqual(folded.states(fold.viewer), fold.state, `${order} order`);
    assert.equal(folded.waiting, 0, `${order}: every change found its message`);
  }
});

test("MessageFold folds the sample one entry at a time, and a repeat of everything changes nothing", () => {
  const folded = new MessageFold();
  for (const entry of [...fold.entries].reverse()) folded.apply([entry]);
  folded.apply(fold.entries);
  assert.deepEqual(folded.states(fold.viewer), fold.state);
});

test("a client given the sample as message frames, newest first, shows the server's state", async () => {
  const room = fold.entries[0].room;
  const { client: sdk, ws } = await onlineClient({ "/v1/rooms?limit=500": { rooms: [summary(room)], next: null } });
  try {
    ws.receive({ type: "welcome", v: 1, connId: "c2", user: fold.viewer, node: "n1", heartbeatMs: 20000, resumeWaitMs: 2000, maxTextChars: 4000 });
    for (const entry of [...fold.entries].reverse()) ws.receive({ type: "message", ...entry });
    assert.deepEqual(sdk.messages(room).map(asState), fold.state);
    assert.deepEqual(sdk.room(room).entries().map((e) => e.seq), fold.entries.map((e) => e.seq), "the raw log holds every entry");
  } finally {
    sdk.stop();
  }
});
