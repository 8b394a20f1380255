// rest.js: the REST half of the protocol (docs/protocol.md, "REST API"): the token every
// request carries, error bodies turned into ChatError, the paged room list followed to its
// end, and the push routes (devices, the notification ledger).

import { ChatError } from "./errors.js";

/**
 * @typedef {import("./chatd.js").Message} Message
 * @typedef {import("./chatd.js").RoomInfo} RoomInfo
 * @typedef {import("./chatd.js").RoomSummary} RoomSummary
 * @typedef {import("./chatd.js").RoomPage} RoomPage
 * @typedef {import("./chatd.js").Receipt} Receipt
 * @typedef {import("./chatd.js").RoomPresence} RoomPresence
 * @typedef {import("./chatd.js").UserSettings} UserSettings
 * @typedef {{ messages: Message[], more: boolean }} MessagePage
 * @typedef {import("./chatd.js").Role} Role
 * @typedef {import("./chatd.js").PushConfig} PushConfig
 * @typedef {import("./chatd.js").Device} Device
 * @typedef {import("./chatd.js").DeviceRegistration} DeviceRegistration
 * @typedef {import("./chatd.js").NotificationQuery} NotificationQuery
 * @typedef {import("./chatd.js").NotificationRecord} NotificationRecord
 * @typedef {{ after?: number, before?: number, limit?: number, order?: "asc" | "desc", view?: "log" | "state" }} HistoryQuery
 *   view: "log" (the server's default, and what the SDK reads: every entry, seqs without
 *   holes) or "state" (messages only, each as it stands)
 */

/** The token a client presents, and a fresh one from the app's `getToken` when it is refused. */
export class Credentials {
  /** @type {string | null} */
  #token;
  /** @type {(() => Promise<string>) | undefined} */
  #getToken;

  /**
   * @param {string | null | undefined} token
   * @param {(() => Promise<string>) | undefined} getToken
   */
  constructor(token, getToken) {
    this.#token = token ?? null;
    this.#getToken = getToken;
  }

  /** The current token (null until the first one is fetched). */
  get token() {
    return this.#token;
  }

  /** Whether a refused token can be replaced without the app stepping in. */
  get canRefresh() {
    return this.#getToken !== undefined;
  }

  /** The current token, fetching the first one if there is none yet. */
  async ensure() {
    return this.#token || this.refresh();
  }

  /** A new token from the app; throws when the app has no `getToken`. */
  async refresh() {
    if (!this.#getToken) throw new ChatError("unauthorized", "no token, and no getToken to ask for one");
    this.#token = await this.#getToken();
    return this.#token;
  }
}

/** Every REST route a client uses, with the client's token. */
export class RestClient {
  /** @type {string} */
  #baseUrl;
  /** @type {typeof fetch} */
  #fetch;
  /** @type {Credentials} */
  #credentials;

  /** @param {{ baseUrl: string, fetch: typeof fetch, credentials: Credentials }} options */
  constructor({ baseUrl, fetch, credentials }) {
    this.#baseUrl = baseUrl;
    this.#fetch = fetch;
    this.#credentials = credentials;
  }

  /**
   * One request; resolves with the JSON answer (null for 204), rejects with a ChatError
   * carrying the server's code and HTTP status (or the fetch error when nothing answered).
   * @param {string} method
   * @param {string} path
   * @param {unknown} [body]
   * @returns {Promise<any>}
   */
  async request(method, path, body) {
    return (await this.#exchange(method, path, body)).data;
  }

  /**
   * One request, with the HTTP status of its success (some answers mean two things: 201
   * created, 200 there already).
   * @param {string} method
   * @param {string} path
   * @param {unknown} [body]
   * @returns {Promise<{ status: number, data: any }>}
   */
  async #exchange(method, path, body) {
    const token = await this.#credentials.ensure();
    const response = await this.#fetch(this.#baseUrl + path, {
      method,
      headers: {
        authorization: "Bearer " + token,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 204) return { status: 204, data: null };
    const data = await response.json().catch(() => null);
    if (!response.ok) throw ChatError.fromResponse(response.status, data);
    return { status: response.status, data };
  }

  /** @returns {Promise<{ user: string }>} */
  me() {
    return this.request("GET", "/v1/me");
  }

  /**
   * Every page of `GET /v1/rooms` (pages come in room-id order).
   * @returns {Promise<RoomSummary[]>}
   */
  async listRooms() {
    /** @type {RoomSummary[]} */
    const list = [];
    const seen = new Set(); // cursors asked for, so a misbehaving server cannot loop us
    /** @type {string | null} */
    let after = null;
    for (;;) {
      const query = after === null ? "" : `&after=${encodeURIComponent(after)}`;
      /** @type {RoomPage | RoomSummary[]} */
      const page = await this.request("GET", `/v1/rooms?limit=500${query}`);
      if (Array.isArray(page)) return list.concat(page); // an older server: the whole list, unpaged
      list.push(...page.rooms);
      const next = page.next ?? null;
      if (next === null) return list;
      if (seen.has(next)) throw new ChatError("internal", "the room list repeated a page cursor");
      seen.add(next);
      after = next;
    }
  }

  /**
   * A page of a room's history.
   * @param {string} roomId
   * @param {HistoryQuery} query  sent in the order given
   * @returns {Promise<MessagePage>}
   */
  history(roomId, query) {
    const params = Object.entries(query)
      .map(([key, value]) => `${key}=${encodeURIComponent(String(value))}`)
      .join("&");
    return this.request("GET", `${roomPath(roomId)}/messages?${params}`);
  }

  /**
   * @param {string} roomId
   * @param {number} seq
   * @param {boolean} [isPrivate]  moves the user's own position only, not the members' view
   * @returns {Promise<{ readSeq: number }>}
   */
  markRead(roomId, seq, isPrivate = false) {
    return this.request("POST", `${roomPath(roomId)}/read`, isPrivate ? { seq, private: true } : { seq });
  }

  /**
   * Every member's public positions.
   * @param {string} roomId
   * @returns {Promise<{ members: Receipt[] }>}
   */
  receipts(roomId) {
    return this.request("GET", `${roomPath(roomId)}/receipts`);
  }

  /**
   * @param {string} peer
   * @returns {Promise<RoomInfo>}
   */
  openDirect(peer) {
    return this.request("POST", "/v1/rooms/direct", { peer });
  }

  /**
   * @param {string} name
   * @param {string[]} members
   * @returns {Promise<RoomInfo>}
   */
  createGroup(name, members) {
    return this.request("POST", "/v1/rooms", { name, members });
  }

  /**
   * @param {string} roomId
   * @param {string[]} members
   * @returns {Promise<RoomInfo>}
   */
  addMembers(roomId, members) {
    return this.request("POST", `${roomPath(roomId)}/members`, { members });
  }

  /**
   * @param {string} roomId
   * @param {string} user
   * @returns {Promise<null>}
   */
  removeMember(roomId, user) {
    return this.request("DELETE", `${roomPath(roomId)}/members/${encodeURIComponent(user)}`);
  }

  /**
   * Gives a member of a group a role (owners only).
   * @param {string} roomId
   * @param {string} user
   * @param {Role} role
   * @returns {Promise<RoomInfo>}
   */
  setRole(roomId, user, role) {
    return this.request("PUT", `${roomPath(roomId)}/members/${encodeURIComponent(user)}/role`, { role });
  }

  /**
   * @param {string} roomId
   * @returns {Promise<RoomPresence>}
   */
  presence(roomId) {
    return this.request("GET", `${roomPath(roomId)}/presence`);
  }

  /** @returns {Promise<UserSettings>} */
  settings() {
    return this.request("GET", "/v1/me/settings");
  }

  /**
   * @param {UserSettings} settings
   * @returns {Promise<UserSettings>}
   */
  updateSettings(settings) {
    return this.request("PUT", "/v1/me/settings", settings);
  }

  /** @returns {Promise<PushConfig>} */
  pushConfig() {
    return this.request("GET", "/v1/push");
  }

  /** @returns {Promise<{ devices: Device[] }>} */
  devices() {
    return this.request("GET", "/v1/me/devices");
  }

  /**
   * Registers a browser subscription or an app install; `created` is false when the caller
   * had registered it already (the same device, updated).
   * @param {DeviceRegistration} registration
   * @returns {Promise<{ device: Device, created: boolean }>}
   */
  async registerDevice(registration) {
    const { status, data } = await this.#exchange("POST", "/v1/me/devices", registration);
    return { device: data, created: status === 201 };
  }

  /**
   * @param {string} id
   * @returns {Promise<null>}
   */
  removeDevice(id) {
    return this.request("DELETE", `/v1/me/devices/${encodeURIComponent(id)}`);
  }

  /**
   * The notification ledger, newest first.
   * @param {NotificationQuery} [query]
   * @returns {Promise<{ notifications: NotificationRecord[] }>}
   */
  notifications({ limit, room } = {}) {
    const params = new URLSearchParams();
    if (limit !== undefined) params.set("limit", String(limit));
    if (room !== undefined) params.set("room", room);
    const query = params.toString();
    return this.request("GET", `/v1/me/notifications${query ? `?${query}` : ""}`);
  }
}

/**
 * The bytes of a base64url text (with or without padding), e.g. the VAPID public key of
 * `GET /v1/push`, which `pushManager.subscribe` takes as its `applicationServerKey`.
 * @param {string} text
 * @returns {Uint8Array<ArrayBuffer>}
 */
export function base64UrlToBytes(text) {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, "");
  return Uint8Array.from(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, "=")), (c) => c.charCodeAt(0));
}

/** @param {string} roomId */
function roomPath(roomId) {
  return `/v1/rooms/${encodeURIComponent(roomId)}`;
}

/**
 * Development only: a token from the server's dev login (404 when it is disabled).
 * @param {string} baseUrl
 * @param {string} user
 * @param {typeof fetch} [fetchImpl]
 * @returns {Promise<string>}
 */
export async function devLogin(baseUrl, user, fetchImpl = globalThis.fetch.bind(globalThis)) {
  const response = await fetchImpl(baseUrl + "/v1/dev/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user }),
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) throw ChatError.fromResponse(response.status, data);
  return data.token;
}
