// The chatd web app: a thin UI over the SDK (/sdk/chatd.js), which owns connection state,
// ordering, retries and history. This file only renders what the SDK holds: the room list,
// and the open Room's messages.

import { ChatClient, devLogin } from "/sdk/chatd.js";

const $ = (selector) => document.querySelector(selector);
const TOKEN_KEY = "chatd.token";

let client = null;
let current = null; // the open Room
let stopWatching = null; // unsubscribes from the open room's events

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
  client?.stop();
  client = null;
  closeRoom();
  location.hash = "";
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
  client?.stop();
  closeRoom();
  const own = (client = new ChatClient({ token }));
  client.on("state", renderState);
  // The first room list means the user is signed in; connecting may take longer. (A list
  // that arrives after signing out is not this session's.)
  client.on("rooms", (rooms) => {
    if (client !== own) return;
    showChat();
    renderRooms(rooms);
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
  const wanted = roomFromHash();
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

function renderRooms(rooms) {
  const list = $("#rooms");
  list.replaceChildren(
    ...rooms.map((room) => {
      const last = room.lastMessage;
      const button = el(
        "button",
        {
          class: "room",
          type: "button",
          "aria-current": room === current ? "true" : "false",
          dataset: { roomId: room.id, testid: "room" },
          onclick: () => openRoom(room),
        },
        el("span", { class: "room-name" }, roomName(room)),
        el("span", { class: "room-time" }, last ? shortTime(last.createdAt) : ""),
        el("span", { class: "room-last" }, last ? `${room.kind === "group" ? last.sender + ": " : ""}${last.text ?? ""}` : "No messages yet"),
        room.unread > 0 ? el("span", { class: "unread", "aria-label": `${room.unread} unread` }, room.unread > 999 ? "999+" : String(room.unread)) : null,
      );
      return el("li", {}, button);
    }),
  );
}

async function openRoom(room) {
  closeRoom();
  current = room;
  const render = () => renderMessages();
  const unsubscribe = [room.on("messages", render), room.on("removed", render)];
  stopWatching = () => unsubscribe.forEach((off) => off());
  location.hash = room.id;
  $("#room-title").textContent = roomName(room);
  $("#composer").hidden = false;
  $("#chat-view").classList.add("show-conversation");
  renderRooms(client.rooms());
  await room.open();
  renderMessages({ toBottom: true });
  $("#composer-text").focus();
}

function closeRoom() {
  stopWatching?.();
  stopWatching = null;
  current = null;
}

$("#back").addEventListener("click", () => {
  $("#chat-view").classList.remove("show-conversation");
  closeRoom();
  location.hash = "";
  renderRooms(client.rooms());
});

function statusText(message) {
  if (message.status === "pending") return "sending…";
  if (message.status === "failed") return `not sent: ${describe(message.error ?? {})}`;
  return shortTime(message.createdAt);
}

function renderMessages({ toBottom = false } = {}) {
  if (!current) return;
  const box = $("#messages");
  const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  const isGroup = current.kind === "group";
  const nodes = [];
  if (current.hasOlder) nodes.push(el("div", { class: "older" }, "Scroll up for older messages"));
  let day = null;
  for (const message of current.messages()) {
    const date = new Date(message.createdAt).toDateString();
    if (date !== day) {
      day = date;
      nodes.push(el("div", { class: "day", dataset: { testid: "day" } }, new Date(message.createdAt).toLocaleDateString([], { weekday: "long", month: "long", day: "numeric" })));
    }
    const own = message.sender === client.user;
    nodes.push(
      el(
        "div",
        {
          class: own ? "msg own" : "msg",
          dataset: { testid: "message", seq: message.seq ?? "", status: message.status, sender: message.sender },
        },
        isGroup && !own ? el("div", { class: "sender" }, message.sender) : null,
        el("div", { class: "text" }, message.text ?? ""),
        el("div", { class: "meta" }, own ? statusText(message) : shortTime(message.createdAt)),
      ),
    );
  }
  box.replaceChildren(...nodes);
  if (toBottom || nearBottom) box.scrollTop = box.scrollHeight;
  if (document.visibilityState === "visible") current.markRead();
}

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
  current.send(text);
  input.value = "";
  renderMessages({ toBottom: true });
});

$("#composer-text").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("#composer").requestSubmit();
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

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") current?.markRead();
});

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
