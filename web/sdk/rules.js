// rules.js: the protocol's rules a client follows, in one place: the subprotocol, what to do
// after each close code, which error codes a retry can cure, and how long to wait.
//
// docs/protocol-rules.json holds the same table, written by the protocol crate; the SDK's tests
// check that these rules agree with it. Change both together (docs/protocol.md explains them).

/** @typedef {import("./chatd.js").CloseAction} CloseAction */

/** The WebSocket subprotocol a client offers (with `bearer.<token>`); the server selects it. */
export const PROTOCOL = "chatd.v1";
/** The protocol version the server announces in `welcome.v`. */
export const PROTOCOL_VERSION = 1;
/** Rooms one `resume` frame may name (the server refuses more with `bad_field`). */
export const MAX_RESUME_ROOMS = 1000;

/**
 * What to do after the server closes with a code, by range; the first match wins.
 *   now:     reconnect at once and resume (a dropped connection, a draining node, a heartbeat);
 *   backoff: reconnect after an exponential, jittered wait (anything not listed);
 *   reauth:  get a new token first;
 *   stop:    the user or app must act first.
 * @type {Readonly<{ ranges: ReadonlyArray<Readonly<{ from: number, to: number, action: CloseAction }>>, otherwise: CloseAction }>}
 */
export const CLOSE_RULES = Object.freeze({
  ranges: Object.freeze([
    Object.freeze({ from: 1000, to: 1001, action: "now" }),
    Object.freeze({ from: 1005, to: 1006, action: "now" }),
    Object.freeze({ from: 1012, to: 1012, action: "now" }),
    Object.freeze({ from: 4000, to: 4099, action: "now" }),
    Object.freeze({ from: 4401, to: 4403, action: "reauth" }),
    Object.freeze({ from: 4400, to: 4499, action: "stop" }),
  ]),
  otherwise: "backoff",
});

/**
 * What to do after the server closes with `code`.
 * @param {number} code
 * @returns {CloseAction}
 */
export function closeAction(code) {
  const range = CLOSE_RULES.ranges.find((r) => code >= r.from && code <= r.to);
  return range ? range.action : CLOSE_RULES.otherwise;
}

/** Error codes that a later retry of the same request can cure (not, say, `too_many_rooms`). */
export const RETRYABLE_CODES = Object.freeze(["store_unavailable", "bus_unavailable", "rate_limited", "internal", "request_timeout", "overloaded"]);
const RETRYABLE = new Set(RETRYABLE_CODES);

/**
 * @param {string | undefined} code
 * @returns {boolean}
 */
export function isRetryable(code) {
  return code !== undefined && RETRYABLE.has(code);
}

/**
 * What to do after a REST request failed, in the words of the close rules, so that starting
 * up retries the way reconnecting does. `code` is the error code of the answer, or undefined
 * when no answer came (the network), which is treated like a dropped connection.
 * @param {string | undefined} code
 * @returns {CloseAction}
 */
export function requestFailureAction(code) {
  if (code === undefined) return "now";
  if (code === "unauthorized" || code === "token_expired") return "reauth";
  return isRetryable(code) ? "backoff" : "stop";
}

/**
 * Exponential backoff with full jitter: a random delay in [0, min(max, base * 2^attempt)).
 * @param {number} attempt
 * @param {{ baseMs?: number, maxMs?: number, random?: () => number }} [options]
 * @returns {number}
 */
export function backoffDelay(attempt, { baseMs = 250, maxMs = 30000, random = Math.random } = {}) {
  const cap = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 20));
  return Math.floor(random() * cap);
}

/**
 * The wait before reconnect attempt number `attempt` (0 for the first after a working
 * connection). A first "now" waits only 100-500 ms, spread so that the clients of a node that
 * just went away do not all arrive at the same instant; everything else backs off.
 * @param {CloseAction} action
 * @param {number} attempt
 * @param {{ baseMs?: number, maxMs?: number, random?: () => number }} [backoff]
 * @returns {number}
 */
export function reconnectDelay(action, attempt, backoff = {}) {
  const random = backoff.random ?? Math.random;
  return action === "now" && attempt === 0 ? 100 + random() * 400 : backoffDelay(attempt, backoff);
}
