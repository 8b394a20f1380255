// Fakes for the SDK's tests without a network: a REST server made of a table of routes, and
// WebSockets the test speaks through in the server's place.

import { ChatClient } from "../../web/sdk/chatd.js";

export const BASE = "http://chatd.test";

/**
 * A fake fetch. `routes` maps "PATH" or "METHOD PATH" (with the query) to a body, to
 * [status, body], or to a function of the call returning either; `fallback(call)` answers
 * the rest (default: fail the test with an unexpected request).
 */
export function fakeFetch(routes = {}, fallback = null) {
  const calls = [];
  const fetch = async (url, init = {}) => {
    const path = url.replace(BASE, "");
    const call = { method: init.method ?? "GET", path, headers: init.headers ?? {}, body: init.body ? JSON.parse(init.body) : undefined };
    calls.push(call);
    let route = routes[`${call.method} ${path}`] ?? routes[path];
    if (typeof route === "function") route = route(call);
    if (route === undefined && fallback) route = fallback(call);
    if (route === undefined) throw new Error(`unexpected request ${call.method} ${path}`);
    const [status, body] = Array.isArray(route) && typeof route[0] === "number" ? route : [200, route];
    return { status, ok: status >= 200 && status < 300, json: async () => body };
  };
  return { fetch, calls };
}

/** History routes answer with no messages, so that opening a room needs no setup. */
export const emptyHistory = (call) => (/^\/v1\/rooms\/[^/]+\/messages\?/.test(call.path) ? { messages: [], more: false } : undefined);

/** Receipt routes answer with nobody's positions (opening a room asks for them). */
export const noReceipts = (call) => (/^\/v1\/rooms\/[^/]+\/receipts$/.test(call.path) ? { members: [] } : undefined);

/** What opening any room asks for, answered empty. */
export const emptyRooms = (call) => emptyHistory(call) ?? noReceipts(call);

/** A page (the SDK's `document` option) whose visibility and input the test controls. */
export class FakePage extends EventTarget {
  visibilityState = "visible";
  /** The tab goes to the background (false) or comes back (true). */
  setVisible(visible) {
    this.visibilityState = visible ? "visible" : "hidden";
    this.dispatchEvent(new Event("visibilitychange"));
  }
  /** The user presses a key. */
  type() {
    this.dispatchEvent(new Event("keydown"));
  }
}

/** A WebSocket class whose instances (in `sockets`) the test drives. */
export function fakeWebSockets() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.readyState = 1;
      this.sent = [];
      this.closedWith = null;
      sockets.push(this);
    }
    send(data) {
      this.sent.push(JSON.parse(data));
    }
    close(code, reason) {
      this.readyState = 3;
      this.closedWith = { code, reason };
    }
    /** The server sends a frame. */
    receive(frame) {
      this.onmessage({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
    }
    /** The server (or the network) ends the connection. */
    drop(code = 1006) {
      this.readyState = 3;
      this.onclose({ code });
    }
    /** The server's side of going online: welcome, then the answer to the resume. */
    goOnline(welcome = {}) {
      this.receive({ type: "welcome", v: 1, connId: "conn", user: "me", node: "n1", heartbeatMs: 20000, resumeWaitMs: 2000, maxTextChars: 4000, ...welcome });
      this.receive({ type: "resumed", rooms: {} });
    }
    sentOfType(type) {
      return this.sent.filter((f) => f.type === type);
    }
  }
  return { WebSocket: FakeWebSocket, sockets };
}

// The real timer and clock, taken before a test can mock them (node:test's mock.timers), so
// that waiting works in tests that drive the client's time by hand.
const realSetTimeout = setTimeout;
const realNow = () => performance.now();

/** Resolves when `check()` is truthy, polling every few ms; fails after `ms`. */
export async function until(check, ms = 2000, what = "condition") {
  const deadline = realNow() + ms;
  while (!check()) {
    if (realNow() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => realSetTimeout(r, 2));
  }
}

/** A summary as GET /v1/rooms has it. */
export const summary = (id, createdAt = "2026-01-01T00:00:00.000Z", lastAt = null) => ({
  id,
  kind: "group",
  name: id,
  members: ["me"],
  createdBy: "me",
  createdAt,
  lastMessage: lastAt ? { id: `m-${id}`, room: id, seq: 1, sender: "me", clientMsgId: `c-${id}`, text: "hi", createdAt: lastAt } : null,
  lastSeq: lastAt ? 1 : 0,
  readSeq: 0,
  unread: 0,
});

/**
 * A client started against fakes and brought online: `routes` for REST (GET /v1/me and an
 * empty room list are there unless given), fake sockets for the WebSocket.
 */
export async function onlineClient(routes = {}, options = {}) {
  const { fetch, calls } = fakeFetch({ "/v1/me": { user: "me" }, "/v1/rooms?limit=500": { rooms: [], next: null }, ...routes }, emptyRooms);
  const { WebSocket, sockets } = fakeWebSockets();
  const client = new ChatClient({ baseUrl: BASE, token: "t", fetch, WebSocket, backoff: { baseMs: 1, maxMs: 5 }, ...options });
  const started = client.start();
  await until(() => sockets.length === 1, 2000, "a WebSocket");
  const ws = sockets[0];
  ws.goOnline();
  await started;
  await new Promise((r) => setImmediate(r)); // the fake REST answers in microtasks: the welcome's room-list refresh is done
  return { client, calls, ws, sockets };
}
