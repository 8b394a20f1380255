// Type declarations for @chatd/sdk (chatd.js and the modules it re-exports), the browser SDK
// of chatd. The protocol: docs/protocol.md; its rules as data: docs/protocol-rules.json.

export declare const PROTOCOL: "chatd.v1";
export declare const PROTOCOL_VERSION: 1;

export type ConnectionState = "connecting" | "online" | "reconnecting" | "offline";
/** What a client does after a close: reconnect now, back off, get a new token, or stop. */
export type CloseAction = "now" | "backoff" | "reauth" | "stop";

/** What a log entry is: a message, or a change to the message at its `target`. */
export type EntryKind = "message" | "edit" | "delete" | "react" | "unreact";

/** One entry of a room's log, as `message` frames and `view=log` history carry it: a message
 * or a change to one (docs/protocol.md, "Changes"). */
export interface Message {
  id: string;
  room: string;
  /** Position in the room's log: 1, 2, 3, ... with no gaps. The order. */
  seq: number;
  sender: string;
  clientMsgId: string;
  /** Absent from a server older than changes: a message. */
  kind: EntryKind;
  /** A message's text, an edit's new text; "" for other changes and once deleted. */
  text: string;
  /** RFC 3339, UTC, milliseconds. Never decreases as seq grows. */
  createdAt: string;
  /** The seq of the message a change applies to (edit, delete, react, unreact). */
  target?: number;
  /** The seq of the message a message answers. */
  replyTo?: number;
  /** A reaction's emoji (react, unreact). */
  emoji?: string;
  /** The message (or an edit of it) was deleted: its text is gone from the server. */
  deleted?: boolean;
}

/** How many members reacted with an emoji, and whether the user is one of them. */
export interface Reaction {
  emoji: string;
  count: number;
  me: boolean;
}

/** What a reply shows of the message it answers, as that message stands now. */
export interface ReplyPreview {
  seq: number;
  sender: string;
  /** Cut to 140 characters; "" once deleted. */
  text: string;
  deleted: boolean;
}

/** A message as it stands after every change to it (what `view=state` history returns, and
 * what the SDK folds from the log). */
export interface MessageState extends Message {
  kind: "message";
  /** When the text shown was written by an edit (absent if never edited). */
  editedAt?: string;
  /** When it was deleted (a tombstone: `deleted: true`, text "", no reactions). */
  deletedAt?: string;
  /** Per emoji, in the order of its earliest standing reaction. */
  reactions: Reaction[];
  /** The answered message, when this is a reply and that message is held. */
  reply?: ReplyPreview;
}

/** A message as the UI shows it: stored ("sent") or own and not yet stored. */
export interface ShownMessage extends Omit<MessageState, "id" | "seq"> {
  id: string | null;
  seq: number | null;
  status: "sent" | "pending" | "failed";
  error?: ChatError;
  /** Own changes to it (an edit, a delete, reactions) are on their way, shown already. */
  changing?: boolean;
}

/** A role in a group; members without one in `roles` are plain members. */
export type Role = "owner" | "admin" | "member";

/** A room as REST and `room_added` describe it. */
export interface RoomInfo {
  id: string;
  kind: "direct" | "group";
  /** Groups have a name; direct rooms do not. */
  name: string | null;
  members: string[];
  /** Owners and admins of a group ({} in direct rooms). */
  roles: Record<string, "owner" | "admin">;
  createdBy: string;
  createdAt: string;
}

/** A room of `GET /v1/rooms`: its info and where the user stands in it. */
export interface RoomSummary extends RoomInfo {
  /** The newest message that is not deleted, as it stands. */
  lastMessage: MessageState | null;
  /** The seq of the log's newest entry (any kind). */
  lastSeq: number;
  readSeq: number;
  /** Others' messages after readSeq, not deleted (up to 999 from the server; counted on by the SDK). */
  unread: number;
}

export type PresenceState = "online" | "away" | "offline";

/** A user's presence as the server last told it (`presence` frames). */
export interface UserPresence {
  user: string;
  /** online: active on some device lately; away: connected, not active; offline: no connection (or hidden). */
  state: PresenceState;
  /** RFC 3339: when the last connection ended (offline entries); null when hidden or never seen. */
  lastSeen: string | null;
  /** The user's presence version: an entry applies only over a lower one. */
  v: number;
}

/** `GET /v1/rooms/{room}/presence`. In groups larger than the server's roster limit,
 * `members` is empty and only the counts are given. */
export interface RoomPresence {
  members: { user: string; online: boolean; state: PresenceState; lastSeen: string | null }[];
  online: number;
  total: number;
}

/** A member's public positions in a room: messages up to deliveredSeq reached one of their
 * devices, those up to readSeq they have seen (readSeq <= deliveredSeq). */
export interface Receipt {
  user: string;
  deliveredSeq: number;
  readSeq: number;
}

/** The members other than a message's sender, each in one list by how far they got with it. */
export interface Readers {
  read: string[];
  /** Delivered, not read. */
  delivered: string[];
  /** Neither. */
  sent: string[];
}

/** An own message's status: in a direct room by the peer's positions; in a group, how many
 * of the n other members it was delivered to (readers included) and how many read it. */
export type MessageStatus = "sent" | "delivered" | "read" | { delivered: number; read: number; of: number };

export interface ReadOptions {
  /** Moves the user's own read position (their unread count, on every device) but not the
   * one the members see; a later public read shows what it covers. Default false. */
  private?: boolean;
}

/** `GET/PUT /v1/me/settings`. */
export interface UserSettings {
  /** Everybody sees the user offline, without lastSeen. */
  hidePresence: boolean;
}

/** `GET /v1/push`: what push notifications this deployment offers. */
export interface PushConfig {
  /** Web Push, with the key `pushManager.subscribe` takes as `applicationServerKey`
   * (base64url: see base64UrlToBytes); null when the server sends none. */
  webPush: { vapidPublicKey: string } | null;
  /** Whether the server notifies apps through a push gateway. */
  gateway: boolean;
  /** false: notifications carry ids only (no text). */
  includeText: boolean;
}

/** What every device is: one browser push subscription or one app install. */
interface DeviceBase {
  id: string;
  name?: string | null;
  createdAt: string;
}

export interface WebPushDevice extends DeviceBase {
  kind: "webpush";
  endpoint: string;
}

export interface GatewayDevice extends DeviceBase {
  kind: "gateway";
  appId: string;
  pushKey: string;
  /** Passed to the gateway as it is. */
  data?: Record<string, unknown> | null;
}

/** A device of `GET /v1/me/devices` (docs/protocol.md, "Devices"). */
export type Device = WebPushDevice | GatewayDevice;

/** The body of `POST /v1/me/devices`: a browser's `PushSubscription.toJSON()`, or an app's
 * push key (`appId` 1-64 printable ASCII, `pushKey` 1-512, `data` at most 1 KiB). `name`: at
 * most 100 characters. */
export type DeviceRegistration =
  | { kind: "webpush"; subscription: { endpoint: string; keys: { p256dh: string; auth: string }; expirationTime?: number | null }; name?: string }
  | { kind: "gateway"; appId: string; pushKey: string; data?: Record<string, unknown>; name?: string };

export interface NotificationQuery {
  /** 1-200 (the server's default: 50). */
  limit?: number;
  /** Only this room's. */
  room?: string;
}

export type NotificationOutcome = "queued" | "sent" | "collapsed" | "skipped" | "failed";

/** One decision of the ledger (`GET /v1/me/notifications`): why a message was notified, or
 * not. Reasons: skipped "online" | "read" | "deleted" | "no_device" | "left", failed
 * "rejected" | "gave_up" | "refused". */
export interface NotificationRecord {
  room: string;
  seq: number;
  messageId: string;
  sender: string;
  outcome: NotificationOutcome;
  reason?: string | null;
  /** collapsed: the later seq of the room whose notification covered this one. */
  collapsedInto?: number | null;
  attempts: number;
  /** Per device: "sent", or "rejected" by its push service; `error` while being retried. */
  devices: { device: string; kind: Device["kind"]; status: string; at?: string | null; error?: string | null }[];
  decidedAt: string;
  updatedAt: string;
}

/** The decrypted payload of chatd's Web Push messages (what a service worker reads). */
export type PushPayload =
  | {
      type: "message";
      /** The notification's id: the same when a resend follows a node's crash. */
      id: string;
      room: string;
      /** The group's name, or the sender for a direct room; absent with ids only. */
      roomName?: string;
      /** The newest message covered. */
      seq: number;
      messageId: string;
      sender: string;
      senders: string[];
      /** Absent when the server sends ids only (includeText false); cut to its max_text_chars. */
      text?: string;
      /** How many messages the notification covers. */
      count: number;
      /** The user's unread total over all rooms (the badge). */
      unread: number;
    }
  | { type: "badge"; id: string; room: string; unread: number };

export interface WebPushOptions {
  /** The service worker's script (default "/sw.js", the one chatd serves). */
  serviceWorker?: string;
  /** The device's name, shown in the user's device list (enableWebPush). */
  name?: string;
}

/** Web Push in this browser, for this user: "on" (subscribed, and the subscription is one of
 * the user's devices), "off", "blocked" (notifications denied), "unsupported" (by the browser),
 * "not_offered" (by the server). */
export type WebPushState = "on" | "off" | "blocked" | "unsupported" | "not_offered";

/** The page the client watches in a browser (the `document`): input reports `active`; the
 * open room is read while it is visible. */
export interface PageLike {
  readonly visibilityState: DocumentVisibilityState | string;
  addEventListener(type: string, listener: () => void, options?: boolean | AddEventListenerOptions): void;
  removeEventListener(type: string, listener: () => void, options?: boolean | EventListenerOptions): void;
}

/** One page of `GET /v1/rooms?limit=N&after=CURSOR` (limit 1-500, default 100). Pages come
 * in room-id order, not activity order; `next` is null on the last page, else pass it back
 * as `after`. `ChatClient.refreshRooms()` follows every page. */
export interface RoomPage {
  rooms: RoomSummary[];
  next: string | null;
}

/**
 * Every error the SDK reports: the server's refusals (WebSocket `error` frames, REST error
 * bodies) and the SDK's own ends ("stopped", "closed", "discarded").
 */
export declare class ChatError extends Error {
  constructor(code: string, message: string, details?: ChatErrorDetails);
  /**
   * A stable code from docs/protocol.md ("rate_limited", "text_too_long", "too_many_rooms",
   * ...), or the SDK's own:
   *   "stopped":   stop() was called before a send was confirmed, or before start() went online;
   *   "closed":    the server closed the connection asking the app to act first (4400-4499);
   *   "discarded": discard() dropped a message that was still on its way;
   *   "unsupported", "permission_denied", "subscribe_failed": enableWebPush() could not
   *                subscribe (no Push API here, notifications denied, the push service refused).
   */
  code: string;
  /** HTTP status, for REST errors. */
  status?: number;
  room?: string;
  clientMsgId?: string;
  retryAfterMs?: number;
  /** The server's request id, for "store_unavailable", "bus_unavailable" and "internal" (quote it in bug reports). */
  requestId?: string;
  /** Whether repeating the same request later can succeed (see isRetryable). */
  readonly retryable: boolean;
  /** From a WebSocket `error` frame. */
  static fromFrame(frame: { code: string; message: string; room?: string; clientMsgId?: string; retryAfterMs?: number; requestId?: string }): ChatError;
  /** From a REST error answer (`{"error": {...}}`, or anything a proxy sent instead). */
  static fromResponse(status: number, body: unknown): ChatError;
}

export interface ChatErrorDetails {
  status?: number;
  room?: string;
  clientMsgId?: string;
  retryAfterMs?: number;
  requestId?: string;
}

export interface ChatClientOptions {
  /** Server origin, e.g. "https://chat.example.com". Default: the page's origin. */
  baseUrl?: string;
  /** A JWT signed by your backend (sub = user id, exp required). */
  token?: string;
  /** Called for the first token (if `token` is not given) and whenever the server refuses the current one. */
  getToken?: () => Promise<string>;
  /** Application heartbeat period (default 15000; capped by the server's). */
  heartbeatMs?: number;
  /** Silence tolerated beyond a heartbeat period before reconnecting (default 10000). */
  pongTimeoutMs?: number;
  /** A sent message without an ack after this long is sent again (default 10000). */
  ackTimeoutMs?: number;
  /** New messages sent but not yet acked, at most (default 32). */
  maxInFlight?: number;
  /** A gap in a room is filled from history after this long (default 1000). */
  gapWaitMs?: number;
  /** Messages per history page (default 50). */
  pageSize?: number;
  /** Reconnect backoff: full jitter in [0, min(maxMs, baseMs * 2^attempt)) (defaults 250, 30000). */
  backoff?: { baseMs?: number; maxMs?: number };
  /** The typing TTL (default: the server's, from `welcome`; 6000 before it): own starts are refreshed every half of it, others' expire after it. */
  typingTtlMs?: number;
  /** `active` is reported at most this often (default 20000). */
  activeEveryMs?: number;
  /** Delivered and read reports per room, at most one per this period (default 500). */
  reportEveryMs?: number;
  /** The page to watch for input and visibility (default: the global `document`; null: none, so no
   * automatic `active` or reads: call activity() and markRead()). */
  document?: PageLike | null;
  /** Injectable for non-browser use. */
  WebSocket?: typeof WebSocket;
  fetch?: typeof fetch;
}

/** A send (or a change) in progress: resolves with the stored entry once acked. */
export type Sending = Promise<Message> & { clientMsgId: string };

export interface SendOptions {
  /** The seq of the message this one answers. */
  replyTo?: number;
}

export interface ChatEvents {
  state: ConnectionState;
  /** The room list changed: listed rooms, most recently active first. */
  rooms: Room[];
  /** A room's messages (or pending ones) changed: the room id. */
  room: string;
  /** A message arrived (live, replayed or filled in), each exactly once. */
  message: Message;
  /** An edit, delete or reaction arrived (live, replayed or filled in), each exactly once. */
  change: Message;
  ack: { clientMsgId: string; message: Message };
  /** A member's positions moved. */
  receipt: { room: string } & Receipt;
  /** Unread counts changed: the new total, and the rooms whose count changed with their count. */
  unread: { total: number; rooms: Record<string, number> };
  /** Users' presence changed; a snapshot replaced everybody's (`users` is all of it then). */
  presence: { snapshot: boolean; users: UserPresence[] };
  /** Who else is typing in a room changed. */
  typing: { room: string; users: string[] };
  error: ChatError;
}

export interface RoomEvents {
  /** The room's messages (or own pending ones) changed: render `room.messages()`. */
  messages: Room;
  /** A message arrived, each exactly once. */
  message: Message;
  /** An edit, delete or reaction arrived, each exactly once (`messages` follows). */
  change: Message;
  ack: { clientMsgId: string; message: Message };
  /** A member's positions moved. */
  receipt: { room: string } & Receipt;
  /** The unread count changed. */
  unread: { room: string; unread: number };
  /** Who else is typing changed. */
  typing: { room: string; users: string[] };
  /** The member list or the roles changed. */
  members: string[];
  /** The summary changed (lastMessage, unread, readSeq, members, roles). */
  summary: Room;
  /** The user left the room or was removed; its messages are forgotten. */
  removed: Room;
  /** Loading history (retried) or receipts for the room failed. */
  error: ChatError;
}

/**
 * One room of the client, made by it (`client.room(id)`, `client.rooms()`, `openDirect`,
 * `createGroup`): the summary's fields, the room's messages and history, sending, and its own
 * events. The same object stays valid while the client lives, also across leaving and
 * re-joining; `listed` says whether the room is in the user's list now.
 */
export interface Room extends Readonly<RoomSummary> {
  /** The summary as a plain object (null for a room never listed). */
  readonly summary: RoomSummary | null;
  readonly listed: boolean;
  /** Whether the newest page is loaded. */
  readonly loaded: boolean;
  /** Whether older history remains to be loaded. */
  readonly hasOlder: boolean;
  /** Messages offered again and dropped so far (diagnostics). */
  readonly duplicates: number;
  /** Who else is typing in the room now. */
  readonly typing: string[];
  on<K extends keyof RoomEvents>(event: K, listener: (value: RoomEvents[K]) => void): () => void;
  /** The messages as they stand (kind "message" only: changes are folded into them), sorted
   * by seq, own changes on their way applied (`changing`); then own pending or failed ones. */
  messages(): ShownMessage[];
  /** Message `seq` as it stands (stored changes only), if held. */
  message(seq: number): MessageState | undefined;
  /** The raw log: every entry held (messages and changes), sorted by seq. */
  entries(): Message[];
  /** The UI shows the room: loads the newest page if needed and the receipts; from now on
   * (until close() or another room's open()) what arrives is read while the page is visible. */
  open(): Promise<ShownMessage[]>;
  /** The UI no longer shows the room. */
  close(): void;
  /** Loads the newest page if needed, without showing the room. */
  load(): Promise<void>;
  /** Loads the page before the oldest message held; resolves with how many arrived. */
  loadOlder(): Promise<number>;
  /** Shows as pending at once; resolves with the stored message once acked, retried until then. */
  send(text: string, options?: SendOptions): Sending;
  /** Changes the text of own message `seq` (within the server's edit window). Sent like a
   * message: shown at once, retried until stored; refusals reject (forbidden,
   * edit_window_closed, message_not_found, empty_text, text_too_long). */
  edit(seq: number, text: string): Sending;
  /** Deletes message `seq` for everybody: own, or anyone's in a group the user owns or administers. */
  delete(seq: number): Sending;
  /** Adds the user's reaction (reacting twice changes nothing). */
  react(seq: number, emoji: string): Sending;
  /** Takes the user's reaction off. */
  unreact(seq: number, emoji: string): Sending;
  /** A member's role ("member" for anyone not in `roles`, everybody in a direct room). */
  roleOf(user: string): Role;
  /** Own stored message, not deleted (the server's edit window is not known here). */
  canEdit(message: { sender: string; seq: number | null; deleted?: boolean }): boolean;
  /** Own, or in a group the user owns or administers anyone's; stored, not deleted. */
  canDelete(message: { sender: string; seq: number | null; deleted?: boolean }): boolean;
  /** Themselves (leaving) always; in a group an owner anyone, an admin plain members. */
  canRemove(user: string): boolean;
  /** Whether the user owns the group (only owners change roles). */
  readonly canSetRoles: boolean;
  /** PUT /v1/rooms/{room}/members/{user}/role (owners only); members and roles follow the answer. */
  setRole(user: string, role: Role): Promise<RoomInfo>;
  /** Leaves the room (`room_removed` follows). */
  leave(): Promise<null>;
  /** Marks the room read up to `seq` (default: the newest message held without a gap); the
   * server hears it coalesced. */
  markRead(seq?: number, options?: ReadOptions): void;
  /** The members' public positions held (from `receipt` frames and loadReceipts()). */
  receipts(): Receipt[];
  /** Fetches the members' positions (GET /v1/rooms/{room}/receipts); resolves with receipts(). */
  loadReceipts(): Promise<Receipt[]>;
  /** Who of the members other than the sender of message `seq` read it, got it, or neither. */
  readers(seq: number): Readers;
  /** "sent" | "delivered" | "read" in a direct room; {delivered, read, of} in a group. */
  messageStatus(seq: number): MessageStatus;
  addMembers(members: string[]): Promise<RoomInfo>;
  removeMember(user: string): Promise<null>;
  presence(): Promise<RoomPresence>;
  toJSON(): RoomSummary | { id: string };
}

export declare class ChatClient {
  constructor(options: ChatClientOptions);
  readonly state: ConnectionState;
  readonly user: string | null;
  /** The server node of the current connection (diagnostics). */
  readonly node: string | null;
  on<K extends keyof ChatEvents>(event: K, listener: (value: ChatEvents[K]) => void): () => void;
  /**
   * Loads the user and room list, connects, and resolves once online. Failures on the way
   * are retried like a reconnect (backoff, close codes, getToken); rejects when only the app
   * can help (a refused token without getToken, a request no retry can cure, stop()).
   */
  start(): Promise<void>;
  /** Closes with 1000; every send still waiting rejects with ChatError "stopped". */
  stop(): void;
  /** Listed rooms, most recently active first (lastMessage.createdAt, else createdAt). */
  rooms(): Room[];
  /** A room of the user's list, or undefined. */
  room(id: string): Room | undefined;
  /** Stored messages sorted by seq, then own pending or failed ones. */
  messages(roomId: string): ShownMessage[];
  /** Loads a room's newest page if needed. */
  open(roomId: string): Promise<ShownMessage[]>;
  loadOlder(roomId: string): Promise<number>;
  hasOlder(roomId: string): boolean;
  /** Resolves with the stored message once acked; retried by the SDK until then. Edits,
   * deletes and reactions: see Room. */
  send(roomId: string, text: string, options?: SendOptions): Sending;
  /** Drops a failed message from the pending list. */
  discard(clientMsgId: string): void;
  /** Marks a room read (see Room.markRead); `{private: true}` keeps the members' view where it was. */
  markRead(roomId: string, seq?: number, options?: ReadOptions): void;
  /** Unread messages over all rooms (the server's total, counted on between its frames). */
  unreadTotal(): number;
  /** What the server last said of a user's presence; undefined if it never did. */
  presenceOf(user: string): UserPresence | undefined;
  /** The user is there: reports `active` at most once per activeEveryMs (automatic on page input). */
  activity(): void;
  /** Call with true on every keystroke in a room's composer, false when the user stops; sending stops it too. */
  setTyping(roomId: string, typing: boolean): void;
  /** Who else is typing in a room. */
  typingIn(roomId: string): string[];
  /** See Room.messageStatus. */
  messageStatus(roomId: string, seq: number): MessageStatus;
  /** The members' positions held for a room. */
  receipts(roomId: string): Receipt[];
  /** Fetches a room's receipts again. */
  loadReceipts(roomId: string): Promise<Receipt[]>;
  settings(): Promise<UserSettings>;
  /** e.g. {hidePresence: true}: everybody sees the user offline, at once and from then on. */
  updateSettings(settings: UserSettings): Promise<UserSettings>;
  /** Reloads every page of the room list; resolves with rooms(). */
  refreshRooms(): Promise<Room[]>;
  /** The direct room with `peer` (created if needed), listed. */
  openDirect(peer: string): Promise<Room>;
  createGroup(name: string, members: string[]): Promise<Room>;
  addMembers(roomId: string, members: string[]): Promise<RoomInfo>;
  removeMember(roomId: string, user: string): Promise<null>;
  /** Leaves a room (`room_removed` follows). */
  leave(roomId: string): Promise<null>;
  /** Gives a member of a group a role (owners only). */
  setRole(roomId: string, user: string, role: Role): Promise<RoomInfo>;
  presence(roomId: string): Promise<RoomPresence>;
  /** `GET /v1/push`: what push this deployment offers. */
  pushConfig(): Promise<PushConfig>;
  /** The user's devices, oldest first. */
  devices(): Promise<{ devices: Device[] }>;
  /** `POST /v1/me/devices`; `created` is false when the user had registered it already
   * (updated, same id). Refusals: too_many_devices, push_not_configured, bad_field. */
  registerDevice(registration: DeviceRegistration): Promise<{ device: Device; created: boolean }>;
  /** `DELETE /v1/me/devices/{id}`; rejects with device_not_found for an unknown id. */
  removeDevice(id: string): Promise<null>;
  /** The notification ledger, newest first: why notifications came or did not. */
  notifications(query?: NotificationQuery): Promise<{ notifications: NotificationRecord[] }>;
  /**
   * Browsers: turns Web Push on (asks for the permission if needed, registers the service
   * worker, subscribes with the server's VAPID key, registers the subscription); resolves
   * with the device. Rejects with ChatError "push_not_configured", "unsupported",
   * "permission_denied" or "subscribe_failed".
   */
  enableWebPush(options?: WebPushOptions): Promise<Device>;
  /** Browsers: removes this browser's subscription from the user's devices and unsubscribes
   * (nothing happens when it is no device of the user's). */
  disableWebPush(options?: WebPushOptions): Promise<void>;
  /** Where Web Push stands in this browser for this user. */
  webPushState(options?: WebPushOptions): Promise<WebPushState>;
  /** Any REST call with the client's token; throws ChatError with the server's code. */
  api<T = unknown>(method: string, path: string, body?: unknown): Promise<T>;
}

/**
 * One room's log (messages and changes): sorted by seq, de-duplicated, gaps reported. `floor` is the seq below
 * which history was deliberately not loaded; `contiguous` the highest seq such that
 * everything from floor up to it is held.
 */
export declare class RoomLog {
  constructor(id: string);
  readonly id: string;
  readonly loaded: boolean;
  readonly floor: number | null;
  readonly contiguous: number;
  /** When the first gap was first seen (ms), or null without a gap. */
  readonly gapSince: number | null;
  readonly duplicates: number;
  readonly size: number;
  insert(message: Message, now?: number): "new" | "duplicate";
  /** Adds messages in any order; returns the new ones, sorted by seq. */
  insertMany(messages: Message[], now?: number): Message[];
  setFloor(seq: number, now?: number): void;
  /** The message with this seq, if held. */
  get(seq: number): Message | undefined;
  /** Adds a page of older history, lowering the floor to `floor` first. */
  addOlder(messages: Message[], floor: number, now?: number): Message[];
  gap(): { after: number; before: number } | null;
  lowest(): number | null;
  list(): Message[];
}

/** The former name of RoomLog. @deprecated use RoomLog */
export declare const RoomState: typeof RoomLog;
/** @deprecated use RoomLog */
export type RoomState = RoomLog;

/** What an outbox item stores: a message (maybe a reply) or a change to message `target`. */
export interface Change {
  kind: EntryKind;
  target?: number;
  replyTo?: number;
  emoji?: string;
}

export interface OutboxItem extends Change {
  clientMsgId: string;
  room: string;
  /** The message's text, an edit's new text; "" for other changes. */
  text: string;
  sender: string | null;
  status: "pending" | "failed";
  sentAt: number | null;
  retryAt: number | null;
  attempts: number;
  createdAt: string;
  error?: ChatError;
}

/** Own messages and changes on their way, each with the promise its sender holds. */
export declare class Outbox {
  constructor(options?: { newId?: () => string });
  /** `change` defaults to a message. */
  add(room: string, text: string, sender: string | null, change?: Change): OutboxItem;
  /** The sender's promise: the stored message, or why it was not stored. */
  whenStored(clientMsgId: string): Promise<Message>;
  get(clientMsgId: string): OutboxItem | undefined;
  due(now: number, ackTimeoutMs: number): OutboxItem[];
  /** Sends what is due through `send`, at most `maxInFlight` awaiting acks. */
  flush(send: (frame: object) => boolean, now: number, limits: { ackTimeoutMs: number; maxInFlight: number }): void;
  markSent(item: OutboxItem, now: number): void;
  inFlight(): number;
  resendAll(): void;
  retryLater(clientMsgId: string, at: number): void;
  /** Removes the item and resolves its promise with `message`. */
  ack(clientMsgId: string, message?: Message): OutboxItem | undefined;
  /** Rejects its promise; a message stays as failed, a change is dropped. */
  fail(clientMsgId: string, error: ChatError): OutboxItem | undefined;
  failAll(reason: (item: OutboxItem) => ChatError): OutboxItem[];
  discard(clientMsgId: string): OutboxItem | undefined;
  forRoom(room: string): OutboxItem[];
  readonly size: number;
}

/** What one MessageFold.apply() did, in the order it happened (what unread counts follow). */
export interface FoldReport {
  /** Messages that arrived; `shown`: not deleted as they arrived. */
  arrived: { message: Message; shown: boolean }[];
  /** Messages deleted for the first time; `wasShown`: held and not deleted until then. */
  deleted: { message: Message; delete: Message; wasShown: boolean }[];
  /** The first delete of a message not held (it waits for the message). */
  waitingDeletes: Message[];
}

/**
 * The current state of a room's messages, folded from its log entries in any order (the
 * same state whatever the order): the edit with the highest seq gives the text, a delete is
 * absorbing, per (user, emoji) the reaction entry with the highest seq decides; a change
 * whose message is not held waits for it.
 */
export declare class MessageFold {
  constructor();
  /** Messages held. */
  readonly size: number;
  /** Changes that wait for their message. */
  readonly waiting: number;
  /** Takes entries in any order; a repeat changes nothing. */
  apply(entries: Message[]): FoldReport;
  /** Message `seq` as `viewer` sees it (`me` in reactions), with its reply preview when the answered message is held. */
  state(seq: number, viewer?: string | null): MessageState | undefined;
  /** Every message held, in seq order. */
  states(viewer?: string | null): MessageState[];
  /** The newest message held that is not deleted. */
  newest(viewer?: string | null): MessageState | null;
  /** What a reply to message `seq` shows, if it is held. */
  preview(seq: number, viewer?: string | null): ReplyPreview | undefined;
  isDeleted(seq: number): boolean;
  /** A state folded elsewhere (a room list's lastMessage) brought up to date with what is held. */
  update(known: MessageState, viewer?: string | null): MessageState;
}

/** What to do after the server closes with `code` (docs/protocol-rules.json, "close"). */
export declare function closeAction(code: number): CloseAction;
/** Full jitter: a random delay in [0, min(maxMs, baseMs * 2^attempt)). */
export declare function backoffDelay(attempt: number, options?: { baseMs?: number; maxMs?: number; random?: () => number }): number;
/** Whether a retry can cure the error (docs/protocol-rules.json, "errors"): store_unavailable,
 * bus_unavailable, rate_limited, internal, request_timeout, overloaded. */
export declare function isRetryable(code: string | undefined): boolean;
/** The bytes of a base64url text, e.g. PushConfig's vapidPublicKey for `pushManager.subscribe`. */
export declare function base64UrlToBytes(text: string): Uint8Array;
/** Development only: a token from the server's dev login. */
export declare function devLogin(baseUrl: string, user: string, fetchImpl?: typeof fetch): Promise<string>;
