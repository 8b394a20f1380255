// chatd.js: the browser SDK of chatd. One ES module, no build step, no dependencies.
//
// It owns everything a chat UI should not have to think about:
//   - one WebSocket, reconnected with exponential backoff and jitter, obeying close codes;
//   - resume from the last seq held in each room after every reconnect;
//   - sends with a clientMsgId, shown as pending until acked, retried after a timeout, a
//     retryable error or a reconnect (the server's idempotency makes retries safe);
//   - each room's messages kept sorted by seq, duplicates dropped, gaps filled from history;
//   - an application heartbeat, because browsers cannot see WebSocket pings.
// The UI listens to events and renders `client.messages(roomId)` and `client.rooms()`.
//
// Protocol reference: docs/protocol.md. The same rules, in Rust: src/client/.

export const PROTOCOL = "chatd.v1";

/**
 * What to do after the server closes with `code`: "now", "backoff", "reauth" or "stop".
 *   now:     1000, 1001, 1005, 1006, 1012 and 4000-4099 (reconnect at once, resume);
 *   backoff: 1002 (WebSocket protocol error), 1003, 1007 (invalid UTF-8), 1008, 1009, 1010,
 *            1011, 1013, 4100-4199 and anything unknown (exponential backoff with jitter);
 *   reauth:  4401, 4402 (a new token first);
 *   stop:    the rest of 4400-4499 (the user or app must act first).
 */
export function closeAction(code) {
  if (code === 4401 || code === 4402) return "reauth";
  if (code >= 4400 && code <= 4499) return "stop";
  if (code === 1000 || code === 1001 || code === 1005 || code === 1006 || code === 1012) return "now";
  if (code >= 4000 && code <= 4099) return "now";
  return "backoff";
}

/** Exponential backoff with full jitter: a random delay in [0, min(max, base * 2^attempt)). */
export function backoffDelay(attempt, { baseMs = 250, maxMs = 30000, random = Math.random } = {}) {
  const cap = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 20));
  return Math.floor(random() * cap);
}

const RETRYABLE = new Set(["store_unavailable", "bus_unavailable", "rate_limited", "internal", "request_timeout", "overloaded"]);

/** Error codes a later retry of the same request can cure (e.g. not `too_many_rooms`). */
export function isRetryable(code) {
  return RETRYABLE.has(code);
}

/**
 * One room's messages as the UI shows them: sorted by seq, each once.
 * `floor` is the seq below which history was deliberately not loaded (older pages load on
 * demand); `contiguous` is the highest seq such that everything from floor up to it is held.
 */
export class RoomState {
  constructor(id) {
    this.id = id;
    this.bySeq = new Map();
    this.floor = null; // null: nothing loaded yet
    this.contiguous = 0;
    this.gapSince = null;
    this.duplicates = 0;
  }

  /** Whether the newest page was loaded, so resume and gap detection apply. */
  get loaded() {
    return this.floor !== null;
  }

  /** Adds a message; returns "new" or "duplicate". */
  insert(message, now = Date.now()) {
    if (this.bySeq.has(message.seq) || (this.loaded && message.seq <= this.floor)) {
      this.duplicates += 1;
      return "duplicate";
    }
    this.bySeq.set(message.seq, message);
    this.#advance(now);
    return "new";
  }

  /** Marks history up to `seq` as deliberately not loaded (a newest page was loaded). */
  setFloor(seq, now = Date.now()) {
    this.floor = this.floor === null ? seq : Math.min(this.floor, seq);
    this.contiguous = Math.max(this.contiguous, this.floor);
    this.#advance(now);
  }

  #advance(now) {
    if (!this.loaded) return;
    while (this.bySeq.has(this.contiguous + 1)) this.contiguous += 1;
    const gap = this.gap();
    if (!gap) this.gapSince = null;
    else if (this.gapSince === null) this.gapSince = now;
  }

  /** The first missing range {after, before} (both exclusive), or null. */
  gap() {
    if (!this.loaded) return null;
    let first = null;
    for (const seq of this.bySeq.keys()) {
      if (seq > this.contiguous + 1 && (first === null || seq < first)) first = seq;
    }
    return first === null ? null : { after: this.contiguous, before: first };
  }

  /** Lowest seq held (or null). */
  lowest() {
    let low = null;
    for (const seq of this.bySeq.keys()) if (low === null || seq < low) low = seq;
    return low;
  }

  /** Messages sorted by seq. */
  list() {
    return [...this.bySeq.values()].sort((a, b) => a.seq - b.seq);
  }
}

/** Own messages on their way: pending until acked, retried until then. */
export class Outbox {
  constructor({ newId = () => crypto.randomUUID() } = {}) {
    this.items = new Map(); // clientMsgId -> item, in insertion (send) order
    this.newId = newId;
  }

  add(room, text, sender) {
    const item = {
      clientMsgId: this.newId(),
      room,
      text,
      sender,
      status: "pending",
      sentAt: null,
      retryAt: null,
      attempts: 0,
      createdAt: new Date().toISOString(),
    };
    this.items.set(item.clientMsgId, item);
    return item;
  }

  /** Items sent and waiting for their ack. */
  inFlight() {
    let n = 0;
    for (const i of this.items.values()) if (i.status === "pending" && i.sentAt !== null) n += 1;
    return n;
  }

  /** Items to (re)send now: never sent, due for a retry, or unanswered for `ackTimeoutMs`. */
  due(now, ackTimeoutMs) {
    return [...this.items.values()].filter(
      (i) =>
        i.status === "pending" &&
        (i.sentAt === null || (i.retryAt !== null && i.retryAt <= now) || (i.retryAt === null && now - i.sentAt >= ackTimeoutMs)),
    );
  }

  markSent(item, now) {
    item.sentAt = now;
    item.retryAt = null;
    item.attempts += 1;
  }

  /** After a reconnect every pending item goes again. */
  resendAll() {
    for (const i of this.items.values()) if (i.status === "pending") i.sentAt = null;
  }

  retryLater(clientMsgId, at) {
    const item = this.items.get(clientMsgId);
    if (item) item.retryAt = at;
  }

  /** Acked: returns the item (removed), or undefined for an unknown or repeated ack. */
  ack(clientMsgId) {
    const item = this.items.get(clientMsgId);
    if (item) this.items.delete(clientMsgId);
    return item;
  }

  fail(clientMsgId, error) {
    const item = this.items.get(clientMsgId);
    if (item) {
      item.status = "failed";
      item.error = error;
    }
    return item;
  }

  /** Pending and failed items of one room, in send order. */
  forRoom(room) {
    return [...this.items.values()].filter((i) => i.room === room);
  }

  get size() {
    return this.items.size;
  }
}

class ChatError extends Error {
  constructor(code, message, extra = {}) {
    super(message);
    this.code = code;
    Object.assign(this, extra);
  }
}

/**
 * The client. Events (subscribe with `on(name, fn)`, which returns an unsubscribe function):
 *   "state"   ("connecting" | "online" | "reconnecting" | "offline")
 *   "rooms"   (RoomSummary[])           the room list changed
 *   "room"    (roomId)                  a room's messages (or pending ones) changed
 *   "message" (Message)                 a message arrived, each exactly once
 *   "ack"     ({clientMsgId, message})  an own message was stored
 *   "receipt" ({room, user, readSeq})
 *   "error"   (ChatError: code, message, room?, clientMsgId?, retryAfterMs?, requestId?, status?)
 */
export class ChatClient {
  constructor(options = {}) {
    const o = {
      baseUrl: globalThis.location ? globalThis.location.origin : undefined,
      heartbeatMs: 15000,
      pongTimeoutMs: 10000,
      ackTimeoutMs: 10000,
      maxInFlight: 32,
      gapWaitMs: 1000,
      pageSize: 50,
      backoff: { baseMs: 250, maxMs: 30000 },
      WebSocket: globalThis.WebSocket,
      fetch: globalThis.fetch ? globalThis.fetch.bind(globalThis) : undefined,
      ...options,
    };
    if (!o.baseUrl) throw new Error("chatd: baseUrl is required outside a browser");
    if (!o.token && !o.getToken) throw new Error("chatd: token or getToken is required");
    this.options = o;
    this.token = o.token ?? null;
    this.user = null;
    this.node = null;
    this.state = "offline";
    this.listeners = new Map();
    this.roomStates = new Map();
    this.summaries = new Map();
    this.outbox = new Outbox();
    this.resendAfterResume = false;
    this.waiters = new Map(); // clientMsgId -> {resolve, reject}
    this.ws = null;
    this.attempt = 0;
    this.stopped = true;
    this.timers = new Set();
  }

  // ---- events -------------------------------------------------------------------------

  on(event, fn) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(fn);
    return () => this.listeners.get(event).delete(fn);
  }

  emit(event, value) {
    for (const fn of this.listeners.get(event) ?? []) {
      try {
        fn(value);
      } catch (e) {
        console.error("chatd: listener failed", e);
      }
    }
  }

  #setState(state) {
    if (this.state !== state) {
      this.state = state;
      this.emit("state", state);
    }
  }

  // ---- lifecycle ----------------------------------------------------------------------

  /** Loads the room list and connects; keeps reconnecting until `stop()`. */
  async start() {
    this.stopped = false;
    this.#setState("connecting");
    if (!this.token) this.token = await this.options.getToken();
    const me = await this.api("GET", "/v1/me");
    this.user = me.user;
    await this.refreshRooms();
    this.#connect();
    this.#every(1000, () => this.#tick());
  }

  stop() {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t), clearInterval(t);
    this.timers.clear();
    if (this.ws) this.ws.close(1000, "bye");
    this.ws = null;
    this.#setState("offline");
  }

  #later(ms, fn) {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
    return t;
  }

  #every(ms, fn) {
    const t = setInterval(fn, ms);
    this.timers.add(t);
  }

  #connect() {
    if (this.stopped) return;
    const url = this.options.baseUrl.replace(/^http/, "ws") + "/ws";
    let ws;
    try {
      ws = new this.options.WebSocket(url, [PROTOCOL, "bearer." + this.token]);
    } catch (e) {
      return this.#reconnect(1006);
    }
    this.ws = ws;
    this.welcomed = false;
    this.lastHeard = Date.now();
    ws.onmessage = (event) => {
      if (ws !== this.ws) return;
      this.lastHeard = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this.#onFrame(frame);
    };
    ws.onclose = (event) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.#reconnect(event.code);
    };
    ws.onerror = () => {}; // onclose follows
  }

  async #reconnect(code) {
    if (this.stopped) return;
    const action = closeAction(code);
    if (action === "reauth") {
      if (!this.options.getToken) {
        this.#setState("offline");
        this.emit("error", new ChatError(code === 4402 ? "token_expired" : "unauthorized", "the server refused the token"));
        this.stopped = true;
        return;
      }
      try {
        this.token = await this.options.getToken();
      } catch (e) {
        this.emit("error", new ChatError("unauthorized", "could not get a new token"));
      }
    }
    if (action === "stop") {
      this.#setState("offline");
      this.stopped = true;
      return;
    }
    this.#setState("reconnecting");
    const delay = action === "now" && this.attempt === 0 ? 100 + Math.random() * 400 : backoffDelay(this.attempt, this.options.backoff);
    this.attempt += 1;
    this.#later(delay, () => this.#connect());
  }

  #send(frame) {
    if (this.ws && this.welcomed && this.ws.readyState === 1) {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  // ---- frames -------------------------------------------------------------------------

  #onFrame(frame) {
    switch (frame.type) {
      case "welcome": {
        this.welcomed = true;
        this.user = frame.user;
        this.node = frame.node; // which server node holds this connection (for diagnostics)
        this.heartbeatMs = Math.min(this.options.heartbeatMs, frame.heartbeatMs ?? this.options.heartbeatMs);
        const rooms = {};
        for (const [id, state] of this.roomStates) if (state.loaded) rooms[id] = state.contiguous;
        this.#send({ type: "resume", rooms });
        this.resendAfterResume = true;
        // Rooms may have been added or removed while disconnected.
        this.refreshRooms().catch(() => {});
        break;
      }
      case "resumed": {
        this.attempt = 0;
        this.#setState("online");
        for (const [room, r] of Object.entries(frame.rooms ?? {})) if (r.more) this.#room(room).fillAfterDue = true;
        if (this.resendAfterResume) {
          // After a reconnect everything unacknowledged goes again (paced by the in-flight
          // window); the server answers stored ones with their ack.
          this.resendAfterResume = false;
          this.outbox.resendAll();
        }
        this.#flushOutbox();
        break;
      }
      case "message":
        this.#accept(frame);
        break;
      case "ack": {
        const message = {
          id: frame.id,
          room: frame.room,
          seq: frame.seq,
          sender: this.user,
          clientMsgId: frame.clientMsgId,
          createdAt: frame.createdAt,
        };
        const item = this.outbox.ack(frame.clientMsgId);
        if (item) {
          message.text = item.text;
          this.#accept(message);
          this.emit("ack", { clientMsgId: frame.clientMsgId, message });
          this.waiters.get(frame.clientMsgId)?.resolve(message);
          this.waiters.delete(frame.clientMsgId);
          this.emit("room", frame.room);
        }
        break;
      }
      case "error":
        this.#onError(frame);
        break;
      case "pong":
        break;
      case "receipt":
        this.emit("receipt", { room: frame.room, user: frame.user, readSeq: frame.readSeq });
        if (frame.user === this.user) this.#updateSummary(frame.room, (s) => ({ ...s, readSeq: frame.readSeq, unread: 0 }));
        break;
      case "room_added": {
        this.#addRoom({ ...frame.room, lastMessage: null, lastSeq: 0, readSeq: 0, unread: 0 });
        const state = this.roomStates.get(frame.room.id);
        if (state?.loaded) {
          // Back in a room held from before: catch up on what was said meanwhile.
          this.#send({ type: "resume", rooms: { [frame.room.id]: state.contiguous } });
        } else {
          this.#loadNewest(frame.room.id).catch((e) => this.emit("error", e));
        }
        break;
      }
      case "room_removed":
        this.summaries.delete(frame.room);
        this.roomStates.delete(frame.room);
        this.emit("rooms", this.rooms());
        this.emit("room", frame.room);
        break;
      case "members":
        this.#updateSummary(frame.room, (s) => ({ ...s, members: frame.members }));
        break;
      default:
        break; // a newer server's frame
    }
  }

  #onError(frame) {
    if (frame.code === "room_not_found" && !frame.clientMsgId && (Array.isArray(frame.rooms) || frame.room)) {
      // Resumed rooms the user left while away (one frame listing them all in `rooms`, or,
      // from an older server, one frame per room with `room`): forget them quietly.
      const gone = Array.isArray(frame.rooms) ? [...frame.rooms] : [];
      if (frame.room) gone.push(frame.room);
      let changed = false;
      for (const room of gone) {
        this.roomStates.delete(room);
        if (this.summaries.delete(room)) changed = true;
      }
      if (changed) this.emit("rooms", this.rooms());
      return;
    }
    const error = new ChatError(frame.code, frame.message, {
      room: frame.room,
      clientMsgId: frame.clientMsgId,
      retryAfterMs: frame.retryAfterMs,
      requestId: frame.requestId,
    });
    if (frame.clientMsgId && this.outbox.items.has(frame.clientMsgId)) {
      if (isRetryable(frame.code)) {
        const wait = frame.retryAfterMs ?? backoffDelay(this.outbox.items.get(frame.clientMsgId).attempts, this.options.backoff) + 200;
        this.outbox.retryLater(frame.clientMsgId, Date.now() + wait);
      } else {
        const item = this.outbox.fail(frame.clientMsgId, error);
        this.waiters.get(frame.clientMsgId)?.reject(error);
        this.waiters.delete(frame.clientMsgId);
        if (item) this.emit("room", item.room);
      }
    }
    this.emit("error", error);
  }

  /** Takes a stored message into its room (from live traffic, a replay, an ack or REST). */
  #accept(message) {
    const state = this.#room(message.room);
    if (state.insert(message) === "new") {
      if (message.text !== undefined) this.emit("message", message);
      const summary = this.summaries.get(message.room);
      if (summary && message.seq >= (summary.lastSeq ?? 0)) {
        const unread = message.sender === this.user ? summary.unread : (summary.unread ?? 0) + 1;
        this.#updateSummary(message.room, (s) => ({ ...s, lastMessage: message, lastSeq: message.seq, unread }));
      }
      this.emit("room", message.room);
    }
  }

  #room(id) {
    if (!this.roomStates.has(id)) this.roomStates.set(id, new RoomState(id));
    return this.roomStates.get(id);
  }

  // ---- periodic work --------------------------------------------------------------------

  #tick() {
    const now = Date.now();
    // Heartbeat: a server that stays silent past the pong timeout is gone; reconnect.
    if (this.ws && this.welcomed) {
      if (now - this.lastHeard > (this.heartbeatMs ?? this.options.heartbeatMs) + this.options.pongTimeoutMs) {
        const ws = this.ws;
        this.ws = null;
        ws.close();
        this.#reconnect(4000);
        return;
      }
      if (now - (this.lastPing ?? 0) >= (this.heartbeatMs ?? this.options.heartbeatMs) / 2) {
        this.lastPing = now;
        this.#send({ type: "ping" });
      }
    }
    this.#flushOutbox();
    for (const state of this.roomStates.values()) {
      if (state.filling) continue;
      if (state.fillAfterDue) this.#fillAfter(state);
      else if (state.gapSince !== null && now - state.gapSince >= this.options.gapWaitMs) this.#fillGap(state);
    }
  }

  /** Sends what is due, new messages only while fewer than `maxInFlight` await their ack. */
  #flushOutbox() {
    const now = Date.now();
    let budget = this.options.maxInFlight - this.outbox.inFlight();
    for (const item of this.outbox.due(now, this.options.ackTimeoutMs)) {
      const fresh = item.sentAt === null;
      if (fresh && budget <= 0) break;
      if (!this.#send({ type: "send", room: item.room, clientMsgId: item.clientMsgId, text: item.text })) return;
      this.outbox.markSent(item, now);
      if (fresh) budget -= 1;
    }
  }

  async #fillGap(state) {
    const gap = state.gap();
    if (!gap) return;
    state.filling = true;
    try {
      const page = await this.api("GET", `/v1/rooms/${state.id}/messages?after=${gap.after}&before=${gap.before}&limit=200`);
      for (const m of page.messages) this.#accept(m);
      state.gapSince = state.gap() ? Date.now() : null;
    } catch (e) {
      this.emit("error", e);
    } finally {
      state.filling = false;
    }
  }

  /** Pages history after what the room holds (a resume said more remained); retried by
   * the next tick if a page fails. */
  async #fillAfter(state) {
    state.filling = true;
    try {
      for (;;) {
        const page = await this.api("GET", `/v1/rooms/${state.id}/messages?after=${state.contiguous}&limit=200`);
        for (const m of page.messages) this.#accept(m);
        if (!page.more || page.messages.length === 0) break;
      }
      state.fillAfterDue = false;
    } catch (e) {
      this.emit("error", e);
    } finally {
      state.filling = false;
    }
  }

  /** Loads the newest page of a room not loaded yet; older pages come with loadOlder(). */
  async #loadNewest(room) {
    const state = this.#room(room);
    if (state.loaded || state.loading) return;
    state.loading = true;
    try {
      const page = await this.api("GET", `/v1/rooms/${room}/messages?order=desc&limit=${this.options.pageSize}`);
      const lowest = page.messages.length ? page.messages[page.messages.length - 1].seq : 1;
      for (const m of page.messages) state.insert(m);
      state.setFloor(page.more ? lowest - 1 : 0);
      state.hasOlder = page.more;
      this.emit("room", room);
      // Messages between this page and the live stream are replayed by a resume.
      if (this.welcomed) this.#send({ type: "resume", rooms: { [room]: state.contiguous } });
    } finally {
      state.loading = false;
    }
  }

  // ---- what the UI calls ------------------------------------------------------------------

  /** Room summaries, most recently active first. */
  rooms() {
    const activity = (s) => (s.lastMessage ? s.lastMessage.createdAt : s.createdAt) ?? "";
    return [...this.summaries.values()].sort((a, b) => (activity(a) < activity(b) ? 1 : activity(a) > activity(b) ? -1 : 0));
  }

  room(id) {
    return this.summaries.get(id);
  }

  /**
   * A room's messages sorted by seq, then own messages not yet stored (`status: "pending"`
   * or `"failed"`). Stored messages have `status: "sent"`.
   */
  messages(roomId) {
    const state = this.roomStates.get(roomId);
    const stored = state ? state.list().map((m) => ({ ...m, status: "sent" })) : [];
    const pending = this.outbox.forRoom(roomId).map((i) => ({
      id: null,
      room: i.room,
      seq: null,
      sender: i.sender,
      clientMsgId: i.clientMsgId,
      text: i.text,
      createdAt: i.createdAt,
      status: i.status,
      error: i.error,
    }));
    return stored.concat(pending);
  }

  /** Whether older history remains to be loaded. */
  hasOlder(roomId) {
    const state = this.roomStates.get(roomId);
    return !state || !state.loaded ? true : Boolean(state.hasOlder);
  }

  /** Makes sure a room's newest page is loaded (call when the UI opens it). */
  async open(roomId) {
    await this.#loadNewest(roomId);
    return this.messages(roomId);
  }

  /** Loads the page before the oldest message held; returns how many arrived. */
  async loadOlder(roomId) {
    const state = this.#room(roomId);
    if (!state.loaded) {
      await this.#loadNewest(roomId);
      return state.bySeq.size;
    }
    const lowest = state.lowest();
    if (lowest === null || lowest <= 1) {
      state.hasOlder = false;
      return 0;
    }
    const page = await this.api("GET", `/v1/rooms/${roomId}/messages?before=${lowest}&order=desc&limit=${this.options.pageSize}`);
    for (const m of page.messages) state.bySeq.has(m.seq) || state.bySeq.set(m.seq, m);
    const newLowest = page.messages.length ? page.messages[page.messages.length - 1].seq : lowest;
    state.floor = page.more ? newLowest - 1 : 0;
    state.hasOlder = page.more;
    this.emit("room", roomId);
    return page.messages.length;
  }

  /**
   * Sends `text` to a room. The message shows as pending at once; the promise resolves with
   * the stored message when acked, or rejects on a non-retryable error. Retries happen by
   * themselves (timeouts, retryable errors, reconnects).
   */
  send(roomId, text) {
    const item = this.outbox.add(roomId, text, this.user);
    const stored = new Promise((resolve, reject) => this.waiters.set(item.clientMsgId, { resolve, reject }));
    stored.catch(() => {}); // callers may ignore the promise; the "error" event reports it too
    this.emit("room", roomId);
    this.#flushOutbox();
    return Object.assign(stored, { clientMsgId: item.clientMsgId });
  }

  /** Drops a failed message from the pending list. */
  discard(clientMsgId) {
    const item = this.outbox.ack(clientMsgId);
    if (item) this.emit("room", item.room);
  }

  /** Marks a room read up to `seq` (default: its newest message). */
  markRead(roomId, seq) {
    const state = this.roomStates.get(roomId);
    const upTo = seq ?? (state ? state.contiguous : 0);
    if (upTo <= 0) return;
    const summary = this.summaries.get(roomId);
    if (summary && (summary.readSeq ?? 0) >= upTo && !summary.unread) return;
    this.#updateSummary(roomId, (s) => ({ ...s, readSeq: Math.max(s.readSeq ?? 0, upTo), unread: 0 }));
    if (!this.#send({ type: "read", room: roomId, seq: upTo })) {
      this.api("POST", `/v1/rooms/${roomId}/read`, { seq: upTo }).catch(() => {});
    }
  }

  /** Reloads the whole room list: every page of `GET /v1/rooms` (pages come in room-id
   * order; `rooms()` sorts by activity). */
  async refreshRooms() {
    const list = [];
    const seen = new Set(); // cursors asked for, so a misbehaving server cannot loop us
    let after = null;
    for (;;) {
      const query = after === null ? "" : `&after=${encodeURIComponent(after)}`;
      const page = await this.api("GET", `/v1/rooms?limit=500${query}`);
      if (Array.isArray(page)) {
        for (const s of page) list.push(s); // an older server: the whole list, unpaginated
        break;
      }
      for (const s of page.rooms) list.push(s);
      const next = page.next ?? null;
      if (next === null) break;
      if (seen.has(next)) throw new ChatError("internal", "the room list repeated a page cursor");
      seen.add(next);
      after = next;
    }
    this.summaries = new Map(list.map((s) => [s.id, s]));
    this.emit("rooms", this.rooms());
    return this.rooms();
  }

  async openDirect(peer) {
    const room = await this.api("POST", "/v1/rooms/direct", { peer });
    this.#addRoom({ ...room, lastMessage: null, lastSeq: 0, readSeq: 0, unread: 0 });
    return room;
  }

  async createGroup(name, members) {
    const room = await this.api("POST", "/v1/rooms", { name, members });
    this.#addRoom({ ...room, lastMessage: null, lastSeq: 0, readSeq: 0, unread: 0 });
    return room;
  }

  addMembers(roomId, members) {
    return this.api("POST", `/v1/rooms/${roomId}/members`, { members });
  }

  removeMember(roomId, user) {
    return this.api("DELETE", `/v1/rooms/${roomId}/members/${encodeURIComponent(user)}`);
  }

  presence(roomId) {
    return this.api("GET", `/v1/rooms/${roomId}/presence`);
  }

  #addRoom(summary) {
    if (!this.summaries.has(summary.id)) {
      this.summaries.set(summary.id, summary);
      this.emit("rooms", this.rooms());
    }
  }

  #updateSummary(roomId, change) {
    const summary = this.summaries.get(roomId);
    if (summary) {
      this.summaries.set(roomId, change(summary));
      this.emit("rooms", this.rooms());
    }
  }

  /** A REST call with the client's token; throws ChatError with the server's code. */
  async api(method, path, body) {
    const response = await this.options.fetch(this.options.baseUrl + path, {
      method,
      headers: {
        authorization: "Bearer " + this.token,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const error = data?.error ?? { code: "internal", message: `HTTP ${response.status}` };
      throw new ChatError(error.code, error.message, { status: response.status, requestId: error.requestId });
    }
    return data;
  }
}

/** Development only: a token from the server's dev login (404 when it is disabled). */
export async function devLogin(baseUrl, user, fetchImpl = globalThis.fetch.bind(globalThis)) {
  const response = await fetchImpl(baseUrl + "/v1/dev/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user }),
  });
  const data = await response.json();
  if (!response.ok) throw new ChatError(data.error.code, data.error.message, { status: response.status });
  return data.token;
}
