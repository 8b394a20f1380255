// errors.js: ChatError, the one error type the SDK reports, whether the server refused
// something (a WebSocket `error` frame or a REST error body) or the SDK gave up on it.

import { isRetryable } from "./rules.js";

/**
 * @typedef {object} ErrorDetails
 * @property {number} [status]        HTTP status, for REST errors
 * @property {string} [room]
 * @property {string} [clientMsgId]
 * @property {number} [retryAfterMs]
 * @property {string} [requestId]     the server's log id for internal errors
 */

export class ChatError extends Error {
  /**
   * @param {string} code     a code from docs/protocol.md, or one of the SDK's own: "stopped",
   *                          "closed", "discarded"
   * @param {string} message
   * @param {ErrorDetails} [details]
   */
  constructor(code, message, { status, room, clientMsgId, retryAfterMs, requestId } = {}) {
    super(message);
    this.name = "ChatError";
    /** @type {string} */
    this.code = code;
    /** @type {number | undefined} */
    this.status = status;
    /** @type {string | undefined} */
    this.room = room;
    /** @type {string | undefined} */
    this.clientMsgId = clientMsgId;
    /** @type {number | undefined} */
    this.retryAfterMs = retryAfterMs;
    /** @type {string | undefined} */
    this.requestId = requestId;
  }

  /** Whether repeating the same request later can succeed. */
  get retryable() {
    return isRetryable(this.code);
  }

  /**
   * From a WebSocket `error` frame.
   * @param {{ code: string, message: string, room?: string, clientMsgId?: string, retryAfterMs?: number, requestId?: string }} frame
   */
  static fromFrame(frame) {
    const { room, clientMsgId, retryAfterMs, requestId } = frame;
    return new ChatError(frame.code, frame.message, { room, clientMsgId, retryAfterMs, requestId });
  }

  /**
   * From a REST error answer: `{"error": {code, message, retryAfterMs?, requestId?}}`, or
   * whatever a proxy in between sent instead.
   * @param {number} status
   * @param {any} body  the parsed body, or null when it was not JSON
   */
  static fromResponse(status, body) {
    const error = body?.error;
    if (!error || typeof error.code !== "string") return new ChatError("internal", `HTTP ${status}`, { status });
    return new ChatError(error.code, error.message, { status, retryAfterMs: error.retryAfterMs, requestId: error.requestId });
  }
}
