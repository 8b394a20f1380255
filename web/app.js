// The chatd web app: a thin UI over the SDK (/sdk/chatd.js), which owns connection state,
// ordering, retries, history, the messages' current state (edits, deletes, reactions,
// replies), roles, presence, typing, receipts and unread counts (and reports delivered, read
// and active by itself). This file only renders what the SDK holds: the room list, and the
// open Room's messages, who is typing and how far own messages got; and it turns clicks and
// keys into the Room's calls (send, edit, delete, react, setRole, leave). Notifications:
// the SDK turns Web Push on and off; the service worker (/sw.js) shows them, and a click on
// one comes back here as `?room=` or an "open-room" message.

import { ChatClient, devLogin } from "/sdk/chatd.js";

const $ = (selector) => document.querySelector(selector);
const TOKEN_KEY = "chatd.token";

let client = null;
let current = null; // the open Room
let stopWatching = null; // unsubscribes from the open room's events
let readersOpen = null; // the seq whose "read by" list is unfolded, in the open room
let editing = null; // {seq, draft, focus}: the own message being edited, in the open room
let replyingTo = null; // {seq, sender, text}: the message the composer answers, in the open room
let flashing = null; // the seq of a message just scrolled to (highlighted for a moment)
let leaving = null; // the room the user chose to leave: its going needs no explanation

/** Reactions offered on every message (any emoji the SDK is given works). */
const QUICK_EMOJIS = ["👍", "❤️", "😂"];
const ROLE_LABELS = { owner: "Owner", admin: "Admin", member: "Member" };

/** Builds an element: el("div", {class: "x", dataset: {seq: 1}}, child, "text"). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

// ---- readable errors -------------------------------------------------------------------

function describe(error) {
  switch (error.code) {
    case "rate_limited":
      return `You are sending too fast; trying again in ${Math.ceil((error.retryAfterMs ?? 1000) / 1000)} s.`;
    case "text_too_long":
      return "That message is too long.";
    case "empty_text":
      return "Type something first.";
    case "room_not_found":
      return "You are not a member of that room (or it does not exist).";
    case "forbidden":
      return error.message;
    case "store_unavailable":
    case "bus_unavailable":
      return "The server cannot store messages right now; your message will be retried.";
    case "too_many_rooms":
      return "That would exceed the maximum number of rooms (for you or someone you are adding); leave a room first.";
    case "overloaded":
    case "request_timeout":
      return "The server is busy right now; please try again in a moment.";
    case "unauthorized":
    case "token_expired":
      return "Your session has ended; please sign in again.";
    case "bad_field":
      return error.message;
    case "message_not_found":
      return "That message is no longer there (it may have been deleted).";
    case "edit_window_closed":
      return "It is too late to edit that message.";
    case "push_not_configured":
      return "This server does not send notifications.";
    case "too_many_devices":
      return "Notifications are on in too many of your browsers and apps; turn them off in one first.";
    case "permission_denied":
      return "Notifications are blocked for this site: allow them in the browser's site settings.";
    case "unsupported":
      return "This browser cannot receive notifications.";
    case "subscribe_failed":
      return `The browser could not turn notifications on (${error.message}).`;
    default:
      return error.message || "Something went wrong.";
  }
}

function toast(text) {
  const item = el("div", { class: "toast" }, text);
  $("#toasts").append(item);
  setTimeout(() => item.remove(), 5000);
}

// ---- sign in ---------------------------------------------------------------------------

function showLogin(message = "") {
  $("#chat-view").hidden = true;
  $("#logout").hidden = true;
  $("#hide-presence-field").hidden = true;
  $("#push-field").hidden = true;
  $("#login-view").hidden = false;
  $("#login-error").textContent = message;
  $("#login-name").focus();
}

$("#login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const user = $("#login-name").value.trim();
  const pasted = $("#login-token").value.trim();
  try {
    const token = pasted || (await devLogin(location.origin, user));
    sessionStorage.setItem(TOKEN_KEY, token);
    await start(token);
  } catch (error) {
    if (error.status === 404) {
      $("#token-field").hidden = false;
      $("#login-error").textContent = "The dev login is disabled here: paste a token from your backend.";
    } else {
      $("#login-error").textContent = describe(error);
    }
  }
});

$("#logout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  closeRoom();
  // This browser no longer gets the user's notifications (whoever signs in next would see them).
  client?.disableWebPush().catch(() => {});
  client?.stop();
  client = null;
  location.hash = "";
  renderTitle();
  showLogin();
});

// ---- the chat --------------------------------------------------------------------------

const STATE_TEXT = {
  connecting: "Connecting…",
  online: "Online",
  reconnecting: "Reconnecting…",
  offline: "Offline",
};

function renderState(state) {
  const banner = $("#connection");
  banner.dataset.state = state;
  banner.dataset.node = client?.node ?? "";
  banner.title = client?.node ? `connected to node ${client.node}` : "";
  banner.textContent = STATE_TEXT[state] ?? state;
}

async function start(token) {
  closeRoom();
  client?.stop();
  const own = (client = new ChatClient({ token }));
  client.on("state", renderState);
  // The first room list means the user is signed in; connecting may take longer. (A list
  // that arrives after signing out is not this session's.)
  client.on("rooms", (rooms) => {
    if (client !== own) return;
    showChat();
    renderRooms(rooms);
    renderTitle();
  });
  client.on("unread", () => client === own && renderTitle());
  client.on("presence", () => {
    if (client !== own) return;
    renderRooms(client.rooms());
    renderHead();
  });
  client.on("error", (error) => {
    if (error.code === "unauthorized" || error.code === "token_expired") {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(describe(error));
    } else {
      toast(describe(error));
    }
  });
  await client.start();
  showChat();
  loadSettings(own);
  loadPush(own);
  const wanted = roomFromQuery() ?? roomFromHash();
  const room = wanted && client.room(wanted);
  // Opening the fragment's room may fail (network, a room just left): report it, stay signed in.
  if (room) await openRoom(room).catch((error) => toast(describe(error)));
}

function showChat() {
  $("#login-view").hidden = true;
  $("#chat-view").hidden = false;
  $("#logout").hidden = false;
  $("#me-name").textContent = client.user;
}

/** The room id in the URL fragment, or null. A malformed fragment (e.g. `#%E0%A4%A`) means
 * no room is selected and is cleared; it must never end the session. */
function roomFromHash() {
  const raw = location.hash.slice(1);
  if (!raw) return null;
  try {
    return decodeURIComponent(raw);
  } catch {
    history.replaceState(history.state, "", location.pathname + location.search);
    return null;
  }
}

/** The room a notification's click opened the app on (`/?room=<id>`), or null; the query is
 * cleared (the fragment names the open room from then on). */
function roomFromQuery() {
  const params = new URLSearchParams(location.search);
  const room = params.get("room");
  if (room === null) return null;
  params.delete("room");
  const query = params.toString();
  history.replaceState(history.state, "", location.pathname + (query ? `?${query}` : "") + location.hash);
  return room || null;
}

function roomName(room) {
  if (room.kind === "group") return room.name;
  return room.members.find((m) => m !== client.user) ?? client.user;
}

function shortTime(iso) {
  const date = new Date(iso);
  const today = new Date().toDateString() === date.toDateString();
  return today
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleDateString([], { month: "short", day: "numeric" });
}

/** The other member of a direct room (null for groups). */
function peerOf(room) {
  return room.kind === "direct" ? (room.members.find((m) => m !== client.user) ?? null) : null;
}

function lastSeenText(iso) {
  if (!iso) return "offline";
  const date = new Date(iso);
  const minutes = Math.floor((Date.now() - date.getTime()) / 60000);
  if (minutes < 1) return "last seen just now";
  if (minutes < 60) return `last seen ${minutes} min ago`;
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const yesterday = new Date();
  yesterday.setDate(yesterday.getDate() - 1);
  if (date.toDateString() === new Date().toDateString()) return `last seen today at ${time}`;
  if (date.toDateString() === yesterday.toDateString()) return `last seen yesterday at ${time}`;
  return `last seen ${date.toLocaleDateString([], { month: "short", day: "numeric" })}`;
}

/** "online", "away", "last seen …"; empty when the server never told (not a contact). */
function presenceText(presence) {
  if (!presence) return "";
  if (presence.state === "online" || presence.state === "away") return presence.state;
  return lastSeenText(presence.lastSeen);
}

function presenceDot(presence) {
  return el("span", { class: "dot", dataset: { state: presence?.state ?? "unknown" }, "aria-hidden": "true" });
}

function renderTitle() {
  const total = client?.unreadTotal() ?? 0;
  document.title = total > 0 ? `(${total > 999 ? "999+" : total}) chatd` : "chatd";
}

function renderRooms(rooms) {
  const list = $("#rooms");
  list.replaceChildren(
    ...rooms.map((room) => {
      const last = room.lastMessage;
      const peer = peerOf(room);
      const presence = peer ? client.presenceOf(peer) : undefined;
      const unread = room.unread ?? 0;
      const button = el(
        "button",
        {
          class: "room",
          type: "button",
          "aria-current": room === current ? "true" : "false",
          title: presence ? `${peer}: ${presenceText(presence)}` : undefined,
          dataset: { roomId: room.id, testid: "room", unread: String(unread), presence: presence?.state ?? "" },
          onclick: () => openRoom(room),
        },
        el("span", { class: "room-name" }, peer ? presenceDot(presence) : null, roomName(room)),
        el("span", { class: "room-time" }, last ? shortTime(last.createdAt) : ""),
        el("span", { class: "room-last" }, last ? `${room.kind === "group" ? last.sender + ": " : ""}${last.deleted ? "Message deleted" : last.text ?? ""}` : "No messages yet"),
        unread > 0 ? el("span", { class: "unread", "aria-label": `${unread} unread` }, unread > 999 ? "999+" : String(unread)) : null,
      );
      return el("li", {}, button);
    }),
  );
}

async function openRoom(room) {
  closeRoom();
  current = room;
  const render = () => renderMessages();
  const unsubscribe = [
    room.on("messages", render),
    room.on("removed", () => {
      if (leaving !== room) toast(`You are no longer in ${roomName(room)}.`);
      leaveConversation();
    }),
    room.on("receipt", render),
    room.on("members", () => (renderHead(), render(), renderGroupDialog())),
    room.on("typing", renderTyping),
  ];
  stopWatching = () => unsubscribe.forEach((off) => off());
  location.hash = room.id;
  renderHead();
  renderTyping();
  $("#composer").hidden = false;
  $("#chat-view").classList.add("show-conversation");
  renderRooms(client.rooms());
  // The SDK reads what arrives in the open room while the page is visible.
  await room.open();
  renderMessages({ toBottom: true });
  $("#composer-text").focus();
}

function closeRoom() {
  stopWatching?.();
  stopWatching = null;
  if (current) {
    client?.setTyping(current.id, false);
    current.close();
  }
  current = null;
  readersOpen = null;
  editing = null;
  flashing = null;
  setReply(null);
  for (const dialog of ["#group-dialog", "#confirm-dialog"]) if ($(dialog).open) $(dialog).close();
}

/** Back to the room list (the back button, or the room went away). */
function leaveConversation() {
  $("#chat-view").classList.remove("show-conversation");
  closeRoom();
  location.hash = "";
  renderHead();
  renderTyping();
  $("#messages").replaceChildren();
  $("#composer").hidden = true;
  if (client) renderRooms(client.rooms());
}

$("#back").addEventListener("click", leaveConversation);

/** The conversation's title, and the peer's presence (direct) or how many are online (group). */
function renderHead() {
  const line = $("#room-presence");
  $("#group-settings").hidden = !current || current.kind !== "group";
  if (!current || !client) {
    $("#room-title").textContent = "Pick a room";
    line.replaceChildren();
    delete line.dataset.state;
    return;
  }
  $("#room-title").textContent = roomName(current);
  const peer = peerOf(current);
  if (peer) {
    const presence = client.presenceOf(peer);
    line.dataset.state = presence?.state ?? "";
    line.replaceChildren(...(presence ? [presenceDot(presence), presenceText(presence)] : []));
  } else {
    const others = current.members.filter((m) => m !== client.user);
    const online = others.filter((m) => client.presenceOf(m)?.state === "online").length;
    delete line.dataset.state;
    line.replaceChildren(`${current.members.length} members${online > 0 ? `, ${online} online` : ""}`);
  }
}

function typingText(users) {
  if (users.length === 0) return "";
  if (users.length === 1) return `${users[0]} is typing…`;
  if (users.length === 2) return `${users[0]} and ${users[1]} are typing…`;
  if (users.length === 3) return `${users[0]}, ${users[1]} and ${users[2]} are typing…`;
  return `${users[0]}, ${users[1]} and ${users.length - 2} others are typing…`;
}

function renderTyping() {
  $("#typing").textContent = typingText(current?.typing ?? []);
}

// "Last seen 5 min ago" ages: refresh it now and then.
setInterval(() => client && current && renderHead(), 30000);

function statusText(message) {
  if (message.status === "pending") return "sending…";
  if (message.status === "failed") return `not sent: ${describe(message.error ?? {})}`;
  return shortTime(message.createdAt);
}

const TICKS = { sent: "✓", delivered: "✓✓", read: "✓✓" };
const TICK_LABELS = { sent: "Sent", delivered: "Delivered", read: "Read" };

/** An own stored message's ticks: in a group, delivered or read once every other member is. */
function ticks(status) {
  const state =
    typeof status === "string"
      ? status
      : status.of > 0 && status.read === status.of
        ? "read"
        : status.of > 0 && status.delivered === status.of
          ? "delivered"
          : "sent";
  return el("span", { class: "ticks", title: TICK_LABELS[state], "aria-label": TICK_LABELS[state], dataset: { status: state, testid: "ticks" } }, TICKS[state]);
}

/** Under an own message in a group: "Read by k of n", unfolding into who read it. */
function readBy(message, status) {
  const seq = message.seq;
  const readers = current.readers(seq);
  const names = (list) => (list.length ? list.join(", ") : "nobody");
  const lines = [`Read: ${names(readers.read)}`, `Delivered: ${names(readers.delivered)}`, `Not yet: ${names(readers.sent)}`];
  return el(
    "details",
    {
      class: "read-by",
      open: readersOpen === seq,
      dataset: { testid: "read-by", read: status.read, of: status.of },
      ontoggle: (event) => {
        const open = event.target.open;
        if (open === (readersOpen === seq)) return; // re-rendered as it was
        readersOpen = open ? seq : null;
        // Fresh positions (large groups get no live receipts); their arrival re-renders.
        if (open) current?.loadReceipts().catch((error) => toast(describe(error)));
      },
    },
    el("summary", { title: lines.join("\n") }, `Read by ${status.read} of ${status.of}`),
    el("ul", { class: "readers" }, ...lines.map((line) => el("li", {}, line))),
  );
}

/** "edited" after a message changed by an edit (its time in the tooltip). */
function editedLabel(message) {
  if (!message.editedAt || message.deleted) return null;
  return el("span", { class: "edited", title: `edited ${new Date(message.editedAt).toLocaleString()}`, dataset: { testid: "edited" } }, "edited");
}

/** The bubble's footer: time or sending state, and for own stored messages how far they got. */
function meta(message, own) {
  const edited = editedLabel(message);
  if (!own) return [el("div", { class: "meta" }, edited, shortTime(message.createdAt))];
  if (message.status !== "sent") return [el("div", { class: "meta" }, statusText(message))];
  const status = current.messageStatus(message.seq);
  return [
    el("div", { class: "meta" }, edited, statusText(message), " ", ticks(status)),
    typeof status === "object" && status.of > 0 ? readBy(message, status) : null,
  ];
}

/** Above a reply: the answered message as it stands; a click scrolls to it. */
function quote(seq, reply) {
  const text = !reply ? "an earlier message" : reply.deleted ? "Message deleted" : reply.text;
  return el(
    "button",
    {
      type: "button",
      class: "quote",
      title: "Show the message this answers",
      dataset: { testid: "reply-quote", replySeq: String(seq), deleted: String(reply?.deleted === true) },
      onclick: () => scrollToMessage(seq),
    },
    reply ? el("span", { class: "quote-sender" }, reply.sender) : null,
    el("span", { class: reply?.deleted ? "quote-text deleted" : "quote-text" }, text),
  );
}

/** The reactions under a message: each a button that adds the user's or takes it back. */
function reactionsRow(message) {
  if (!message.reactions?.length) return null;
  return el(
    "div",
    { class: "reactions", dataset: { testid: "reactions" } },
    ...message.reactions.map((r) =>
      el(
        "button",
        {
          type: "button",
          class: "reaction",
          "aria-pressed": String(r.me),
          "aria-label": `${r.emoji} ${r.count}${r.me ? ", including you" : ""}`,
          title: r.me ? "Click to take your reaction back" : `React with ${r.emoji}`,
          disabled: message.status !== "sent",
          dataset: { testid: "reaction", emoji: r.emoji, count: String(r.count), me: String(r.me) },
          onclick: () => toggleReaction(message, r.emoji),
        },
        `${r.emoji} ${r.count}`,
      ),
    ),
  );
}

/** What one can do with a stored message: react, reply, and edit or delete it if allowed. */
function actions(message) {
  const button = (label, testid, text, onclick, extra = {}) =>
    el("button", { type: "button", class: "action", title: label, "aria-label": label, dataset: { testid, ...extra }, onclick }, text);
  return el(
    "div",
    { class: "actions", dataset: { testid: "actions" } },
    ...QUICK_EMOJIS.map((emoji) => button(`React with ${emoji}`, "react", emoji, () => toggleReaction(message, emoji), { emoji })),
    button("Reply", "reply", "↩", () => setReply(message)),
    current.canEdit(message) ? button("Edit", "edit", "✎", () => startEdit(message)) : null,
    current.canDelete(message) ? button("Delete", "delete", "🗑", () => confirmDelete(message)) : null,
  );
}

/** The text being edited, in place of the message's; Enter saves, Escape cancels. */
function editor() {
  const input = el("textarea", { class: "edit-text", rows: "2", "aria-label": "Edit message", dataset: { testid: "edit-text" } });
  input.value = editing.draft;
  input.addEventListener("input", () => (editing.draft = input.value));
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      saveEdit();
    } else if (event.key === "Escape") {
      event.preventDefault();
      cancelEdit();
    }
  });
  return el("div", { class: "text editing" }, input, el("div", { class: "edit-hint" }, "Enter saves · Escape cancels"));
}

function bubble(message, isGroup) {
  const own = message.sender === client.user;
  const stored = message.status === "sent";
  const deleted = message.deleted === true;
  const isEditing = stored && !deleted && editing?.seq === message.seq;
  const classes = ["msg", own && "own", deleted && "deleted", message.changing && "changing", stored && flashing === message.seq && "flash"];
  return el(
    "div",
    {
      class: classes.filter(Boolean).join(" "),
      dataset: { testid: "message", seq: message.seq ?? "", status: message.status, sender: message.sender, deleted: String(deleted), edited: String(Boolean(message.editedAt)) },
    },
    isGroup && !own ? el("div", { class: "sender" }, message.sender) : null,
    message.replyTo !== undefined && !deleted ? quote(message.replyTo, message.reply) : null,
    isEditing ? editor() : el("div", { class: "text", dataset: deleted ? { testid: "deleted" } : {} }, deleted ? "Message deleted" : (message.text ?? "")),
    reactionsRow(message),
    ...meta(message, own),
    stored && !deleted && !isEditing ? actions(message) : null,
  );
}

function renderMessages({ toBottom = false } = {}) {
  if (!current) return;
  const box = $("#messages");
  const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  // A re-render replaces the editor: it keeps its focus and cursor.
  const old = box.querySelector(".edit-text");
  const keepFocus = old !== null && document.activeElement === old;
  const cursor = old ? [old.selectionStart, old.selectionEnd] : null;
  const isGroup = current.kind === "group";
  const nodes = [];
  if (current.hasOlder) nodes.push(el("div", { class: "older" }, "Scroll up for older messages"));
  let day = null;
  const shown = current.messages();
  if (editing && !shown.some((m) => m.seq === editing.seq && !m.deleted)) editing = null; // deleted meanwhile
  for (const message of shown) {
    const date = new Date(message.createdAt).toDateString();
    if (date !== day) {
      day = date;
      nodes.push(el("div", { class: "day", dataset: { testid: "day" } }, new Date(message.createdAt).toLocaleDateString([], { weekday: "long", month: "long", day: "numeric" })));
    }
    nodes.push(bubble(message, isGroup));
  }
  box.replaceChildren(...nodes);
  const input = box.querySelector(".edit-text");
  if (input && (keepFocus || editing.focus)) {
    input.focus();
    const end = input.value.length;
    input.setSelectionRange(...(editing.focus || !cursor ? [end, end] : cursor));
    editing.focus = false;
  }
  if (toBottom || nearBottom) box.scrollTop = box.scrollHeight;
}

// ---- edit, delete, react, reply ------------------------------------------------------------

/** @param {object} message a shown message of the open room */
function startEdit(message) {
  editing = { seq: message.seq, draft: message.text, focus: true };
  renderMessages();
}

function saveEdit() {
  const { seq, draft } = editing;
  if (!draft.trim()) return toast(describe({ code: "empty_text" }));
  editing = null;
  // Refusals (too late, not found) come as errors: the message shows as it stands.
  if (draft !== current.message(seq)?.text) current.edit(seq, draft);
  renderMessages();
  $("#composer-text").focus();
}

function cancelEdit() {
  editing = null;
  renderMessages();
  $("#composer-text").focus();
}

/** Adds the user's emoji, or takes it back if it is theirs already. */
function toggleReaction(message, emoji) {
  const mine = message.reactions?.some((r) => r.emoji === emoji && r.me);
  if (mine) current.unreact(message.seq, emoji);
  else current.react(message.seq, emoji);
}

async function confirmDelete(message) {
  const room = current;
  const own = message.sender === client.user;
  const question = own ? "Delete this message for everybody?" : `Delete ${message.sender}'s message for everybody?`;
  if (await confirmed(question, "Delete") && room === current) room.delete(message.seq);
}

/** The composer answers `message` (null: no longer). */
function setReply(message) {
  replyingTo = message ? { seq: message.seq, sender: message.sender, text: message.text } : null;
  const bar = $("#reply-bar");
  bar.hidden = !replyingTo;
  $("#reply-preview").textContent = replyingTo ? `${replyingTo.sender}: ${replyingTo.text}` : "";
  if (replyingTo) $("#composer-text").focus();
}

$("#reply-cancel").addEventListener("click", () => {
  setReply(null);
  $("#composer-text").focus();
});

/** Scrolls to message `seq`, paging back through history when it is older than what is loaded. */
async function scrollToMessage(seq) {
  const room = current;
  const find = () => $(`#messages [data-testid="message"][data-seq="${seq}"]`);
  for (let pages = 0; !find() && room === current && room.hasOlder && pages < 20; pages++) {
    await room.loadOlder();
    renderMessages();
  }
  if (room !== current) return;
  if (!find()) return toast("That message is no longer there.");
  flashing = seq;
  renderMessages();
  find().scrollIntoView({ block: "center", behavior: "smooth" });
  setTimeout(() => {
    if (flashing !== seq) return;
    flashing = null;
    renderMessages();
  }, 2000);
}

// ---- dialogs -------------------------------------------------------------------------------

/** Asks a yes/no question in a modal dialog; resolves with the answer. */
function confirmed(question, yes) {
  const dialog = $("#confirm-dialog");
  $("#confirm-text").textContent = question;
  $("#confirm-ok").textContent = yes;
  dialog.returnValue = ""; // Escape closes without a value
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
}

$("#group-settings").addEventListener("click", () => {
  if (!current) return;
  $("#group-dialog").showModal();
  renderGroupDialog();
});
$("#group-close").addEventListener("click", () => $("#group-dialog").close());

const ROLE_ORDER = { owner: 0, admin: 1, member: 2 };

/** The open group's members with their roles; owners change roles, owners and admins remove. */
function renderGroupDialog() {
  const dialog = $("#group-dialog");
  if (!dialog.open || !current) return;
  const room = current;
  const me = client.user;
  $("#group-dialog-title").textContent = roomName(room);
  const members = [...room.members].sort((a, b) => ROLE_ORDER[room.roleOf(a)] - ROLE_ORDER[room.roleOf(b)] || a.localeCompare(b));
  $("#member-list").replaceChildren(
    ...members.map((user) => {
      const role = room.roleOf(user);
      const roleView =
        room.canSetRoles && user !== me
          ? el(
              "select",
              {
                "aria-label": `Role of ${user}`,
                dataset: { testid: "role-select" },
                onchange: (event) => room.setRole(user, event.target.value).catch((error) => (toast(describe(error)), renderGroupDialog())),
              },
              ...Object.entries(ROLE_LABELS).map(([value, label]) => el("option", { value, selected: value === role }, label)),
            )
          : el("span", { class: "role", dataset: { role } }, ROLE_LABELS[role]);
      return el(
        "li",
        { class: "member", dataset: { testid: "member", user, role } },
        el("span", { class: "member-name" }, user, user === me ? " (you)" : ""),
        roleView,
        user !== me && room.canRemove(user)
          ? el("button", { type: "button", class: "secondary", "aria-label": `Remove ${user}`, dataset: { testid: "remove-member" }, onclick: () => removeMember(room, user) }, "Remove")
          : null,
      );
    }),
  );
  $("#add-members-form").hidden = room.roleOf(me) === "member";
}

async function removeMember(room, user) {
  if (!(await confirmed(`Remove ${user} from ${roomName(room)}?`, "Remove"))) return;
  try {
    await room.removeMember(user); // the members frame re-renders the list
  } catch (error) {
    toast(describe(error));
  }
}

$("#add-members-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const members = $("#add-members").value.split(",").map((m) => m.trim()).filter(Boolean);
  try {
    await current.addMembers(members);
    $("#add-members").value = "";
  } catch (error) {
    toast(describe(error));
  }
});

$("#leave-group").addEventListener("click", async () => {
  const room = current;
  if (!room || !(await confirmed(`Leave ${roomName(room)}?`, "Leave"))) return;
  leaving = room;
  try {
    await room.leave(); // room_removed takes the conversation away
    $("#group-dialog").close();
  } catch (error) {
    leaving = null;
    toast(describe(error));
  }
});

// History loads as the user scrolls to the top, keeping the view where it was.
$("#messages").addEventListener("scroll", async () => {
  const box = $("#messages");
  if (box.scrollTop > 40 || !current || !current.hasOlder || box.dataset.loading) return;
  box.dataset.loading = "1";
  const before = box.scrollHeight;
  try {
    await current.loadOlder();
    renderMessages();
    box.scrollTop = box.scrollHeight - before;
  } finally {
    delete box.dataset.loading;
  }
});

$("#composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("#composer-text");
  const text = input.value;
  if (!text.trim() || !current) return;
  current.send(text, replyingTo ? { replyTo: replyingTo.seq } : undefined);
  setReply(null);
  input.value = "";
  renderMessages({ toBottom: true });
});

// Typing is reported while the composer holds text (the SDK paces it; sending stops it).
$("#composer-text").addEventListener("input", (event) => {
  if (current) client.setTyping(current.id, event.target.value.trim() !== "");
});

$("#composer-text").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("#composer").requestSubmit();
  } else if (event.key === "Escape" && replyingTo) {
    setReply(null);
  } else if (event.key === "ArrowUp" && event.target.value === "" && current) {
    // Up in an empty composer edits the user's last message (that can still be edited).
    const last = current.messages().findLast((m) => current.canEdit(m));
    if (last) {
      event.preventDefault();
      startEdit(last);
    }
  }
});

$("#direct-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const room = await client.openDirect($("#direct-peer").value.trim());
    $("#direct-peer").value = "";
    await openRoom(room);
  } catch (error) {
    toast(describe(error));
  }
});

$("#group-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const members = $("#group-members").value.split(",").map((m) => m.trim()).filter(Boolean);
  try {
    const room = await client.createGroup($("#group-name").value.trim(), members);
    $("#group-name").value = "";
    $("#group-members").value = "";
    await openRoom(room);
  } catch (error) {
    toast(describe(error));
  }
});

// ---- settings ----------------------------------------------------------------------------

/** Shows the presence toggle once the server says where it stands (an older server has no settings). */
async function loadSettings(own) {
  try {
    const settings = await own.settings();
    if (client !== own) return;
    $("#hide-presence").checked = Boolean(settings.hidePresence);
    $("#hide-presence-field").hidden = false;
  } catch {
    $("#hide-presence-field").hidden = true;
  }
}

$("#hide-presence").addEventListener("change", async (event) => {
  const box = event.target;
  const wanted = box.checked;
  box.disabled = true;
  try {
    const settings = await client.updateSettings({ hidePresence: wanted });
    box.checked = Boolean(settings.hidePresence);
  } catch (error) {
    box.checked = !wanted;
    toast(describe(error));
  } finally {
    box.disabled = false;
  }
});

// ---- notifications --------------------------------------------------------------------------

/** Per state of webPushState(): the note beside the checkbox, and its tooltip. */
const PUSH_STATES = {
  on: ["", "You get notifications of new messages while chatd is closed"],
  off: ["", "Get notifications of new messages while chatd is closed"],
  blocked: ["blocked in this browser", "Allow notifications for this site in the browser's settings, then reload"],
  unsupported: ["not supported by this browser", ""],
  not_offered: ["not offered by this server", ""],
};

/** Shows where Web Push stands (an older server without push: no control at all). */
async function loadPush(own) {
  try {
    const state = await own.webPushState();
    if (client === own) renderPush(state);
  } catch {
    $("#push-field").hidden = true;
  }
}

function renderPush(state) {
  const field = $("#push-field");
  const box = $("#push-enabled");
  field.hidden = false;
  field.dataset.state = state;
  box.checked = state === "on";
  box.disabled = state !== "on" && state !== "off";
  const [note, title] = PUSH_STATES[state] ?? ["", ""];
  $("#push-note").textContent = note;
  field.title = title;
}

$("#push-enabled").addEventListener("change", async (event) => {
  const box = event.target;
  const own = client;
  box.disabled = true;
  $("#push-note").textContent = box.checked ? "turning on…" : "turning off…";
  try {
    if (box.checked) await own.enableWebPush({ name: `chatd web app (${navigator.userAgentData?.platform || navigator.platform || "browser"})` });
    else await own.disableWebPush();
  } catch (error) {
    toast(describe(error));
  }
  await loadPush(own); // what the browser and the server say now
});

// A click on a notification while the app is open: the service worker asks for the room.
navigator.serviceWorker?.addEventListener("message", async (event) => {
  if (event.data?.type !== "open-room" || !client) return;
  const own = client;
  let room = own.room(event.data.room);
  if (!room) room = (await own.refreshRooms().catch(() => [])).find((r) => r.id === event.data.room); // joined since
  if (client !== own) return;
  if (room) await openRoom(room).catch((error) => toast(describe(error)));
  else toast(describe({ code: "room_not_found" }));
});
navigator.serviceWorker?.startMessages();

// ---- boot ------------------------------------------------------------------------------

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) {
  start(saved).catch((error) => {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(describe(error));
  });
} else {
  showLogin();
}
