// Edits, deletes, reactions and replies without a network: the fold's rules (MessageFold in
// rooms.js: the same state in every order), then a Room against fakes: changes sent through
// the outbox and shown at once, unread counts that ignore changes and lose deleted messages,
// the room list's lastMessage, and group roles (docs/protocol.md, "Changes", "Group roles").
// The server's own sample of the fold is replayed in protocol-rules.test.mjs.
// Run: node --test tests/sdk/

import { test } from "node:test";
import assert from "node:assert/strict";
import { MessageFold } from "../../web/sdk/chatd.js";
import { onlineClient, summary, until } from "../support/fakes.mjs";

const at = (seq) => new Date(Date.UTC(2026, 0, 1) + seq * 1000).toISOString();
const entry = (seq, sender, kind, fields = {}) => ({ id: `m${seq}`, room: "r", seq, sender, clientMsgId: `c${seq}`, kind, text: "", createdAt: at(seq), ...fields });
const message = (seq, sender, text, fields = {}) => entry(seq, sender, "message", { text, ...fields });
const edit = (seq, sender, target, text) => entry(seq, sender, "edit", { target, text });
const del = (seq, sender, target) => entry(seq, sender, "delete", { target });
const react = (seq, sender, target, emoji, on = true) => entry(seq, sender, on ? "react" : "unreact", { target, emoji });

/** Every order of a short list. */
function* permutations(list) {
  if (list.length <= 1) yield list;
  else for (let i = 0; i < list.length; i++) for (const rest of permutations([...list.slice(0, i), ...list.slice(i + 1)])) yield [list[i], ...rest];
}

/** `count` orders of a longer list, shuffled by a fixed seed (the same every run). */
function* shuffles(list, count, seed = 7) {
  let state = seed;
  const random = () => ((state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (let n = 0; n < count; n++) {
    const order = [...list];
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    yield order;
  }
}

/** The states `entries` fold to, the same in every order given (else the test fails). */
function foldedInEvery(orders, viewer) {
  let first = null;
  for (const order of orders) {
    const fold = new MessageFold();
    fold.apply(order);
    const states = fold.states(viewer);
    if (first === null) first = states;
    else assert.deepEqual(states, first, `order ${order.map((e) => e.seq).join(",")}`);
  }
  return first;
}

// ---- the fold's rules -------------------------------------------------------------------

test("edits: the one with the highest seq gives the text and editedAt, in every order", () => {
  const entries = [message(1, "a", "one"), edit(2, "a", 1, "two"), edit(4, "a", 1, "four"), edit(3, "a", 1, "three")];
  const [state] = foldedInEvery(permutations(entries), "b");
  assert.deepEqual(state, { ...message(1, "a", "four"), editedAt: at(4), reactions: [] });
});

test("a delete is absorbing: edits and reactions around it change nothing, and it keeps no editedAt", () => {
  const entries = [message(1, "a", "one"), edit(2, "a", 1, "two"), react(3, "b", 1, "👍"), del(4, "a", 1), edit(5, "a", 1, "raced"), react(6, "c", 1, "❤️")];
  const [state] = foldedInEvery(permutations(entries), "b");
  assert.deepEqual(state, { ...message(1, "a", ""), deleted: true, deletedAt: at(4), reactions: [] });
});

test("a message the log shows erased is a tombstone before its delete arrives; the delete adds when", () => {
  const fold = new MessageFold();
  // What history shows once the store removed the texts: the message and its edit, erased.
  fold.apply([message(1, "a", "", { deleted: true }), { ...edit(2, "a", 1, ""), deleted: true }, react(3, "b", 1, "👍")]);
  assert.deepEqual(fold.state(1), { ...message(1, "a", ""), deleted: true, reactions: [] });
  assert.equal(fold.isDeleted(1), true);
  fold.apply([del(4, "a", 1)]);
  assert.equal(fold.state(1).deletedAt, at(4));
});

test("reactions: per user and emoji the highest seq decides; emojis in the order of their earliest standing reaction", () => {
  const entries = [
    message(1, "a", "one"),
    react(2, "b", 1, "👍"),
    react(3, "b", 1, "👍"), // twice: no change
    react(4, "c", 1, "❤️"),
    react(5, "a", 1, "👍"),
    react(6, "c", 1, "❤️", false),
    react(7, "c", 1, "🎉"),
    react(8, "a", 1, "❤️"),
  ];
  const orders = [entries, [...entries].reverse(), ...shuffles(entries, 300)];
  // ❤️ first stood at 4, but c took it off: it stands since a's at 8.
  assert.deepEqual(foldedInEvery(orders, "b")[0].reactions, [
    { emoji: "👍", count: 2, me: true },
    { emoji: "🎉", count: 1, me: false },
    { emoji: "❤️", count: 1, me: false },
  ]);
  assert.deepEqual(foldedInEvery([entries], "a")[0].reactions.map((r) => r.me), [true, false, true], "me: the viewer's own");
  assert.deepEqual(foldedInEvery([[...entries, react(9, "a", 1, "🎉", false)]], "c")[0].reactions.length, 3, "an unreact of nothing standing changes nothing");
  const off = foldedInEvery([[message(1, "a", "x"), react(2, "b", 1, "👍"), react(3, "b", 1, "👍", false)]], "b");
  assert.deepEqual(off[0].reactions, [], "on, then off: nothing left");
});

test("a reply previews the answered message as it stands, cut to 140 characters (not UTF-16 units)", () => {
  const long = "😀".repeat(200);
  const reply = message(2, "b", "yes", { replyTo: 1 });
  const [, answer] = foldedInEvery(permutations([message(1, "a", long), reply]), "b");
  assert.deepEqual(answer.reply, { seq: 1, sender: "a", text: "😀".repeat(140), deleted: false });
  assert.equal(answer.replyTo, 1);
  const edited = foldedInEvery(permutations([message(1, "a", long), reply, edit(3, "a", 1, "short")]), "b");
  assert.deepEqual(edited[1].reply, { seq: 1, sender: "a", text: "short", deleted: false });
  const gone = foldedInEvery(permutations([message(1, "a", long), reply, edit(3, "a", 1, "short"), del(4, "a", 1)]), "b");
  assert.deepEqual(gone[1].reply, { seq: 1, sender: "a", text: "", deleted: true });
});

test("changes wait for their message, and a reply for the one it answers (say, until an older page comes)", () => {
  const fold = new MessageFold();
  fold.apply([message(9, "b", "about that", { replyTo: 1 }), edit(5, "a", 1, "new"), react(6, "b", 1, "👍")]);
  assert.deepEqual([fold.size, fold.waiting], [1, 2]);
  assert.equal(fold.state(9).reply, undefined, "the answered message is not held: no preview yet");
  assert.equal(fold.state(1), undefined);
  fold.apply([message(1, "a", "old")]);
  assert.deepEqual([fold.size, fold.waiting], [2, 0]);
  assert.deepEqual(fold.state(1, "b"), { ...message(1, "a", "new"), editedAt: at(5), reactions: [{ emoji: "👍", count: 1, me: true }] });
  assert.deepEqual(fold.state(9).reply, { seq: 1, sender: "a", text: "new", deleted: false });
  assert.deepEqual(fold.states().map((s) => s.seq), [1, 9], "in seq order, whatever the arrival order");
});

test("the fold's report: messages that arrived and whether they showed, deletes and whether the message showed until then", () => {
  const together = new MessageFold().apply([message(1, "b", "oops"), del(2, "b", 1)]);
  assert.deepEqual(together.arrived.map((a) => [a.message.seq, a.shown]), [[1, true]]);
  assert.deepEqual(together.deleted.map((d) => [d.message.seq, d.delete.seq, d.wasShown]), [[1, 2, true]]);

  const fold = new MessageFold();
  const early = fold.apply([del(2, "b", 1), del(2, "b", 1)]);
  assert.deepEqual(early.waitingDeletes.map((d) => d.seq), [2], "a delete of a message not held, once");
  const late = fold.apply([message(1, "b", "oops")]);
  assert.deepEqual(late.arrived.map((a) => a.shown), [false], "it arrived deleted");
  assert.deepEqual(late.deleted.map((d) => d.wasShown), [false]);
  assert.deepEqual(fold.apply([del(3, "c", 1)]).deleted, [], "only the first delete counts");

  const erased = new MessageFold();
  assert.deepEqual(erased.apply([message(1, "b", "", { deleted: true })]).arrived.map((a) => a.shown), [false]);
  assert.deepEqual(erased.apply([del(2, "b", 1)]).deleted.map((d) => d.wasShown), [false]);
});

// ---- a Room: changes, unread, lastMessage, roles ------------------------------------------

const ROOM = "r";
const ack = (sending, seq) => ({ type: "ack", clientMsgId: sending.clientMsgId, room: ROOM, id: `m${seq}`, seq, createdAt: at(seq), duplicate: false });
const shown = (room) => room.messages().map(({ seq, text, editedAt, deleted, reactions, reply, changing, status }) => ({ seq, text, editedAt, deleted, reactions, reply, changing, status }));
const roomWith = (fields) => ({ "/v1/rooms?limit=500": { rooms: [{ ...summary(ROOM), ...fields }], next: null } });

test("a room shows its messages as they stand; changes arrive as change events, not as messages", async () => {
  const { client, ws } = await onlineClient(roomWith({}));
  try {
    const room = client.room(ROOM);
    await room.open();
    const heard = [];
    room.on("message", (m) => heard.push(`message ${m.seq}`));
    room.on("change", (m) => heard.push(`${m.kind} ${m.seq}`));
    client.on("change", (m) => heard.push(`client ${m.kind} ${m.seq}`));
    for (const e of [message(1, "bob", "helo"), message(2, "me", "hi"), edit(3, "bob", 1, "hello"), react(4, "bob", 2, "👍"), message(5, "bob", "right?", { replyTo: 2 })]) {
      ws.receive({ type: "message", ...e });
    }
    assert.deepEqual(heard, ["message 1", "message 2", "client edit 3", "edit 3", "client react 4", "react 4", "message 5"]);
    assert.deepEqual(shown(room), [
      { seq: 1, text: "hello", editedAt: at(3), deleted: undefined, reactions: [], reply: undefined, changing: undefined, status: "sent" },
      { seq: 2, text: "hi", editedAt: undefined, deleted: undefined, reactions: [{ emoji: "👍", count: 1, me: false }], reply: undefined, changing: undefined, status: "sent" },
      { seq: 5, text: "right?", editedAt: undefined, deleted: undefined, reactions: [], reply: { seq: 2, sender: "me", text: "hi", deleted: false }, changing: undefined, status: "sent" },
    ]);
    assert.equal(room.message(1).text, "hello");
    assert.deepEqual(room.entries().map((e) => e.seq), [1, 2, 3, 4, 5], "the raw log keeps every entry");
    assert.equal(room.lastSeq, 5);
    assert.equal(room.lastMessage.seq, 5);
  } finally {
    client.stop();
  }
});

test("edit, delete, react and unreact go through the outbox: their frames, shown at once, stored on the ack", async () => {
  const { client, ws } = await onlineClient(roomWith({}));
  try {
    const room = client.room(ROOM);
    await room.open();
    ws.receive({ type: "message", ...message(1, "me", "teh plan") });
    ws.receive({ type: "message", ...message(2, "bob", "ok") });
    const lastFrame = () => ws.sent.at(-1);

    const editing = room.edit(1, "the plan");
    assert.deepEqual(lastFrame(), { type: "edit", room: ROOM, clientMsgId: editing.clientMsgId, seq: 1, text: "the plan" });
    assert.deepEqual([shown(room)[0].text, shown(room)[0].changing, shown(room)[0].editedAt], ["the plan", true, undefined], "shown at once");
    ws.receive(ack(editing, 3));
    assert.deepEqual(await editing, { ...edit(3, "me", 1, "the plan"), clientMsgId: editing.clientMsgId });
    assert.deepEqual([shown(room)[0].text, shown(room)[0].changing, shown(room)[0].editedAt], ["the plan", undefined, at(3)]);

    const reacting = room.react(2, "👍");
    assert.deepEqual(lastFrame(), { type: "react", room: ROOM, clientMsgId: reacting.clientMsgId, seq: 2, emoji: "👍" });
    assert.deepEqual(shown(room)[1].reactions, [{ emoji: "👍", count: 1, me: true }]);
    ws.receive(ack(reacting, 4));
    await reacting;
    ws.receive({ type: "message", ...react(4, "me", 2, "👍"), clientMsgId: reacting.clientMsgId }); // the same entry, live: once
    assert.deepEqual(shown(room)[1], { seq: 2, text: "ok", editedAt: undefined, deleted: undefined, reactions: [{ emoji: "👍", count: 1, me: true }], reply: undefined, changing: undefined, status: "sent" });

    const unreacting = room.unreact(2, "👍");
    assert.deepEqual(lastFrame(), { type: "react", room: ROOM, clientMsgId: unreacting.clientMsgId, seq: 2, emoji: "👍", remove: true });
    assert.deepEqual(shown(room)[1].reactions, [], "off at once");
    ws.receive(ack(unreacting, 5));
    assert.equal((await unreacting).kind, "unreact");
    assert.deepEqual(shown(room)[1].reactions, []);

    const replying = room.send("see above", { replyTo: 1 });
    assert.deepEqual(lastFrame(), { type: "send", room: ROOM, clientMsgId: replying.clientMsgId, text: "see above", replyTo: 1 });
    assert.deepEqual(shown(room).at(-1).reply, { seq: 1, sender: "me", text: "the plan", deleted: false }, "a pending reply shows its quote");
    ws.receive(ack(replying, 6));
    assert.equal((await replying).replyTo, 1);

    const deleting = room.delete(1);
    assert.deepEqual(lastFrame(), { type: "delete", room: ROOM, clientMsgId: deleting.clientMsgId, seq: 1 });
    assert.deepEqual([shown(room)[0].deleted, shown(room)[0].text], [true, ""]);
    ws.receive(ack(deleting, 7));
    await deleting;
    const deleted = room.message(1);
    assert.deepEqual([deleted.deleted, deleted.deletedAt, deleted.text, deleted.editedAt], [true, at(7), "", undefined]);
    assert.deepEqual(room.message(6).reply, { seq: 1, sender: "me", text: "", deleted: true }, "the reply's quote follows");
    assert.deepEqual(room.messages().map((m) => m.seq), [1, 2, 6], "changes are no messages");
  } finally {
    client.stop();
  }
});

test("a change is sent again with the same clientMsgId after a reconnect; a refusal rejects it, is reported and undoes it", async () => {
  const { client, ws, sockets } = await onlineClient(roomWith({}));
  try {
    const room = client.room(ROOM);
    await room.open();
    ws.receive({ type: "message", ...message(1, "me", "first") });
    const reacting = room.react(1, "🎉");
    ws.drop(1006);
    await until(() => sockets.length === 2, 3000, "a reconnect");
    sockets[1].goOnline();
    const again = sockets[1].sentOfType("react");
    assert.deepEqual(again, [{ type: "react", room: ROOM, clientMsgId: reacting.clientMsgId, seq: 1, emoji: "🎉" }], "the same change, the same id");
    sockets[1].receive({ ...ack(reacting, 2), duplicate: true });
    await reacting;

    const errors = [];
    client.on("error", (e) => errors.push(e.code));
    const editing = room.edit(1, "too late");
    assert.equal(shown(room)[0].text, "too late");
    sockets[1].receive({ type: "error", code: "edit_window_closed", message: "the edit window has closed", clientMsgId: editing.clientMsgId, room: ROOM });
    await assert.rejects(editing, (e) => e.code === "edit_window_closed" && e.clientMsgId === editing.clientMsgId);
    assert.deepEqual(errors, ["edit_window_closed"]);
    assert.deepEqual([shown(room)[0].text, shown(room)[0].changing], ["first", undefined], "the message shows as it stands");
    assert.deepEqual(room.messages().map((m) => m.status), ["sent"], "no failed item is left behind");
  } finally {
    client.stop();
  }
});

test("unread: changes never count; a delete takes its message off, also one the room list counted and the room never held", async () => {
  const listed = { ...message(2, "bob", "two"), reactions: [] };
  const history = [message(1, "bob", "one"), { ...message(2, "bob", ""), deleted: true }];
  const { client, ws } = await onlineClient({
    ...roomWith({ lastSeq: 2, readSeq: 1, unread: 1, lastMessage: listed }),
    "/v1/rooms/r/messages?order=desc&limit=50": () => ({ messages: [...history, message(3, "bob", "three"), del(8, "bob", 2)].reverse(), more: false }),
  });
  try {
    const room = client.room(ROOM);
    ws.receive({ type: "message", ...message(3, "bob", "three") });
    assert.equal(room.unread, 2);
    ws.receive({ type: "message", ...react(4, "bob", 3, "👍") });
    ws.receive({ type: "message", ...edit(5, "bob", 3, "three!") });
    ws.receive({ type: "message", ...message(6, "me", "mine") });
    assert.equal(room.unread, 2, "reactions, edits and own messages do not count");
    assert.equal(room.lastMessage.seq, 6);
    ws.receive({ type: "message", ...del(7, "me", 6) });
    assert.equal(room.unread, 2, "deleting an own message takes nothing off");
    assert.deepEqual([room.lastMessage.seq, room.lastMessage.text], [3, "three!"], "the newest message not deleted, as it stands");
    // Bob deletes message 2: the room list counted it, this room never held it.
    ws.receive({ type: "message", ...del(8, "bob", 2) });
    assert.equal(room.unread, 1);
    // Opening brings message 2 (deleted) from history: not taken off twice.
    await room.open();
    assert.equal(room.unread, 1);
    assert.deepEqual(room.messages().map((m) => [m.seq, m.deleted === true]), [[1, false], [2, true], [3, false], [6, true]]);
    // A resume replays a message already deleted, then its delete: never counted.
    ws.receive({ type: "message", ...message(9, "bob", "", { deleted: true }) });
    ws.receive({ type: "message", ...del(10, "bob", 9) });
    assert.equal(room.unread, 1);
    ws.receive({ type: "message", ...del(11, "bob", 3) });
    assert.equal(room.unread, 0, "the last one counted is gone");
    assert.equal(room.lastMessage.seq, 1, "back to the newest message still standing");
  } finally {
    client.stop();
  }
});

test("unread: marking read counts only the messages still standing after the position", async () => {
  const { client, ws } = await onlineClient(roomWith({}));
  try {
    const room = client.room(ROOM);
    await room.open();
    for (const e of [message(1, "bob", "a"), message(2, "bob", "b"), message(3, "bob", "c"), del(4, "bob", 3)]) ws.receive({ type: "message", ...e });
    assert.equal(room.unread, 2);
    room.markRead(1);
    assert.equal(room.unread, 1, "message 2 stands, 3 was deleted");
    room.markRead();
    assert.equal(room.unread, 0);
    await until(() => ws.sentOfType("read").at(-1)?.seq === 4, 2000, "a read up to the delete: positions are log positions");
  } finally {
    client.stop();
  }
});

test("roles: from the room list and members frames; who may edit, delete, remove and change roles", async () => {
  const group = { kind: "group", members: ["ann", "bob", "me"], roles: { me: "owner", ann: "admin" } };
  const answer = { ...summary("g"), ...group, id: "g", roles: { me: "owner", ann: "admin", bob: "admin" } };
  const { client, ws, calls } = await onlineClient({
    "/v1/rooms?limit=500": { rooms: [{ ...summary("g"), ...group }, { ...summary("d"), kind: "direct", members: ["me", "bob"], roles: {} }], next: null },
    "PUT /v1/rooms/g/members/bob/role": answer,
    "DELETE /v1/rooms/g/members/me": [204, null],
  });
  try {
    const room = client.room("g");
    const mine = { sender: "me", seq: 1 };
    const bobs = { sender: "bob", seq: 2 };
    assert.deepEqual([room.roleOf("me"), room.roleOf("ann"), room.roleOf("bob")], ["owner", "admin", "member"]);
    assert.deepEqual([room.canSetRoles, room.canRemove("ann"), room.canRemove("bob"), room.canDelete(bobs), room.canEdit(bobs), room.canEdit(mine)], [true, true, true, true, false, true]);
    assert.equal(room.canEdit({ ...mine, deleted: true }), false, "not a tombstone");
    assert.equal(room.canEdit({ ...mine, seq: null }), false, "not before it is stored");

    const members = [];
    room.on("members", (m) => members.push(m));
    ws.receive({ type: "members", room: "g", members: ["ann", "bob", "me"], roles: { ann: "owner", bob: "admin" } });
    assert.deepEqual(members, [["ann", "bob", "me"]]);
    assert.deepEqual([room.roleOf("me"), room.canSetRoles, room.canRemove("bob"), room.canRemove("me"), room.canDelete(bobs), room.canDelete(mine)], ["member", false, false, true, false, true]);
    ws.receive({ type: "members", room: "g", members: ["ann", "bob", "me"], roles: { ann: "owner", me: "admin" } });
    assert.deepEqual([room.canRemove("bob"), room.canRemove("ann"), room.canDelete(bobs)], [true, false, true], "an admin removes plain members only");

    const direct = client.room("d");
    assert.deepEqual([direct.roleOf("me"), direct.canSetRoles, direct.canRemove("bob"), direct.canDelete(bobs), direct.canDelete(mine)], ["member", false, false, false, true]);

    ws.receive({ type: "members", room: "g", members: ["ann", "bob", "me"], roles: { me: "owner" } });
    const changed = await client.setRole("g", "bob", "admin");
    assert.deepEqual(calls.at(-1), { method: "PUT", path: "/v1/rooms/g/members/bob/role", headers: calls.at(-1).headers, body: { role: "admin" } });
    assert.deepEqual(changed.roles, answer.roles);
    assert.deepEqual(room.roles, answer.roles, "the answer's roles at once");
    assert.equal(await room.leave(), null);
    assert.deepEqual([calls.at(-1).method, calls.at(-1).path], ["DELETE", "/v1/rooms/g/members/me"]);
  } finally {
    client.stop();
  }
});
