// rooms.js: what the SDK holds, as plain state classes (time comes in as an argument, so
// their rules are testable without a server or a clock), and the Room built on them.
//   - RoomLog keeps a room's log (messages and changes to them) sorted by seq, each entry
//     once, and finds the gaps;
//   - MessageFold folds the log into the messages' current state: text after edits,
//     deletions, reactions, reply previews (docs/protocol.md, "Changes");
//   - Outbox holds own messages and changes until the server stores them;
//   - Receipts, the members' delivered and read positions in a room, and PositionReporter,
//     which paces the positions the client reports itself (docs/protocol.md, "Delivered and
//     read receipts");
//   - PresenceBook, everybody's presence; TypingBoard, who else types in each room;
//     TypingReporter, which paces the user's own typing ("Presence", "Typing");
//   - Room, the object an app works with: its summary, messages, history, receipts, events.

import { ChatError } from "./errors.js";

/**
 * @typedef {import("./chatd.js").Message} Message
 * @typedef {import("./chatd.js").ShownMessage} ShownMessage
 * @typedef {import("./chatd.js").RoomSummary} RoomSummary
 * @typedef {import("./chatd.js").RoomEvents} RoomEvents
 * @typedef {import("./chatd.js").OutboxItem} OutboxItem
 * @typedef {import("./chatd.js").Receipt} Receipt
 * @typedef {import("./chatd.js").Readers} Readers
 * @typedef {import("./chatd.js").MessageStatus} MessageStatus
 * @typedef {import("./chatd.js").ReadOptions} ReadOptions
 * @typedef {import("./chatd.js").UserPresence} UserPresence
 * @typedef {import("./chatd.js").PresenceState} PresenceState
 * @typedef {import("./chatd.js").Sending} Sending
 * @typedef {import("./chatd.js").Room} DeclaredRoom
 * @typedef {import("./chatd.js").RoomLog} DeclaredRoomLog
 * @typedef {import("./chatd.js").Outbox} DeclaredOutbox
 * @typedef {import("./chatd.js").MessageFold} DeclaredMessageFold
 * @typedef {import("./chatd.js").MessageState} MessageState
 * @typedef {import("./chatd.js").Reaction} Reaction
 * @typedef {import("./chatd.js").ReplyPreview} ReplyPreview
 * @typedef {import("./chatd.js").FoldReport} FoldReport
 * @typedef {import("./chatd.js").EntryKind} EntryKind
 * @typedef {import("./chatd.js").Change} Change
 * @typedef {import("./chatd.js").Role} Role
 * @typedef {import("./chatd.js").SendOptions} SendOptions
 */

/**
 * Listeners by event name. A failing listener is logged and does not keep the others from
 * hearing the event (shared by ChatClient and Room).
 * @template {object} Events
 */
export class Emitter {
  /** @type {Map<keyof Events, Set<(value: any) => void>>} */
  #listeners = new Map();

  /**
   * @template {keyof Events} K
   * @param {K} event
   * @param {(value: Events[K]) => void} listener
   * @returns {() => void} unsubscribes
   */
  on(event, listener) {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
    };
  }

  /**
   * @template {keyof Events} K
   * @param {K} event
   * @param {Events[K]} value
   */
  emit(event, value) {
    for (const listener of this.#listeners.get(event) ?? []) {
      try {
        listener(value);
      } catch (e) {
        console.error("chatd: listener failed", e);
      }
    }
  }
}

// ---- RoomLog ----------------------------------------------------------------------------

/**
 * One room's messages as the UI shows them: sorted by seq, each once, in an array kept
 * sorted. A live message lands at the end in O(1), a single late one by binary search, and a
 * page of history is merged in one pass (O(n + k), never a re-sort), so loading history page
 * by page stays cheap.
 *
 * `floor` is the seq below which history was deliberately not loaded (older pages load on
 * demand); `contiguous` is the highest seq such that everything from floor up to it is held.
 * @implements {DeclaredRoomLog}
 */
export class RoomLog {
  /** @type {string} */
  #id;
  /** @type {Message[]} sorted by seq, no seq twice */
  #messages = [];
  /** @type {number | null} null: nothing loaded yet */
  #floor = null;
  #contiguous = 0;
  /** @type {number | null} when the current first gap was first seen */
  #gapSince = null;
  #duplicates = 0;

  /** @param {string} id */
  constructor(id) {
    this.#id = id;
  }

  get id() {
    return this.#id;
  }

  /** Whether the newest page was loaded, so resume and gap detection apply. */
  get loaded() {
    return this.#floor !== null;
  }

  get floor() {
    return this.#floor;
  }

  get contiguous() {
    return this.#contiguous;
  }

  get gapSince() {
    return this.#gapSince;
  }

  /** Messages offered again and dropped (replays, retries, overlapping pages). */
  get duplicates() {
    return this.#duplicates;
  }

  get size() {
    return this.#messages.length;
  }

  /**
   * Adds a message; returns "new" or "duplicate".
   * @param {Message} message
   * @param {number} [now]
   * @returns {"new" | "duplicate"}
   */
  insert(message, now = Date.now()) {
    return this.insertMany([message], now).length === 1 ? "new" : "duplicate";
  }

  /**
   * Adds messages in any order; returns those that were new, sorted by seq.
   * @param {Message[]} messages
   * @param {number} [now]
   * @returns {Message[]}
   */
  insertMany(messages, now = Date.now()) {
    const sorted = [...messages].sort((a, b) => a.seq - b.seq);
    /** @type {Message[]} */
    const fresh = [];
    for (const message of sorted) {
      const known =
        (this.loaded && message.seq <= /** @type {number} */ (this.#floor)) ||
        fresh.at(-1)?.seq === message.seq ||
        this.#messages[this.#firstAtOrAbove(message.seq)]?.seq === message.seq;
      if (known) this.#duplicates += 1;
      else fresh.push(message);
    }
    if (fresh.length > 0) this.#messages = merge(this.#messages, fresh);
    this.#advance(now);
    return fresh;
  }

  /**
   * Marks history up to `seq` as deliberately not loaded (a newest page was loaded).
   * @param {number} seq
   * @param {number} [now]
   */
  setFloor(seq, now = Date.now()) {
    this.#floor = this.#floor === null ? seq : Math.min(this.#floor, seq);
    this.#contiguous = Math.max(this.#contiguous, this.#floor);
    this.#advance(now);
  }

  /**
   * Takes a page of older history: the floor moves down to `floor` first, so the page is not
   * mistaken for old news.
   * @param {Message[]} messages
   * @param {number} floor
   * @param {number} [now]
   */
  addOlder(messages, floor, now = Date.now()) {
    this.setFloor(floor, now);
    return this.insertMany(messages, now);
  }

  /**
   * The first missing range {after, before} (both exclusive), or null.
   * @returns {{ after: number, before: number } | null}
   */
  gap() {
    if (!this.loaded) return null;
    const next = this.#messages[this.#firstAtOrAbove(this.#contiguous + 1)];
    return next ? { after: this.#contiguous, before: next.seq } : null;
  }

  /**
   * The message with this seq, if held.
   * @param {number} seq
   * @returns {Message | undefined}
   */
  get(seq) {
    const found = this.#messages[this.#firstAtOrAbove(seq)];
    return found?.seq === seq ? found : undefined;
  }

  /** Lowest seq held (or null). */
  lowest() {
    return this.#messages[0]?.seq ?? null;
  }

  /** Messages sorted by seq (a copy). */
  list() {
    return this.#messages.slice();
  }

  #advance(/** @type {number} */ now) {
    if (!this.loaded) return;
    let i = this.#firstAtOrAbove(this.#contiguous + 1);
    while (this.#messages[i]?.seq === this.#contiguous + 1) {
      this.#contiguous += 1;
      i += 1;
    }
    if (!this.gap()) this.#gapSince = null;
    else if (this.#gapSince === null) this.#gapSince = now;
  }

  /** Index of the first message with seq >= `seq` (binary search). */
  #firstAtOrAbove(/** @type {number} */ seq) {
    let low = 0;
    let high = this.#messages.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if (this.#messages[mid].seq < seq) low = mid + 1;
      else high = mid;
    }
    return low;
  }
}

/**
 * Merges two arrays sorted by seq with no seq in common, in one pass; the common cases, a
 * page entirely before or after what is held, are a plain concatenation.
 * @param {Message[]} held
 * @param {Message[]} fresh
 */
function merge(held, fresh) {
  if (held.length === 0) return fresh;
  if (fresh[0].seq > held[held.length - 1].seq) return held.concat(fresh);
  if (fresh[fresh.length - 1].seq < held[0].seq) return fresh.concat(held);
  /** @type {Message[]} */
  const out = new Array(held.length + fresh.length);
  let i = 0;
  let j = 0;
  for (let k = 0; k < out.length; k++) {
    out[k] = j >= fresh.length || (i < held.length && held[i].seq < fresh[j].seq) ? held[i++] : fresh[j++];
  }
  return out;
}

// ---- MessageFold ------------------------------------------------------------------------

/** Characters of the answered message a reply preview shows (docs/protocol.md, "Changes"). */
export const REPLY_PREVIEW_CHARS = 140;

/**
 * Whether a log entry is a message (not a change to one); entries from a server older than
 * changes have no `kind` and are messages.
 * @param {Message} entry
 */
export function isMessage(entry) {
  return entry.kind === undefined || entry.kind === "message";
}

/**
 * One message while folding: its entry and the change of each kind that wins.
 * @typedef {object} Folding
 * @property {Message} message
 * @property {Message | null} edit       the edit with the highest seq
 * @property {Message | null} deletion   the delete with the lowest seq (its time is deletedAt)
 * @property {boolean} erased            the log says the text was removed (`deleted` on the
 *                                       message or on one of its edits): a tombstone even
 *                                       before the delete itself is held
 * @property {Map<string, Map<string, Map<number, boolean>>>} reactions   emoji -> user ->
 *                                       seq -> on (react) or off (unreact): every entry, so the
 *                                       start of the current run of reacts (the emoji's place
 *                                       in the order) is known whatever order they came in
 * @property {{ viewer: string | null, state: MessageState } | null} cached   its state, until it changes
 */

/**
 * The current state of a room's messages: the log's entries folded (docs/protocol.md, "The
 * current state"), the same on every device whatever order the entries reach it in (live,
 * a resume, an older page), because every rule is order-independent: the edit with the
 * highest seq gives the text, a delete is absorbing, and per (user, emoji) the reaction
 * entry with the highest seq decides. A change whose message is not held waits for it.
 * The server folds the same way for `GET …/messages?view=state` (crates/protocol/src/state.rs).
 * @implements {DeclaredMessageFold}
 */
export class MessageFold {
  /** @type {Map<number, Folding>} */
  #messages = new Map();
  /** @type {number[]} the seqs of #messages, ascending unless #unsorted */
  #order = [];
  #unsorted = false;
  /** @type {Map<number, Message[]>} changes whose message is not held yet, by its seq */
  #waiting = new Map();

  /** Messages held. */
  get size() {
    return this.#messages.size;
  }

  /** Changes held that wait for their message. */
  get waiting() {
    let n = 0;
    for (const changes of this.#waiting.values()) n += changes.length;
    return n;
  }

  /**
   * Takes entries, in any order; a repeat changes nothing. The report says, in the order it
   * happened, which messages arrived (and whether they showed, not deleted, when they did),
   * which were deleted for the first time (and whether they showed until then), and the
   * first deletes of messages not held: what a room's unread count follows.
   * @param {Message[]} entries
   * @returns {FoldReport}
   */
  apply(entries) {
    /** @type {FoldReport} */
    const report = { arrived: [], deleted: [], waitingDeletes: [] };
    for (const entry of entries) {
      if (isMessage(entry)) this.#add(entry, report);
      else if (typeof entry.target === "number") {
        const folding = this.#messages.get(entry.target);
        if (folding) this.#change(folding, entry, report, true);
        else {
          const changes = this.#waiting.get(entry.target) ?? [];
          if (entry.kind === "delete" && !changes.some((c) => c.kind === "delete")) report.waitingDeletes.push(entry);
          changes.push(entry);
          this.#waiting.set(entry.target, changes);
        }
      }
    }
    return report;
  }

  /**
   * The message at `seq` as `viewer` sees it (`me` in its reactions), with its reply preview
   * when the answered message is held; undefined if the message is not held.
   * @param {number} seq
   * @param {string | null} [viewer]
   * @returns {MessageState | undefined}
   */
  state(seq, viewer = null) {
    const folding = this.#messages.get(seq);
    if (!folding) return undefined;
    /** @type {MessageState} */
    const state = { ...this.#current(folding, viewer) };
    const answered = folding.message.replyTo;
    const reply = typeof answered === "number" ? this.preview(answered, viewer) : undefined;
    if (reply) state.reply = reply;
    return state;
  }

  /**
   * Every message held, in seq order.
   * @param {string | null} [viewer]
   * @returns {MessageState[]}
   */
  states(viewer = null) {
    return this.#sorted().map((seq) => /** @type {MessageState} */ (this.state(seq, viewer)));
  }

  /**
   * The newest message held that is not deleted (the room list's lastMessage), or null.
   * @param {string | null} [viewer]
   */
  newest(viewer = null) {
    const order = this.#sorted();
    for (let i = order.length - 1; i >= 0; i--) {
      if (!tombstone(/** @type {Folding} */ (this.#messages.get(order[i])))) return /** @type {MessageState} */ (this.state(order[i], viewer));
    }
    return null;
  }

  /**
   * The preview a reply to message `seq` shows, if it is held: its current text cut to
   * REPLY_PREVIEW_CHARS characters (code points, as the server counts them).
   * @param {number} seq
   * @param {string | null} [viewer]
   * @returns {ReplyPreview | undefined}
   */
  preview(seq, viewer = null) {
    const folding = this.#messages.get(seq);
    if (!folding) return undefined;
    const { sender, text, deleted } = this.#current(folding, viewer);
    return { seq, sender, text: [...text].slice(0, REPLY_PREVIEW_CHARS).join(""), deleted: deleted === true };
  }

  /**
   * Whether message `seq` is held and deleted.
   * @param {number} seq
   */
  isDeleted(seq) {
    const folding = this.#messages.get(seq);
    return folding !== undefined && tombstone(folding);
  }

  /**
   * A message in the state someone else folded (the room list's lastMessage, which the room
   * may not hold), brought up to date with what is held here: its state if the message is
   * held, else the waiting edits and deletes applied to it (its reactions stay the server's).
   * @param {MessageState} known
   * @param {string | null} [viewer]
   * @returns {MessageState}
   */
  update(known, viewer = null) {
    if (this.#messages.has(known.seq)) return /** @type {MessageState} */ (this.state(known.seq, viewer));
    const changes = this.#waiting.get(known.seq);
    if (!changes) return known;
    const folding = newFolding(known);
    for (const change of changes) this.#change(folding, change, null, false);
    const state = this.#current(folding, viewer);
    return tombstone(folding) ? state : { ...state, reactions: known.reactions ?? [] };
  }

  /**
   * @param {Message} entry
   * @param {FoldReport} report
   */
  #add(entry, report) {
    const held = this.#messages.get(entry.seq);
    if (held) {
      // A later copy may say what an earlier one could not: the store removed the text.
      if (entry.deleted === true && !held.erased) {
        held.erased = true;
        held.cached = null;
      }
      return;
    }
    const folding = newFolding(entry);
    if (this.#order.length > 0 && /** @type {number} */ (this.#order.at(-1)) > entry.seq) this.#unsorted = true;
    this.#order.push(entry.seq);
    this.#messages.set(entry.seq, folding);
    const waiting = this.#waiting.get(entry.seq) ?? [];
    this.#waiting.delete(entry.seq);
    // Its changes that came first: a delete among them is one the message never showed before.
    for (const change of waiting) this.#change(folding, change, report, false);
    report.arrived.push({ message: entry, shown: !tombstone(folding) });
  }

  /**
   * @param {Folding} folding
   * @param {Message} change
   * @param {FoldReport | null} report
   * @param {boolean} shown  whether the message showed before this change (it was held already)
   */
  #change(folding, change, report, shown) {
    const wasShown = shown && !tombstone(folding);
    folding.cached = null;
    if (change.deleted === true) folding.erased = true;
    switch (change.kind) {
      case "edit":
        if (!folding.edit || folding.edit.seq < change.seq) folding.edit = change;
        break;
      case "delete":
        if (!folding.deletion) report?.deleted.push({ message: folding.message, delete: change, wasShown });
        if (!folding.deletion || change.seq < folding.deletion.seq) folding.deletion = change;
        break;
      case "react":
      case "unreact": {
        if (typeof change.emoji !== "string") break;
        let users = folding.reactions.get(change.emoji);
        if (!users) folding.reactions.set(change.emoji, (users = new Map()));
        let entries = users.get(change.sender);
        if (!entries) users.set(change.sender, (entries = new Map()));
        entries.set(change.seq, change.kind === "react");
        break;
      }
      default:
        break; // a kind of a newer protocol: nothing this SDK can show
    }
  }

  /**
   * The message's own state (without the reply preview), cached until it changes.
   * @param {Folding} folding
   * @param {string | null} viewer
   * @returns {MessageState}
   */
  #current(folding, viewer) {
    if (folding.cached?.viewer === viewer) return folding.cached.state;
    // (Fields of a state folded elsewhere, see update(), are worked out again here.)
    const { editedAt, deletedAt, reactions, reply, ...entry } = /** @type {MessageState} */ (folding.message);
    /** @type {MessageState} */
    let state;
    if (tombstone(folding)) {
      state = { ...entry, kind: "message", text: "", deleted: true, reactions: [] };
      if (folding.deletion) state.deletedAt = folding.deletion.createdAt;
    } else {
      state = { ...entry, kind: "message", reactions: reactionCounts(folding.reactions, viewer) };
      if (folding.edit) {
        state.text = folding.edit.text;
        state.editedAt = folding.edit.createdAt;
      } else if (editedAt !== undefined) state.editedAt = editedAt;
    }
    folding.cached = { viewer, state };
    return state;
  }

  /** The held seqs, ascending (sorted only when a message arrived out of order). */
  #sorted() {
    if (this.#unsorted) {
      this.#order.sort((a, b) => a - b);
      this.#unsorted = false;
    }
    return this.#order;
  }
}

/** @param {Message} message @returns {Folding} */
function newFolding(message) {
  return { message, edit: null, deletion: null, erased: message.deleted === true, reactions: new Map(), cached: null };
}

/** @param {Folding} folding */
function tombstone(folding) {
  return folding.deletion !== null || folding.erased;
}

/**
 * Where a user's current run of reacts with one emoji began, or null if their last entry
 * is an unreact (reacting again while on changes nothing, the place in the order included).
 * @param {Map<number, boolean>} entries  seq -> on
 */
function standingSince(entries) {
  let since = null;
  for (const seq of [...entries.keys()].sort((a, b) => b - a)) {
    if (!entries.get(seq)) break;
    since = seq;
  }
  return since;
}

/**
 * Per emoji, how many stand and whether `viewer` is one of them, emojis in the order of
 * their earliest standing reaction (the earliest start of a current run of reacts).
 * @param {Map<string, Map<string, Map<number, boolean>>>} byEmoji
 * @param {string | null} viewer
 * @returns {Reaction[]}
 */
function reactionCounts(byEmoji, viewer) {
  /** @type {{ first: number, reaction: Reaction }[]} */
  const standing = [];
  for (const [emoji, users] of byEmoji) {
    let count = 0;
    let first = Infinity;
    let me = false;
    for (const [user, entries] of users) {
      const since = standingSince(entries);
      if (since === null) continue;
      count += 1;
      first = Math.min(first, since);
      me ||= user === viewer;
    }
    if (count > 0) standing.push({ first, reaction: { emoji, count, me } });
  }
  return standing.sort((a, b) => a.first - b.first).map((s) => s.reaction);
}

// ---- Outbox -----------------------------------------------------------------------------

/**
 * Own messages and changes (edits, deletes, reactions) on their way: pending until acked,
 * retried until then with the same clientMsgId, each with the promise its sender holds.
 * Every promise settles: acked, failed, discarded or stopped.
 * @implements {DeclaredOutbox}
 */
export class Outbox {
  /** @type {Map<string, OutboxItem>} clientMsgId -> item, in insertion (send) order */
  #items = new Map();
  /** @type {Map<string, { promise: Promise<Message>, resolve: (m: Message) => void, reject: (e: ChatError) => void }>} */
  #promises = new Map();
  /** @type {() => string} */
  #newId;

  /** @param {{ newId?: () => string }} [options] */
  constructor({ newId = () => crypto.randomUUID() } = {}) {
    this.#newId = newId;
  }

  /**
   * @param {string} room
   * @param {string} text     the message's, or the edit's new text ("" for other changes)
   * @param {string | null} sender
   * @param {Change} [change] what it is (default: a message), and what it applies to
   * @returns {OutboxItem}
   */
  add(room, text, sender, change = { kind: "message" }) {
    /** @type {OutboxItem} */
    const item = {
      clientMsgId: this.#newId(),
      room,
      text,
      sender,
      ...change,
      status: "pending",
      sentAt: null,
      retryAt: null,
      attempts: 0,
      createdAt: new Date().toISOString(),
    };
    this.#items.set(item.clientMsgId, item);
    /** @type {(m: Message) => void} */
    let resolve = () => {};
    /** @type {(e: ChatError) => void} */
    let reject = () => {};
    /** @type {Promise<Message>} */
    const promise = new Promise((yes, no) => ((resolve = yes), (reject = no)));
    promise.catch(() => {}); // senders may ignore the promise; the "error" event reports failures too
    this.#promises.set(item.clientMsgId, { promise, resolve, reject });
    return item;
  }

  /**
   * The sender's promise for an item: the stored message, or the reason it was not stored.
   * @param {string} clientMsgId
   * @returns {Promise<Message>}
   */
  whenStored(clientMsgId) {
    return this.#promises.get(clientMsgId)?.promise ?? Promise.reject(new ChatError("discarded", "no such message on its way"));
  }

  /** @param {string} clientMsgId */
  get(clientMsgId) {
    return this.#items.get(clientMsgId);
  }

  /** Items sent and waiting for their ack. */
  inFlight() {
    let n = 0;
    for (const i of this.#items.values()) if (i.status === "pending" && i.sentAt !== null) n += 1;
    return n;
  }

  /**
   * Items to (re)send now: never sent, due for a retry, or unanswered for `ackTimeoutMs`.
   * @param {number} now
   * @param {number} ackTimeoutMs
   */
  due(now, ackTimeoutMs) {
    return [...this.#items.values()].filter(
      (i) =>
        i.status === "pending" &&
        (i.sentAt === null || (i.retryAt !== null && i.retryAt <= now) || (i.retryAt === null && now - i.sentAt >= ackTimeoutMs)),
    );
  }

  /**
   * @param {OutboxItem} item
   * @param {number} now
   */
  markSent(item, now) {
    item.sentAt = now;
    item.retryAt = null;
    item.attempts += 1;
  }

  /**
   * Sends what is due, new messages only while fewer than `maxInFlight` await their ack (a
   * window, so a long offline backlog does not arrive as one burst); stops at the first
   * frame that cannot go out.
   * @param {(frame: object) => boolean} send  false when there is no connection
   * @param {number} now
   * @param {{ ackTimeoutMs: number, maxInFlight: number }} limits
   */
  flush(send, now, { ackTimeoutMs, maxInFlight }) {
    let budget = maxInFlight - this.inFlight();
    for (const item of this.due(now, ackTimeoutMs)) {
      const fresh = item.sentAt === null;
      if (fresh && budget <= 0) break;
      if (!send(frameOf(item))) return;
      this.markSent(item, now);
      if (fresh) budget -= 1;
    }
  }

  /** After a reconnect every pending item goes again. */
  resendAll() {
    for (const i of this.#items.values()) if (i.status === "pending") i.sentAt = null;
  }

  /**
   * @param {string} clientMsgId
   * @param {number} at
   */
  retryLater(clientMsgId, at) {
    const item = this.#items.get(clientMsgId);
    if (item) item.retryAt = at;
  }

  /**
   * Stored: removes the item and resolves its promise with `message`. Returns the item, or
   * undefined for an unknown or repeated ack.
   * @param {string} clientMsgId
   * @param {Message} [message]
   */
  ack(clientMsgId, message) {
    const item = this.#items.get(clientMsgId);
    if (!item) return undefined;
    this.#items.delete(clientMsgId);
    if (message) this.#promises.get(clientMsgId)?.resolve(message);
    this.#promises.delete(clientMsgId);
    return item;
  }

  /**
   * Refused for good: its promise rejects; a message stays (shown as failed, until
   * discarded), a change goes (the message shows as it stands).
   * @param {string} clientMsgId
   * @param {ChatError} error
   */
  fail(clientMsgId, error) {
    const item = this.#items.get(clientMsgId);
    if (item && item.status === "pending") {
      item.status = "failed";
      item.error = error;
      this.#promises.get(clientMsgId)?.reject(error);
      this.#promises.delete(clientMsgId);
      if (item.kind !== "message") this.#items.delete(clientMsgId);
    }
    return item;
  }

  /**
   * Fails every pending item with the error `reason` makes for it; returns those items.
   * @param {(item: OutboxItem) => ChatError} reason
   */
  failAll(reason) {
    const failed = [...this.#items.values()].filter((i) => i.status === "pending");
    for (const item of failed) this.fail(item.clientMsgId, reason(item));
    return failed;
  }

  /**
   * Drops an item (normally a failed one) from the list; a pending one's promise rejects
   * with "discarded".
   * @param {string} clientMsgId
   */
  discard(clientMsgId) {
    const item = this.#items.get(clientMsgId);
    if (!item) return undefined;
    this.fail(clientMsgId, new ChatError("discarded", "discarded before the server confirmed it; it may still have been stored", { room: item.room, clientMsgId }));
    this.#items.delete(clientMsgId);
    return item;
  }

  /**
   * Pending and failed items of one room, in send order.
   * @param {string} room
   */
  forRoom(room) {
    return [...this.#items.values()].filter((i) => i.room === room);
  }

  get size() {
    return this.#items.size;
  }
}

/**
 * The frame that stores an item (docs/protocol.md, "Client → server").
 * @param {OutboxItem} item
 */
function frameOf(item) {
  const { room, clientMsgId, text, target: seq, emoji } = item;
  switch (item.kind) {
    case "edit":
      return { type: "edit", room, clientMsgId, seq, text };
    case "delete":
      return { type: "delete", room, clientMsgId, seq };
    case "react":
      return { type: "react", room, clientMsgId, seq, emoji };
    case "unreact":
      return { type: "react", room, clientMsgId, seq, emoji, remove: true };
    default:
      return item.replyTo === undefined ? { type: "send", room, clientMsgId, text } : { type: "send", room, clientMsgId, text, replyTo: item.replyTo };
  }
}

// ---- Receipts and the positions the client reports ------------------------------------

/**
 * One room's receipts: each member's public {deliveredSeq, readSeq}. Positions only move
 * forward here too (a REST answer may be older than a frame that came meanwhile), and a read
 * implies delivery.
 */
export class Receipts {
  /** @type {Map<string, { deliveredSeq: number, readSeq: number }>} */
  #members = new Map();

  /**
   * Takes what a `receipt` frame or the REST route says of `user`; returns their merged
   * positions if they moved, else null.
   * @param {string} user
   * @param {number | undefined} deliveredSeq
   * @param {number | undefined} readSeq
   * @returns {Receipt | null}
   */
  apply(user, deliveredSeq, readSeq) {
    const held = this.#members.get(user) ?? { deliveredSeq: 0, readSeq: 0 };
    const read = Math.max(held.readSeq, finite(readSeq));
    const delivered = Math.max(held.deliveredSeq, finite(deliveredSeq), read);
    if (read === held.readSeq && delivered === held.deliveredSeq) return null;
    this.#members.set(user, { deliveredSeq: delivered, readSeq: read });
    return { user, deliveredSeq: delivered, readSeq: read };
  }

  /**
   * @param {string} user
   * @returns {Receipt}
   */
  get(user) {
    const held = this.#members.get(user);
    return { user, deliveredSeq: held?.deliveredSeq ?? 0, readSeq: held?.readSeq ?? 0 };
  }

  /** @returns {Receipt[]} */
  list() {
    return [...this.#members].map(([user, p]) => ({ user, ...p }));
  }

  /**
   * The members other than `sender`, by how far they got with message `seq`: each in exactly
   * one of read, delivered (not read), sent (neither).
   * @param {number} seq
   * @param {readonly string[]} members
   * @param {string} sender
   * @returns {Readers}
   */
  readers(seq, members, sender) {
    /** @type {Readers} */
    const out = { read: [], delivered: [], sent: [] };
    for (const user of members) {
      if (user === sender) continue;
      const { deliveredSeq, readSeq } = this.get(user);
      out[readSeq >= seq ? "read" : deliveredSeq >= seq ? "delivered" : "sent"].push(user);
    }
    return out;
  }
}

/** @param {unknown} n */
function finite(n) {
  return typeof n === "number" && Number.isFinite(n) ? n : 0;
}

/**
 * A message's status from its readers: in a direct room "read", "delivered" or "sent" (by
 * the peer's positions); in a group how many of the other members it reached and how many
 * read it ("read by k of n").
 * @param {"direct" | "group"} kind
 * @param {Readers} readers
 * @returns {MessageStatus}
 */
export function messageStatus(kind, { read, delivered, sent }) {
  if (kind === "direct") return read.length > 0 ? "read" : delivered.length > 0 ? "delivered" : "sent";
  return { delivered: read.length + delivered.length, read: read.length, of: read.length + delivered.length + sent.length };
}

/**
 * Positions the client reports per room (delivered, read): forward only, never one the
 * server already has, and coalesced: a report goes out at once when the room's previous one
 * is at least `intervalMs` old, else when it is, carrying the highest position offered
 * meanwhile. A report that cannot go out stays due.
 */
export class PositionReporter {
  /** @type {(room: string, seq: number) => boolean} */
  #send;
  #intervalMs;
  /** @type {Map<string, number>} room -> the highest position the server has (reported or learned) */
  #floor = new Map();
  /** @type {Map<string, number>} room -> the position waiting to go out */
  #pending = new Map();
  /** @type {Map<string, number>} room -> when its last report went out */
  #sentAt = new Map();

  /**
   * @param {(room: string, seq: number) => boolean} send  false when it could not go out
   * @param {{ intervalMs?: number }} [options]
   */
  constructor(send, { intervalMs = 500 } = {}) {
    this.#send = send;
    this.#intervalMs = intervalMs;
  }

  /**
   * The server holds at least `seq` for `room` (learned from it, or implied by another
   * report): nothing at or below it is reported.
   * @param {string} room
   * @param {number} seq
   */
  known(room, seq) {
    if (!(seq > (this.#floor.get(room) ?? 0))) return;
    this.#floor.set(room, seq);
    if ((this.#pending.get(room) ?? 0) <= seq) this.#pending.delete(room);
  }

  /**
   * The highest position known to the server for `room` (0 if none).
   * @param {string} room
   */
  floor(room) {
    return this.#floor.get(room) ?? 0;
  }

  /**
   * Asks for `seq` to be reported for `room`; goes out now if the room's pace allows it.
   * @param {string} room
   * @param {number} seq
   * @param {number} now
   */
  offer(room, seq, now) {
    if (seq > this.floor(room) && seq > (this.#pending.get(room) ?? 0)) this.#pending.set(room, seq);
    this.flush(now);
  }

  /**
   * Sends every report that is due at `now`.
   * @param {number} now
   */
  flush(now) {
    for (const [room, seq] of [...this.#pending]) {
      if (now - (this.#sentAt.get(room) ?? -Infinity) < this.#intervalMs) continue;
      if (!this.#send(room, seq)) continue;
      this.#pending.delete(room);
      this.#sentAt.set(room, now);
      this.known(room, seq);
    }
  }

  /** When the next report waiting for its room's pace is due (ms), or null if none waits. */
  nextDue() {
    let next = null;
    for (const room of this.#pending.keys()) {
      const at = (this.#sentAt.get(room) ?? -Infinity) + this.#intervalMs;
      if (next === null || at < next) next = at;
    }
    return next;
  }

  /**
   * Drops what is waiting for `room` (the user left it).
   * @param {string} room
   */
  forget(room) {
    this.#pending.delete(room);
  }
}

// ---- Presence and typing ----------------------------------------------------------------

/**
 * Everybody's presence as last heard: per user {state, lastSeen, v}. A snapshot replaces
 * everything; a change applies only when its `v` is greater than the one held, because
 * changes made on different nodes may arrive out of order.
 */
export class PresenceBook {
  /** @type {Map<string, UserPresence>} */
  #users = new Map();

  /**
   * @param {string} user
   * @returns {UserPresence | undefined} undefined: the server never told (not a contact)
   */
  get(user) {
    return this.#users.get(user);
  }

  get size() {
    return this.#users.size;
  }

  /**
   * Applies a `presence` frame; returns the entries that are now held because of it (for a
   * snapshot, all of them).
   * @param {{ snapshot?: unknown, users?: unknown }} frame
   * @returns {UserPresence[]}
   */
  apply(frame) {
    const entries = (Array.isArray(frame.users) ? frame.users : []).map(entry).filter((e) => e !== null);
    if (frame.snapshot === true) {
      this.#users = new Map(entries.map((e) => [e.user, e]));
      return entries;
    }
    /** @type {UserPresence[]} */
    const applied = [];
    for (const e of entries) {
      const held = this.#users.get(e.user);
      if (held && held.v >= e.v) continue; // stale: a newer change got here first
      this.#users.set(e.user, e);
      applied.push(e);
    }
    return applied;
  }
}

/**
 * One entry of a frame as held, or null when it is not one (no user, no version).
 * @param {any} raw
 * @returns {UserPresence | null}
 */
function entry(raw) {
  if (!raw || typeof raw.user !== "string" || typeof raw.v !== "number") return null;
  return { user: raw.user, state: /** @type {PresenceState} */ (raw.state), lastSeen: typeof raw.lastSeen === "string" ? raw.lastSeen : null, v: raw.v };
}

/**
 * Who else is typing, per room. Each `typing` frame replaces the room's list (a lost frame
 * heals with the next one); an entry not listed again within `ttlMs` expires here too, in
 * case the frame saying it stopped never comes.
 */
export class TypingBoard {
  /** @type {Map<string, Map<string, number>>} room -> user -> when last listed */
  #rooms = new Map();
  #ttlMs;

  /** @param {{ ttlMs?: number }} [options] */
  constructor({ ttlMs = 6000 } = {}) {
    this.#ttlMs = ttlMs;
  }

  /** The server's typing TTL (from `welcome`). @param {number} ms */
  setTtl(ms) {
    this.#ttlMs = ms;
  }

  /**
   * Users typing in `room`, in the server's order.
   * @param {string} room
   * @returns {string[]}
   */
  users(room) {
    return [...(this.#rooms.get(room)?.keys() ?? [])];
  }

  /**
   * A `typing` frame: the room's list is now `users`. Returns whether the list changed.
   * @param {string} room
   * @param {string[]} users
   * @param {number} now
   */
  set(room, users, now) {
    const before = this.users(room);
    const next = new Map(users.map((u) => [u, now]));
    if (next.size === 0) this.#rooms.delete(room);
    else this.#rooms.set(room, next);
    return !sameList(before, this.users(room));
  }

  /**
   * Drops entries not listed for `ttlMs`; returns the rooms whose list changed.
   * @param {number} now
   * @returns {string[]}
   */
  expire(now) {
    /** @type {string[]} */
    const changed = [];
    for (const [room, typing] of this.#rooms) {
      let dropped = false;
      for (const [user, at] of typing) {
        if (now - at >= this.#ttlMs) {
          typing.delete(user);
          dropped = true;
        }
      }
      if (typing.size === 0) this.#rooms.delete(room);
      if (dropped) changed.push(room);
    }
    return changed;
  }

  /** Forgets everything (the connection is gone: no stop would reach us); returns the rooms that had someone typing. */
  clear() {
    const rooms = [...this.#rooms.keys()];
    this.#rooms.clear();
    return rooms;
  }
}

/** @param {string[]} a @param {string[]} b */
function sameList(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * The user's own typing, per room, paced as the protocol asks: `typing: true` when they
 * start and again at most every `ttlMs / 2` while they go on (the server forgets a start
 * after `ttlMs`), `typing: false` once when they stop or send. A report that cannot go out
 * (no connection) is not remembered, so the next keystroke tries again.
 */
export class TypingReporter {
  /** @type {(room: string, typing: boolean) => boolean} */
  #send;
  /** @type {Map<string, number>} room -> when `typing: true` last went out */
  #sentAt = new Map();
  #ttlMs;

  /**
   * @param {(room: string, typing: boolean) => boolean} send  false when it could not go out
   * @param {{ ttlMs?: number }} [options]
   */
  constructor(send, { ttlMs = 6000 } = {}) {
    this.#send = send;
    this.#ttlMs = ttlMs;
  }

  /** The server's typing TTL (from `welcome`): starts are renewed at half of it. @param {number} ms */
  setTtl(ms) {
    this.#ttlMs = ms;
  }

  /**
   * Called on every keystroke (true) and when the user stops or sends (false).
   * @param {string} room
   * @param {boolean} typing
   * @param {number} now
   */
  set(room, typing, now) {
    const sentAt = this.#sentAt.get(room);
    if (typing) {
      if (sentAt !== undefined && now - sentAt < this.#ttlMs / 2) return;
      if (this.#send(room, true)) this.#sentAt.set(room, now);
      return;
    }
    if (sentAt === undefined) return;
    this.#sentAt.delete(room);
    // Past the TTL the server has dropped the start by itself: nothing to stop.
    if (now - sentAt < this.#ttlMs) this.#send(room, false);
  }

  /** Whether a start is standing for `room`. */
  typing(/** @type {string} */ room) {
    return this.#sentAt.has(room);
  }

  /** The connection is gone: its starts expire on the server; start afresh on the next one. */
  reset() {
    this.#sentAt.clear();
  }
}

// ---- Room -------------------------------------------------------------------------------

/**
 * What a Room needs from the client that holds it.
 * @typedef {object} RoomHost
 * @property {import("./rest.js").RestClient} rest     history and read positions over REST
 * @property {(frame: object) => boolean} send          a frame on the live connection; false when there is none
 * @property {Outbox} outbox                             own messages on their way (all rooms)
 * @property {() => void} flushOutbox                    sends what the outbox has due
 * @property {() => string | null} user                  the signed-in user
 * @property {number} pageSize                           messages per history page
 * @property {(room: Room, event: keyof RoomEvents, value: any) => void} relay   the client's own events follow the room's
 * @property {(room: Room, shown: boolean) => void} show      the UI shows the room (open) or no longer does (close)
 * @property {(room: Room, fromOthers: boolean) => void} arrived   new messages landed (live, replayed or from history)
 * @property {(room: Room) => void} autoRead               reads the room if the UI shows it and the page is visible
 * @property {(room: Room, seq: number, isPrivate: boolean) => void} reportRead   tells the server (coalesced)
 * @property {(room: Room, positions: Receipt) => void} ownPositions   the server says where the user stands
 * @property {(room: Room) => void} stopTyping             the user sent a message: they stopped typing it
 * @property {(room: Room) => string[]} typingIn           who else is typing in the room
 */

/** A page size for catching up (gaps, a resume that said more remain): the server's maximum. */
const CATCH_UP_PAGE = 200;

/**
 * One room, as the app sees it: the fields of its summary (id, kind, name, members, ...,
 * lastMessage, unread), its messages, its history, sending, and its own events. The client
 * creates rooms and feeds them what arrives; a Room lives as long as its client, also across
 * leaving and re-joining (`listed` says whether it is in the user's room list now).
 * @implements {DeclaredRoom}
 */
export class Room {
  /** @type {string} */
  #id;
  /** @type {RoomHost} */
  #host;
  /** @type {RoomLog} the raw log: resume, gaps and de-duplication work on it */
  #log;
  /** @type {MessageFold} the messages' current state, folded from the log's new entries */
  #fold = new MessageFold();
  /** @type {RoomSummary | null} null: never listed (known only by id) */
  #summary = null;
  #listed = false;
  /** @type {Emitter<RoomEvents>} */
  #events = new Emitter();
  /** @type {Promise<void> | null} the newest page, while it loads */
  #loadingNewest = null;
  /** @type {Promise<number> | null} an older page, while it loads */
  #loadingOlder = null;
  #hasOlder = false;
  /** A gap or catch-up fill is running: one at a time. */
  #filling = false;
  /** A resume said more messages remain than it replayed: page them in. */
  #catchUpDue = false;
  /** @type {Receipts} the members' public positions */
  #receipts = new Receipts();
  /** The lastSeq of the room list's summary: its unread count covers the messages up to it. */
  #listedSeq = 0;
  /** For a room not loaded: every message after #listedSeq up to this one has arrived. */
  #arrivedThrough = 0;
  /** @type {MessageState | null} the room list's lastMessage: whose it is, should its delete come before it */
  #listedLast = null;
  /** @type {Set<number>} messages the room list counted as unread whose delete came before them: taken off already */
  #countedOff = new Set();

  /**
   * @param {string} id
   * @param {RoomHost} host
   */
  constructor(id, host) {
    this.#id = id;
    this.#host = host;
    this.#log = new RoomLog(id);
  }

  // ---- what the app reads -----------------------------------------------------------------

  get id() {
    return this.#id;
  }

  /** The summary as the room list has it (a plain object), or null if never listed. */
  get summary() {
    return this.#summary;
  }

  /** Whether the room is in the user's room list (false after leaving it). */
  get listed() {
    return this.#listed;
  }

  get kind() {
    return this.#known.kind;
  }
  get name() {
    return this.#known.name;
  }
  get members() {
    return this.#known.members;
  }
  /** Owners and admins of a group, {user: "owner" | "admin"} ({} in direct rooms). */
  get roles() {
    return this.#known.roles ?? {};
  }
  get createdBy() {
    return this.#known.createdBy;
  }
  get createdAt() {
    return this.#known.createdAt;
  }
  get lastMessage() {
    return this.#known.lastMessage;
  }
  get lastSeq() {
    return this.#known.lastSeq;
  }
  get readSeq() {
    return this.#known.readSeq;
  }
  get unread() {
    return this.#known.unread;
  }

  /** Whether the newest page is loaded (by open(), or when the room was added live). */
  get loaded() {
    return this.#log.loaded;
  }

  /** Whether older history remains to be loaded. */
  get hasOlder() {
    return !this.#log.loaded || this.#hasOlder;
  }

  /** Messages offered again and dropped so far (diagnostics: replays, retries, overlaps). */
  get duplicates() {
    return this.#log.duplicates;
  }

  /** Who else is typing in the room now. */
  get typing() {
    return this.#host.typingIn(this);
  }

  /**
   * The members' public positions held: from `receipt` frames and loadReceipts().
   * @returns {Receipt[]}
   */
  receipts() {
    return this.#receipts.list();
  }

  /**
   * The members other than the sender of message `seq`, by how far they got with it: read,
   * delivered (not read), or only sent to. The sender is the held message's, else the user.
   * @param {number} seq
   * @returns {Readers}
   */
  readers(seq) {
    const sender = this.#log.get(seq)?.sender ?? this.#host.user() ?? "";
    return this.#receipts.readers(seq, this.#known.members ?? [], sender);
  }

  /**
   * Where message `seq` got: "sent" | "delivered" | "read" in a direct room, {delivered,
   * read, of} in a group ("read by k of n", the sender not counted).
   * @param {number} seq
   * @returns {MessageStatus}
   */
  messageStatus(seq) {
    return messageStatus(this.#known.kind === "direct" ? "direct" : "group", this.readers(seq));
  }

  /** The summary fields, as JSON. */
  toJSON() {
    return this.#summary ?? { id: this.#id };
  }

  /**
   * @template {keyof RoomEvents} K
   * @param {K} event
   * @param {(value: RoomEvents[K]) => void} listener
   */
  on(event, listener) {
    return this.#events.on(event, listener);
  }

  /**
   * The messages as they stand, sorted by seq (`status: "sent"`; own changes on their way
   * already applied, marked `changing`), then own messages not yet stored (`"pending"` or
   * `"failed"`). Changes are not listed: they are in the messages' state.
   * @returns {ShownMessage[]}
   */
  messages() {
    const me = this.#host.user();
    const own = this.#host.outbox.forRoom(this.#id);
    /** @type {Map<number, OutboxItem[]>} pending changes by the message they change */
    const changing = new Map();
    for (const item of own) {
      if (item.kind === "message" || item.status !== "pending" || item.target === undefined) continue;
      const list = changing.get(item.target);
      if (list) list.push(item);
      else changing.set(item.target, [item]);
    }
    /** @type {ShownMessage[]} */
    const stored = this.#fold.states(me).map((m) => ({ ...withChanges(m, changing.get(m.seq)), status: "sent" }));
    /** @type {ShownMessage[]} */
    const pending = own
      .filter((i) => i.kind === "message")
      .map((i) => {
        /** @type {ShownMessage} */
        const shown = {
          id: null,
          room: i.room,
          seq: null,
          sender: /** @type {string} */ (i.sender),
          clientMsgId: i.clientMsgId,
          kind: "message",
          text: i.text,
          createdAt: i.createdAt,
          reactions: [],
          status: i.status,
          error: i.error,
        };
        if (i.replyTo === undefined) return shown;
        const reply = this.#fold.preview(i.replyTo, me);
        return reply ? { ...shown, replyTo: i.replyTo, reply } : { ...shown, replyTo: i.replyTo };
      });
    return stored.concat(pending);
  }

  /**
   * Message `seq` as it stands (stored changes only), or undefined if it is not held.
   * @param {number} seq
   */
  message(seq) {
    return this.#fold.state(seq, this.#host.user());
  }

  /** The raw log: every entry held (messages and changes), sorted by seq. */
  entries() {
    return this.#log.list();
  }

  /**
   * A member's role: "owner", "admin" or "member" (everybody in a direct room).
   * @param {string} user
   * @returns {Role}
   */
  roleOf(user) {
    return this.roles[user] ?? "member";
  }

  /**
   * Whether the user may edit `message`: their own stored message, not deleted. (The server
   * also holds edits to `limits.edit_window_ms`, which the SDK does not know: a late edit is
   * refused with `edit_window_closed`.)
   * @param {{ sender: string, seq: number | null, deleted?: boolean }} message
   */
  canEdit(message) {
    return message.seq !== null && message.deleted !== true && message.sender === this.#host.user();
  }

  /**
   * Whether the user may delete `message`: their own, or anyone's in a group they own or
   * administer.
   * @param {{ sender: string, seq: number | null, deleted?: boolean }} message
   */
  canDelete(message) {
    if (message.seq === null || message.deleted === true) return false;
    return message.sender === this.#host.user() || (this.kind === "group" && this.#moderates());
  }

  /**
   * Whether the user may remove `user` from the room: themselves (leaving) always; in a
   * group, an owner anyone, an admin plain members.
   * @param {string} user
   */
  canRemove(user) {
    const me = this.#host.user();
    if (user === me) return true;
    if (this.kind !== "group" || me === null) return false;
    const mine = this.roleOf(me);
    return mine === "owner" || (mine === "admin" && this.roleOf(user) === "member");
  }

  /** Whether the user owns or administers this group (and so moderates it). */
  #moderates() {
    const me = this.#host.user();
    const mine = me === null ? "member" : this.roleOf(me);
    return mine === "owner" || mine === "admin";
  }

  /** Whether the user may change roles: an owner of a group. */
  get canSetRoles() {
    const me = this.#host.user();
    return this.kind === "group" && me !== null && this.roleOf(me) === "owner";
  }

  // ---- what the app does --------------------------------------------------------------------

  /**
   * The UI shows the room: loads the newest page if needed and the members' receipts, and
   * from now on reads what arrives while the page is visible (until close(), or until
   * another room is opened).
   */
  async open() {
    this.#host.show(this, true);
    this.loadReceipts().catch((e) => this.#emit("error", asChatError(e, this.#id)));
    await this.load();
    this.#host.autoRead(this);
    return this.messages();
  }

  /** The UI no longer shows the room: what arrives stays unread. */
  close() {
    this.#host.show(this, false);
  }

  /** Makes sure the newest page is loaded, without showing the room. */
  async load() {
    if (!this.#log.loaded) {
      this.#loadingNewest ??= this.#loadNewest().finally(() => (this.#loadingNewest = null));
      await this.#loadingNewest;
    }
  }

  /**
   * Fetches every member's public positions (GET /v1/rooms/{room}/receipts): for groups too
   * large for live receipts, and after being disconnected. Resolves with receipts().
   */
  async loadReceipts() {
    const { members } = await this.#host.rest.receipts(this.#id);
    for (const m of Array.isArray(members) ? members : []) this.receipt(m);
    return this.receipts();
  }

  /** Loads the page before the oldest message held; resolves with how many arrived. */
  loadOlder() {
    this.#loadingOlder ??= this.#loadOlder().finally(() => (this.#loadingOlder = null));
    return this.#loadingOlder;
  }

  /**
   * Sends `text`, as an answer to message `replyTo` if given. It shows as pending at once;
   * the promise resolves with the stored message when acked, or rejects on a refusal that no
   * retry can cure. Retries happen by themselves (timeouts, retryable errors, reconnects; the
   * server de-duplicates by clientMsgId).
   * @param {string} text
   * @param {SendOptions} [options]
   * @returns {Sending}
   */
  send(text, { replyTo } = {}) {
    this.#host.stopTyping(this);
    return this.#queue(text, replyTo === undefined ? { kind: "message" } : { kind: "message", replyTo });
  }

  /**
   * Changes the text of own message `seq`. Like send(): shown at once (`changing`), retried
   * until stored; the promise resolves with the stored `edit` entry.
   * @param {number} seq
   * @param {string} text
   * @returns {Sending}
   */
  edit(seq, text) {
    return this.#queue(text, { kind: "edit", target: seq });
  }

  /**
   * Deletes message `seq` (own, or anyone's in a group the user owns or administers) for
   * everybody: it stays as a tombstone, "message deleted".
   * @param {number} seq
   * @returns {Sending}
   */
  delete(seq) {
    return this.#queue("", { kind: "delete", target: seq });
  }

  /**
   * Adds the user's `emoji` to message `seq` (reacting twice changes nothing).
   * @param {number} seq
   * @param {string} emoji
   * @returns {Sending}
   */
  react(seq, emoji) {
    return this.#queue("", { kind: "react", target: seq, emoji });
  }

  /**
   * Takes the user's `emoji` off message `seq`.
   * @param {number} seq
   * @param {string} emoji
   * @returns {Sending}
   */
  unreact(seq, emoji) {
    return this.#queue("", { kind: "unreact", target: seq, emoji });
  }

  /**
   * @param {string} text
   * @param {Change} change
   * @returns {Sending}
   */
  #queue(text, change) {
    const { outbox } = this.#host;
    const item = outbox.add(this.#id, text, this.#host.user(), change);
    this.#emit("messages", this);
    this.#host.flushOutbox();
    return Object.assign(outbox.whenStored(item.clientMsgId), { clientMsgId: item.clientMsgId });
  }

  /**
   * Marks the room read up to `seq` (default: the newest message held without a gap, or for
   * a room not loaded, its last message: "mark as read" from the room list). The
   * unread count drops at once; the server hears it coalesced (a report it already has is
   * not sent). A private read moves the user's own position (their unread count on every
   * device) but not the one the members see.
   * @param {number} [seq]
   * @param {ReadOptions} [options]
   */
  markRead(seq, { private: isPrivate = false } = {}) {
    const upTo = seq ?? (this.#log.loaded ? this.#log.contiguous : this.#known.lastSeq);
    if (!(upTo > 0)) return;
    this.#updateSummary((s) => {
      // The server lowers a report past the last seq to it; so does the position held here.
      const readSeq = Math.max(s.readSeq ?? 0, Math.min(upTo, s.lastSeq ?? upTo));
      // Messages after the new position stay unread (as far as they are held).
      const unread = readSeq >= (s.lastSeq ?? 0) ? 0 : Math.min(s.unread ?? 0, this.#fromOthersAfter(readSeq));
      return readSeq === s.readSeq && unread === s.unread ? s : { ...s, readSeq, unread };
    });
    this.#host.reportRead(this, upTo, isPrivate);
  }

  /** @param {string[]} members */
  addMembers(members) {
    return this.#host.rest.addMembers(this.#id, members);
  }

  /** @param {string} user */
  removeMember(user) {
    return this.#host.rest.removeMember(this.#id, user);
  }

  /** Leaves the room (removes the user; `room_removed` follows). */
  leave() {
    return this.#host.rest.removeMember(this.#id, /** @type {string} */ (this.#host.user()));
  }

  /**
   * Gives `user` a role (owners only); the room's members and roles follow the answer at
   * once (the `members` frame says the same to everybody).
   * @param {string} user
   * @param {Role} role
   */
  async setRole(user, role) {
    const room = await this.#host.rest.setRole(this.#id, user, role);
    this.setMembers(room.members, room.roles);
    return room;
  }

  presence() {
    return this.#host.rest.presence(this.#id);
  }

  // ---- fed by the client ------------------------------------------------------------------

  /** The last seq held without a gap, for a resume; null before the newest page is loaded. */
  get resumePosition() {
    return this.#log.loaded ? this.#log.contiguous : null;
  }

  /**
   * The highest seq this device can report delivered: everything up to it has reached it.
   * For a room not loaded, the room list stands for the messages it counted, and live ones
   * after it count as they arrive without a gap.
   */
  get deliveredPosition() {
    if (this.#log.loaded) return this.#log.contiguous;
    while (this.#log.get(this.#arrivedThrough + 1)) this.#arrivedThrough += 1;
    return this.#arrivedThrough;
  }

  /**
   * The room is in the user's list with this summary (from the room list or `room_added`).
   * Returns whether it was not listed before.
   * @param {RoomSummary} summary
   */
  list(summary) {
    const added = !this.#listed;
    this.#summary = summary;
    this.#listed = true;
    this.#listedSeq = summary.lastSeq ?? 0;
    this.#listedLast = summary.lastMessage ?? null;
    this.#countedOff.clear(); // the list's counts are the server's now
    this.#arrivedThrough = Math.max(this.#arrivedThrough, this.#listedSeq);
    // Only the room's own listeners: the client announces list changes once per batch.
    this.#events.emit("summary", this);
    return added;
  }

  /** The room list no longer has the room; what it holds stays (a re-listing resumes it). */
  unlist() {
    this.#listed = false;
  }

  /**
   * The user left the room (or was never in it): forget its messages, as nothing more of it
   * arrives; returns whether it was listed.
   */
  forget() {
    const wasListed = this.#listed;
    this.#listed = false;
    this.#log = new RoomLog(this.#id);
    this.#fold = new MessageFold();
    this.#hasOlder = false;
    this.#catchUpDue = false;
    this.#receipts = new Receipts();
    this.#listedSeq = 0;
    this.#arrivedThrough = 0;
    this.#host.show(this, false);
    this.#emit("removed", this);
    return wasListed;
  }

  /**
   * A stored message (live, replayed, or paged in to fill a gap). Returns whether it was new.
   * @param {Message} message
   */
  accept(message) {
    return this.#acceptAll([message]).length === 1;
  }

  /**
   * The server stored an own message or change: the pending one becomes the stored entry,
   * as the log shows it.
   * @param {{ clientMsgId: string, room: string, id: string, seq: number, createdAt: string }} ack
   */
  acknowledge(ack) {
    const item = this.#host.outbox.get(ack.clientMsgId);
    if (!item) return; // a repeated ack, or a message discarded meanwhile
    /** @type {Message} */
    const message = {
      id: ack.id,
      room: ack.room,
      seq: ack.seq,
      sender: /** @type {string} */ (this.#host.user()),
      clientMsgId: ack.clientMsgId,
      kind: item.kind,
      text: item.text,
      createdAt: ack.createdAt,
    };
    if (item.target !== undefined) message.target = item.target;
    if (item.replyTo !== undefined) message.replyTo = item.replyTo;
    if (item.emoji !== undefined) message.emoji = item.emoji;
    this.#host.outbox.ack(ack.clientMsgId, message);
    this.accept(message);
    this.#emit("ack", { clientMsgId: ack.clientMsgId, message });
    this.#emit("messages", this);
  }

  /**
   * A member's public positions (a `receipt` frame, or an entry of the REST answer); held
   * and announced only if they moved. The user's own tell the client what the server has.
   * @param {{ user: string, deliveredSeq?: number, readSeq?: number }} receipt
   */
  receipt({ user, deliveredSeq, readSeq }) {
    const moved = this.#receipts.apply(user, deliveredSeq, readSeq);
    if (!moved) return;
    if (user === this.#host.user()) this.#host.ownPositions(this, moved);
    this.#emit("receipt", { room: this.#id, ...moved });
  }

  /**
   * The server's count (an `unread` frame): replaces what was counted here.
   * @param {number} unread
   * @param {number} readSeq
   */
  setUnread(unread, readSeq) {
    this.#updateSummary((s) => (s.unread === unread && s.readSeq === readSeq ? s : { ...s, unread, readSeq }));
  }

  /**
   * Who else is typing changed (the client holds the lists).
   * @param {string[]} users
   */
  typingChanged(users) {
    this.#emit("typing", { room: this.#id, users });
  }

  /**
   * The member list or the roles changed (a `members` frame, or an answer to setRole).
   * @param {string[]} members
   * @param {RoomSummary["roles"]} [roles]  absent from an older server: kept as held
   */
  setMembers(members, roles) {
    this.#updateSummary((s) => (roles ? { ...s, members, roles } : { ...s, members }));
    this.#emit("members", members);
  }

  /** An own message of this room changed state (failed, discarded) outside an ack. */
  outboxChanged() {
    this.#emit("messages", this);
  }

  /** A resume replayed less than there is: page in the rest on the next tick. */
  catchUpLater() {
    this.#catchUpDue = true;
  }

  /**
   * Called about once a second: pages in what a resume left out, or fills a gap that has
   * stayed open for `gapWaitMs` (a message still on its way usually closes it first).
   * @param {number} now
   * @param {number} gapWaitMs
   */
  fillIfDue(now, gapWaitMs) {
    if (this.#filling) return;
    if (this.#catchUpDue) this.#fill(() => this.#catchUp());
    else if (this.#log.gapSince !== null && now - this.#log.gapSince >= gapWaitMs) this.#fill(() => this.#fillGap());
  }

  // ---- inside ---------------------------------------------------------------------------

  /** The summary for the getters: rooms handed to the app always have one. */
  get #known() {
    return this.#summary ?? /** @type {RoomSummary} */ ({ id: this.#id });
  }

  /**
   * @template {keyof RoomEvents} K
   * @param {K} event
   * @param {RoomEvents[K]} value
   */
  #emit(event, value) {
    this.#host.relay(this, event, value);
    this.#events.emit(event, value);
  }

  /**
   * Changes the summary of a listed room; announced only if something changed.
   * @param {(s: RoomSummary) => RoomSummary} change  returns its argument for "no change"
   */
  #updateSummary(change) {
    if (!this.#summary || !this.#listed) return;
    const before = this.#summary;
    const next = change(before);
    if (next === before) return;
    this.#summary = next;
    this.#emit("summary", this);
    if ((next.unread ?? 0) !== (before.unread ?? 0)) this.#emit("unread", { room: this.#id, unread: next.unread ?? 0 });
  }

  /**
   * Held messages from others after `seq`, not deleted.
   * @param {number} seq
   */
  #fromOthersAfter(seq) {
    const me = this.#host.user();
    return this.#log.list().filter((m) => m.seq > seq && isMessage(m) && m.sender !== me && !this.#fold.isDeleted(m.seq)).length;
  }

  /**
   * Arrivals: each new entry is announced (unless it is history: "message" for messages,
   * "change" for the rest), folded into the messages' state, and the summary moves on (one
   * update). A message from someone else counts as unread when it is after the user's read
   * position and after what the room list counted already (a resume, a gap fill or the
   * newest page may bring those; for a room added live, the list counted nothing), unless
   * it arrives deleted; the delete of a message counted (by the list, or here) takes one off.
   * @param {Message[]} entries
   * @param {{ announce?: boolean }} [options]  announce: false for pages of history
   */
  #acceptAll(entries, { announce = true } = {}) {
    const fresh = this.#log.insertMany(entries);
    if (fresh.length === 0) return fresh;
    const folded = this.#fold.apply(fresh);
    if (announce) for (const entry of fresh) this.#emit(isMessage(entry) ? "message" : "change", entry);
    const me = this.#host.user();
    this.#updateSummary((s) => {
      const readSeq = s.readSeq ?? 0;
      let unread = s.unread ?? 0;
      for (const { message, shown } of folded.arrived) {
        if (shown && message.sender !== me && message.seq > Math.max(this.#listedSeq, readSeq)) unread += 1;
      }
      for (const { message, delete: deletion, wasShown } of folded.deleted) {
        // The list counted what was not deleted when it was made; here, what arrived shown.
        if (deletion.seq <= this.#listedSeq || message.sender === me || message.seq <= readSeq || this.#countedOff.has(message.seq)) continue;
        if (message.seq <= this.#listedSeq || wasShown) unread = Math.max(0, unread - 1);
      }
      // A delete of a message not held: the list's lastMessage may say whose it was.
      const listed = this.#listedLast;
      for (const deletion of folded.waitingDeletes) {
        if (!listed || listed.seq !== deletion.target || listed.deleted) continue;
        if (deletion.seq <= this.#listedSeq || listed.sender === me || listed.seq <= readSeq) continue;
        unread = Math.max(0, unread - 1);
        this.#countedOff.add(listed.seq);
      }
      const lastSeq = Math.max(s.lastSeq ?? 0, /** @type {Message} */ (fresh.at(-1)).seq);
      const lastMessage = this.#lastMessage(s.lastMessage ?? null);
      const same = unread === (s.unread ?? 0) && lastSeq === (s.lastSeq ?? 0) && sameShown(lastMessage, s.lastMessage ?? null);
      return same ? s : { ...s, unread, lastSeq, lastMessage };
    });
    this.#emit("messages", this);
    this.#host.arrived(this, fresh.some((m) => m.sender !== me));
    return fresh;
  }

  /**
   * The room list's lastMessage after what arrived: the newest message held that is not
   * deleted, unless the one listed is newer (and still not deleted, as far as is known).
   * @param {MessageState | null} listed
   */
  #lastMessage(listed) {
    const me = this.#host.user();
    const newest = this.#fold.newest(me);
    if (!listed) return newest;
    const known = this.#fold.update(listed, me);
    if (newest && newest.seq >= known.seq) return newest;
    // Deleted, with nothing older held to show instead: the tombstone ("message deleted").
    return known.deleted ? (newest ?? known) : known;
  }

  async #loadNewest() {
    const page = await this.#host.rest.history(this.#id, { order: "desc", limit: this.#host.pageSize });
    const lowest = page.messages.length ? page.messages[page.messages.length - 1].seq : 1;
    this.#log.setFloor(page.more ? lowest - 1 : 0);
    this.#hasOlder = page.more;
    // History, not arrivals: no "message" events; counted as unread only past the room list.
    if (this.#acceptAll(page.messages, { announce: false }).length === 0) this.#emit("messages", this);
    // What was said between this page and the live stream comes with a resume.
    this.#host.send({ type: "resume", rooms: { [this.#id]: this.#log.contiguous } });
  }

  async #loadOlder() {
    if (!this.#log.loaded) {
      await this.open();
      return this.#log.size;
    }
    const lowest = this.#log.lowest();
    if (lowest === null || lowest <= 1) {
      this.#hasOlder = false;
      return 0;
    }
    const page = await this.#host.rest.history(this.#id, { before: lowest, order: "desc", limit: this.#host.pageSize });
    const newLowest = page.messages.length ? page.messages[page.messages.length - 1].seq : lowest;
    // The floor moves down first, so that the page is not taken for old news; then it is
    // folded like any arrival (changes held may have waited for its messages).
    this.#log.setFloor(page.more ? newLowest - 1 : 0);
    this.#hasOlder = page.more;
    if (this.#acceptAll(page.messages, { announce: false }).length === 0) this.#emit("messages", this);
    return page.messages.length;
  }

  /** @param {() => Promise<void>} work */
  async #fill(work) {
    this.#filling = true;
    try {
      await work();
    } catch (e) {
      this.#emit("error", asChatError(e, this.#id));
    } finally {
      this.#filling = false;
    }
  }

  async #fillGap() {
    const gap = this.#log.gap();
    if (!gap) return;
    const page = await this.#host.rest.history(this.#id, { after: gap.after, before: gap.before, limit: CATCH_UP_PAGE });
    this.#acceptAll(page.messages);
  }

  /** Pages history after what the room holds; a failed page is retried by the next tick. */
  async #catchUp() {
    for (;;) {
      const page = await this.#host.rest.history(this.#id, { after: this.#log.contiguous, limit: CATCH_UP_PAGE });
      this.#acceptAll(page.messages);
      if (!page.more || page.messages.length === 0) break;
    }
    this.#catchUpDue = false;
  }
}

/**
 * Whether two lastMessages show the same (same message, text and deletion).
 * @param {MessageState | null} a
 * @param {MessageState | null} b
 */
function sameShown(a, b) {
  return a === b || (a !== null && b !== null && a.seq === b.seq && a.text === b.text && a.deleted === b.deleted && a.editedAt === b.editedAt);
}

/**
 * A message with the user's own changes on their way applied, as they will be once stored
 * (so that a reaction toggles at once, and an edit made offline shows).
 * @param {MessageState} message
 * @param {OutboxItem[] | undefined} changes  in the order they were made
 * @returns {MessageState & { changing?: boolean }}
 */
function withChanges(message, changes) {
  if (!changes) return message;
  let shown = message;
  for (const change of changes) {
    if (shown.deleted) break;
    if (change.kind === "edit") shown = { ...shown, text: change.text };
    else if (change.kind === "delete") shown = { ...shown, text: "", deleted: true, reactions: [] };
    else if (change.emoji !== undefined) shown = { ...shown, reactions: toggled(shown.reactions, change.emoji, change.kind === "react") };
  }
  return { ...shown, changing: true };
}

/**
 * Reactions with the user's `emoji` on or off.
 * @param {Reaction[]} reactions
 * @param {string} emoji
 * @param {boolean} on
 */
function toggled(reactions, emoji, on) {
  const held = reactions.find((r) => r.emoji === emoji);
  if (on === (held?.me ?? false)) return reactions;
  if (!held) return [...reactions, { emoji, count: 1, me: true }];
  const count = held.count + (on ? 1 : -1);
  return count > 0 ? reactions.map((r) => (r === held ? { emoji, count, me: on } : r)) : reactions.filter((r) => r !== held);
}

/**
 * @param {unknown} e
 * @param {string} room
 */
function asChatError(e, room) {
  return e instanceof ChatError ? e : new ChatError("internal", String(e), { room });
}
