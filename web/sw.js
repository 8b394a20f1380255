// sw.js: the web app's service worker, registered by the SDK's enableWebPush() (chatd serves
// it at /sw.js, so its scope is the whole app). It shows chatd's Web Push notifications
// (docs/protocol.md, "Web Push"): one notification per room, replaced as messages come
// (tag = the room id), closed by a badge update once the room is read, and the app's badge
// set to the unread total. A click focuses the app on the room, or opens it there.
//
// A message notification is shown even when a page of the app is in view: chatd pushes only
// to members with no live connection (or only `away` ones, with push.notify_when_away), and a
// push that shows nothing can make the browser show a generic "updated in the background"
// notice instead.

self.addEventListener("install", () => self.skipWaiting()); // a new version takes over at once
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  let payload;
  try {
    payload = event.data?.json();
  } catch {
    return; // not chatd's JSON: nothing to show
  }
  if (payload?.type === "message") event.waitUntil(showMessage(payload));
  else if (payload?.type === "badge") event.waitUntil(clearRoom(payload));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const room = event.notification.data?.room;
  if (room) event.waitUntil(openRoom(room));
});

/** What a "message" payload shows: the room as title; the text, or how many came from whom. */
function messageNotification({ id, room, roomName, seq, sender, senders, text, count }) {
  // In a group the title is the group's name: the text says who wrote it.
  const prefix = sender && roomName && roomName !== sender ? `${sender}: ` : "";
  const last = typeof text === "string" && text !== "" ? prefix + text : "";
  const from = Array.isArray(senders) && senders.length > 0 ? senders.join(", ") : sender;
  const body = count > 1 ? `${count} new messages from ${from}${last ? `\n${last}` : ""}` : last || "New message";
  return { title: roomName || sender || "chatd", options: { body, tag: room, renotify: true, data: { id, room, seq } } };
}

/** @param {any} payload a "message" payload */
async function showMessage(payload) {
  // A resend of a notification already shown (a node took its job over): shown again as it
  // was, without a sound (a push must show something, or the browser shows its own notice).
  const shown = await self.registration.getNotifications({ tag: payload.room });
  const same = payload.id && shown.find((n) => n.data?.id === payload.id);
  if (same) {
    const options = { body: same.body, tag: same.tag, data: same.data, renotify: false, silent: true };
    return self.registration.showNotification(same.title, options);
  }
  const { title, options } = messageNotification(payload);
  await Promise.all([self.registration.showNotification(title, options), setBadge(payload.unread)]);
}

/** A badge update: the room was read (on some device), so its notification goes. */
async function clearRoom({ room, unread }) {
  const shown = await self.registration.getNotifications({ tag: room });
  for (const notification of shown) notification.close();
  await setBadge(unread);
}

/** The app's badge (where the browser has one): the unread total, or none at 0. */
async function setBadge(unread) {
  if (typeof unread !== "number" || !self.navigator.setAppBadge) return;
  try {
    await (unread > 0 ? self.navigator.setAppBadge(unread) : self.navigator.clearAppBadge());
  } catch {
    // Not installed as an app, or no badge on this platform: nothing to do.
  }
}

/** Shows `room` in a window of the app: the most recently focused one, else a new one. */
async function openRoom(room) {
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  const app = windows[0];
  if (!app) return self.clients.openWindow(new URL(`?room=${encodeURIComponent(room)}`, self.registration.scope).href);
  app.postMessage({ type: "open-room", room });
  return app.focus().catch(() => app); // focusing needs the click's permission; the message went anyway
}
