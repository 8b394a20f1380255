// Type declarations for chatd.js, the browser SDK of chatd (docs/protocol.md).

export declare const PROTOCOL: "chatd.v1";

export type ConnectionState = "connecting" | "online" | "reconnecting" | "offline";
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

export interface Room {
  id: string;
  kind: "direct" | "group";
  name: string | null;
  members: string[];
  createdBy: string;
  createdAt: string;
}

export interface RoomSummary extends Room {
  lastMessage: Message | null;
  lastSeq: number;
  readSeq: number;
  unread: number;
}

/** One page of `GET /v1/rooms?limit=N&after=CURSOR` (limit 1-500, default 100). Pages come
 * in room-id order, not activity order; `next` is null on the last page, else pass it back
 * as `after`. `ChatClient.refreshRooms()` follows every page. */
export interface RoomPage {
  rooms: RoomSummary[];
  next: string | null;
}

export interface ChatError extends Error {
  /** A stable code from docs/protocol.md, e.g. "rate_limited", "text_too_long", "too_many_rooms". */
  code: string;
  room?: string;
  clientMsgId?: string;
  retryAfterMs?: number;
  /** The server's request id, for "store_unavailable", "bus_unavailable" and "internal" (quote it in bug reports). */
  requestId?: string;
  /** HTTP status, for REST errors. */
  status?: number;
}

export interface ChatClientOptions {
  /** Server origin, e.g. "https://chat.example.com". Default: the page's origin. */
  baseUrl?: string;
  /** A JWT signed by your backend (sub = user id, exp required). */
  token?: string;
  /** Called for the first token and whenever the server refuses the current one. */
  getToken?: () => Promise<string>;
  /** Application heartbeat period (default 15000; capped by the server's). */
  heartbeatMs?: number;
  pongTimeoutMs?: number;
  /** A sent message without an ack after this long is sent again (default 10000). */
  ackTimeoutMs?: number;
  /** New messages sent but not yet acked, at most (default 32). */
  maxInFlight?: number;
  /** A gap in a room is filled from history after this long (default 1000). */
  gapWaitMs?: number;
  /** Messages per history page (default 50). */
  pageSize?: number;
  backoff?: { baseMs?: number; maxMs?: number };
  /** Injectable for non-browser use. */
  WebSocket?: typeof WebSocket;
  fetch?: typeof fetch;
}

export interface ChatEvents {
  state: ConnectionState;
  rooms: RoomSummary[];
  room: string;
  message: Message;
  ack: { clientMsgId: string; message: Message };
  receipt: { room: string; user: string; readSeq: number };
  error: ChatError;
}

export declare class ChatClient {
  constructor(options: ChatClientOptions);
  readonly state: ConnectionState;
  readonly user: string | null;
  /** The server node of the current connection (diagnostics). */
  readonly node: string | null;
  on<K extends keyof ChatEvents>(event: K, listener: (value: ChatEvents[K]) => void): () => void;
  /** Loads the room list and connects; reconnects by itself until stop(). */
  start(): Promise<void>;
  stop(): void;
  /** Room summaries, most recently active first (lastMessage.createdAt, else createdAt). */
  rooms(): RoomSummary[];
  room(id: string): RoomSummary | undefined;
  /** Stored messages sorted by seq, then own pending or failed ones. */
  messages(roomId: string): ShownMessage[];
  /** Loads a room's newest page if needed. */
  open(roomId: string): Promise<ShownMessage[]>;
  loadOlder(roomId: string): Promise<number>;
  hasOlder(roomId: string): boolean;
  /** Resolves with the stored message once acked; retried by the SDK until then. */
  send(roomId: string, text: string): Promise<Message> & { clientMsgId: string };
  discard(clientMsgId: string): void;
  markRead(roomId: string, seq?: number): void;
  /** Reloads every page of the room list; resolves with rooms(). */
  refreshRooms(): Promise<RoomSummary[]>;
  openDirect(peer: string): Promise<Room>;
  createGroup(name: string, members: string[]): Promise<Room>;
  addMembers(roomId: string, members: string[]): Promise<Room>;
  removeMember(roomId: string, user: string): Promise<null>;
  presence(roomId: string): Promise<{ members: { user: string; online: boolean }[] }>;
  api<T = unknown>(method: string, path: string, body?: unknown): Promise<T>;
}

/** One room's messages: sorted by seq, de-duplicated, gaps reported. */
export declare class RoomState {
  constructor(id: string);
  readonly id: string;
  readonly loaded: boolean;
  floor: number | null;
  contiguous: number;
  duplicates: number;
  insert(message: Message, now?: number): "new" | "duplicate";
  setFloor(seq: number, now?: number): void;
  gap(): { after: number; before: number } | null;
  lowest(): number | null;
  list(): Message[];
}

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

export declare class Outbox {
  constructor(options?: { newId?: () => string });
  add(room: string, text: string, sender: string | null): OutboxItem;
  due(now: number, ackTimeoutMs: number): OutboxItem[];
  markSent(item: OutboxItem, now: number): void;
  inFlight(): number;
  resendAll(): void;
  retryLater(clientMsgId: string, at: number): void;
  ack(clientMsgId: string): OutboxItem | undefined;
  fail(clientMsgId: string, error: ChatError): OutboxItem | undefined;
  forRoom(room: string): OutboxItem[];
  readonly size: number;
}

export declare function closeAction(code: number): CloseAction;
export declare function backoffDelay(attempt: number, options?: { baseMs?: number; maxMs?: number; random?: () => number }): number;
/** Whether a retry can cure the error: store_unavailable, bus_unavailable, rate_limited,
 * internal, request_timeout, overloaded. */
export declare function isRetryable(code: string): boolean;
/** Development only: a token from the server's dev login. */
export declare function devLogin(baseUrl: string, user: string, fetchImpl?: typeof fetch): Promise<string>;
