// chatd.js: the browser SDK of chatd, and its entry point. ES modules, no build step, no
// dependencies. It owns everything a chat UI should not have to think about:
//   - one WebSocket, reconnected the way close codes say, resumed after every reconnect
//     (transport.js, with the rules in rules.js);
//   - sends with a clientMsgId, pending until acked, retried after a timeout, a retryable
//     error or a reconnect (the server's idempotency makes retries safe);
//   - each room's log sorted by seq, duplicates dropped, gaps filled from history, and folded
//     into the messages' current state: edits, deletes, reactions, replies (rooms.js), over
//     the REST client (rest.js); errors are ChatError (errors.js);
//   - edits, deletes and reactions sent like messages (the same outbox and retries);
//   - group roles, kept from room objects and `members` frames;
//   - presence, typing, delivered and read receipts, unread counts (rooms.js too): held as
//     state, and the user's own reported by themselves: `delivered` when messages arrive,
//     `read` while a room is open in a visible page, `active` on input, typing paced;
//   - push notifications: the user's devices and the notification ledger over REST, and in
//     a browser Web Push turned on and off (the service worker, the subscription, its device).
// The UI renders `client.rooms()` and each Room's `messages()`, and listens to events.
//
// Protocol reference: docs/protocol.md; its rules as data: docs/protocol-rules.json.

import { ChatError } from "./errors.js";
import { Credentials, RestClient, base64UrlToBytes } from "./rest.js";
import { Emitter, Outbox, PositionReporter, PresenceBook, Room, TypingBoard, TypingReporter } from "./rooms.js";
import { backoffDelay, isRetryable } from "./rules.js";
import { Transport } from "./transport.js";

/** How long enableWebPush waits for the browser's push service. */
const SUBSCRIBE_TIMEOUT_MS = 30_000;

/**
 * `promise`, or a rejection with `message` after `ms`.
 * @template T
 * @param {Promise<T>} promise
 * @param {number} ms
 * @param {string} message
 * @returns {Promise<T>}
 */
function withTimeout(promise, ms, message) {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  /** @type {Promise<never>} */
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export { ChatError } from "./errors.js";
export { base64UrlToBytes, devLogin } from "./rest.js";
export { MessageFold, Outbox, RoomLog, RoomLog as RoomState } from "./rooms.js";
export { PROTOCOL, PROTOCOL_VERSION, backoffDelay, closeAction, isRetryable } from "./rules.js";

/**
 * @typedef {import("./chatd.js").ChatClientOptions} ChatClientOptions
 * @typedef {import("./chatd.js").ChatEvents} ChatEvents
 * @typedef {import("./chatd.js").RoomEvents} RoomEvents
 * @typedef {import("./chatd.js").ConnectionState} ConnectionState
 * @typedef {import("./chatd.js").RoomInfo} RoomInfo
 * @typedef {import("./chatd.js").RoomSummary} RoomSummary
 * @typedef {import("./chatd.js").UserPresence} UserPresence
 * @typedef {import("./chatd.js").UserSettings} UserSettings
 * @typedef {import("./chatd.js").ReadOptions} ReadOptions
 * @typedef {import("./chatd.js").SendOptions} SendOptions
 * @typedef {import("./chatd.js").Role} Role
 * @typedef {import("./chatd.js").DeviceRegistration} DeviceRegistration
 * @typedef {import("./chatd.js").NotificationQuery} NotificationQuery
 * @typedef {import("./chatd.js").WebPushOptions} WebPushOptions
 * @typedef {import("./chatd.js").WebPushState} WebPushState
 * @typedef {import("./chatd.js").ChatClient} DeclaredChatClient  the contract ChatClient implements
 * @typedef {Required<Omit<ChatClientOptions, "token" | "getToken" | "backoff">> & { backoff: { baseMs?: number, maxMs?: number } }} Settings
 */

/** Events on the page that mean the user is there (each may report `active`). */
const INPUT_EVENTS = ["keydown", "input", "pointerdown"];

/** The service worker enableWebPush registers by default (chatd serves the app's at /sw.js). */
const SERVICE_WORKER = "/sw.js";

/** Sorts rooms most recently active first: by the last message, else by creation. */
const byActivity = (/** @type {Room} */ a, /** @type {Room} */ b) => {
  const activity = (/** @type {Room} */ r) => (r.lastMessage ? r.lastMessage.createdAt : r.createdAt) ?? "";
  return activity(a) < activity(b) ? 1 : activity(a) > activity(b) ? -1 : 0;
};

/**
 * The client. Events (subscribe with `on(name, fn)`, which returns an unsubscribe function):
 *   "state"   ("connecting" | "online" | "reconnecting" | "offline")
 *   "rooms"   (Room[])                  the room list changed
 *   "room"    (roomId)                  a room's messages (or pending ones) changed
 *   "message" (Message)                 a message arrived, each exactly once
 *   "change"  (Message)                 an edit, delete or reaction arrived, each exactly once
 *   "ack"     ({clientMsgId, message})  an own message was stored
 *   "receipt" ({room, user, deliveredSeq, readSeq})  a member's positions moved
 *   "unread"  ({total, rooms})          unread counts changed: rooms maps the changed ones to their count
 *   "presence" ({snapshot, users})      users' presence changed (a snapshot: everybody's, replaced)
 *   "typing"  ({room, users})           who else is typing in a room changed
 *   "error"   (ChatError)
 * Each Room has its own events too (see Room.on).
 * @implements {DeclaredChatClient}
 */
export class ChatClient {
  /** @type {Settings} */
  #settings;
  /** @type {Credentials} */
  #credentials;
  /** @type {RestClient} */
  #rest;
  /** @type {Transport} */
  #transport;
  #outbox = new Outbox();
  /** @type {Emitter<ChatEvents>} */
  #events = new Emitter();
  /** @type {Map<string, Room>} every room seen, listed or not */
  #rooms = new Map();
  /** @type {import("./rooms.js").RoomHost} */
  #roomHost;
  /** @type {string | null} */
  #user = null;
  /** @type {string | null} */
  #node = null;
  /** @type {ConnectionState} */
  #state = "offline";
  #running = false;
  /** @type {ReturnType<typeof setInterval> | null} */
  #ticker = null;
  /** @type {{ promise: Promise<void>, resolve: () => void, reject: (e: ChatError) => void } | null} start() until online */
  #startup = null;
  #presence = new PresenceBook();
  /** @type {TypingBoard} who else types, per room */
  #typing;
  /** @type {TypingReporter} the user's own typing */
  #typingOut;
  /** Whether the typing TTL follows the server's `welcome` (the app did not set one). */
  #typingTtlFromServer = true;
  /** @type {PositionReporter} `delivered` reports */
  #delivered;
  /** @type {PositionReporter} public `read` reports */
  #reads;
  /** @type {PositionReporter} private `read` reports */
  #privateReads;
  /** @type {ReturnType<typeof setTimeout> | null} the next coalesced report */
  #reportTimer = null;
  /** @type {Room | null} the room the UI shows (open() until close()): read while the page is visible */
  #shown = null;
  /** When this connection last counted as active (it does when it opens). */
  #activeAt = 0;
  /** The server's unread total minus what the listed rooms count (see unreadTotal). */
  #unreadOffset = 0;
  /** @type {(() => void) | null} removes the page listeners */
  #detachPage = null;

  /** @param {ChatClientOptions} [options] */
  constructor(options = {}) {
    const { token, getToken, ...rest } = options;
    const baseUrl = options.baseUrl ?? globalThis.location?.origin;
    if (!baseUrl) throw new Error("chatd: baseUrl is required outside a browser");
    if (!token && !getToken) throw new Error("chatd: token or getToken is required");
    /** @type {Settings} */
    const settings = {
      heartbeatMs: 15000,
      pongTimeoutMs: 10000,
      ackTimeoutMs: 10000,
      maxInFlight: 32,
      gapWaitMs: 1000,
      pageSize: 50,
      typingTtlMs: 6000,
      activeEveryMs: 20000,
      reportEveryMs: 500,
      document: globalThis.document ?? null,
      backoff: { baseMs: 250, maxMs: 30000 },
      WebSocket: globalThis.WebSocket,
      fetch: /** @type {typeof fetch} */ (globalThis.fetch?.bind(globalThis)),
      ...rest,
      baseUrl,
    };
    this.#settings = settings;
    this.#credentials = new Credentials(token, getToken);
    this.#rest = new RestClient({ baseUrl, fetch: settings.fetch, credentials: this.#credentials });
    this.#transport = new Transport(
      { ...settings, credentials: this.#credentials },
      {
        onFrame: (frame) => this.#onFrame(frame),
        onState: (state) => this.#onConnection(state),
        onGiveUp: (error) => this.#onGiveUp(error),
        onError: (error) => this.#events.emit("error", error),
        resumePositions: () => this.#resumePositions(),
      },
    );
    this.#roomHost = {
      rest: this.#rest,
      send: (frame) => this.#transport.send(frame),
      outbox: this.#outbox,
      flushOutbox: () => this.#flushOutbox(),
      user: () => this.#user,
      pageSize: settings.pageSize,
      relay: (room, event, value) => this.#relay(room, event, value),
      show: (room, shown) => {
        if (shown) this.#shown = room;
        else if (this.#shown === room) this.#shown = null;
      },
      arrived: (room, fromOthers) => this.#arrived(room, fromOthers),
      autoRead: (room) => this.#autoRead(room),
      reportRead: (room, seq, isPrivate) => this.#report(isPrivate ? this.#privateReads : this.#reads, room.id, seq),
      ownPositions: (room, { deliveredSeq, readSeq }) => {
        this.#delivered.known(room.id, deliveredSeq);
        this.#reads.known(room.id, readSeq);
        this.#privateReads.known(room.id, readSeq);
      },
      stopTyping: (room) => this.#typingOut.set(room.id, false, Date.now()),
      typingIn: (room) => this.#typing.users(room.id),
    };
    this.#typingTtlFromServer = options.typingTtlMs === undefined;
    this.#typing = new TypingBoard({ ttlMs: settings.typingTtlMs });
    this.#typingOut = new TypingReporter((room, typing) => this.#transport.send({ type: "typing", room, typing }), { ttlMs: settings.typingTtlMs });
    const pace = { intervalMs: settings.reportEveryMs };
    this.#delivered = new PositionReporter((room, seq) => this.#transport.send({ type: "delivered", room, seq }), pace);
    this.#reads = new PositionReporter((room, seq) => this.#sendRead(room, seq, false), pace);
    this.#privateReads = new PositionReporter((room, seq) => this.#sendRead(room, seq, true), pace);
  }

  get state() {
    return this.#state;
  }

  get user() {
    return this.#user;
  }

  /** The server node of the current connection (diagnostics). */
  get node() {
    return this.#node;
  }

  /**
   * @template {keyof ChatEvents} K
   * @param {K} event
   * @param {(value: ChatEvents[K]) => void} listener
   */
  on(event, listener) {
    return this.#events.on(event, listener);
  }

  // ---- lifecycle ----------------------------------------------------------------------

  /**
   * Loads the user and the room list, connects, and resolves once online. Failures on the
   * way are retried as a reconnect retries them (backoff, close codes, a new token from
   * getToken); it rejects when only the app can help: a token refused with no getToken, a
   * request no retry can cure, or stop(). Once started, the client stays connected (or
   * reconnecting) until stop().
   * @returns {Promise<void>}
   */
  async start() {
    if (this.#running) return this.#startup?.promise;
    this.#running = true;
    this.#setState("connecting");
    try {
      await this.#credentials.ensure();
    } catch (error) {
      this.#halt();
      this.#setState("offline");
      throw error;
    }
    if (!this.#running) throw new ChatError("stopped", "stopped before going online");
    /** @type {(value?: any) => void} */
    let resolve = () => {};
    /** @type {(e: ChatError) => void} */
    let reject = () => {};
    /** @type {Promise<void>} */
    const promise = new Promise((yes, no) => ((resolve = yes), (reject = no)));
    this.#startup = { promise, resolve, reject };
    this.#ticker = setInterval(() => this.#tick(), 1000);
    this.#watchPage();
    this.#transport.start(async () => {
      this.#user = (await this.#rest.me()).user;
      await this.refreshRooms();
    });
    return promise;
  }

  /**
   * Disconnects (close 1000) and settles every send still waiting for its ack: each rejects
   * with ChatError "stopped" and shows as failed. A later start() connects again.
   */
  stop() {
    this.#halt();
    const failed = this.#outbox.failAll(
      (item) =>
        new ChatError(
          "stopped",
          item.sentAt === null ? "not sent: the client stopped" : "the client stopped before the server confirmed this message; it may still have been stored",
          { room: item.room, clientMsgId: item.clientMsgId },
        ),
    );
    for (const roomId of new Set(failed.map((item) => item.room))) this.#rooms.get(roomId)?.outboxChanged();
    this.#startup?.reject(new ChatError("stopped", "stopped before going online"));
    this.#startup = null;
    this.#setState("offline");
  }

  /** Stops connecting and the periodic work; what the client holds stays. */
  #halt() {
    this.#running = false;
    if (this.#ticker !== null) clearInterval(this.#ticker);
    this.#ticker = null;
    if (this.#reportTimer !== null) clearTimeout(this.#reportTimer);
    this.#reportTimer = null;
    this.#detachPage?.();
    this.#detachPage = null;
    this.#transport.stop();
    this.#connectionLost();
  }

  /** @param {"online" | "reconnecting"} state */
  #onConnection(state) {
    this.#setState(state);
    if (state !== "online") {
      this.#connectionLost();
      return;
    }
    // A new connection: everything unacknowledged goes again (paced by the in-flight window);
    // the server answers the stored ones with their ack.
    this.#outbox.resendAll();
    // Receipts moved meanwhile came to nobody: the room on screen asks again.
    this.#shown?.loadReceipts().catch((e) => this.#events.emit("error", e));
    this.#flushReports();
    this.#startup?.resolve();
    this.#startup = null;
  }

  /** No connection: typing starts lapse on the server, and no stop of others' would reach us. */
  #connectionLost() {
    this.#typingOut.reset();
    for (const id of this.#typing.clear()) this.#roomFor(id).typingChanged([]);
  }

  /** @param {ChatError} error */
  #onGiveUp(error) {
    this.#halt();
    this.#setState("offline");
    if (this.#startup) this.#startup.reject(error); // start()'s caller hears it
    else this.#events.emit("error", error);
    this.#startup = null;
  }

  /** @param {ConnectionState} state */
  #setState(state) {
    if (this.#state !== state) {
      this.#state = state;
      this.#events.emit("state", state);
    }
  }

  // ---- frames -------------------------------------------------------------------------

  /** @param {any} frame */
  #onFrame(frame) {
    switch (frame.type) {
      case "welcome":
        this.#user = frame.user;
        this.#node = frame.node; // which server node holds this connection (for diagnostics)
        this.#activeAt = Date.now(); // a connection is active when it opens
        // The server's typing TTL, unless the app chose one.
        if (frame.typingTtlMs > 0 && this.#typingTtlFromServer) {
          this.#typing.setTtl(frame.typingTtlMs);
          this.#typingOut.setTtl(frame.typingTtlMs);
        }
        // Rooms may have been added or removed while disconnected.
        this.refreshRooms().catch(() => {});
        break;
      case "resumed":
        for (const [id, r] of Object.entries(frame.rooms ?? {})) if (r.more) this.#roomFor(id).catchUpLater();
        this.#flushOutbox();
        this.#flushReports();
        break;
      case "message": {
        const { type, ...message } = frame;
        // (Who is typing is the server's lists only: its stop for the sender comes as a frame.)
        this.#roomFor(message.room).accept(message);
        break;
      }
      case "ack":
        this.#roomFor(frame.room).acknowledge(frame);
        break;
      case "error":
        this.#onError(frame);
        break;
      case "receipt":
        this.#roomFor(frame.room).receipt(frame);
        break;
      case "unread":
        this.#onUnread(frame);
        break;
      case "presence": {
        const users = this.#presence.apply(frame);
        if (users.length > 0 || frame.snapshot === true) this.#events.emit("presence", { snapshot: frame.snapshot === true, users });
        break;
      }
      case "typing": {
        const room = this.#roomFor(frame.room);
        const users = (Array.isArray(frame.users) ? frame.users : []).filter((/** @type {unknown} */ u) => typeof u === "string" && u !== this.#user);
        if (this.#typing.set(room.id, users, Date.now())) room.typingChanged(this.#typing.users(room.id));
        break;
      }
      case "room_added": {
        const room = this.#listNew(frame.room);
        if (room.loaded) {
          // Back in a room held from before: catch up on what was said meanwhile.
          this.#transport.send({ type: "resume", rooms: { [room.id]: room.resumePosition } });
        } else {
          room.load().catch((e) => this.#events.emit("error", e));
        }
        break;
      }
      case "room_removed":
        for (const reporter of [this.#delivered, this.#reads, this.#privateReads]) reporter.forget(frame.room);
        if (this.#typing.set(frame.room, [], Date.now())) this.#roomFor(frame.room).typingChanged([]);
        this.#rooms.get(frame.room)?.forget();
        this.#emitRooms();
        this.#events.emit("room", frame.room);
        break;
      case "members":
        this.#rooms.get(frame.room)?.setMembers(frame.members, frame.roles);
        break;
      default:
        break; // pong, or a newer server's frame
    }
  }

  /** @param {any} frame */
  #onError(frame) {
    if (frame.code === "room_not_found" && !frame.clientMsgId && (Array.isArray(frame.rooms) || frame.room)) {
      // Resumed rooms the user left while away (one frame listing them all in `rooms`, or,
      // from an older server, one frame per room with `room`): forget them quietly.
      const gone = [...(Array.isArray(frame.rooms) ? frame.rooms : []), ...(frame.room ? [frame.room] : [])];
      let changed = false;
      for (const id of gone) if (this.#rooms.get(id)?.forget()) changed = true;
      if (changed) this.#emitRooms();
      return;
    }
    const error = ChatError.fromFrame(frame);
    const item = frame.clientMsgId ? this.#outbox.get(frame.clientMsgId) : undefined;
    if (item && isRetryable(frame.code)) {
      const wait = frame.retryAfterMs ?? backoffDelay(item.attempts, this.#settings.backoff) + 200;
      this.#outbox.retryLater(item.clientMsgId, Date.now() + wait);
    } else if (item) {
      this.#outbox.fail(item.clientMsgId, error); // a message shows as failed; a change is dropped
      this.#rooms.get(item.room)?.outboxChanged();
    }
    this.#events.emit("error", error);
  }

  /**
   * Client events that follow room events.
   * @param {Room} room
   * @param {keyof RoomEvents} event
   * @param {any} value
   */
  #relay(room, event, value) {
    if (event === "messages") this.#events.emit("room", room.id);
    else if (event === "summary") this.#emitRooms();
    else if (event === "unread") this.#events.emit("unread", { total: this.unreadTotal(), rooms: { [room.id]: value.unread } });
    else if (event === "message" || event === "change" || event === "ack" || event === "receipt" || event === "typing" || event === "error") this.#events.emit(event, value);
  }

  /**
   * An `unread` frame: the room's count and the user's read position are the server's now.
   * Its total covers every room; the difference to what the listed rooms count is kept, so
   * that counting on (a new message, a read) moves the total with the rooms.
   *
   * A frame whose readSeq is below the position this client has read up to answers an older
   * read (the server counts when it announces, so it may count messages this client has
   * read since): the room keeps its count until the answer to its own read comes. Its total
   * still holds for the other rooms.
   * @param {any} frame
   */
  #onUnread(frame) {
    if (typeof frame.unread !== "number" || typeof frame.readSeq !== "number") return;
    const room = this.#roomFor(frame.room);
    // The user's read position moved (on some device): it implies delivery.
    this.#privateReads.known(room.id, frame.readSeq);
    this.#delivered.known(room.id, frame.readSeq);
    const totalBefore = this.unreadTotal();
    const countBefore = room.listed ? room.unread ?? 0 : 0;
    if (typeof frame.total === "number") {
      this.#unreadOffset = frame.total - (this.#unreadSum() - countBefore) - (room.listed ? frame.unread : 0);
    }
    // (The offset counts the room as the frame does: with a stale frame, the total is the
    // server's for the other rooms plus this room as counted here.)
    const stale = room.listed && frame.readSeq < (room.readSeq ?? 0);
    if (!stale) room.setUnread(frame.unread, frame.readSeq); // "unread" follows if the room's count changed
    if ((room.listed ? room.unread : 0) === countBefore && this.unreadTotal() !== totalBefore) {
      this.#events.emit("unread", { total: this.unreadTotal(), rooms: room.listed ? { [room.id]: frame.unread } : {} });
    }
  }

  #unreadSum() {
    let sum = 0;
    for (const room of this.#rooms.values()) if (room.listed) sum += room.unread ?? 0;
    return sum;
  }

  #emitRooms() {
    this.#events.emit("rooms", this.rooms());
  }

  /** @param {string} id */
  #roomFor(id) {
    let room = this.#rooms.get(id);
    if (!room) this.#rooms.set(id, (room = new Room(id, this.#roomHost)));
    return room;
  }

  /**
   * Lists a room the user is now in (created, opened, or added by someone), unless listed.
   * @param {RoomInfo} info
   */
  #listNew(info) {
    const room = this.#roomFor(info.id);
    if (!room.listed) {
      room.list({ ...info, lastMessage: null, lastSeq: 0, readSeq: 0, unread: 0 });
      this.#emitRooms();
    }
    return room;
  }

  #resumePositions() {
    /** @type {Record<string, number>} */
    const positions = {};
    for (const room of this.#rooms.values()) if (room.resumePosition !== null) positions[room.id] = room.resumePosition;
    return positions;
  }

  // ---- periodic work --------------------------------------------------------------------

  #tick() {
    const now = Date.now();
    this.#transport.heartbeat(now);
    this.#flushOutbox();
    for (const room of this.#rooms.values()) room.fillIfDue(now, this.#settings.gapWaitMs);
    for (const id of this.#typing.expire(now)) this.#roomFor(id).typingChanged(this.#typing.users(id));
    this.#flushReports(); // what could not go out (no connection) goes now
  }

  // ---- what the client reports by itself -------------------------------------------------

  /**
   * New messages landed in a room: those from others are delivered to this device, or read
   * if the user is looking at the room.
   * @param {Room} room
   * @param {boolean} fromOthers
   */
  #arrived(room, fromOthers) {
    if (!fromOthers) return; // own messages are never unread, nor delivered to oneself
    // A read implies delivery: a room read now needs no `delivered`.
    if (!this.#autoRead(room)) this.#report(this.#delivered, room.id, room.deliveredPosition);
  }

  /**
   * Reads the room if the UI shows it and the page is visible; returns whether it did.
   * @param {Room} room
   */
  #autoRead(room) {
    if (room !== this.#shown || !room.listed || !this.#pageVisible()) return false;
    room.markRead();
    return true;
  }

  #pageVisible() {
    return this.#settings.document?.visibilityState === "visible";
  }

  /**
   * @param {PositionReporter} reporter
   * @param {string} roomId
   * @param {number} seq
   */
  #report(reporter, roomId, seq) {
    reporter.offer(roomId, seq, Date.now());
    this.#scheduleReports();
  }

  #flushReports() {
    const now = Date.now();
    // Reads first: each implies delivery, and a `delivered` it covers is not sent.
    for (const reporter of [this.#reads, this.#privateReads, this.#delivered]) reporter.flush(now);
    this.#scheduleReports();
  }

  /** One timer for the earliest report waiting for its room's pace (the tick retries the rest). */
  #scheduleReports() {
    if (this.#reportTimer !== null) clearTimeout(this.#reportTimer);
    this.#reportTimer = null;
    if (!this.#running) return;
    const now = Date.now();
    const due = [this.#delivered, this.#reads, this.#privateReads].map((r) => r.nextDue()).filter((at) => at !== null && at > now);
    if (due.length === 0) return;
    this.#reportTimer = setTimeout(() => {
      this.#reportTimer = null;
      this.#flushReports();
    }, Math.min(.../** @type {number[]} */ (due)) - now);
  }

  /**
   * A read report: on the connection, else over REST. It moves the user's own position and
   * implies delivery, so neither is reported below it afterwards.
   * @param {string} roomId
   * @param {number} seq
   * @param {boolean} isPrivate
   */
  #sendRead(roomId, seq, isPrivate) {
    const frame = isPrivate ? { type: "read", room: roomId, seq, private: true } : { type: "read", room: roomId, seq };
    if (!this.#transport.send(frame)) this.#rest.markRead(roomId, seq, isPrivate).catch(() => {});
    this.#privateReads.known(roomId, seq);
    this.#delivered.known(roomId, seq);
    return true;
  }

  /** In a browser: input on the page reports `active`, and a page coming into view reads the open room. */
  #watchPage() {
    const page = this.#settings.document;
    if (!page || this.#detachPage) return;
    const onInput = () => this.activity();
    const onVisibility = () => {
      if (page.visibilityState !== "visible") return;
      this.activity();
      if (this.#shown) this.#autoRead(this.#shown);
    };
    const options = { capture: true, passive: true };
    for (const name of INPUT_EVENTS) page.addEventListener(name, onInput, options);
    page.addEventListener("visibilitychange", onVisibility);
    this.#detachPage = () => {
      for (const name of INPUT_EVENTS) page.removeEventListener(name, onInput, options);
      page.removeEventListener("visibilitychange", onVisibility);
    };
  }

  #flushOutbox() {
    this.#outbox.flush((frame) => this.#transport.send(frame), Date.now(), this.#settings);
  }

  // ---- what the UI calls ------------------------------------------------------------------

  /** Listed rooms, most recently active first. */
  rooms() {
    return [...this.#rooms.values()].filter((r) => r.listed).sort(byActivity);
  }

  /**
   * A room of the user's list, or undefined.
   * @param {string} id
   */
  room(id) {
    const room = this.#rooms.get(id);
    return room?.listed ? room : undefined;
  }

  /** @param {string} roomId */
  messages(roomId) {
    return this.#roomFor(roomId).messages();
  }

  /** @param {string} roomId */
  hasOlder(roomId) {
    return this.#rooms.get(roomId)?.hasOlder ?? true;
  }

  /** @param {string} roomId */
  open(roomId) {
    return this.#roomFor(roomId).open();
  }

  /** @param {string} roomId */
  loadOlder(roomId) {
    return this.#roomFor(roomId).loadOlder();
  }

  /**
   * @param {string} roomId
   * @param {string} text
   * @param {SendOptions} [options]  replyTo: the seq of the message it answers
   */
  send(roomId, text, options) {
    return this.#roomFor(roomId).send(text, options);
  }

  /**
   * Drops a failed message from the pending list.
   * @param {string} clientMsgId
   */
  discard(clientMsgId) {
    const item = this.#outbox.discard(clientMsgId);
    if (item) this.#rooms.get(item.room)?.outboxChanged();
  }

  /**
   * @param {string} roomId
   * @param {number} [seq]
   * @param {ReadOptions} [options]
   */
  markRead(roomId, seq, options) {
    this.#roomFor(roomId).markRead(seq, options);
  }

  /** Reloads every page of the room list; one "rooms" event (and one "unread" if counts changed). */
  async refreshRooms() {
    const list = await this.#rest.listRooms();
    const ids = new Set(list.map((s) => s.id));
    const totalBefore = this.unreadTotal();
    /** @type {Map<string, number>} */
    const countsBefore = new Map();
    for (const room of this.#rooms.values()) {
      if (!room.listed) continue;
      countsBefore.set(room.id, room.unread ?? 0);
      if (!ids.has(room.id)) room.unlist();
    }
    this.#unreadOffset = 0; // the list's counts are the server's, for every room
    for (const summary of list) {
      this.#roomFor(summary.id).list(summary);
      this.#privateReads.known(summary.id, summary.readSeq ?? 0);
      this.#delivered.known(summary.id, summary.readSeq ?? 0);
    }
    this.#emitRooms();
    /** @type {Record<string, number>} */
    const changed = {};
    for (const [id, count] of countsBefore) if (!ids.has(id) && count > 0) changed[id] = 0;
    for (const room of this.rooms()) if ((countsBefore.get(room.id) ?? 0) !== (room.unread ?? 0)) changed[room.id] = room.unread ?? 0;
    if (Object.keys(changed).length > 0 || this.unreadTotal() !== totalBefore) this.#events.emit("unread", { total: this.unreadTotal(), rooms: changed });
    return this.rooms();
  }

  /** @param {string} peer */
  async openDirect(peer) {
    return this.#listNew(await this.#rest.openDirect(peer));
  }

  /**
   * @param {string} name
   * @param {string[]} members
   */
  async createGroup(name, members) {
    return this.#listNew(await this.#rest.createGroup(name, members));
  }

  /**
   * @param {string} roomId
   * @param {string[]} members
   */
  addMembers(roomId, members) {
    return this.#rest.addMembers(roomId, members);
  }

  /**
   * @param {string} roomId
   * @param {string} user
   */
  removeMember(roomId, user) {
    return this.#rest.removeMember(roomId, user);
  }

  /**
   * Leaves a room (`room_removed` follows).
   * @param {string} roomId
   */
  leave(roomId) {
    return this.#roomFor(roomId).leave();
  }

  /**
   * Gives a member of a group a role (owners only): "owner", "admin" or "member".
   * @param {string} roomId
   * @param {string} user
   * @param {Role} role
   */
  setRole(roomId, user, role) {
    return this.#roomFor(roomId).setRole(user, role);
  }

  /** @param {string} roomId */
  presence(roomId) {
    return this.#rest.presence(roomId);
  }

  /**
   * What the server last said of a user's presence, or undefined if it never did (only
   * contacts, members of direct rooms and of small groups are told).
   * @param {string} user
   * @returns {UserPresence | undefined}
   */
  presenceOf(user) {
    return this.#presence.get(user);
  }

  /**
   * The user is there (input, the page came into view): reports `active`, at most once per
   * `activeEveryMs`. In a browser the client calls it by itself on input.
   */
  activity() {
    const now = Date.now();
    if (now - this.#activeAt < this.#settings.activeEveryMs) return;
    if (this.#transport.send({ type: "active" })) this.#activeAt = now;
  }

  /**
   * The user types in a room (call on every keystroke with true) or stopped (false; sending
   * a message stops it too). Reported as the protocol asks: a start, refreshed at most every
   * half TTL while typing goes on, and one stop.
   * @param {string} roomId
   * @param {boolean} typing
   */
  setTyping(roomId, typing) {
    this.#typingOut.set(roomId, typing, Date.now());
  }

  /**
   * Who else is typing in a room.
   * @param {string} roomId
   */
  typingIn(roomId) {
    return this.#typing.users(roomId);
  }

  /**
   * Where a message got: "sent" | "delivered" | "read" in a direct room, {delivered, read,
   * of} in a group (the sender not counted).
   * @param {string} roomId
   * @param {number} seq
   */
  messageStatus(roomId, seq) {
    return this.#roomFor(roomId).messageStatus(seq);
  }

  /**
   * The members' public positions held for a room.
   * @param {string} roomId
   */
  receipts(roomId) {
    return this.#roomFor(roomId).receipts();
  }

  /**
   * Fetches the members' public positions of a room again.
   * @param {string} roomId
   */
  loadReceipts(roomId) {
    return this.#roomFor(roomId).loadReceipts();
  }

  /**
   * Unread messages over all rooms: the server's total from its last `unread` frame, moved
   * since by what was counted here (new messages, reads); else the room list's sum.
   */
  unreadTotal() {
    return Math.max(0, this.#unreadSum() + this.#unreadOffset);
  }

  /** @returns {Promise<UserSettings>} */
  settings() {
    return this.#rest.settings();
  }

  /**
   * Changes the user's settings, e.g. {hidePresence: true}: everybody sees them offline.
   * @param {UserSettings} settings
   * @returns {Promise<UserSettings>}
   */
  updateSettings(settings) {
    return this.#rest.updateSettings(settings);
  }

  // ---- push notifications --------------------------------------------------------------

  /** What push this deployment offers: `webPush` (null: none), `gateway`, `includeText`. */
  pushConfig() {
    return this.#rest.pushConfig();
  }

  /** The user's devices, oldest first. */
  devices() {
    return this.#rest.devices();
  }

  /**
   * Registers a browser push subscription or an app install with a gateway; resolves with
   * the device and whether it is new (false: registered already, updated).
   * @param {DeviceRegistration} registration
   */
  registerDevice(registration) {
    return this.#rest.registerDevice(registration);
  }

  /** @param {string} id */
  removeDevice(id) {
    return this.#rest.removeDevice(id);
  }

  /**
   * Why (or why not) notifications came: the decision per message, newest first.
   * @param {NotificationQuery} [query]
   */
  notifications(query) {
    return this.#rest.notifications(query);
  }

  /**
   * Turns Web Push on in this browser: asks for the notification permission if needed,
   * registers the service worker, subscribes with the server's VAPID key and registers the
   * subscription as a device of the user. Resolves with the device; rejects with ChatError
   * "push_not_configured" (the server offers no Web Push), "unsupported" (no service worker
   * or Push API here), "permission_denied", or "subscribe_failed" (the push service refused).
   * @param {WebPushOptions} [options]
   */
  async enableWebPush({ serviceWorker = SERVICE_WORKER, name } = {}) {
    const config = await this.pushConfig();
    if (!config.webPush) throw new ChatError("push_not_configured", "this server does not offer Web Push notifications");
    const container = webPushContainer();
    if (!container) throw new ChatError("unsupported", "this browser cannot receive Web Push notifications");
    if (Notification.permission !== "granted" && (await Notification.requestPermission()) !== "granted") {
      throw new ChatError("permission_denied", "notifications are not allowed for this site");
    }
    const registration = await activated(await container.register(serviceWorker));
    const key = base64UrlToBytes(config.webPush.vapidPublicKey);
    let subscription = await registration.pushManager.getSubscription();
    // One made with another key (the server's was replaced) cannot be used, nor one that is no
    // device of the user's (chatd removed it when its push service said it is gone, or it is
    // another user's of this browser, who loses it to this one anyway): a new one is made.
    if (subscription && !(sameBytes(subscription.options.applicationServerKey, key) && (await this.#webPushDevice(subscription)))) {
      await subscription.unsubscribe();
      subscription = null;
    }
    try {
      // A browser that cannot reach its push service may never answer: give up after 30 s.
      subscription ??= await withTimeout(
        registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key }),
        SUBSCRIBE_TIMEOUT_MS,
        "the browser's push service did not answer within 30 s",
      );
    } catch (error) {
      const denied = error instanceof DOMException && error.name === "NotAllowedError";
      throw new ChatError(denied ? "permission_denied" : "subscribe_failed", error instanceof Error ? error.message : String(error));
    }
    const json = /** @type {{ endpoint: string, keys: { p256dh: string, auth: string } }} */ (subscription.toJSON());
    const registered = await this.registerDevice({ kind: "webpush", subscription: json, ...(name === undefined ? {} : { name }) });
    return registered.device;
  }

  /**
   * Turns Web Push off in this browser: removes the subscription's device and unsubscribes.
   * Nothing happens where it was not on for this user (a subscription another user of the
   * browser registered since stays theirs).
   * @param {WebPushOptions} [options]  serviceWorker: the script enableWebPush registered
   */
  async disableWebPush({ serviceWorker = SERVICE_WORKER } = {}) {
    const subscription = await webPushSubscription(serviceWorker);
    const device = subscription && (await this.#webPushDevice(subscription));
    if (!subscription || !device) return;
    await this.removeDevice(device.id).catch((error) => {
      if (error.code !== "device_not_found") throw error; // removed meanwhile: as wanted
    });
    await subscription.unsubscribe();
  }

  /**
   * Where Web Push stands in this browser for this user: "on", "off", "blocked" (the user
   * denied notifications), "unsupported" (by the browser) or "not_offered" (by the server).
   * "on" needs the browser's subscription to be one of the user's devices: chatd removes
   * devices their push service rejects, and moves a subscription to whoever registers it.
   * @param {WebPushOptions} [options]  serviceWorker: the script enableWebPush registered
   * @returns {Promise<WebPushState>}
   */
  async webPushState({ serviceWorker = SERVICE_WORKER } = {}) {
    if (!(await this.pushConfig()).webPush) return "not_offered";
    if (!webPushContainer()) return "unsupported";
    if (Notification.permission === "denied") return "blocked";
    const subscription = await webPushSubscription(serviceWorker);
    return subscription && (await this.#webPushDevice(subscription)) ? "on" : "off";
  }

  /** @param {PushSubscription} subscription */
  async #webPushDevice(subscription) {
    const { devices } = await this.devices();
    return devices.find((d) => d.kind === "webpush" && d.endpoint === subscription.endpoint);
  }

  /**
   * Any REST call with the client's token; throws ChatError with the server's code.
   * @param {string} method
   * @param {string} path
   * @param {unknown} [body]
   */
  api(method, path, body) {
    return this.#rest.request(method, path, body);
  }
}

// ---- Web Push in a browser ---------------------------------------------------------------

/** The page's service worker container, where Web Push can work (else null). */
function webPushContainer() {
  const container = globalThis.navigator?.serviceWorker;
  return container && "PushManager" in globalThis && "Notification" in globalThis ? container : null;
}

/**
 * This browser's push subscription of the service worker `script`, if any.
 * @param {string} script
 */
async function webPushSubscription(script) {
  const container = webPushContainer();
  if (!container) return null;
  const url = new URL(script, globalThis.location?.href).href;
  const registrations = await container.getRegistrations();
  const registration = registrations.find((r) => (r.active ?? r.waiting ?? r.installing)?.scriptURL === url);
  return registration ? registration.pushManager.getSubscription() : null;
}

/**
 * Resolves once the registration has an active worker (subscribing needs one).
 * @param {ServiceWorkerRegistration} registration
 * @returns {Promise<ServiceWorkerRegistration>}
 */
function activated(registration) {
  const worker = registration.installing ?? registration.waiting;
  if (registration.active || !worker) return Promise.resolve(registration);
  return new Promise((resolve, reject) => {
    worker.addEventListener("statechange", () => {
      if (worker.state === "activated") resolve(registration);
      else if (worker.state === "redundant") reject(new ChatError("unsupported", "the service worker failed to install"));
    });
  });
}

/**
 * @param {ArrayBuffer | null} buffer
 * @param {Uint8Array} bytes
 */
function sameBytes(buffer, bytes) {
  const other = buffer ? new Uint8Array(buffer) : new Uint8Array();
  return other.length === bytes.length && other.every((b, i) => b === bytes[i]);
}
