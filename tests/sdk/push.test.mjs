// Push notifications through the SDK against real chatd nodes (docs/protocol.md, "Push
// notifications"): what a deployment offers, devices registered, listed, removed and capped,
// the ledger, and the requests a push gateway gets (a small HTTP server here plays the
// gateway; chatd is the real one). One node notifies through the gateway only, one has a
// VAPID key only: it takes browser subscriptions (made up here: subscribing needs a browser's
// push service, which no test can reach), and Node has no service worker, so enableWebPush
// refuses in both, each for its own reason.
// Run: node --experimental-websocket --test tests/sdk/   (after cargo build)

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { createHmac, randomBytes, randomUUID } from "node:crypto";
import { ChatClient, ChatError, base64UrlToBytes } from "../../web/sdk/chatd.js";
import { startChatd, login, eventually, vapidKeys } from "../support/servers.mjs";

const SECRET = "test-secret-for-the-gateway"; // push.gateway_secret: at least 16 bytes
const MAX_DEVICES = 3;
const APP = "com.example.chat";

/** The gateway: keeps every request, answers like a Matrix push gateway; keys in `rejecting` are rejected. */
const gateway = { requests: [], rejecting: new Set() };
const gatewayServer = createServer((req, res) => {
  let body = "";
  req.setEncoding("utf8");
  req.on("data", (chunk) => (body += chunk));
  req.on("end", () => {
    const request = { method: req.method, url: req.url, headers: req.headers, body, json: JSON.parse(body) };
    gateway.requests.push(request);
    const keys = (request.json.notification?.devices ?? []).map((d) => d.pushkey);
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ rejected: keys.filter((k) => gateway.rejecting.has(k)) }));
  });
});
await new Promise((listening) => gatewayServer.listen(0, "127.0.0.1", listening));
const GATEWAY_URL = `http://127.0.0.1:${gatewayServer.address().port}/_matrix/push/v1/notify`;

const node = await startChatd("sdk-push", {
  CHATD__PUSH__GATEWAY_URL: GATEWAY_URL,
  CHATD__PUSH__GATEWAY_SECRET: SECRET,
  CHATD__PUSH__MAX_DEVICES_PER_USER: String(MAX_DEVICES),
  CHATD__PUSH__COLLAPSE_MS: "1000",
  CHATD__PUSH__POLL_MS: "100",
});
const vapid = vapidKeys();
const webPushNode = await startChatd("sdk-push-vapid", { CHATD__PUSH__VAPID_PRIVATE_KEY: vapid.privateKey });
after(async () => {
  await node.proc.kill();
  await webPushNode.proc.kill();
  gatewayServer.close();
});

/** A client for REST only (no connection): chatd counts the user offline. */
async function restClient(user, at = node) {
  return new ChatClient({ baseUrl: at.base, token: await login(at.base, user) });
}

/** A client online on the WebSocket. */
async function onlineClient(user) {
  const c = new ChatClient({ baseUrl: node.base, token: await login(node.base, user) });
  await c.start();
  return c;
}

const gatewayDevice = (pushKey, extra = {}) => ({ kind: "gateway", appId: APP, pushKey, ...extra });

/** A browser subscription as `PushSubscription.toJSON()` gives it, on an allowed push service. */
function subscription(endpoint = `https://fcm.googleapis.com/fcm/send/${randomUUID()}`) {
  return { endpoint, expirationTime: null, keys: { p256dh: vapidKeys().publicKey, auth: randomBytes(16).toString("base64url") } };
}

const refused = (code, status) => (e) => {
  assert.ok(e instanceof ChatError, `a ChatError, not ${e}`);
  assert.equal(e.code, code, e.message);
  assert.equal(e.status, status);
  return true;
};

/** A direct room between `sender` and `peer` with one message per text, sent over REST. */
async function sendTo(sender, peer, texts) {
  const room = await sender.api("POST", "/v1/rooms/direct", { peer });
  const sent = [];
  for (const text of texts) sent.push(await sender.api("POST", `/v1/rooms/${room.id}/messages`, { clientMsgId: randomUUID(), text }));
  return { room: room.id, sent };
}

const gatewayRequests = (room, type) => gateway.requests.filter((r) => r.json.notification?.room_id === room && r.json.notification?.chatd?.type === type);

async function ledgerEntry(c, room, seq, outcome) {
  return eventually(async () => {
    const { notifications } = await c.notifications({ room });
    const entry = notifications.find((n) => n.seq === seq);
    return entry?.outcome === outcome ? entry : null;
  }, 15000, `ledger: seq ${seq} ${outcome}`);
}

test("GET /v1/push says what each deployment offers", async () => {
  const viaGateway = await (await restClient("push-cfg")).pushConfig();
  assert.equal(viaGateway.webPush, null);
  assert.equal(viaGateway.gateway, true);
  assert.equal(viaGateway.includeText, true);

  const viaWebPush = await (await restClient("push-cfg", webPushNode)).pushConfig();
  assert.equal(viaWebPush.gateway, false);
  assert.equal(viaWebPush.webPush.vapidPublicKey, vapid.publicKey, "the public half of push.vapid_private_key");
  const key = base64UrlToBytes(viaWebPush.webPush.vapidPublicKey);
  assert.equal(key.length, 65, "an uncompressed P-256 point, as applicationServerKey takes it");
  assert.equal(key[0], 4);
});

test("enableWebPush refuses clearly: no Web Push on the server, no service worker in Node", async () => {
  const noWebPush = await restClient("push-enable");
  await assert.rejects(noWebPush.enableWebPush(), (e) => e instanceof ChatError && e.code === "push_not_configured");
  assert.equal(await noWebPush.webPushState(), "not_offered");

  const webPush = await restClient("push-enable", webPushNode);
  await assert.rejects(webPush.enableWebPush(), (e) => e instanceof ChatError && e.code === "unsupported");
  assert.equal(await webPush.webPushState(), "unsupported");
  await webPush.disableWebPush(); // nothing was on: nothing happens
});

test("a gateway device: 201, then 200 with the same id; listed; removed (204), then 404 device_not_found", async () => {
  const ann = await restClient("push-ann");
  const body = gatewayDevice("key-ann", { data: { profile: "work" }, name: "Ann's phone" });
  const first = await ann.registerDevice(body);
  assert.equal(first.created, true, "201: a new device");
  const { device } = first;
  assert.equal(typeof device.id, "string");
  assert.equal(device.kind, "gateway");
  assert.equal(device.appId, APP);
  assert.equal(device.pushKey, "key-ann");
  assert.deepEqual(device.data, { profile: "work" });
  assert.equal(device.name, "Ann's phone");
  assert.ok(!Number.isNaN(Date.parse(device.createdAt)), device.createdAt);

  const again = await ann.registerDevice({ ...body, name: "Ann's old phone" });
  assert.equal(again.created, false, "200: registered already");
  assert.equal(again.device.id, device.id);
  assert.equal(again.device.name, "Ann's old phone", "updated");

  assert.deepEqual((await ann.devices()).devices.map((d) => [d.id, d.pushKey]), [[device.id, "key-ann"]]);
  assert.equal(await ann.removeDevice(device.id), null, "204");
  await assert.rejects(ann.removeDevice(device.id), refused("device_not_found", 404));
  assert.deepEqual((await ann.devices()).devices, []);
});

test("another user's device is not found for them, and registering its push key moves it to them", async () => {
  const bob = await restClient("push-bob");
  const cat = await restClient("push-cat");
  const { device } = await bob.registerDevice(gatewayDevice("key-shared"));
  await assert.rejects(cat.removeDevice(device.id), refused("device_not_found", 404));
  assert.deepEqual((await bob.devices()).devices.map((d) => d.pushKey), ["key-shared"], "still bob's");

  const moved = await cat.registerDevice(gatewayDevice("key-shared"));
  assert.equal(moved.created, true, "new for cat");
  assert.deepEqual((await cat.devices()).devices.map((d) => d.pushKey), ["key-shared"]);
  assert.deepEqual((await bob.devices()).devices, [], "bob's install no longer gets his notifications");
});

test(`at most ${MAX_DEVICES} devices: too_many_devices past the cap, until one is removed`, async () => {
  const dan = await restClient("push-dan");
  const ids = [];
  for (let i = 1; i <= MAX_DEVICES; i++) ids.push((await dan.registerDevice(gatewayDevice(`key-dan-${i}`))).device.id);
  await assert.rejects(dan.registerDevice(gatewayDevice("key-dan-extra")), refused("too_many_devices", 409));
  const repeat = await dan.registerDevice(gatewayDevice("key-dan-1"));
  assert.equal(repeat.created, false, "registering one of them again is no new device");
  assert.equal((await dan.devices()).devices.length, MAX_DEVICES);

  await dan.removeDevice(ids[0]);
  assert.equal((await dan.registerDevice(gatewayDevice("key-dan-extra"))).created, true);
  assert.deepEqual((await dan.devices()).devices.map((d) => d.pushKey), ["key-dan-2", "key-dan-3", "key-dan-extra"], "oldest first");
});

test("registrations the deployment cannot take: push_not_configured, bad_field", async () => {
  const eve = await restClient("push-eve");
  await assert.rejects(eve.registerDevice({ kind: "webpush", subscription: subscription() }), refused("push_not_configured", 409));
  await assert.rejects(eve.registerDevice(gatewayDevice("")), refused("bad_field", 400));

  const browser = await restClient("push-eve", webPushNode);
  const sub = subscription();
  const { device, created } = await browser.registerDevice({ kind: "webpush", subscription: sub, name: "Firefox" });
  assert.equal(created, true);
  assert.equal(device.kind, "webpush");
  assert.equal(device.endpoint, sub.endpoint);
  assert.equal((await browser.registerDevice({ kind: "webpush", subscription: sub })).device.id, device.id, "same endpoint, same device");
  await assert.rejects(browser.registerDevice({ kind: "webpush", subscription: subscription("https://push.example.com/x") }), refused("bad_field", 400));
  await assert.rejects(browser.registerDevice(gatewayDevice("key-eve")), refused("push_not_configured", 409));
});

test("a message to an offline member reaches the gateway, signed, and the ledger says sent", async () => {
  const fay = await restClient("push-fay");
  const gus = await restClient("push-gus");
  await fay.registerDevice(gatewayDevice("key-fay", { data: { lang: "en" } }));
  const { room, sent } = await sendTo(gus, "push-fay", ["are you there?"]);

  const [request] = await eventually(() => gatewayRequests(room, "message").length && gatewayRequests(room, "message"), 15000, "the gateway's request");
  assert.equal(request.method, "POST");
  assert.equal(request.url, "/_matrix/push/v1/notify");
  assert.ok(request.headers["idempotency-key"], "Idempotency-Key");
  const timestamp = request.headers["x-chatd-timestamp"];
  assert.ok(Math.abs(Number(timestamp) - Date.now() / 1000) < 300, `X-Chatd-Timestamp ${timestamp}`);
  const signature = createHmac("sha256", SECRET).update(`${timestamp}.${request.body}`).digest("hex");
  assert.equal(request.headers["x-chatd-signature"], `sha256=${signature}`);
  const n = request.json.notification;
  assert.equal(n.event_id, sent[0].id);
  assert.equal(n.type, "m.room.message");
  assert.equal(n.sender, "push-gus");
  assert.equal(n.room_name, "push-gus", "a direct room is named after the sender");
  assert.equal(n.prio, "high");
  assert.deepEqual(n.content, { msgtype: "m.text", body: "are you there?" });
  assert.equal(n.counts.unread, 1);
  assert.deepEqual(n.devices, [{ app_id: APP, pushkey: "key-fay", data: { lang: "en" } }]);
  assert.equal(n.chatd.type, "message");
  assert.equal(n.chatd.seq, sent[0].seq);
  assert.equal(n.chatd.count, 1);
  assert.deepEqual(n.chatd.senders, ["push-gus"]);

  const entry = await ledgerEntry(fay, room, sent[0].seq, "sent");
  assert.equal(entry.messageId, sent[0].id);
  assert.equal(entry.sender, "push-gus");
  assert.deepEqual(entry.devices.map((d) => [d.kind, d.status]), [["gateway", "sent"]]);
  const { notifications } = await fay.notifications();
  assert.ok(Array.isArray(notifications));
  assert.ok(notifications.some((x) => x.room === room), "listed without a room filter too");
  assert.equal((await fay.notifications({ limit: 1 })).notifications.length, 1);
  assert.deepEqual((await gus.notifications({ room })).notifications, [], "the sender is not notified of their own message");
  assert.equal(gateway.requests.filter((r) => r.headers["idempotency-key"] === request.headers["idempotency-key"]).length, 1, "sent once");
});

test("messages within collapse_ms make one notification; reading the room sends a badge update", async () => {
  const hal = await restClient("push-hal");
  const ivy = await restClient("push-ivy");
  await hal.registerDevice(gatewayDevice("key-hal"));
  const { room, sent } = await sendTo(ivy, "push-hal", ["one", "two", "three"]);
  const last = sent.at(-1).seq;

  await ledgerEntry(hal, room, last, "sent");
  const messages = gatewayRequests(room, "message");
  assert.equal(messages.length, 1, "one notification for the three");
  assert.equal(messages[0].json.notification.chatd.count, 3);
  assert.equal(messages[0].json.notification.chatd.seq, last);
  assert.equal(messages[0].json.notification.content.body, "three", "the newest text");
  for (const { seq } of sent.slice(0, -1)) {
    const entry = await ledgerEntry(hal, room, seq, "collapsed");
    assert.equal(entry.collapsedInto, last);
  }

  await hal.api("POST", `/v1/rooms/${room}/read`, { seq: last });
  const [badge] = await eventually(() => gatewayRequests(room, "badge").length && gatewayRequests(room, "badge"), 15000, "a badge update");
  const n = badge.json.notification;
  assert.equal(n.prio, "low");
  assert.equal(n.counts.unread, 0);
  assert.equal(n.content, undefined, "no content");
  assert.deepEqual(n.devices.map((d) => d.pushkey), ["key-hal"]);
});

test("the ledger says why nothing came: online, no device; and a rejected push key is removed", async () => {
  const sender = await restClient("push-joe");
  const kim = await onlineClient("push-kim");
  try {
    await kim.registerDevice(gatewayDevice("key-kim"));
    const online = await sendTo(sender, "push-kim", ["you are here"]);
    const entry = await ledgerEntry(kim, online.room, 1, "skipped");
    assert.equal(entry.reason, "online");
    assert.deepEqual(gatewayRequests(online.room, "message"), [], "nothing went to the gateway");
  } finally {
    kim.stop();
  }

  const lee = await restClient("push-lee");
  const noDevice = await sendTo(sender, "push-lee", ["anyone?"]);
  assert.equal((await ledgerEntry(lee, noDevice.room, 1, "skipped")).reason, "no_device");

  const max = await restClient("push-max");
  await max.registerDevice(gatewayDevice("key-max"));
  gateway.rejecting.add("key-max");
  const rejected = await sendTo(sender, "push-max", ["hello?"]);
  assert.equal((await ledgerEntry(max, rejected.room, 1, "failed")).reason, "rejected");
  assert.deepEqual((await max.devices()).devices, [], "the gateway rejected it: chatd removed it");
});
