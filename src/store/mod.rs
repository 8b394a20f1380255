//! The message store: the source of truth. Everything the service layer needs from storage
//! is in the [`Store`] trait; the embedded SQLite store and the shared MongoDB store implement
//! it, and the conformance suite (tests/api/conformance) holds both to the same behaviour.
//!
//! The store, not the caller, decides `seq` and `createdAt` (see [`Store::append`]): that is
//! the one place where concurrent senders, on one node or many, are put into a single order.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{EntryKind, Membership, Message, Role, Room, RoomId, Seq, UserId};

pub mod deadline;
pub mod mongo;
pub mod push;
mod rooms;
pub mod sqlite;

pub use deadline::DeadlineStore;
pub use mongo::MongoStore;
pub use push::PushStore;
pub use sqlite::SqliteStore;

/// The largest seq a store can hold (both keep it as a signed 64-bit integer). Seqs from
/// clients above it are refused at the edge (`bad_field`).
pub use crate::domain::MAX_SEQ;

/// A seq as the stores keep it. Seqs never exceed [`MAX_SEQ`] (the edge refuses larger
/// ones); this saturates rather than wraps all the same.
pub fn seq_to_i64(seq: Seq) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// A stored seq read back; a negative one can only be corruption, read as 0.
pub fn seq_from_i64(seq: i64) -> Seq {
    Seq::try_from(seq).unwrap_or(0)
}

/// Which positions a report moves (see [`Store::mark`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// The messages reached one of the user's devices.
    Delivered,
    /// The user saw them: delivered too, and the position members see.
    Read,
    /// The user saw them, but members are not told: delivered too, the public one stays.
    PrivateRead,
}

/// A member's positions in a room: `read_seq ≤ delivered_seq`, `public_read_seq ≤ read_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Positions {
    pub delivered_seq: Seq,
    /// The user's own (unread counts); private reads included.
    pub read_seq: Seq,
    /// What members see (receipts).
    pub public_read_seq: Seq,
}

impl Positions {
    /// These positions after a report of `mark` up to `target` (already capped at the room's
    /// last seq): every position only moves forward.
    pub fn advanced(self, mark: Mark, target: Seq) -> Self {
        let reads = matches!(mark, Mark::Read | Mark::PrivateRead);
        Self {
            delivered_seq: self.delivered_seq.max(target),
            read_seq: if reads {
                self.read_seq.max(target)
            } else {
                self.read_seq
            },
            public_read_seq: if mark == Mark::Read {
                self.public_read_seq.max(target)
            } else {
                self.public_read_seq
            },
        }
    }
}

/// The outcome of [`Store::mark`]: the positions before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marked {
    pub before: Positions,
    pub after: Positions,
}

impl Marked {
    /// Whether what members see moved (only then is a receipt sent).
    pub fn receipt_moved(&self) -> bool {
        self.before.delivered_seq != self.after.delivered_seq
            || self.before.public_read_seq != self.after.public_read_seq
    }

    /// Whether the user's own read position moved (only then do their devices hear of it).
    pub fn read_moved(&self) -> bool {
        self.before.read_seq != self.after.read_seq
    }
}

/// One member's public positions, as receipts show them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberReceipt {
    #[schema(value_type = String)]
    pub user: UserId,
    pub delivered_seq: Seq,
    pub read_seq: Seq,
}

/// A user's settings.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserSettings {
    /// Everybody sees the user offline, without a last-seen time.
    pub hide_presence: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or timed out. Nothing was written (or, for an append
    /// whose outcome is unknown, a retry with the same clientMsgId finds it).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store error: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// An entry (a message or a change) as the sender asked for it; the store adds id, seq and
/// createdAt.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub room: RoomId,
    pub sender: UserId,
    pub client_msg_id: String,
    pub kind: EntryKind,
    pub text: String,
    /// For changes: the message they apply to.
    pub target: Option<Seq>,
    pub reply_to: Option<Seq>,
    pub emoji: Option<String>,
    /// Stored with the mark that its push notifications are still to be decided
    /// (see [`push`]).
    pub notify: bool,
}

impl NewMessage {
    /// A plain message (no reply).
    pub fn text(room: RoomId, sender: UserId, client_msg_id: &str, text: &str) -> Self {
        Self {
            room,
            sender,
            client_msg_id: client_msg_id.to_owned(),
            kind: EntryKind::Message,
            text: text.to_owned(),
            target: None,
            reply_to: None,
            emoji: None,
            notify: false,
        }
    }
}

impl NewMessage {
    /// The message this becomes when stored after `previous`, the seq and createdAt of the
    /// room's newest message: the rule of [`Store::append`] for seq and createdAt, with a
    /// new id.
    pub fn stored_after(
        &self,
        previous: Option<(Seq, DateTime<Utc>)>,
        now: DateTime<Utc>,
    ) -> Message {
        Message {
            id: uuid::Uuid::now_v7().to_string(),
            room: self.room.clone(),
            seq: previous.map_or(1, |(seq, _)| seq + 1),
            sender: self.sender.clone(),
            client_msg_id: self.client_msg_id.clone(),
            kind: self.kind,
            text: self.text.clone(),
            target: self.target,
            reply_to: self.reply_to,
            emoji: self.emoji.clone(),
            deleted: false,
            created_at: crate::clock::next_created_at(previous.map(|(_, at)| at), now),
        }
    }
}

/// What a room list shows of one room to one member ([`Store::room_states`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RoomState {
    /// The room's newest message that is not deleted.
    pub newest: Option<Message>,
    /// What its current state needs: its changes, and the message it answers with that
    /// message's changes.
    pub related: Vec<Message>,
    /// The log's last seq.
    pub last_seq: Seq,
    /// Others' standing messages after the member's read position, up to the cap.
    pub unread: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    pub message: Message,
    /// True when (room, sender, clientMsgId) was already stored: `message` is that first one.
    pub duplicate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

/// Which entries of the log a history query returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Entries {
    /// Every entry: the log, as resume and gap filling need it.
    #[default]
    All,
    /// Messages only (tombstones included), not the changes to them.
    Messages,
    /// Messages that are not deleted.
    Standing,
}

/// A page of one room's history. Bounds are exclusive for seq (`after`, `before`) and
/// half-open for time (`since` inclusive, `until` exclusive); they combine.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistoryQuery {
    pub after: Option<Seq>,
    pub before: Option<Seq>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub order: Order,
    pub limit: usize,
    pub entries: Entries,
}

impl HistoryQuery {
    /// Messages after `seq`, oldest first: what resume and gap filling ask for.
    pub fn after(seq: Seq, limit: usize) -> Self {
        Self {
            after: Some(seq),
            limit,
            ..Self::default()
        }
    }

    /// The newest `limit` messages, newest first.
    pub fn latest(limit: usize) -> Self {
        Self {
            order: Order::Desc,
            limit,
            ..Self::default()
        }
    }
}

/// A member with their stored role and when they joined: what hand-offs are decided by.
pub type RankedMember = (UserId, Role, DateTime<Utc>);

/// Who takes over a group whose last owner left: the longest-standing admin, else the
/// longest-standing member (earliest `joined`, then user id). `None` while an owner remains
/// or nobody does. The same rule in every store.
pub fn successor(members: &[RankedMember]) -> Option<UserId> {
    if members.iter().any(|(_, role, _)| *role == Role::Owner) {
        return None;
    }
    members
        .iter()
        .min_by_key(|(user, role, joined)| (*role != Role::Admin, *joined, user))
        .map(|(user, ..)| user.clone())
}

/// A group's roles (owners and admins) from its members' stored roles, with the rule that a
/// group always has an owner: when none is stored (a hand-off cut short by a crash or a
/// deadline, owners who demoted each other at once, a group whose creator left before roles
/// existed), its [`successor`] is one.
pub fn group_roles(members: &[RankedMember]) -> BTreeMap<UserId, Role> {
    let mut roles: BTreeMap<UserId, Role> = members
        .iter()
        .filter(|(_, role, _)| *role != Role::Member)
        .map(|(user, role, _)| (user.clone(), *role))
        .collect();
    if let Some(heir) = successor(members) {
        roles.insert(heir, Role::Owner);
    }
    roles
}

/// A group as its creator asked for it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewGroup {
    pub id: RoomId,
    pub name: String,
    pub created_by: UserId,
    /// Includes the creator.
    pub members: Vec<UserId>,
}

/// [`Store::append_batch`] as one append after the other: the default, and what a store's
/// own batch falls back to for the entries it cannot write together.
pub async fn append_one_by_one<S: Store + ?Sized>(
    store: &S,
    news: Vec<NewMessage>,
    now: DateTime<Utc>,
) -> Vec<StoreResult<Appended>> {
    let mut answers = Vec::with_capacity(news.len());
    for new in news {
        answers.push(store.append(new, now).await);
    }
    answers
}

#[async_trait]
pub trait Store: PushStore + Send + Sync + 'static {
    /// Stores a message, atomically with respect to every other append to the same room, on
    /// this node or any other:
    /// - if (room, sender, clientMsgId) is already stored, returns that message, `duplicate`;
    /// - else assigns `seq` = previous seq + 1 (1 for the first) and
    ///   `createdAt` = [`crate::clock::next_created_at`](previous createdAt, `now`).
    ///
    /// A seq exists only once its message is stored, so seq N being readable implies every
    /// seq below N is readable too: the history has no holes, ever.
    ///
    /// A delete also removes the text of its target and of the target's edits (they read
    /// back with `text: ""` and `deleted`), on a retry too, and never leaves it behind,
    /// even when the append fails; an edit of a deleted message is stored without its text.
    /// The caller has checked that the target exists.
    async fn append(&self, new: NewMessage, now: DateTime<Utc>) -> StoreResult<Appended>;

    /// Appends several entries, in the given order: the answer for each, in that order, is
    /// what [`Store::append`] of each in turn would give (a later entry of a room gets a
    /// higher seq; a repeated clientMsgId answers `duplicate`). One failing entry fails
    /// only itself. The embedded store writes them in one transaction; the default is one
    /// append after the other.
    async fn append_batch(
        &self,
        news: Vec<NewMessage>,
        now: DateTime<Utc>,
    ) -> Vec<StoreResult<Appended>> {
        append_one_by_one(self, news, now).await
    }

    async fn history(&self, room: &RoomId, query: &HistoryQuery) -> StoreResult<Vec<Message>>;

    /// The entry stored under (room, sender, clientMsgId), if any: a retry's first attempt.
    async fn entry_by_client_msg_id(
        &self,
        room: &RoomId,
        sender: &UserId,
        client_msg_id: &str,
    ) -> StoreResult<Option<Message>>;

    /// The entries at these seqs (those that exist), by seq.
    async fn entries(&self, room: &RoomId, seqs: &[Seq]) -> StoreResult<Vec<Message>>;

    /// The changes (edits, deletes, reactions) to the messages at these seqs, by seq.
    async fn changes(&self, room: &RoomId, targets: &[Seq]) -> StoreResult<Vec<Message>>;

    /// The newest seq of the room (0 if it has no messages).
    async fn last_seq(&self, room: &RoomId) -> StoreResult<Seq>;

    /// Messages (not changes, not deleted) after `after_seq` not sent by `user`, counted up
    /// to `cap`.
    async fn count_unread(
        &self,
        room: &RoomId,
        user: &UserId,
        after_seq: Seq,
        cap: u64,
    ) -> StoreResult<u64>;

    /// Creates the direct room of `a` and `b` (id [`RoomId::direct`]) unless it exists; returns it.
    async fn ensure_direct_room(
        &self,
        a: &UserId,
        b: &UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<Room>;

    async fn create_group(&self, group: NewGroup, now: DateTime<Utc>) -> StoreResult<Room>;

    /// Adds members; returns those who were not members before.
    async fn add_members(
        &self,
        room: &RoomId,
        users: &[UserId],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<UserId>>;

    /// Removes a member; false if they were not one. When a group's last owner goes, its
    /// [`successor`] becomes owner.
    async fn remove_member(&self, room: &RoomId, user: &UserId) -> StoreResult<bool>;

    /// Sets a member's role; false if they are not a member.
    async fn set_role(&self, room: &RoomId, user: &UserId, role: Role) -> StoreResult<bool>;

    /// The room with its members, if it exists.
    async fn room(&self, room: &RoomId) -> StoreResult<Option<Room>>;

    async fn membership(&self, room: &RoomId, user: &UserId) -> StoreResult<Option<Membership>>;

    async fn memberships_of(&self, user: &UserId) -> StoreResult<Vec<Membership>>;

    // Reads for many rooms at once: what a reconnect costs stays constant in store calls,
    // however many rooms the user is in. The defaults read room by room.

    /// Those of `ids` that exist, in `ids`' order.
    async fn rooms(&self, ids: &[RoomId]) -> StoreResult<Vec<Room>> {
        let mut rooms = Vec::with_capacity(ids.len());
        for id in ids {
            rooms.extend(self.room(id).await?);
        }
        Ok(rooms)
    }

    /// `user`'s memberships among `rooms`, in `rooms`' order.
    async fn memberships_among(
        &self,
        user: &UserId,
        rooms: &[RoomId],
    ) -> StoreResult<Vec<Membership>> {
        let mut memberships = Vec::with_capacity(rooms.len());
        for room in rooms {
            memberships.extend(self.membership(room, user).await?);
        }
        Ok(memberships)
    }

    /// The state of each membership's room as a room list shows it, in their order. The
    /// default reads room by room, a few rooms at a time.
    async fn room_states(
        &self,
        memberships: &[Membership],
        unread_cap: u64,
    ) -> StoreResult<Vec<RoomState>> {
        use futures_util::{StreamExt, TryStreamExt};
        // Owned memberships: the futures then borrow nothing but the store.
        let states = memberships.iter().cloned().map(|m| async move {
            let standing = HistoryQuery {
                entries: Entries::Standing,
                ..HistoryQuery::latest(1)
            };
            let newest = self.history(&m.room, &standing).await?.pop();
            let mut related = Vec::new();
            if let Some(newest) = &newest {
                let targets: Vec<Seq> =
                    std::iter::once(newest.seq).chain(newest.reply_to).collect();
                related = self.changes(&m.room, &targets).await?;
                if let Some(answered) = newest.reply_to {
                    related.extend(self.entries(&m.room, &[answered]).await?);
                }
            }
            Ok::<_, StoreError>(RoomState {
                newest,
                related,
                last_seq: self.last_seq(&m.room).await?,
                unread: self
                    .count_unread(&m.room, &m.user, m.read_seq, unread_cap)
                    .await?,
            })
        });
        futures_util::stream::iter(states)
            .buffered(16)
            .try_collect()
            .await
    }

    /// For each (room, seq): the room's entries after that seq, oldest first, at most
    /// `limit`; one list per pair, in their order (a resume's replay).
    async fn histories_after(
        &self,
        from: &[(RoomId, Seq)],
        limit: usize,
    ) -> StoreResult<Vec<Vec<Message>>> {
        let mut histories = Vec::with_capacity(from.len());
        for (room, after) in from {
            histories.push(
                self.history(room, &HistoryQuery::after(*after, limit))
                    .await?,
            );
        }
        Ok(histories)
    }

    /// Up to `limit` of the user's memberships with a room id greater than `after`, by room id.
    async fn memberships_page(
        &self,
        user: &UserId,
        after: Option<&RoomId>,
        limit: usize,
    ) -> StoreResult<Vec<Membership>>;

    /// How many rooms each user is a member of, in the order given.
    async fn membership_counts(&self, users: &[UserId]) -> StoreResult<Vec<u64>>;

    /// Raises the member's positions that `mark` names to `seq` (never lowers one, never past
    /// the newest message; see [`Positions::advanced`]); returns them before and after. All
    /// zero and unchanged for a non-member.
    async fn mark(&self, room: &RoomId, user: &UserId, mark: Mark, seq: Seq)
    -> StoreResult<Marked>;

    /// Every member's public positions, by user id.
    async fn receipts(&self, room: &RoomId) -> StoreResult<Vec<MemberReceipt>>;

    /// The user's settings (the defaults if never set).
    async fn user_settings(&self, user: &UserId) -> StoreResult<UserSettings>;

    async fn set_user_settings(&self, user: &UserId, settings: UserSettings) -> StoreResult<()>;

    /// Refuses `user`'s tokens issued before `before` from now on (a later revocation moves
    /// the time forward, never back); returns the time now in force.
    async fn revoke_tokens(
        &self,
        user: &UserId,
        before: DateTime<Utc>,
    ) -> StoreResult<DateTime<Utc>>;

    /// Before when `user`'s tokens are refused, if they ever were revoked.
    async fn tokens_revoked_before(&self, user: &UserId) -> StoreResult<Option<DateTime<Utc>>>;

    /// Cheap round trip, for readiness checks.
    async fn ping(&self) -> StoreResult<()>;

    /// A message this node saw stored (on the bus): a store that remembers rooms' newest
    /// seqs may take it (it was stored, so it is never ahead of the store). The default
    /// ignores it.
    fn observed(&self, _message: &Message) {}
}
