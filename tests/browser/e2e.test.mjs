// The web app end to end in Debian's Chromium, driven by playwright-core (which never
// downloads a browser). Screenshots of the main screens go to target/test-artifacts/.
// Run: cd tests/browser && npm test   (after cargo build; scripts/test does both)

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { ROOT, startChatd, startRedis, startMongo, startNginx, clusterEnv, eventually, vapidKeys } from "../support/servers.mjs";

const ARTIFACTS = join(ROOT, "target/test-artifacts");
mkdirSync(ARTIFACTS, { recursive: true });

let browser;
before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"],
  });
});
after(async () => {
  await browser?.close();
});

/** A fresh browser context (its own storage: a separate user) signed in as `user`;
 * `permissions` are granted to every page of it (e.g. "notifications"). */
async function signIn(base, user, viewport = { width: 1100, height: 720 }, permissions = []) {
  const context = await browser.newContext({ viewport, permissions });
  return signInPage(await context.newPage(), base, user);
}

/** Signs `page` in as `user` (a tab keeps its session to itself: another tab signs in too). */
async function signInPage(page, base, user) {
  page.on("pageerror", (e) => console.error(`[${user}] page error:`, e.message));
  await page.goto(base);
  await page.getByLabel("User name").fill(user);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForSelector("#chat-view:not([hidden])");
  await page.waitForSelector('#connection[data-state="online"]');
  return page;
}

async function openDirect(page, peer) {
  await page.getByLabel("Chat with").fill(peer);
  await page.getByLabel("Chat with").press("Enter");
  await page.waitForSelector("#composer:not([hidden])");
}

async function openRoomNamed(page, name) {
  await page.locator('[data-testid="room"]', { hasText: name }).first().click();
  await page.waitForSelector("#composer:not([hidden])");
}

async function say(page, text) {
  const composer = page.getByLabel("Message", { exact: true });
  await composer.fill(text);
  await composer.press("Enter");
}

/** The shown messages: [seq, sender, text, status]. */
async function shown(page) {
  return page.$$eval('[data-testid="message"]', (nodes) =>
    nodes.map((n) => [n.dataset.seq === "" ? null : Number(n.dataset.seq), n.dataset.sender, n.querySelector(".text").textContent, n.dataset.status]),
  );
}

async function waitForTexts(page, texts, what) {
  await eventually(async () => {
    const got = (await shown(page)).filter((m) => m[3] === "sent").map((m) => m[2]);
    return JSON.stringify(got) === JSON.stringify(texts);
  }, 15000, what);
}

function assertOrderedOnce(messages, count) {
  assert.deepEqual(messages.map((m) => m[0]), Array.from({ length: count }, (_, i) => i + 1), "each seq once, in order");
  assert.ok(messages.every((m) => m[3] === "sent"));
}

test("two users chat 1:1, and a reload shows the same history in the same order", async () => {
  const node = await startChatd("e2e-direct");
  try {
    const alice = await signIn(node.base, "alice");
    await alice.screenshot({ path: join(ARTIFACTS, "01-rooms-empty.png") });
    const bob = await signIn(node.base, "bob");

    await openDirect(alice, "bob");
    await say(alice, "Hi Bob, is the bike still for rent?");
    await openRoomNamed(bob, "alice");
    await waitForTexts(bob, ["Hi Bob, is the bike still for rent?"], "bob sees alice");
    await say(bob, "Yes, it is.");
    await say(bob, "From tomorrow.");
    await say(alice, "Great, I'll take it tomorrow.");
    const conversation = ["Hi Bob, is the bike still for rent?", "Yes, it is.", "From tomorrow.", "Great, I'll take it tomorrow."];
    await waitForTexts(alice, conversation, "alice sees all");
    await waitForTexts(bob, conversation, "bob sees all");
    assert.equal(await alice.locator('.msg.own[data-status="sent"]').count(), 2, "own bubbles, marked sent");
    assert.equal(await alice.locator("[data-testid=day]").count(), 1, "a day separator");
    await alice.screenshot({ path: join(ARTIFACTS, "02-conversation-desktop.png") });

    const before = await shown(bob);
    assertOrderedOnce(before, 4);
    await bob.reload();
    await bob.waitForSelector('#connection[data-state="online"]');
    await waitForTexts(bob, conversation, "history after reload");
    assert.deepEqual(await shown(bob), before, "the same history in the same order");

    // A malformed fragment (not valid percent-encoding) selects no room and signs nobody out.
    await bob.goto(`${node.base}/#%E0%A4%A`);
    await bob.waitForSelector('#connection[data-state="online"]');
    assert.ok(await bob.locator("#chat-view").isVisible(), "still signed in");
    assert.ok(!(await bob.locator("#login-view").isVisible()), "no sign-in screen");
    await openRoomNamed(bob, "alice");
    await waitForTexts(bob, conversation, "the room still opens");

    // A phone-sized screen: the list and the conversation take turns.
    const phone = await signIn(node.base, "bob", { width: 390, height: 780 });
    await phone.screenshot({ path: join(ARTIFACTS, "03-rooms-phone.png") });
    await openRoomNamed(phone, "alice");
    await waitForTexts(phone, conversation, "bob's phone");
    assert.ok(!(await phone.locator(".sidebar").isVisible()), "the list gives way to the conversation");
    await phone.screenshot({ path: join(ARTIFACTS, "04-conversation-phone.png") });
    await phone.getByRole("button", { name: "Back to rooms" }).click();
    assert.ok(await phone.locator(".sidebar").isVisible());
    const unread = await alice.locator('[data-testid="room"] .unread').count();
    assert.equal(unread, 0, "an open room has nothing unread");
  } finally {
    await node.proc.kill();
  }
});

test("three users in a group see every message with sender names", async () => {
  const node = await startChatd("e2e-group");
  try {
    const [ann, ben, cat] = await Promise.all(["ann", "ben", "cat"].map((u) => signIn(node.base, u)));
    await ann.getByLabel("New group").fill("Trip");
    await ann.getByLabel("Members").fill("ben, cat");
    await ann.getByLabel("Members").press("Enter");
    await ann.waitForSelector("#composer:not([hidden])");
    await say(ann, "Where shall we go?");
    for (const page of [ben, cat]) await openRoomNamed(page, "Trip");
    await say(ben, "The mountains");
    await waitForTexts(cat, ["Where shall we go?", "The mountains"], "cat sees both");
    await say(cat, "Agreed");
    const all = ["Where shall we go?", "The mountains", "Agreed"];
    for (const page of [ann, ben, cat]) await waitForTexts(page, all, "everyone sees all");
    const names = await cat.$$eval(".msg:not(.own) .sender", (n) => n.map((x) => x.textContent));
    assert.deepEqual(names, ["ann", "ben"]);
    // Everybody has the room open in a visible page: ann's message is read by both others.
    const readBy = ann.locator('.msg.own [data-testid="read-by"]').first();
    await eventually(async () => (await readBy.textContent()).includes("Read by 2 of 2"), 15000, "read by 2 of 2");
    await readBy.locator("summary").click();
    await eventually(async () => (await readBy.locator(".readers").textContent()).includes("Read: ben, cat"), 15000, "who read it");
    await ann.screenshot({ path: join(ARTIFACTS, "10-group-read-by.png") });
    // Read as it arrived: the open room shows no badge (no stale count from the server either).
    assert.equal(await ann.getAttribute('[data-testid="room"]', "data-unread"), "0", "the open room has nothing unread");
    assert.equal(await ann.locator('.msg.own [data-testid="ticks"]').first().getAttribute("data-status"), "read");
    // The room list shows the group, its last message, and unread counts for a closed room.
    await ben.getByRole("button", { name: "Back to rooms" }).click().catch(() => {});
    await ben.screenshot({ path: join(ARTIFACTS, "05-group.png") });
    // A message that is too long gets a readable error and is not stored.
    await say(ann, "x".repeat(4001));
    await ann.waitForSelector('.msg[data-status="failed"]');
    const toast = await ann.locator(".toast").first().textContent();
    assert.match(toast, /too long/);
    for (const page of [ann, ben, cat]) assertOrderedOnce((await shown(page)).filter((m) => m[3] === "sent"), 3);
  } finally {
    await node.proc.kill();
  }
});

/** Makes the page look hidden (a tab in the background) or visible again, as the SDK sees it. */
async function setVisibility(page, state) {
  await page.evaluate((state) => {
    Object.defineProperty(document, "visibilityState", { value: state, configurable: true });
    document.dispatchEvent(new Event("visibilitychange"));
  }, state);
}

const lastTicks = (page) => page.locator('.msg.own [data-testid="ticks"]').last().getAttribute("data-status");
const presenceLine = (page) => page.locator("#room-presence");

test("presence, typing, ticks to read, and unread badges that clear in every tab", async () => {
  // A page that goes without a close frame counts as gone after half a second.
  const node = await startChatd("e2e-awareness", { CHATD__PRESENCE__LEAVE_GRACE_MS: "500" });
  try {
    const alice = await signIn(node.base, "alice");
    const bob = await signIn(node.base, "bob");
    await openDirect(alice, "bob");
    await say(alice, "Hi Bob");
    await openRoomNamed(bob, "alice");

    // Each sees the other online, in the conversation's head and in the room list.
    await alice.waitForSelector('#room-presence[data-state="online"]');
    await bob.waitForSelector('#room-presence[data-state="online"]');
    await alice.waitForSelector('[data-testid="room"][data-presence="online"]');
    assert.equal(await presenceLine(alice).textContent(), "online");

    // Bob reads in a visible page: alice's ticks turn to read.
    await eventually(async () => (await lastTicks(alice)) === "read", 15000, "read ticks");

    // Bob's tab in the background: delivered, not read, and the tab title counts it; back
    // in view, it is read.
    await setVisibility(bob, "hidden");
    await say(alice, "Are you reading this?");
    await eventually(async () => (await lastTicks(alice)) === "delivered", 15000, "delivered ticks");
    await eventually(async () => (await bob.title()) === "(1) chatd", 15000, "bob's title counts it");
    await setVisibility(bob, "visible");
    await eventually(async () => (await lastTicks(alice)) === "read", 15000, "read once visible");
    await eventually(async () => (await bob.title()) === "chatd", 15000, "bob's title clears");

    // Typing: the line appears while bob types, and goes when his message lands.
    await bob.getByLabel("Message", { exact: true }).pressSequentially("Yes, I a");
    await alice.waitForSelector('#typing:has-text("bob is typing…")');
    await alice.screenshot({ path: join(ARTIFACTS, "08-typing-and-ticks.png") });
    await bob.getByLabel("Message", { exact: true }).press("Enter");
    await waitForTexts(alice, ["Hi Bob", "Are you reading this?", "Yes, I a"], "bob's reply");
    await eventually(async () => (await alice.locator("#typing").textContent()) === "", 15000, "typing line gone");

    // Unread in two tabs: alice's second tab shows no room, her first moves to another one.
    const aliceTab2 = await signInPage(await alice.context().newPage(), node.base, "alice");
    await openDirect(alice, "carol");
    await say(bob, "Are you still there?");
    const badge = '[data-testid="room"][data-unread="1"]';
    for (const tab of [alice, aliceTab2]) {
      await tab.waitForSelector(badge);
      await eventually(async () => (await tab.title()) === "(1) chatd", 15000, "the tab title counts it");
    }
    const roomId = await alice.getAttribute(badge, "data-room-id");
    await alice.screenshot({ path: join(ARTIFACTS, "09-unread-badge.png") });
    await openRoomNamed(aliceTab2, "bob"); // read in the second tab ...
    await alice.waitForSelector(`[data-testid="room"][data-room-id="${roomId}"][data-unread="0"]`); // ... clears the first
    await eventually(async () => (await alice.title()) === "chatd", 15000, "the first tab's title clears");
    assert.equal(await alice.locator(`[data-room-id="${roomId}"] .unread`).count(), 0, "no badge left");

    // Hidden presence: alice sees bob offline, without when he was last seen; then back.
    await bob.getByLabel("Hide my presence").check();
    await aliceTab2.waitForSelector('#room-presence[data-state="offline"]');
    assert.equal(await presenceLine(aliceTab2).textContent(), "offline");
    await bob.getByLabel("Hide my presence").uncheck();
    await aliceTab2.waitForSelector('#room-presence[data-state="online"]');

    // Bob closes his browser: alice sees him go offline, last seen just now.
    await bob.context().close();
    await aliceTab2.waitForSelector('#room-presence[data-state="offline"]');
    assert.match(await presenceLine(aliceTab2).textContent(), /^last seen just now$/);
    await alice.waitForSelector(`[data-testid="room"][data-room-id="${roomId}"][data-presence="offline"]`);
    // And the other way round: bob, back, sees alice go.
    const bobAgain = await signIn(node.base, "bob");
    await openRoomNamed(bobAgain, "alice");
    await bobAgain.waitForSelector('#room-presence[data-state="online"]');
    await aliceTab2.waitForSelector('#room-presence[data-state="online"]');
    await alice.context().close(); // both of her tabs
    await bobAgain.waitForSelector('#room-presence[data-state="offline"]');
    assert.match(await presenceLine(bobAgain).textContent(), /^last seen/);
  } finally {
    await node.proc.kill();
  }
});

const bubbleAt = (page, seq) => page.locator(`[data-testid="message"][data-seq="${seq}"]`);

/** Clicks one of a message's actions (shown on hover). */
async function act(page, seq, testid, emoji) {
  const bubble = bubbleAt(page, seq);
  await bubble.hover();
  await bubble.locator(`[data-testid="actions"] [data-testid="${testid}"]${emoji ? `[data-emoji="${emoji}"]` : ""}`).click();
}

/** What each message shows of its changes: text, edited, deleted, reactions (* = the user's), reply quote. */
async function changesShown(page) {
  return page.$$eval('[data-testid="message"]', (nodes) =>
    nodes.map((n) => ({
      seq: Number(n.dataset.seq),
      text: n.querySelector(".text").textContent,
      edited: n.querySelector('[data-testid="edited"]') !== null,
      deleted: n.dataset.deleted === "true",
      reactions: [...n.querySelectorAll('[data-testid="reaction"]')].map((r) => `${r.dataset.emoji}${r.dataset.count}${r.dataset.me === "true" ? "*" : ""}`),
      quote: n.querySelector('[data-testid="reply-quote"]')?.dataset.replySeq ?? null,
    })),
  );
}

async function waitForChanges(page, expected, what) {
  let got;
  try {
    await eventually(async () => JSON.stringify((got = await changesShown(page))) === JSON.stringify(expected), 15000, what);
  } catch (e) {
    assert.deepEqual(got, expected, what);
    throw e;
  }
}

test("a direct room: edit, delete, react and reply, each visible on both pages, and still after reloading both", async () => {
  const node = await startChatd("e2e-changes");
  try {
    const alice = await signIn(node.base, "alice");
    const bob = await signIn(node.base, "bob");
    await openDirect(alice, "bob");
    await say(alice, "Lunch at noon?");
    await say(alice, "Or at one?");
    await openRoomNamed(bob, "alice");
    await waitForTexts(bob, ["Lunch at noon?", "Or at one?"], "bob sees both");

    // Edit: the action, then Escape, changes nothing; Up in the empty composer edits the last one.
    await act(alice, 1, "edit");
    const editor = alice.locator('[data-testid="edit-text"]');
    await editor.fill("Lunch at 12:30?");
    await editor.press("Escape");
    assert.equal(await editor.count(), 0, "the editor is gone");
    assert.equal(await bubbleAt(alice, 1).locator(".text").textContent(), "Lunch at noon?", "cancelled");
    await alice.getByLabel("Message", { exact: true }).press("ArrowUp");
    assert.equal(await editor.inputValue(), "Or at one?", "the last own message, in the editor");
    await editor.fill("Or at half past one?");
    await editor.press("Enter");
    for (const page of [alice, bob]) {
      await bubbleAt(page, 2).locator('[data-testid="edited"]').waitFor();
      assert.equal(await bubbleAt(page, 2).locator(".text").textContent(), "Or at half past one?");
    }

    // Reactions: bob's 👍, alice's ❤️; bob clicks his own to take it back; his 😂 stays.
    await act(bob, 1, "react", "👍");
    await alice.locator('[data-seq="1"] [data-testid="reaction"][data-emoji="👍"][data-count="1"][data-me="false"]').waitFor();
    await act(alice, 1, "react", "❤️");
    await bob.locator('[data-seq="1"] [data-testid="reaction"][data-emoji="❤️"][data-me="false"]').waitFor();
    await bob.locator('[data-seq="1"] [data-testid="reaction"][data-emoji="👍"][data-me="true"]').click();
    await alice.locator('[data-seq="1"] [data-testid="reaction"][data-emoji="👍"]').waitFor({ state: "detached" });
    await act(bob, 2, "react", "😂");

    // Reply: bob answers message 2; the quote shows it, and a click takes alice to it.
    await act(bob, 2, "reply");
    assert.match(await bob.locator('[data-testid="reply-bar"]').textContent(), /alice: Or at half past one\?/);
    await say(bob, "Half past one works");
    assert.ok(await bob.locator('[data-testid="reply-bar"]').isHidden(), "the reply bar goes with the send");
    const quote = alice.locator('[data-testid="reply-quote"][data-reply-seq="2"]');
    await quote.waitFor();
    assert.match(await quote.textContent(), /^alice/, "the quote names its sender");
    assert.match(await quote.textContent(), /Or at half past one\?/);
    await quote.click();
    await alice.locator('.msg.flash[data-seq="2"]').waitFor();
    await alice.screenshot({ path: join(ARTIFACTS, "11-changes.png") });

    // Delete: asked first (No keeps it), then gone for both, reactions and all.
    await act(alice, 1, "delete");
    await alice.locator('[data-testid="confirm-cancel"]').click();
    assert.equal(await bubbleAt(alice, 1).getAttribute("data-deleted"), "false", "cancelled");
    await act(alice, 1, "delete");
    await alice.locator('[data-testid="confirm-ok"]').click();

    const reply = (await changesShown(bob)).at(-1).seq;
    const expected = (me) => [
      { seq: 1, text: "Message deleted", edited: false, deleted: true, reactions: [], quote: null },
      { seq: 2, text: "Or at half past one?", edited: true, deleted: false, reactions: [me === "bob" ? "😂1*" : "😂1"], quote: null },
      { seq: reply, text: "Half past one works", edited: false, deleted: false, reactions: [], quote: "2" },
    ];
    await waitForChanges(alice, expected("alice"), "alice's page");
    await waitForChanges(bob, expected("bob"), "bob's page");
    await bob.screenshot({ path: join(ARTIFACTS, "12-changes-peer.png") });
    assert.equal(await bob.locator('[data-testid="room"] .room-last').first().textContent(), "Half past one works");

    for (const page of [alice, bob]) {
      await page.reload();
      await page.waitForSelector('#connection[data-state="online"]');
    }
    await waitForChanges(alice, expected("alice"), "alice's page after a reload");
    await waitForChanges(bob, expected("bob"), "bob's page after a reload");
  } finally {
    await node.proc.kill();
  }
});

test("group settings: the owner makes an admin, the admin removes a member, the owner leaves and the admin owns the group", async () => {
  const node = await startChatd("e2e-roles");
  try {
    const [ann, ben, cat] = await Promise.all(["ann", "ben", "cat"].map((u) => signIn(node.base, u)));
    await ann.getByLabel("New group").fill("Club");
    await ann.getByLabel("Members").fill("ben, cat");
    await ann.getByLabel("Members").press("Enter");
    await ann.waitForSelector("#composer:not([hidden])");
    for (const page of [ben, cat]) await openRoomNamed(page, "Club");
    const member = (page, user) => page.locator(`#group-dialog [data-testid="member"][data-user="${user}"]`);

    await ann.locator('[data-testid="group-settings"]').click();
    await member(ann, "ann").waitFor();
    assert.equal(await member(ann, "ann").getAttribute("data-role"), "owner");
    await member(ann, "ben").locator('[data-testid="role-select"]').selectOption("admin");
    await ann.locator('#group-dialog [data-testid="member"][data-user="ben"][data-role="admin"]').waitFor();
    await ann.screenshot({ path: join(ARTIFACTS, "13-group-settings.png") });

    await ben.locator('[data-testid="group-settings"]').click();
    await ben.locator('#group-dialog [data-testid="member"][data-user="ben"][data-role="admin"]').waitFor();
    assert.equal(await member(ben, "ann").locator('[data-testid="remove-member"]').count(), 0, "an admin cannot remove the owner");
    assert.equal(await member(ben, "ann").locator('[data-testid="role-select"]').count(), 0, "nor change roles");
    await member(ben, "cat").locator('[data-testid="remove-member"]').click();
    await ben.locator('[data-testid="confirm-ok"]').click();
    await member(ben, "cat").waitFor({ state: "detached" });
    await cat.waitForSelector('[data-testid="room"]:has-text("Club")', { state: "detached" });
    await eventually(async () => (await cat.locator("#room-title").textContent()) === "Pick a room", 15000, "cat's conversation closes");

    await ann.locator('[data-testid="leave-group"]').click();
    await ann.locator('[data-testid="confirm-ok"]').click();
    await ann.waitForSelector('[data-testid="room"]:has-text("Club")', { state: "detached" });
    await ben.locator('#group-dialog [data-testid="member"][data-user="ben"][data-role="owner"]').waitFor();
    await member(ben, "ann").waitFor({ state: "detached" });
  } finally {
    await node.proc.kill();
  }
});

/** The notifications the page's service worker shows: {title, body, tag, data}. */
async function notificationsShown(page) {
  return page.evaluate(async () => {
    const registration = await navigator.serviceWorker.getRegistration();
    const shown = registration ? await registration.getNotifications() : [];
    return shown.map((n) => ({ title: n.title, body: n.body, tag: n.tag, data: n.data }));
  });
}

// Chromium's Playwright contexts are incognito, where Chromium has no Push API: subscribing
// fails at once (and with a profile of its own it waits forever for a push service this
// machine cannot reach). So pushes come from DevTools (ServiceWorker.deliverPushMessage), with
// the payloads chatd sends.
test("notifications: the control, the service worker from /sw.js, one notification per room, closed by a badge update, a click opens the room", async () => {
  const plain = await startChatd("e2e-no-push");
  const node = await startChatd("e2e-push", { CHATD__PUSH__VAPID_PRIVATE_KEY: vapidKeys().privateKey });
  try {
    const elsewhere = await signIn(plain.base, "alice", undefined, ["notifications"]);
    await elsewhere.waitForSelector('[data-testid="push"][data-state="not_offered"]');
    assert.equal(await elsewhere.locator('[data-testid="push-note"]').textContent(), "not offered by this server");
    assert.ok(await elsewhere.getByLabel("Notifications").isDisabled());
    await elsewhere.context().close();

    const alice = await signIn(node.base, "alice", undefined, ["notifications"]);
    const context = alice.context();
    await alice.waitForSelector('[data-testid="push"][data-state="off"]');
    await openDirect(alice, "bob");
    const room = await alice.getAttribute('[data-testid="room"][aria-current="true"]', "data-room-id");
    await openDirect(alice, "carol"); // another room is open when bob's notification is clicked

    // Turning notifications on registers the service worker; subscribing fails here, and says so.
    const registered = context.serviceWorkers().length ? Promise.resolve(context.serviceWorkers()[0]) : context.waitForEvent("serviceworker");
    await alice.getByLabel("Notifications").click();
    const worker = await registered;
    assert.equal(worker.url(), `${node.base}/sw.js`);
    await alice.locator(".toast", { hasText: "could not turn notifications on" }).waitFor();
    await alice.waitForSelector('[data-testid="push"][data-state="off"]');
    assert.equal(await alice.getByLabel("Notifications").isChecked(), false);
    assert.equal(await alice.evaluate(async () => (await navigator.serviceWorker.getRegistration())?.scope), `${node.base}/`);

    const cdp = await context.newCDPSession(alice);
    const registrations = [];
    cdp.on("ServiceWorker.workerRegistrationUpdated", (event) => registrations.push(...event.registrations));
    await cdp.send("ServiceWorker.enable");
    const registrationId = await eventually(() => registrations.find((r) => !r.isDeleted && r.scopeURL === `${node.base}/`)?.registrationId, 15000, "the registration");
    // A push reaches only an activated worker.
    const activated = () => alice.evaluate(async () => (await navigator.serviceWorker.getRegistration())?.active?.state === "activated");
    await eventually(activated, 15000, "the worker activated");
    const deliver = (payload) => cdp.send("ServiceWorker.deliverPushMessage", { origin: node.base, registrationId, data: JSON.stringify(payload) });
    // DevTools' delivery can be dropped while the worker (re)starts on a loaded machine: a
    // push service delivers again what was not acknowledged, so this does too, until `shown`
    // (the worker shows a resend of one notification once: see its id handling).
    let redelivered = 0;
    const push = async (payload, shown, what) => {
      for (let attempt = 0; attempt < 5; attempt++) {
        if (attempt > 0) redelivered++;
        await deliver(payload);
        try {
          return await eventually(shown, 3000, what);
        } catch {}
      }
      throw new Error(`timed out waiting for ${what} (delivered 5 times)`);
    };
    const message = { type: "message", room, roomName: "bob", messageId: "m1", sender: "bob", senders: ["bob"] };

    const one = { title: "bob", body: "Are you there?", tag: room, data: { id: "job-1", room, seq: 1 } };
    await push({ ...message, id: "job-1", seq: 1, text: "Are you there?", count: 1, unread: 1 }, async () => JSON.stringify(await notificationsShown(alice)) === JSON.stringify([one]), "bob's notification");
    // More messages of the room replace it; another room (a group: who wrote it) has its own.
    const two = { title: "bob", body: "2 new messages from bob\nHello?", tag: room, data: { id: "job-2", room, seq: 3 } };
    const group = { title: "Trip", body: "cat: Mountains!", tag: "group-room", data: { id: "job-7", room: "group-room", seq: 7 } };
    const tagged = async (tag) => (await notificationsShown(alice)).find((n) => n.tag === tag);
    await push({ ...message, id: "job-2", seq: 3, text: "Hello?", count: 2, unread: 2 }, async () => JSON.stringify(await tagged(room)) === JSON.stringify(two), "bob's second notification");
    await push({ type: "message", id: "job-7", room: "group-room", roomName: "Trip", seq: 7, messageId: "m7", sender: "cat", senders: ["cat"], text: "Mountains!", count: 1, unread: 3 }, async () => JSON.stringify(await tagged("group-room")) === JSON.stringify(group), "the group's notification");
    assert.equal((await notificationsShown(alice)).length, 2, "one notification per room");
    // The same notification again (a node took its job over): nothing changes.
    await deliver({ ...message, id: "job-2", seq: 3, text: "resent", count: 2, unread: 2 });
    await push({ type: "message", id: "job-9", room: "marker-room", roomName: "eve", seq: 1, messageId: "m9", sender: "eve", senders: ["eve"], text: "after", count: 1, unread: 5 }, async () => Boolean(await tagged("marker-room")), "the marker");
    assert.deepEqual(await tagged(room), two);
    // Without text (push.include_text = false): what came, not what it said.
    await push({ type: "message", id: "job-3", room: "quiet-room", roomName: "dan", seq: 2, messageId: "m2", sender: "dan", senders: ["dan"], count: 1, unread: 4 }, async () => (await tagged("quiet-room"))?.body === "New message", "a notification without text");

    // The room was read elsewhere: its badge update closes its notification, not the others'.
    await push({ type: "badge", id: "job-4", room, unread: 1 }, async () => JSON.stringify((await notificationsShown(alice)).map((n) => n.tag).sort()) === JSON.stringify(["group-room", "marker-room", "quiet-room"]), "bob's notification closed");
    if (redelivered > 0) console.error(`# DevTools pushes delivered again: ${redelivered}`);

    // A click on a notification: the open app is asked to show the room (the worker's click
    // handler, called directly: DevTools cannot click a notification).
    await worker.evaluate((room) => openRoom(room), room);
    await alice.waitForSelector(`[data-testid="room"][data-room-id="${room}"][aria-current="true"]`);
    assert.equal(await alice.locator("#room-title").textContent(), "bob");
    // Or it opens the app at /?room=: the room is shown, the query gives way to the fragment.
    await openRoomNamed(alice, "carol");
    await alice.goto(`${node.base}/?room=${encodeURIComponent(room)}`);
    await alice.waitForSelector(`[data-testid="room"][data-room-id="${room}"][aria-current="true"]`);
    const url = new URL(alice.url());
    assert.equal(url.search, "");
    assert.equal(url.hash, `#${room}`);
  } finally {
    await plain.proc.kill();
    await node.proc.kill();
  }
});

test("two nodes behind nginx: the node of one user dies mid-conversation and nothing is lost", async () => {
  const redis = await startRedis();
  const mongo = await startMongo();
  const env = clusterEnv(redis.url, mongo.uri);
  const nodes = [await startChatd("e2e-n1", env), await startChatd("e2e-n2", env)];
  const lb = await startNginx(nodes.map((n) => n.port));
  const nodeOf = (page) => page.getAttribute("#connection", "data-node");
  try {
    const alice = await signIn(lb.base, "alice");
    let bob = await signIn(lb.base, "bob");
    for (let i = 0; i < 10 && (await nodeOf(bob)) === (await nodeOf(alice)); i++) {
      await bob.reload();
      await bob.waitForSelector('#connection[data-state="online"]');
    }
    assert.notEqual(await nodeOf(bob), await nodeOf(alice), "the two users are on different nodes");

    await openDirect(alice, "bob");
    await say(alice, "one");
    await openRoomNamed(bob, "alice");
    await say(bob, "two");
    await waitForTexts(alice, ["one", "two"], "before the crash");

    // Kill alice's node (SIGKILL: no goodbye).
    const aliceNode = await nodeOf(alice);
    const dead = nodes.find((n) => n.proc.name === `js-chatd-${aliceNode}`);
    assert.ok(dead, `alice's node ${aliceNode} is one of ours`);
    await dead.proc.kill("SIGKILL");
    await alice.waitForSelector('#connection[data-state="reconnecting"]', { timeout: 30000 });
    await alice.screenshot({ path: join(ARTIFACTS, "06-reconnecting.png") });
    // Typed while disconnected: pending now, delivered after the reconnect.
    await say(alice, "three (typed while offline)");
    await alice.waitForSelector('.msg[data-status="pending"]');
    await say(bob, "four");
    await alice.waitForSelector('#connection[data-state="online"]', { timeout: 30000 });
    assert.notEqual(await nodeOf(alice), aliceNode, "alice is on the surviving node");
    const conversation = ["one", "two", "three (typed while offline)", "four"];
    const expectation = async (page) => {
      await eventually(async () => {
        const got = (await shown(page)).filter((m) => m[3] === "sent").map((m) => m[2]).sort();
        return JSON.stringify(got) === JSON.stringify([...conversation].sort());
      }, 20000, "every message after the crash");
      const messages = await shown(page);
      assertOrderedOnce(messages, 4);
      return messages.map((m) => m[2]);
    };
    const aliceView = await expectation(alice);
    const bobView = await expectation(bob);
    assert.deepEqual(aliceView, bobView, "both show the store's one order");
    await alice.screenshot({ path: join(ARTIFACTS, "07-after-failover.png") });
  } finally {
    await lb.proc.kill();
    for (const n of nodes) await n.proc.kill().catch(() => {});
    await redis.proc.kill();
    await mongo.proc?.kill();
  }
});
