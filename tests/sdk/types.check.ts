// Compile-time only (tsc -p tests/sdk/tsconfig.json): each module's exports, as implemented,
// must be assignable to what chatd.d.ts declares. An import of "chatd.js" resolves to
// chatd.d.ts, so the declarations come from there and the implementations from the modules
// (ChatClient, defined in chatd.js itself, is checked there with @implements).

import type * as Declared from "../../web/sdk/chatd.js";
import * as errors from "../../web/sdk/errors.js";
import * as rest from "../../web/sdk/rest.js";
import * as rooms from "../../web/sdk/rooms.js";
import * as rules from "../../web/sdk/rules.js";

export const implementations: {
  [K in keyof typeof Declared]: (typeof Declared)[K];
} = {
  PROTOCOL: rules.PROTOCOL,
  PROTOCOL_VERSION: rules.PROTOCOL_VERSION,
  closeAction: rules.closeAction,
  backoffDelay: rules.backoffDelay,
  isRetryable: rules.isRetryable,
  ChatError: errors.ChatError,
  devLogin: rest.devLogin,
  base64UrlToBytes: rest.base64UrlToBytes,
  RoomLog: rooms.RoomLog,
  RoomState: rooms.RoomLog,
  Outbox: rooms.Outbox,
  MessageFold: rooms.MessageFold,
  // chatd.js's own class; checked by @implements in chatd.js, listed so none is forgotten.
  ChatClient: null as unknown as typeof Declared.ChatClient,
};

// A Room, as implemented, is what chatd.d.ts calls a Room.
export const room: (r: rooms.Room) => Declared.Room = (r) => r;

// What the push routes answer, as implemented, is what chatd.d.ts declares.
export const pushRoutes: (r: rest.RestClient) => Pick<Declared.ChatClient, "pushConfig" | "devices" | "registerDevice" | "removeDevice" | "notifications"> = (r) => ({
  pushConfig: () => r.pushConfig(),
  devices: () => r.devices(),
  registerDevice: (registration) => r.registerDevice(registration),
  removeDevice: (id) => r.removeDevice(id),
  notifications: (query) => r.notifications(query),
});

// A service worker can tell the two payloads apart by `type`.
export const payloadText = (p: Declared.PushPayload): string => (p.type === "message" ? (p.text ?? `${p.count} new`) : String(p.unread));
