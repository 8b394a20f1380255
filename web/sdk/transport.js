// transport.js: the one WebSocket of a client (docs/protocol.md, "WebSocket"). It connects,
// resumes after every `welcome`, keeps an application heartbeat (browsers cannot see
// WebSocket pings), and reconnects the way the close code says, with full-jitter backoff.
// What the frames mean is the client's business: it gets every frame through `onFrame`.

import { ChatError } from "./errors.js";
import { MAX_RESUME_ROOMS, PROTOCOL, closeAction, reconnectDelay, requestFailureAction } from "./rules.js";

/**
 * @typedef {import("./chatd.js").CloseAction} CloseAction
 * @typedef {{ baseMs?: number, maxMs?: number }} BackoffOptions
 *
 * @typedef {object} TransportOptions
 * @property {string} baseUrl
 * @property {typeof WebSocket} WebSocket
 * @property {import("./rest.js").Credentials} credentials
 * @property {number} heartbeatMs     the longest ping period wanted (the server's may be shorter)
 * @property {number} pongTimeoutMs   silence tolerated beyond a heartbeat period
 * @property {BackoffOptions} backoff
 *
 * @typedef {object} TransportHooks
 * @property {(frame: any) => void} onFrame        every frame, after the transport's own bookkeeping
 * @property {(state: "online" | "reconnecting") => void} onState   online: the connection's resume is answered
 * @property {(error: ChatError) => void} onGiveUp the transport stopped for good: only the app can help
 * @property {(error: ChatError) => void} onError  worth reporting, but the transport goes on
 * @property {() => Record<string, number>} resumePositions   per room, the last seq held without a gap
 */

const OPEN = 1; // WebSocket.OPEN, which injected implementations may not define

export class Transport {
  /** @type {string} */
  #url;
  /** @type {TransportOptions} */
  #options;
  /** @type {TransportHooks} */
  #hooks;
  #running = false;
  /** @type {(() => Promise<void>) | null} what must succeed before the first connection */
  #prepare = null;
  /** @type {WebSocket | null} */
  #ws = null;
  /** Whether the server sent `welcome` on this connection: until then it handles no frames. */
  #welcomed = false;
  /** How many resume frames sent after `welcome` are still unanswered. */
  #resuming = 0;
  /** Failed attempts since the last working connection, for the backoff. */
  #attempt = 0;
  /** @type {ReturnType<typeof setTimeout> | null} */
  #retryTimer = null;
  #lastHeard = 0;
  #lastPing = 0;
  /** @type {number} */
  #heartbeatMs;

  /**
   * @param {TransportOptions} options
   * @param {TransportHooks} hooks
   */
  constructor(options, hooks) {
    this.#options = options;
    this.#hooks = hooks;
    this.#url = options.baseUrl.replace(/^http/, "ws") + "/ws";
    this.#heartbeatMs = options.heartbeatMs;
  }

  /**
   * Connects and stays connected until stop(). `prepare` (the client's first load) must
   * succeed first; it is retried like a connection, by what its failure says.
   * @param {() => Promise<void>} [prepare]
   */
  start(prepare) {
    if (this.#running) return;
    this.#running = true;
    this.#attempt = 0;
    this.#prepare = prepare ?? null;
    this.#connect();
  }

  /** Closes the connection with 1000 and connects no more. */
  stop() {
    this.#running = false;
    this.#prepare = null;
    if (this.#retryTimer !== null) clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    const ws = this.#ws;
    this.#forget();
    ws?.close(1000, "bye");
  }

  /**
   * Sends a frame if the connection is open and welcomed; returns whether it went out.
   * @param {object} frame
   */
  send(frame) {
    if (this.#ws && this.#welcomed && this.#ws.readyState === OPEN) {
      this.#ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  /**
   * Called about once a second: pings the server, and gives up on a connection that has been
   * silent past a heartbeat period and the pong timeout (the server or the path is gone).
   * @param {number} [now]
   */
  heartbeat(now = Date.now()) {
    const ws = this.#ws;
    if (!ws || !this.#welcomed) return;
    if (now - this.#lastHeard > this.#heartbeatMs + this.#options.pongTimeoutMs) {
      this.#forget();
      ws.close();
      this.#closed(4000);
      return;
    }
    if (now - this.#lastPing >= this.#heartbeatMs / 2) {
      this.#lastPing = now;
      this.send({ type: "ping" });
    }
  }

  async #connect() {
    this.#retryTimer = null;
    if (!this.#running) return;
    if (this.#prepare) {
      try {
        await this.#prepare();
      } catch (error) {
        if (!this.#running) return;
        const chatError = error instanceof ChatError ? error : undefined;
        this.#retry(requestFailureAction(chatError?.code), chatError);
        return;
      }
      if (!this.#running) return;
      this.#prepare = null;
    }
    this.#open();
  }

  #open() {
    /** @type {WebSocket} */
    let ws;
    try {
      ws = new this.#options.WebSocket(this.#url, [PROTOCOL, "bearer." + this.#options.credentials.token]);
    } catch {
      this.#closed(1006); // e.g. a blocked URL: like a connection that dropped
      return;
    }
    this.#ws = ws;
    this.#welcomed = false;
    this.#lastHeard = Date.now();
    ws.onmessage = (event) => {
      if (ws !== this.#ws) return;
      this.#lastHeard = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame !== null && typeof frame === "object") this.#receive(frame);
    };
    ws.onclose = (event) => {
      if (ws !== this.#ws) return;
      this.#forget();
      this.#closed(event.code);
    };
    ws.onerror = () => {}; // onclose follows
  }

  /** @param {any} frame */
  #receive(frame) {
    if (frame.type === "welcome") {
      this.#welcomed = true;
      this.#heartbeatMs = Math.min(this.#options.heartbeatMs, frame.heartbeatMs ?? this.#options.heartbeatMs);
      // A resume names at most MAX_RESUME_ROOMS rooms: more rooms take several frames,
      // answered in order; the connection is online once every one is answered.
      const chunks = resumeChunks(this.#hooks.resumePositions());
      this.#resuming = chunks.length;
      for (const rooms of chunks) this.send({ type: "resume", rooms });
    } else if (frame.type === "resumed" && this.#resuming > 0) {
      this.#resuming -= 1;
      if (this.#resuming === 0) {
        this.#attempt = 0;
        this.#hooks.onState("online");
      }
    }
    this.#hooks.onFrame(frame);
  }

  #forget() {
    this.#ws = null;
    this.#welcomed = false;
    this.#resuming = 0;
  }

  /** @param {number} code */
  #closed(code) {
    const action = closeAction(code);
    this.#retry(action, action === "reauth" || action === "stop" ? closeError(code) : undefined);
  }

  /**
   * Acts on a failed connection or first load: a new token first, give up, or try again
   * after the wait the action and the attempt count call for.
   * @param {CloseAction} action
   * @param {ChatError} [cause]
   */
  async #retry(action, cause) {
    if (!this.#running) return;
    if (action === "reauth") {
      if (!this.#options.credentials.canRefresh) return this.#giveUp(cause);
      try {
        await this.#options.credentials.refresh();
      } catch {
        this.#hooks.onError(new ChatError("unauthorized", "could not get a new token"));
      }
      if (!this.#running) return;
    }
    if (action === "stop") return this.#giveUp(cause);
    this.#hooks.onState("reconnecting");
    const delay = cause?.retryAfterMs ?? reconnectDelay(action, this.#attempt, this.#options.backoff);
    this.#attempt += 1;
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
  }

  /** @param {ChatError} [cause] */
  #giveUp(cause) {
    this.#running = false;
    this.#prepare = null;
    this.#hooks.onGiveUp(cause ?? new ChatError("closed", "the connection ended for good"));
  }
}

/**
 * Why the server closed with a code that needs the app: a token refused, or a "stop".
 * @param {number} code
 */
function closeError(code) {
  if (code === 4401) return new ChatError("unauthorized", "the server refused the token");
  if (code === 4402) return new ChatError("token_expired", "the server refused the token");
  if (code === 4403) return new ChatError("unauthorized", "the server revoked the token");
  return new ChatError("closed", `the server closed the connection with ${code} and asks the app to act first`);
}

/**
 * Resume positions in frames of at most MAX_RESUME_ROOMS rooms (one frame, maybe empty, for
 * few rooms).
 * @param {Record<string, number>} positions
 * @returns {Record<string, number>[]}
 */
export function resumeChunks(positions) {
  const entries = Object.entries(positions);
  const chunks = [];
  for (let i = 0; i < entries.length; i += MAX_RESUME_ROOMS) {
    chunks.push(Object.fromEntries(entries.slice(i, i + MAX_RESUME_ROOMS)));
  }
  return chunks.length ? chunks : [{}];
}
