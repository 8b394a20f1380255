// rooms.js: what the SDK holds per room. RoomLog keeps a room's messages sorted by seq, each
// once, and finds the gaps; Outbox holds own messages until the server stores them; Room is
// the object an app works with: its summary, its messages, its history and its own events.

import { ChatError } from "./errors.js";

/**
 * @typedef {import("./chatd.js").Message} Message
 * @typedef {import("./chatd.js").ShownMessage} ShownMessage
 * @typedef {import("./chatd.js").RoomSummary} RoomSummary
 * @typedef {import("./chatd.js").RoomEvents} RoomEvents
 * @typedef {import("./chatd.js").OutboxItem} OutboxItem
 * @typedef {import("./chatd.js").Sending} Sending
 * @typedef {import("./chatd.js").Room} DeclaredRoom
 * @typedef {import("./chatd.js").RoomLog} DeclaredRoomLog
 * @typedef {import("./chatd.js").Outbox} DeclaredOutbox
 */

/**
 * Listeners by event name. A failing listener is logged and does not keep the others from
 * hearing the event (shared by ChatClient and Room).
 * @template {object} Events
 */
export class Emitter {
  /** @type {Map<keyof Events, Set<(value: any) => void>>} */
  #listeners = new Map();

  /**
   * @template {keyof Events} K
   * @param {K} event
   * @param {(value: Events[K]) => void} listener
   * @returns {() => void} unsubscribes
   */
  on(event, listener) {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
    };
  }

  /**
   * @template {keyof Events} K
   * @param {K} event
   * @param {Events[K]} value
   */
  emit(event, value) {
    for (const listener of this.#listeners.get(event) ?? []) {
      try {
        listener(value);
      } catch (e) {
        console.error("chatd: listener failed", e);
      }
    }
  }
}

// ---- RoomLog ----------------------------------------------------------------------------

/**
 * One room's messages as the UI shows them: sorted by seq, each once, in an array kept
 * sorted. A live message lands at the end in O(1), a single late one by binary search, and a
 * page of history is merged in one pass (O(n + k), never a re-sort), so loading history page
 * by page stays cheap.
 *
 * `floor` is the seq below which history was deliberately not loaded (older pages load on
 * demand); `contiguous` is the highest seq such that everything from floor up to it is held.
 * @implements {DeclaredRoomLog}
 */
export class RoomLog {
  /** @type {string} */
  #id;
  /** @type {Message[]} sorted by seq, no seq twice */
  #messages = [];
  /** @type {number | null} null: nothing loaded yet */
  #floor = null;
  #contiguous = 0;
  /** @type {number | null} when the current first gap was first seen */
  #gapSince = null;
  #duplicates = 0;

  /** @param {string} id */
  constructor(id) {
    this.#id = id;
  }

  get id() {
    return this.#id;
  }

  /** Whether the newest page was loaded, so resume and gap detection apply. */
  get loaded() {
    return this.#floor !== null;
  }

  get floor() {
    return this.#floor;
  }

  get contiguous() {
    return this.#contiguous;
  }

  get gapSince() {
    return this.#gapSince;
  }

  /** Messages offered again and dropped (replays, retries, overlapping pages). */
  get duplicates() {
    return this.#duplicates;
  }

  get size() {
    return this.#messages.length;
  }

  /**
   * Adds a message; returns "new" or "duplicate".
   * @param {Message} message
   * @param {number} [now]
   * @returns {"new" | "duplicate"}
   */
  insert(message, now = Date.now()) {
    return this.insertMany([message], now).length === 1 ? "new" : "duplicate";
  }

  /**
   * Adds messages in any order; returns those that were new, sorted by seq.
   * @param {Message[]} messages
   * @param {number} [now]
   * @returns {Message[]}
   */
  insertMany(messages, now = Date.now()) {
    const sorted = [...messages].sort((a, b) => a.seq - b.seq);
    /** @type {Message[]} */
    const fresh = [];
    for (const message of sorted) {
      const known =
        (this.loaded && message.seq <= /** @type {number} */ (this.#floor)) ||
        fresh.at(-1)?.seq === message.seq ||
        this.#messages[this.#firstAtOrAbove(message.seq)]?.seq === message.seq;
      if (known) this.#duplicates += 1;
      else fresh.push(message);
    }
    if (fresh.length > 0) this.#messages = merge(this.#messages, fresh);
    this.#advance(now);
    return fresh;
  }

  /**
   * Marks history up to `seq` as deliberately not loaded (a newest page was loaded).
   * @param {number} seq
   * @param {number} [now]
   */
  setFloor(seq, now = Date.now()) {
    this.#floor = this.#floor === null ? seq : Math.min(this.#floor, seq);
    this.#contiguous = Math.max(this.#contiguous, this.#floor);
    this.#advance(now);
  }

  /**
   * Takes a page of older history: the floor moves down to `floor` first, so the page is not
   * mistaken for old news.
   * @param {Message[]} messages
   * @param {number} floor
   * @param {number} [now]
   */
  addOlder(messages, floor, now = Date.now()) {
    this.setFloor(floor, now);
    return this.insertMany(messages, now);
  }

  /**
   * The first missing range {after, before} (both exclusive), or null.
   * @returns {{ after: number, before: number } | null}
   */
  gap() {
    if (!this.loaded) return null;
    const next = this.#messages[this.#firstAtOrAbove(this.#contiguous + 1)];
    return next ? { after: this.#contiguous, before: next.seq } : null;
  }

  /** Lowest seq held (or null). */
  lowest() {
    return this.#messages[0]?.seq ?? null;
  }

  /** Messages sorted by seq (a copy). */
  list() {
    return this.#messages.slice();
  }

  #advance(/** @type {number} */ now) {
    if (!this.loaded) return;
    let i = this.#firstAtOrAbove(this.#contiguous + 1);
    while (this.#messages[i]?.seq === this.#contiguous + 1) {
      this.#contiguous += 1;
      i += 1;
    }
    if (!this.gap()) this.#gapSince = null;
    else if (this.#gapSince === null) this.#gapSince = now;
  }

  /** Index of the first message with seq >= `seq` (binary search). */
  #firstAtOrAbove(/** @type {number} */ seq) {
    let low = 0;
    let high = this.#messages.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if (this.#messages[mid].seq < seq) low = mid + 1;
      else high = mid;
    }
    return low;
  }
}

/**
 * Merges two arrays sorted by seq with no seq in common, in one pass; the common cases, a
 * page entirely before or after what is held, are a plain concatenation.
 * @param {Message[]} held
 * @param {Message[]} fresh
 */
function merge(held, fresh) {
  if (held.length === 0) return fresh;
  if (fresh[0].seq > held[held.length - 1].seq) return held.concat(fresh);
  if (fresh[fresh.length - 1].seq < held[0].seq) return fresh.concat(held);
  /** @type {Message[]} */
  const out = new Array(held.length + fresh.length);
  let i = 0;
  let j = 0;
  for (let k = 0; k < out.length; k++) {
    out[k] = j >= fresh.length || (i < held.length && held[i].seq < fresh[j].seq) ? held[i++] : fresh[j++];
  }
  return out;
}

// ---- Outbox -----------------------------------------------------------------------------

/**
 * Own messages on their way: pending until acked, retried until then, each with the promise
 * its sender holds. Every promise settles: acked, failed, discarded or stopped.
 * @implements {DeclaredOutbox}
 */
export class Outbox {
  /** @type {Map<string, OutboxItem>} clientMsgId -> item, in insertion (send) order */
  #items = new Map();
  /** @type {Map<string, { promise: Promise<Message>, resolve: (m: Message) => void, reject: (e: ChatError) => void }>} */
  #promises = new Map();
  /** @type {() => string} */
  #newId;

  /** @param {{ newId?: () => string }} [options] */
  constructor({ newId = () => crypto.randomUUID() } = {}) {
    this.#newId = newId;
  }

  /**
   * @param {string} room
   * @param {string} text
   * @param {string | null} sender
   * @returns {OutboxItem}
   */
  add(room, text, sender) {
    /** @type {OutboxItem} */
    const item = {
      clientMsgId: this.#newId(),
      room,
      text,
      sender,
      status: "pending",
      sentAt: null,
      retryAt: null,
      attempts: 0,
      createdAt: new Date().toISOString(),
    };
    this.#items.set(item.clientMsgId, item);
    /** @type {(m: Message) => void} */
    let resolve = () => {};
    /** @type {(e: ChatError) => void} */
    let reject = () => {};
    /** @type {Promise<Message>} */
    const promise = new Promise((yes, no) => ((resolve = yes), (reject = no)));
    promise.catch(() => {}); // senders may ignore the promise; the "error" event reports failures too
    this.#promises.set(item.clientMsgId, { promise, resolve, reject });
    return item;
  }

  /**
   * The sender's promise for an item: the stored message, or the reason it was not stored.
   * @param {string} clientMsgId
   * @returns {Promise<Message>}
   */
  whenStored(clientMsgId) {
    return this.#promises.get(clientMsgId)?.promise ?? Promise.reject(new ChatError("discarded", "no such message on its way"));
  }

  /** @param {string} clientMsgId */
  get(clientMsgId) {
    return this.#items.get(clientMsgId);
  }

  /** Items sent and waiting for their ack. */
  inFlight() {
    let n = 0;
    for (const i of this.#items.values()) if (i.status === "pending" && i.sentAt !== null) n += 1;
    return n;
  }

  /**
   * Items to (re)send now: never sent, due for a retry, or unanswered for `ackTimeoutMs`.
   * @param {number} now
   * @param {number} ackTimeoutMs
   */
  due(now, ackTimeoutMs) {
    return [...this.#items.values()].filter(
      (i) =>
        i.status === "pending" &&
        (i.sentAt === null || (i.retryAt !== null && i.retryAt <= now) || (i.retryAt === null && now - i.sentAt >= ackTimeoutMs)),
    );
  }

  /**
   * @param {OutboxItem} item
   * @param {number} now
   */
  markSent(item, now) {
    item.sentAt = now;
    item.retryAt = null;
    item.attempts += 1;
  }

  /**
   * Sends what is due, new messages only while fewer than `maxInFlight` await their ack (a
   * window, so a long offline backlog does not arrive as one burst); stops at the first
   * frame that cannot go out.
   * @param {(frame: object) => boolean} send  false when there is no connection
   * @param {number} now
   * @param {{ ackTimeoutMs: number, maxInFlight: number }} limits
   */
  flush(send, now, { ackTimeoutMs, maxInFlight }) {
    let budget = maxInFlight - this.inFlight();
    for (const item of this.due(now, ackTimeoutMs)) {
      const fresh = item.sentAt === null;
      if (fresh && budget <= 0) break;
      if (!send({ type: "send", room: item.room, clientMsgId: item.clientMsgId, text: item.text })) return;
      this.markSent(item, now);
      if (fresh) budget -= 1;
    }
  }

  /** After a reconnect every pending item goes again. */
  resendAll() {
    for (const i of this.#items.values()) if (i.status === "pending") i.sentAt = null;
  }

  /**
   * @param {string} clientMsgId
   * @param {number} at
   */
  retryLater(clientMsgId, at) {
    const item = this.#items.get(clientMsgId);
    if (item) item.retryAt = at;
  }

  /**
   * Stored: removes the item and resolves its promise with `message`. Returns the item, or
   * undefined for an unknown or repeated ack.
   * @param {string} clientMsgId
   * @param {Message} [message]
   */
  ack(clientMsgId, message) {
    const item = this.#items.get(clientMsgId);
    if (!item) return undefined;
    this.#items.delete(clientMsgId);
    if (message) this.#promises.get(clientMsgId)?.resolve(message);
    this.#promises.delete(clientMsgId);
    return item;
  }

  /**
   * Refused for good: the item stays (shown as failed) and its promise rejects.
   * @param {string} clientMsgId
   * @param {ChatError} error
   */
  fail(clientMsgId, error) {
    const item = this.#items.get(clientMsgId);
    if (item && item.status === "pending") {
      item.status = "failed";
      item.error = error;
      this.#promises.get(clientMsgId)?.reject(error);
      this.#promises.delete(clientMsgId);
    }
    return item;
  }

  /**
   * Fails every pending item with the error `reason` makes for it; returns those items.
   * @param {(item: OutboxItem) => ChatError} reason
   */
  failAll(reason) {
    const failed = [...this.#items.values()].filter((i) => i.status === "pending");
    for (const item of failed) this.fail(item.clientMsgId, reason(item));
    return failed;
  }

  /**
   * Drops an item (normally a failed one) from the list; a pending one's promise rejects
   * with "discarded".
   * @param {string} clientMsgId
   */
  discard(clientMsgId) {
    const item = this.#items.get(clientMsgId);
    if (!item) return undefined;
    this.fail(clientMsgId, new ChatError("discarded", "discarded before the server confirmed it; it may still have been stored", { room: item.room, clientMsgId }));
    this.#items.delete(clientMsgId);
    return item;
  }

  /**
   * Pending and failed items of one room, in send order.
   * @param {string} room
   */
  forRoom(room) {
    return [...this.#items.values()].filter((i) => i.room === room);
  }

  get size() {
    return this.#items.size;
  }
}

// ---- Room -------------------------------------------------------------------------------

/**
 * What a Room needs from the client that holds it.
 * @typedef {object} RoomHost
 * @property {import("./rest.js").RestClient} rest     history and read positions over REST
 * @property {(frame: object) => boolean} send          a frame on the live connection; false when there is none
 * @property {Outbox} outbox                             own messages on their way (all rooms)
 * @property {() => void} flushOutbox                    sends what the outbox has due
 * @property {() => string | null} user                  the signed-in user
 * @property {number} pageSize                           messages per history page
 * @property {(room: Room, event: keyof RoomEvents, value: any) => void} relay   the client's own events follow the room's
 */

/** A page size for catching up (gaps, a resume that said more remain): the server's maximum. */
const CATCH_UP_PAGE = 200;

/**
 * One room, as the app sees it: the fields of its summary (id, kind, name, members, ...,
 * lastMessage, unread), its messages, its history, sending, and its own events. The client
 * creates rooms and feeds them what arrives; a Room lives as long as its client, also across
 * leaving and re-joining (`listed` says whether it is in the user's room list now).
 * @implements {DeclaredRoom}
 */
export class Room {
  /** @type {string} */
  #id;
  /** @type {RoomHost} */
  #host;
  /** @type {RoomLog} */
  #log;
  /** @type {RoomSummary | null} null: never listed (known only by id) */
  #summary = null;
  #listed = false;
  /** @type {Emitter<RoomEvents>} */
  #events = new Emitter();
  /** @type {Promise<void> | null} the newest page, while it loads */
  #loadingNewest = null;
  /** @type {Promise<number> | null} an older page, while it loads */
  #loadingOlder = null;
  #hasOlder = false;
  /** A gap or catch-up fill is running: one at a time. */
  #filling = false;
  /** A resume said more messages remain than it replayed: page them in. */
  #catchUpDue = false;

  /**
   * @param {string} id
   * @param {RoomHost} host
   */
  constructor(id, host) {
    this.#id = id;
    this.#host = host;
    this.#log = new RoomLog(id);
  }

  // ---- what the app reads -----------------------------------------------------------------

  get id() {
    return this.#id;
  }

  /** The summary as the room list has it (a plain object), or null if never listed. */
  get summary() {
    return this.#summary;
  }

  /** Whether the room is in the user's room list (false after leaving it). */
  get listed() {
    return this.#listed;
  }

  get kind() {
    return this.#known.kind;
  }
  get name() {
    return this.#known.name;
  }
  get members() {
    return this.#known.members;
  }
  get createdBy() {
    return this.#known.createdBy;
  }
  get createdAt() {
    return this.#known.createdAt;
  }
  get lastMessage() {
    return this.#known.lastMessage;
  }
  get lastSeq() {
    return this.#known.lastSeq;
  }
  get readSeq() {
    return this.#known.readSeq;
  }
  get unread() {
    return this.#known.unread;
  }

  /** Whether the newest page is loaded (by open(), or when the room was added live). */
  get loaded() {
    return this.#log.loaded;
  }

  /** Whether older history remains to be loaded. */
  get hasOlder() {
    return !this.#log.loaded || this.#hasOlder;
  }

  /** Messages offered again and dropped so far (diagnostics: replays, retries, overlaps). */
  get duplicates() {
    return this.#log.duplicates;
  }

  /** The summary fields, as JSON. */
  toJSON() {
    return this.#summary ?? { id: this.#id };
  }

  /**
   * @template {keyof RoomEvents} K
   * @param {K} event
   * @param {(value: RoomEvents[K]) => void} listener
   */
  on(event, listener) {
    return this.#events.on(event, listener);
  }

  /**
   * Stored messages sorted by seq (`status: "sent"`), then own messages not yet stored
   * (`"pending"` or `"failed"`).
   * @returns {ShownMessage[]}
   */
  messages() {
    /** @type {ShownMessage[]} */
    const stored = this.#log.list().map((m) => ({ ...m, status: "sent" }));
    /** @type {ShownMessage[]} */
    const pending = this.#host.outbox.forRoom(this.#id).map((i) => ({
      id: null,
      room: i.room,
      seq: null,
      sender: /** @type {string} */ (i.sender),
      clientMsgId: i.clientMsgId,
      text: i.text,
      createdAt: i.createdAt,
      status: i.status,
      error: i.error,
    }));
    return stored.concat(pending);
  }

  // ---- what the app does --------------------------------------------------------------------

  /** Makes sure the newest page is loaded (call when the UI opens the room). */
  async open() {
    if (!this.#log.loaded) {
      this.#loadingNewest ??= this.#loadNewest().finally(() => (this.#loadingNewest = null));
      await this.#loadingNewest;
    }
    return this.messages();
  }

  /** Loads the page before the oldest message held; resolves with how many arrived. */
  loadOlder() {
    this.#loadingOlder ??= this.#loadOlder().finally(() => (this.#loadingOlder = null));
    return this.#loadingOlder;
  }

  /**
   * Sends `text`. It shows as pending at once; the promise resolves with the stored message
   * when acked, or rejects on a refusal that no retry can cure. Retries happen by themselves
   * (timeouts, retryable errors, reconnects; the server de-duplicates by clientMsgId).
   * @param {string} text
   * @returns {Sending}
   */
  send(text) {
    const { outbox } = this.#host;
    const item = outbox.add(this.#id, text, this.#host.user());
    this.#emit("messages", this);
    this.#host.flushOutbox();
    return Object.assign(outbox.whenStored(item.clientMsgId), { clientMsgId: item.clientMsgId });
  }

  /**
   * Marks the room read up to `seq` (default: the newest message held without a gap).
   * @param {number} [seq]
   */
  markRead(seq) {
    const upTo = seq ?? this.#log.contiguous;
    if (upTo <= 0) return;
    const s = this.#summary;
    if (s && (s.readSeq ?? 0) >= upTo && !s.unread) return;
    this.#updateSummary((s) => ({ ...s, readSeq: Math.max(s.readSeq ?? 0, upTo), unread: 0 }));
    if (!this.#host.send({ type: "read", room: this.#id, seq: upTo })) {
      this.#host.rest.markRead(this.#id, upTo).catch(() => {});
    }
  }

  /** @param {string[]} members */
  addMembers(members) {
    return this.#host.rest.addMembers(this.#id, members);
  }

  /** @param {string} user */
  removeMember(user) {
    return this.#host.rest.removeMember(this.#id, user);
  }

  presence() {
    return this.#host.rest.presence(this.#id);
  }

  // ---- fed by the client ------------------------------------------------------------------

  /** The last seq held without a gap, for a resume; null before the newest page is loaded. */
  get resumePosition() {
    return this.#log.loaded ? this.#log.contiguous : null;
  }

  /**
   * The room is in the user's list with this summary (from the room list or `room_added`).
   * Returns whether it was not listed before.
   * @param {RoomSummary} summary
   */
  list(summary) {
    const added = !this.#listed;
    this.#summary = summary;
    this.#listed = true;
    // Only the room's own listeners: the client announces list changes once per batch.
    this.#events.emit("summary", this);
    return added;
  }

  /** The room list no longer has the room; what it holds stays (a re-listing resumes it). */
  unlist() {
    this.#listed = false;
  }

  /**
   * The user left the room (or was never in it): forget its messages, as nothing more of it
   * arrives; returns whether it was listed.
   */
  forget() {
    const wasListed = this.#listed;
    this.#listed = false;
    this.#log = new RoomLog(this.#id);
    this.#hasOlder = false;
    this.#catchUpDue = false;
    this.#emit("removed", this);
    return wasListed;
  }

  /**
   * A stored message (live, replayed, or paged in to fill a gap). Returns whether it was new.
   * @param {Message} message
   */
  accept(message) {
    return this.#acceptAll([message]).length === 1;
  }

  /**
   * The server stored an own message: the pending one becomes the stored one.
   * @param {{ clientMsgId: string, room: string, id: string, seq: number, createdAt: string }} ack
   */
  acknowledge(ack) {
    const item = this.#host.outbox.get(ack.clientMsgId);
    if (!item) return; // a repeated ack, or a message discarded meanwhile
    /** @type {Message} */
    const message = {
      id: ack.id,
      room: ack.room,
      seq: ack.seq,
      sender: /** @type {string} */ (this.#host.user()),
      clientMsgId: ack.clientMsgId,
      text: item.text,
      createdAt: ack.createdAt,
    };
    this.#host.outbox.ack(ack.clientMsgId, message);
    this.accept(message);
    this.#emit("ack", { clientMsgId: ack.clientMsgId, message });
    this.#emit("messages", this);
  }

  /**
   * Someone's read position moved.
   * @param {{ room: string, user: string, readSeq: number }} receipt
   */
  receipt(receipt) {
    this.#emit("receipt", receipt);
    if (receipt.user === this.#host.user()) this.#updateSummary((s) => ({ ...s, readSeq: receipt.readSeq, unread: 0 }));
  }

  /** @param {string[]} members */
  setMembers(members) {
    this.#updateSummary((s) => ({ ...s, members }));
    this.#emit("members", members);
  }

  /** An own message of this room changed state (failed, discarded) outside an ack. */
  outboxChanged() {
    this.#emit("messages", this);
  }

  /** A resume replayed less than there is: page in the rest on the next tick. */
  catchUpLater() {
    this.#catchUpDue = true;
  }

  /**
   * Called about once a second: pages in what a resume left out, or fills a gap that has
   * stayed open for `gapWaitMs` (a message still on its way usually closes it first).
   * @param {number} now
   * @param {number} gapWaitMs
   */
  fillIfDue(now, gapWaitMs) {
    if (this.#filling) return;
    if (this.#catchUpDue) this.#fill(() => this.#catchUp());
    else if (this.#log.gapSince !== null && now - this.#log.gapSince >= gapWaitMs) this.#fill(() => this.#fillGap());
  }

  // ---- inside ---------------------------------------------------------------------------

  /** The summary for the getters: rooms handed to the app always have one. */
  get #known() {
    return this.#summary ?? /** @type {RoomSummary} */ ({ id: this.#id });
  }

  /**
   * @template {keyof RoomEvents} K
   * @param {K} event
   * @param {RoomEvents[K]} value
   */
  #emit(event, value) {
    this.#host.relay(this, event, value);
    this.#events.emit(event, value);
  }

  /**
   * Changes the summary of a listed room; announced only if something changed.
   * @param {(s: RoomSummary) => RoomSummary} change  returns its argument for "no change"
   */
  #updateSummary(change) {
    if (!this.#summary || !this.#listed) return;
    const next = change(this.#summary);
    if (next === this.#summary) return;
    this.#summary = next;
    this.#emit("summary", this);
  }

  /**
   * Arrivals: each new one is announced, and the summary moves to the newest (one update).
   * @param {Message[]} messages
   */
  #acceptAll(messages) {
    const fresh = this.#log.insertMany(messages);
    if (fresh.length === 0) return fresh;
    for (const message of fresh) if (message.text !== undefined) this.#emit("message", message);
    const me = this.#host.user();
    this.#updateSummary((s) => {
      let next = s;
      for (const message of fresh) {
        if (message.seq < (next.lastSeq ?? 0)) continue; // history filled in below the newest
        const unread = message.sender === me ? next.unread : (next.unread ?? 0) + 1;
        next = { ...next, lastMessage: message, lastSeq: message.seq, unread };
      }
      return next;
    });
    this.#emit("messages", this);
    return fresh;
  }

  async #loadNewest() {
    const page = await this.#host.rest.history(this.#id, { order: "desc", limit: this.#host.pageSize });
    const lowest = page.messages.length ? page.messages[page.messages.length - 1].seq : 1;
    // History, not arrivals: no "message" events, the summary already counts them.
    this.#log.insertMany(page.messages);
    this.#log.setFloor(page.more ? lowest - 1 : 0);
    this.#hasOlder = page.more;
    this.#emit("messages", this);
    // What was said between this page and the live stream comes with a resume.
    this.#host.send({ type: "resume", rooms: { [this.#id]: this.#log.contiguous } });
  }

  async #loadOlder() {
    if (!this.#log.loaded) {
      await this.open();
      return this.#log.size;
    }
    const lowest = this.#log.lowest();
    if (lowest === null || lowest <= 1) {
      this.#hasOlder = false;
      return 0;
    }
    const page = await this.#host.rest.history(this.#id, { before: lowest, order: "desc", limit: this.#host.pageSize });
    const newLowest = page.messages.length ? page.messages[page.messages.length - 1].seq : lowest;
    this.#log.addOlder(page.messages, page.more ? newLowest - 1 : 0);
    this.#hasOlder = page.more;
    this.#emit("messages", this);
    return page.messages.length;
  }

  /** @param {() => Promise<void>} work */
  async #fill(work) {
    this.#filling = true;
    try {
      await work();
    } catch (e) {
      this.#emit("error", e instanceof ChatError ? e : new ChatError("internal", String(e), { room: this.#id }));
    } finally {
      this.#filling = false;
    }
  }

  async #fillGap() {
    const gap = this.#log.gap();
    if (!gap) return;
    const page = await this.#host.rest.history(this.#id, { after: gap.after, before: gap.before, limit: CATCH_UP_PAGE });
    this.#acceptAll(page.messages);
  }

  /** Pages history after what the room holds; a failed page is retried by the next tick. */
  async #catchUp() {
    for (;;) {
      const page = await this.#host.rest.history(this.#id, { after: this.#log.contiguous, limit: CATCH_UP_PAGE });
      this.#acceptAll(page.messages);
      if (!page.more || page.messages.length === 0) break;
    }
    this.#catchUpDue = false;
  }
}
