// Edits, deletes, reactions, replies and group roles: the SDK against a real chatd node over
// real sockets (Node's WebSocket). Each client's folded state is compared with the server's
// own fold (`GET …/messages?view=state`), also after a client was away during changes and
// resumed, and after history brought the messages that changes were waiting for.
// Run: node --experimental-websocket --test tests/sdk/   (after cargo build)

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import { ChatClient } from "../../web/sdk/chatd.js";
import { startChatd, login, eventually } from "../support/servers.mjs";

const node = await startChatd("sdk-changes", { CHATD__WEBSOCKET__RESUME_WAIT_MS: "300" });
after(() => node.proc.kill());

async function client(user, options = {}) {
  const c = new ChatClient({ baseUrl: node.base, token: await login(node.base, user), gapWaitMs: 200, backoff: { baseMs: 50, maxMs: 500 }, ...options });
  await c.start();
  return c;
}

/** A shown message as the server's state has it (without the SDK's own marks). */
const asState = ({ status, changing, ...state }) => state;

/** Every message of a room in its current state, as `user`'s server answer says. */
async function serverState(c, roomId) {
  const all = [];
  for (;;) {
    const page = await c.api("GET", `/v1/rooms/${roomId}/messages?view=state&after=${all.at(-1)?.seq ?? 0}&limit=200`);
    all.push(...page.messages);
    if (!page.more || page.messages.length === 0) return all;
  }
}

/** Waits until `c` shows the room exactly as the server folds it for `c`'s user. */
async function agreesWithServer(c, roomId, what) {
  let mine;
  let theirs;
  try {
    await eventually(async () => {
      mine = c.messages(roomId).map(asState);
      theirs = await serverState(c, roomId);
      return isDeepStrictEqual(mine, theirs);
    }, 10000, what);
  } catch (e) {
    assert.deepEqual(mine, theirs, what); // shows the difference
    throw e;
  }
  assert.deepEqual(mine, theirs, what);
}

const byText = (c, roomId, text) => c.messages(roomId).find((m) => m.text === text);

test("two clients: edit, delete, react twice, unreact and reply, each seen by both as the server folds it", async () => {
  const alice = await client("chg-alice");
  const bob = await client("chg-bob");
  try {
    const room = await alice.openDirect("chg-bob");
    await alice.open(room.id);
    await eventually(() => bob.room(room.id), 10000, "room at bob");
    await bob.open(room.id);
    const bobRoom = bob.room(room.id);
    const aliceRoom = alice.room(room.id);
    const first = await alice.send(room.id, "lunch at noon?");
    await eventually(() => byText(bob, room.id, "lunch at noon?"), 10000, "bob has it");
    assert.equal(bobRoom.unread, 1);

    const edited = await aliceRoom.edit(first.seq, "lunch at one?");
    assert.deepEqual([edited.kind, edited.target], ["edit", first.seq]);
    await eventually(() => bobRoom.message(first.seq)?.text === "lunch at one?", 10000, "bob sees the edit");
    assert.equal(bobRoom.message(first.seq).editedAt, edited.createdAt);
    assert.equal(bobRoom.unread, 1, "an edit is not a new message");

    await bobRoom.react(first.seq, "👍");
    await bobRoom.react(first.seq, "👍"); // twice: stored, changes nothing
    await eventually(() => aliceRoom.message(first.seq)?.reactions.length === 1, 10000, "alice sees the reaction");
    assert.deepEqual(aliceRoom.message(first.seq).reactions, [{ emoji: "👍", count: 1, me: false }]);
    assert.deepEqual(bobRoom.message(first.seq).reactions, [{ emoji: "👍", count: 1, me: true }]);
    await agreesWithServer(alice, room.id, "alice, after reacting twice");

    await bobRoom.unreact(first.seq, "👍");
    await eventually(() => aliceRoom.message(first.seq)?.reactions.length === 0, 10000, "alice sees it taken back");

    const reply = await bobRoom.send("sure", { replyTo: first.seq });
    assert.equal(reply.replyTo, first.seq);
    await eventually(() => byText(alice, room.id, "sure")?.reply, 10000, "alice sees the reply");
    assert.deepEqual(byText(alice, room.id, "sure").reply, { seq: first.seq, sender: "chg-alice", text: "lunch at one?", deleted: false });
    await agreesWithServer(bob, room.id, "bob, with the reply");

    // What the server refuses comes back as the promise's error (and nothing is stored).
    await assert.rejects(bobRoom.edit(first.seq, "mine now"), (e) => e.code === "forbidden", "editing another's message");
    await assert.rejects(bobRoom.delete(first.seq), (e) => e.code === "forbidden", "deleting another's message in a direct room");
    await assert.rejects(bobRoom.react(9999, "👍"), (e) => e.code === "message_not_found");
    const lost = bobRoom.send("?", { replyTo: 9999 });
    await assert.rejects(lost, (e) => e.code === "message_not_found");
    bob.discard(lost.clientMsgId); // a refused message stays, as failed, until discarded

    await aliceRoom.delete(first.seq);
    await eventually(() => bobRoom.message(first.seq)?.deleted, 10000, "bob sees the delete");
    assert.deepEqual([bobRoom.message(first.seq).text, bobRoom.message(first.seq).reactions], ["", []]);
    await eventually(() => byText(bob, room.id, "sure").reply?.deleted, 10000, "the reply's quote follows");
    assert.equal(bobRoom.unread, 0, "the deleted message is no longer unread");
    const listed = (await bob.api("GET", "/v1/rooms")).rooms.find((r) => r.id === room.id);
    assert.equal(listed.unread, 0, "nor on the server");
    assert.equal(listed.lastMessage.text, "sure", "the room list shows the newest message still standing");
    await assert.rejects(aliceRoom.edit(first.seq, "again"), (e) => e.code === "message_not_found", "a deleted message takes no edits");

    await agreesWithServer(alice, room.id, "alice, at the end");
    await agreesWithServer(bob, room.id, "bob, at the end");
    assert.deepEqual(alice.messages(room.id).map((m) => m.seq), [first.seq, reply.seq], "changes are in the messages, not beside them");
  } finally {
    alice.stop();
    bob.stop();
  }
});

test("a client away during an edit, a delete and three reactions gets them on resume, and holds the server's state", async () => {
  const [carol, dave, erin] = await Promise.all(["chg-carol", "chg-dave", "chg-erin"].map((u) => client(u)));
  try {
    const room = await carol.createGroup("away", ["chg-dave", "chg-erin"]);
    const sent = [];
    for (const text of ["one", "two", "three"]) sent.push(await carol.send(room.id, text));
    for (const c of [dave, erin]) await eventually(() => c.room(room.id), 10000, "room at each");
    await dave.open(room.id);
    await eventually(() => dave.messages(room.id).length === 3, 10000, "dave holds the three");
    await erin.open(room.id);
    const changes = [];
    dave.on("change", (e) => changes.push(e.kind));
    const duplicates = dave.room(room.id).duplicates;

    dave.stop(); // away; what he holds stays
    await carol.room(room.id).edit(sent[0].seq, "one (edited)");
    await carol.room(room.id).delete(sent[1].seq);
    await carol.room(room.id).react(sent[0].seq, "👍");
    await erin.room(room.id).react(sent[0].seq, "👍");
    await erin.room(room.id).react(sent[2].seq, "😂");

    await dave.start(); // resumes from the last seq held
    await eventually(() => changes.length === 5, 10000, "the five changes replayed");
    assert.deepEqual(changes, ["edit", "delete", "react", "react", "react"]);
    assert.equal(dave.room(room.id).duplicates, duplicates, "the resume overlapped nothing");
    await agreesWithServer(dave, room.id, "dave after resuming");
    const [one, two, three] = dave.messages(room.id);
    assert.deepEqual([one.text, one.reactions], ["one (edited)", [{ emoji: "👍", count: 2, me: false }]]);
    assert.deepEqual([two.deleted, two.text], [true, ""]);
    assert.deepEqual(three.reactions, [{ emoji: "😂", count: 1, me: false }]);
    assert.equal(dave.room(room.id).unread, 2, "of carol's three, two stand");
  } finally {
    for (const c of [carol, dave, erin]) c.stop();
  }
});

test("changes whose message is on an older page wait for it, and apply when the page comes", async () => {
  const fred = await client("chg-fred");
  try {
    const room = await fred.openDirect("chg-gail");
    const messages = [];
    for (let i = 1; i <= 6; i++) messages.push(await fred.send(room.id, `m${i}`));
    await fred.room(room.id).react(messages[0].seq, "❤️");
    await fred.room(room.id).edit(messages[1].seq, "m2 (edited)");
    // Gail's pages are 4 entries: the newest holds the two changes and m5, m6 only.
    const gail = await client("chg-gail", { pageSize: 4 });
    try {
      const gailRoom = gail.room(room.id);
      await gailRoom.open();
      assert.deepEqual(gail.messages(room.id).map((m) => m.text), ["m5", "m6"]);
      while (gailRoom.hasOlder) await gailRoom.loadOlder();
      assert.deepEqual(gail.messages(room.id).map((m) => m.text), ["m1", "m2 (edited)", "m3", "m4", "m5", "m6"]);
      assert.deepEqual(gailRoom.message(messages[0].seq).reactions, [{ emoji: "❤️", count: 1, me: false }]);
      await agreesWithServer(gail, room.id, "gail after paging back");
    } finally {
      gail.stop();
    }
  } finally {
    fred.stop();
  }
});

test("past the server's edit window an edit is refused with edit_window_closed, and the message shows as it was", async () => {
  const own = await startChatd("sdk-edit-window", { CHATD__LIMITS__EDIT_WINDOW_MS: "500" });
  const hal = new ChatClient({ baseUrl: own.base, token: await login(own.base, "chg-hal") });
  try {
    await hal.start();
    const room = await hal.openDirect("chg-ida");
    await room.open();
    const sent = await room.send("soon");
    await room.edit(sent.seq, "soon, edited in time");
    await new Promise((r) => setTimeout(r, 700));
    const errors = [];
    hal.on("error", (e) => errors.push(e.code));
    await assert.rejects(room.edit(sent.seq, "too late"), (e) => e.code === "edit_window_closed" && !e.retryable);
    assert.deepEqual(errors, ["edit_window_closed"]);
    assert.deepEqual(room.messages().map((m) => [m.text, m.status, m.changing]), [["soon, edited in time", "sent", undefined]]);
    await room.delete(sent.seq); // deleting knows no window
    await eventually(() => room.message(sent.seq)?.deleted, 10000, "deleted");
  } finally {
    hal.stop();
    await own.proc.kill();
  }
});

test("roles: members cannot remove others, admins can remove members, only owners change roles, and the last owner's leaving hands ownership on", async () => {
  const [ann, ben, cy, dee] = await Promise.all(["chg-ann", "chg-ben", "chg-cy", "chg-dee"].map((u) => client(u)));
  try {
    const group = await ann.createGroup("roles", ["chg-ben", "chg-cy", "chg-dee"]);
    const id = group.id;
    assert.deepEqual(group.roles, { "chg-ann": "owner" }, "the creator owns the group");
    for (const c of [ben, cy, dee]) await eventually(() => c.room(id), 10000, "room at each");
    const rooms = { ann: ann.room(id), ben: ben.room(id), cy: cy.room(id), dee: dee.room(id) };
    assert.equal(rooms.ben.roleOf("chg-ann"), "owner");
    assert.equal(rooms.ben.canRemove("chg-cy"), false);

    // A member may not remove others, nor change roles.
    await assert.rejects(rooms.ben.removeMember("chg-cy"), (e) => e.code === "forbidden" && e.status === 403);
    await assert.rejects(rooms.ben.setRole("chg-cy", "admin"), (e) => e.code === "forbidden");

    // The owner makes ben an admin: everybody's members frame says so.
    await rooms.ann.setRole("chg-ben", "admin");
    assert.equal(rooms.ann.roleOf("chg-ben"), "admin", "the answer's roles at once");
    for (const c of [rooms.ben, rooms.cy, rooms.dee]) await eventually(() => c.roleOf("chg-ben") === "admin", 10000, "members frame with the new role");
    assert.equal(rooms.ben.canRemove("chg-cy"), true);
    assert.equal(rooms.ben.canRemove("chg-ann"), false);

    // An admin removes a plain member, but not the owner; deletes a member's message.
    const cysMessage = await cy.send(id, "bye soon");
    await eventually(() => rooms.ben.message(cysMessage.seq), 10000, "ben has cy's message");
    await rooms.ben.delete(cysMessage.seq);
    await eventually(() => rooms.ann.message(cysMessage.seq)?.deleted, 10000, "an admin deleted a member's message");
    await assert.rejects(rooms.dee.delete((await ann.send(id, "mine")).seq), (e) => e.code === "forbidden", "a member deletes only own messages");
    await assert.rejects(rooms.ben.removeMember("chg-ann"), (e) => e.code === "forbidden");
    await rooms.ben.removeMember("chg-cy");
    await eventually(() => cy.room(id) === undefined, 10000, "cy's room is gone");
    for (const c of [rooms.ann, rooms.ben, rooms.dee]) await eventually(() => !c.members.includes("chg-cy"), 10000, "members frame without cy");

    // The last owner may not step down; when she leaves, the admin (earliest) takes over.
    await assert.rejects(rooms.ann.setRole("chg-ann", "member"), (e) => e.status >= 400 && e.status < 500);
    await rooms.ann.leave();
    await eventually(() => ann.room(id) === undefined, 10000, "ann's room is gone");
    for (const c of [rooms.ben, rooms.dee]) {
      await eventually(() => c.roleOf("chg-ben") === "owner" && !c.members.includes("chg-ann"), 10000, "ben owns the group now");
    }
    assert.deepEqual(rooms.dee.roles, { "chg-ben": "owner" });
    assert.equal(rooms.ben.canSetRoles, true);
    const fresh = await ben.api("GET", `/v1/rooms/${id}`);
    assert.deepEqual(fresh.roles, { "chg-ben": "owner" }, "the server's room says the same");
  } finally {
    for (const c of [ann, ben, cy, dee]) c.stop();
  }
});
