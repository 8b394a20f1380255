// Type declarations for @chatd/sdk (chatd.js and the modules it re-exports), the browser SDK
// of chatd. The protocol: docs/protocol.md; its rules as data: docs/protocol-rules.json.

export declare const PROTOCOL: "chatd.v1";
export declare const PROTOCOL_VERSION: 1;

export type ConnectionState = "connecting" | "online" | "reconnecting" | "offline";
/** What a client does after a close: reconnect now, back off, get a new token, or stop. */
export type CloseAction = "now" | "backoff" | "reauth" | "stop";

export interface Message {
  id: string;
  room: string;
  /** Position in the room: 1, 2, 3, ... with no gaps. The order. */
  seq: number;
  sender: string;
  clientMsgId: string;
  text: string;
  /** RFC 3339, UTC, milliseconds. Never decreases as seq grows. */
  createdAt: string;
}

/** A message as the UI shows it: stored ("sent") or own and not yet stored. */
export interface ShownMessage extends Omit<Message, "id" | "seq"> {
  id: string | null;
  seq: number | null;
  status: "sent" | "pending" | "failed";
  error?: ChatError;
}

/** A room as REST and `room_added` describe it. */
export interface RoomInfo {
  id: string;
  kind: "direct" | "group";
  /** Groups have a name; direct rooms do not. */
  name: string | null;
  members: string[];
  createdBy: string;
  createdAt: string;
}

/** A room of `GET /v1/rooms`: its info and where the user stands in it. */
export interface RoomSummary extends RoomInfo {
  lastMessage: Message | null;
  lastSeq: number;
  readSeq: number;
  /** Others' messages after readSeq (up to 999 from the server; counted on by the SDK). */
  unread: number;
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
   *   "discarded": discard() dropped a message that was still on its way.
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
  /** Injectable for non-browser use. */
  WebSocket?: typeof WebSocket;
  fetch?: typeof fetch;
}

/** A send in progress: resolves with the stored message once acked. */
export type Sending = Promise<Message> & { clientMsgId: string };

export interface ChatEvents {
  state: ConnectionState;
  /** The room list changed: listed rooms, most recently active first. */
  rooms: Room[];
  /** A room's messages (or pending ones) changed: the room id. */
  room: string;
  /** A message arrived (live, replayed or filled in), each exactly once. */
  message: Message;
  ack: { clientMsgId: string; message: Message };
  receipt: { room: string; user: string; readSeq: number };
  error: ChatError;
}

export interface RoomEvents {
  /** The room's messages (or own pending ones) changed: render `room.messages()`. */
  messages: Room;
  /** A message arrived, each exactly once. */
  message: Message;
  ack: { clientMsgId: string; message: Message };
  receipt: { room: string; user: string; readSeq: number };
  /** The member list changed. */
  members: string[];
  /** The summary changed (lastMessage, unread, readSeq, members). */
  summary: Room;
  /** The user left the room or was removed; its messages are forgotten. */
  removed: Room;
  /** Loading history for the room failed (it is retried). */
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
  on<K extends keyof RoomEvents>(event: K, listener: (value: RoomEvents[K]) => void): () => void;
  /** Stored messages sorted by seq, then own pending or failed ones. */
  messages(): ShownMessage[];
  /** Loads the newest page if needed (call when the UI opens the room). */
  open(): Promise<ShownMessage[]>;
  /** Loads the page before the oldest message held; resolves with how many arrived. */
  loadOlder(): Promise<number>;
  /** Shows as pending at once; resolves with the stored message once acked, retried until then. */
  send(text: string): Sending;
  /** Marks the room read up to `seq` (default: the newest message held without a gap). */
  markRead(seq?: number): void;
  addMembers(members: string[]): Promise<RoomInfo>;
  removeMember(user: string): Promise<null>;
  presence(): Promise<{ members: { user: string; online: boolean }[] }>;
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
  /** Resolves with the stored message once acked; retried by the SDK until then. */
  send(roomId: string, text: string): Sending;
  /** Drops a failed message from the pending list. */
  discard(clientMsgId: string): void;
  markRead(roomId: string, seq?: number): void;
  /** Reloads every page of the room list; resolves with rooms(). */
  refreshRooms(): Promise<Room[]>;
  /** The direct room with `peer` (created if needed), listed. */
  openDirect(peer: string): Promise<Room>;
  createGroup(name: string, members: string[]): Promise<Room>;
  addMembers(roomId: string, members: string[]): Promise<RoomInfo>;
  removeMember(roomId: string, user: string): Promise<null>;
  presence(roomId: string): Promise<{ members: { user: string; online: boolean }[] }>;
  /** Any REST call with the client's token; throws ChatError with the server's code. */
  api<T = unknown>(method: string, path: string, body?: unknown): Promise<T>;
}

/**
 * One room's messages: sorted by seq, de-duplicated, gaps reported. `floor` is the seq below
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

export interface OutboxItem {
  clientMsgId: string;
  room: string;
  text: string;
  sender: string | null;
  status: "pending" | "failed";
  sentAt: number | null;
  retryAt: number | null;
  attempts: number;
  createdAt: string;
  error?: ChatError;
}

/** Own messages on their way, each with the promise its sender holds. */
export declare class Outbox {
  constructor(options?: { newId?: () => string });
  add(room: string, text: string, sender: string | null): OutboxItem;
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
  /** Keeps the item as failed and rejects its promise. */
  fail(clientMsgId: string, error: ChatError): OutboxItem | undefined;
  failAll(reason: (item: OutboxItem) => ChatError): OutboxItem[];
  discard(clientMsgId: string): OutboxItem | undefined;
  forRoom(room: string): OutboxItem[];
  readonly size: number;
}

/** What to do after the server closes with `code` (docs/protocol-rules.json, "close"). */
export declare function closeAction(code: number): CloseAction;
/** Full jitter: a random delay in [0, min(maxMs, baseMs * 2^attempt)). */
export declare function backoffDelay(attempt: number, options?: { baseMs?: number; maxMs?: number; random?: () => number }): number;
/** Whether a retry can cure the error (docs/protocol-rules.json, "errors"): store_unavailable,
 * bus_unavailable, rate_limited, internal, request_timeout, overloaded. */
export declare function isRetryable(code: string | undefined): boolean;
/** Development only: a token from the server's dev login. */
export declare function devLogin(baseUrl: string, user: string, fetchImpl?: typeof fetch): Promise<string>;
