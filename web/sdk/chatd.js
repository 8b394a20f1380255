// chatd.js: the browser SDK of chatd, and its entry point. ES modules, no build step, no
// dependencies. It owns everything a chat UI should not have to think about:
//   - one WebSocket, reconnected the way close codes say, resumed after every reconnect
//     (transport.js, with the rules in rules.js);
//   - sends with a clientMsgId, pending until acked, retried after a timeout, a retryable
//     error or a reconnect (the server's idempotency makes retries safe);
//   - each room's messages sorted by seq, duplicates dropped, gaps filled from history
//     (rooms.js), over the REST client (rest.js); errors are ChatError (errors.js).
// The UI renders `client.rooms()` and each Room's `messages()`, and listens to events.
//
// Protocol reference: docs/protocol.md; its rules as data: docs/protocol-rules.json.

import { ChatError } from "./errors.js";
import { Credentials, RestClient } from "./rest.js";
import { Emitter, Outbox, Room } from "./rooms.js";
import { backoffDelay, isRetryable } from "./rules.js";
import { Transport } from "./transport.js";

export { ChatError } from "./errors.js";
export { devLogin } from "./rest.js";
export { Outbox, RoomLog, RoomLog as RoomState } from "./rooms.js";
export { PROTOCOL, PROTOCOL_VERSION, backoffDelay, closeAction, isRetryable } from "./rules.js";

/**
 * @typedef {import("./chatd.js").ChatClientOptions} ChatClientOptions
 * @typedef {import("./chatd.js").ChatEvents} ChatEvents
 * @typedef {import("./chatd.js").RoomEvents} RoomEvents
 * @typedef {import("./chatd.js").ConnectionState} ConnectionState
 * @typedef {import("./chatd.js").RoomInfo} RoomInfo
 * @typedef {import("./chatd.js").RoomSummary} RoomSummary
 * @typedef {import("./chatd.js").ChatClient} DeclaredChatClient  the contract ChatClient implements
 * @typedef {Required<Omit<ChatClientOptions, "token" | "getToken" | "backoff">> & { backoff: { baseMs?: number, maxMs?: number } }} Settings
 */

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
 *   "ack"     ({clientMsgId, message})  an own message was stored
 *   "receipt" ({room, user, readSeq})
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
    };
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
    this.#transport.stop();
  }

  /** @param {"online" | "reconnecting"} state */
  #onConnection(state) {
    this.#setState(state);
    if (state !== "online") return;
    // A new connection: everything unacknowledged goes again (paced by the in-flight window);
    // the server answers the stored ones with their ack.
    this.#outbox.resendAll();
    this.#startup?.resolve();
    this.#startup = null;
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
        // Rooms may have been added or removed while disconnected.
        this.refreshRooms().catch(() => {});
        break;
      case "resumed":
        for (const [id, r] of Object.entries(frame.rooms ?? {})) if (r.more) this.#roomFor(id).catchUpLater();
        this.#flushOutbox();
        break;
      case "message": {
        const { type, ...message } = frame;
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
        this.#roomFor(frame.room).receipt({ room: frame.room, user: frame.user, readSeq: frame.readSeq });
        break;
      case "room_added": {
        const room = this.#listNew(frame.room);
        if (room.loaded) {
          // Back in a room held from before: catch up on what was said meanwhile.
          this.#transport.send({ type: "resume", rooms: { [room.id]: room.resumePosition } });
        } else {
          room.open().catch((e) => this.#events.emit("error", e));
        }
        break;
      }
      case "room_removed":
        this.#rooms.get(frame.room)?.forget();
        this.#emitRooms();
        this.#events.emit("room", frame.room);
        break;
      case "members":
        this.#rooms.get(frame.room)?.setMembers(frame.members);
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
      this.#outbox.fail(item.clientMsgId, error);
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
    else if (event === "message" || event === "ack" || event === "receipt" || event === "error") this.#events.emit(event, value);
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
   */
  send(roomId, text) {
    return this.#roomFor(roomId).send(text);
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
   */
  markRead(roomId, seq) {
    this.#roomFor(roomId).markRead(seq);
  }

  /** Reloads every page of the room list; one "rooms" event. */
  async refreshRooms() {
    const list = await this.#rest.listRooms();
    const ids = new Set(list.map((s) => s.id));
    for (const room of this.#rooms.values()) if (room.listed && !ids.has(room.id)) room.unlist();
    for (const summary of list) this.#roomFor(summary.id).list(summary);
    this.#emitRooms();
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

  /** @param {string} roomId */
  presence(roomId) {
    return this.#rest.presence(roomId);
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
