//! The service layer: the message pipeline and room management of shared/design.md §2.
//! WebSocket and REST both come through here; it sees the store, the bus and the clock only
//! through their traits.
//!
//! The pipeline of a send: validate -> authorize (member?) -> store (which deduplicates by
//! clientMsgId and assigns seq and createdAt atomically) -> publish -> ack. The ack is only
//! given once the message is both durable and announced; if announcing fails the sender gets
//! a retryable error, and its retry (same clientMsgId) finds the stored message and announces
//! it again.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::Arc,
};

use futures_util::{StreamExt, TryStreamExt};

use crate::{
    bus::{Bus, BusEvent, Topic},
    cache::RecentCache,
    clock::Clock,
    config::Limits,
    domain::{Message, Room, RoomId, RoomKind, RoomSummary, Seq, UserId},
    presence::PresenceService,
    protocol::ErrorCode,
    store::{Appended, HistoryQuery, NewGroup, NewMessage, ReadMark, Store, StoreError},
};

/// Room list pages: at most this many rooms each.
pub const MAX_ROOM_PAGE: usize = 500;
pub const DEFAULT_ROOM_PAGE: usize = 100;

/// The most messages one history page returns.
pub const MAX_PAGE: usize = 200;
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_CLIENT_MSG_ID: usize = 64;
pub const MAX_GROUP_NAME: usize = 100;
/// Unread counts stop here ("999+").
pub const UNREAD_CAP: u64 = 999;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChatError {
    #[error("{message}")]
    Invalid { code: ErrorCode, message: String },
    /// No such room, or the caller is not a member (indistinguishable on purpose).
    #[error("room not found")]
    RoomNotFound,
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bus (or the cache beside it) cannot be reached.
    #[error("bus unavailable: {0}")]
    Bus(String),
}

impl ChatError {
    fn invalid(code: ErrorCode, message: impl Into<String>) -> Self {
        ChatError::Invalid {
            code,
            message: message.into(),
        }
    }

    fn bad_field(message: impl Into<String>) -> Self {
        Self::invalid(ErrorCode::BadField, message)
    }

    /// What a client may see of this error: its code, and a message. For internal causes
    /// (store, bus, bugs) the message is fixed and the detail is logged under a request id
    /// that the client also gets, so an operator can find it.
    pub fn public(&self) -> PublicError {
        let code = self.code();
        if !code.is_internal() {
            return PublicError {
                code,
                message: self.to_string(),
                request_id: None,
            };
        }
        let request_id = uuid::Uuid::new_v4().simple().to_string();
        if code == ErrorCode::Internal {
            tracing::error!(request_id, error = %self, "request failed");
        } else {
            tracing::warn!(request_id, error = %self, "request failed");
        }
        PublicError {
            code,
            message: code.public_message().to_owned(),
            request_id: Some(request_id),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ChatError::Invalid { code, .. } => *code,
            ChatError::RoomNotFound => ErrorCode::RoomNotFound,
            ChatError::Forbidden(_) => ErrorCode::Forbidden,
            ChatError::Store(StoreError::Unavailable(_)) => ErrorCode::StoreUnavailable,
            ChatError::Store(StoreError::Internal(_)) => ErrorCode::Internal,
            ChatError::Bus(_) => ErrorCode::BusUnavailable,
        }
    }
}

pub type ChatResult<T> = Result<T, ChatError>;

/// An error as a client sees it (see [`ChatError::public`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PublicError {
    pub code: ErrorCode,
    pub message: String,
    pub request_id: Option<String>,
}

/// What a resume frame gets: the replay of each room of the user's, and the rooms named
/// that are not (or are malformed).
#[derive(Debug, Clone, Default)]
pub struct Resumption {
    pub replays: Vec<Replay>,
    pub unknown: Vec<String>,
}

/// What a resume replays for one room.
#[derive(Debug, Clone)]
pub struct Replay {
    pub room: RoomId,
    pub messages: Vec<Message>,
    /// More messages follow the replayed ones (page them over REST).
    pub more: bool,
}

#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub messages: Vec<Message>,
    /// More messages match beyond this page.
    pub more: bool,
}

pub struct Chat {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    /// Cluster mode: serves resumes and newest pages when it can vouch for them.
    recent: Option<Arc<dyn RecentCache>>,
    presence: Arc<PresenceService>,
    clock: Arc<dyn Clock>,
    limits: Limits,
}

/// A member and whether they are online.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct MemberPresence {
    pub user: UserId,
    pub online: bool,
}

impl Chat {
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        recent: Option<Arc<dyn RecentCache>>,
        presence: Arc<PresenceService>,
        clock: Arc<dyn Clock>,
        limits: Limits,
    ) -> Self {
        Self {
            store,
            bus,
            recent,
            presence,
            clock,
            limits,
        }
    }

    /// The message pipeline. Returns the stored message (the first one, for a retry).
    pub async fn send(
        &self,
        sender: &UserId,
        room: &str,
        client_msg_id: &str,
        text: &str,
    ) -> ChatResult<Appended> {
        let room = parse_room(room)?;
        validate_client_msg_id(client_msg_id)?;
        self.validate_text(text)?;
        self.require_member(&room, sender).await?;
        let new = NewMessage {
            room: room.clone(),
            sender: sender.clone(),
            client_msg_id: client_msg_id.to_owned(),
            text: text.to_owned(),
        };
        let appended = self.store.append(new, self.clock.now()).await?;
        metrics::counter!("chatd_messages_stored_total", "duplicate" => appended.duplicate.to_string())
            .increment(1);
        // Cached and announced again on a retry: the first attempt may have failed right here.
        if let Some(recent) = &self.recent {
            recent
                .push(&appended.message)
                .await
                .map_err(|e| ChatError::Bus(format!("stored, not yet delivered ({e})")))?;
        }
        let event = BusEvent::Message {
            message: appended.message.clone(),
        };
        self.bus
            .publish(&Topic::Room(room), event.encode())
            .await
            .map_err(|e| ChatError::Bus(format!("stored, not yet delivered ({e})")))?;
        Ok(appended)
    }

    fn validate_text(&self, text: &str) -> ChatResult<()> {
        if text.trim().is_empty() {
            return Err(ChatError::invalid(ErrorCode::EmptyText, "text is empty"));
        }
        let max = self.limits.max_text_chars;
        // Cheap upper bound first: a char is at most 4 bytes.
        if text.len() > max && text.chars().count() > max {
            return Err(ChatError::invalid(
                ErrorCode::TextTooLong,
                format!("text is longer than {max} characters"),
            ));
        }
        Ok(())
    }

    async fn require_member(&self, room: &RoomId, user: &UserId) -> ChatResult<()> {
        match self.store.membership(room, user).await? {
            Some(_) => Ok(()),
            None => Err(ChatError::RoomNotFound),
        }
    }

    /// The room, if `user` is a member.
    pub async fn room(&self, user: &UserId, room: &str) -> ChatResult<Room> {
        let room = parse_room(room)?;
        self.require_member(&room, user).await?;
        self.store.room(&room).await?.ok_or(ChatError::RoomNotFound)
    }

    /// For a reconnecting client: per named room, the messages after its seq (up to the
    /// configured replay limit). One membership read for all rooms, then one read per room.
    pub async fn resume(
        &self,
        user: &UserId,
        rooms: &BTreeMap<String, Seq>,
    ) -> ChatResult<Resumption> {
        let mine: HashSet<RoomId> = self
            .store
            .memberships_of(user)
            .await?
            .into_iter()
            .map(|m| m.room)
            .collect();
        let mut resumption = Resumption::default();
        for (name, &after) in rooms {
            match RoomId::parse(name) {
                Ok(room) if mine.contains(&room) => {
                    resumption.replays.push(self.replay(room, after).await?);
                }
                _ => resumption.unknown.push(name.clone()),
            }
        }
        Ok(resumption)
    }

    async fn replay(&self, room: RoomId, after: Seq) -> ChatResult<Replay> {
        let limit = self.limits.resume_max_per_room;
        let mut messages = match self
            .cached(&room, &HistoryQuery::after(after, limit + 1))
            .await?
        {
            Some(messages) => messages,
            None => {
                self.store
                    .history(&room, &HistoryQuery::after(after, limit + 1))
                    .await?
            }
        };
        let more = messages.len() > limit;
        messages.truncate(limit);
        Ok(Replay {
            room,
            messages,
            more,
        })
    }

    pub async fn history(
        &self,
        user: &UserId,
        room: &str,
        mut query: HistoryQuery,
    ) -> ChatResult<HistoryPage> {
        let room = parse_room(room)?;
        if query.limit == 0 || query.limit > MAX_PAGE {
            return Err(ChatError::bad_field(format!(
                "limit must be 1 to {MAX_PAGE}"
            )));
        }
        self.require_member(&room, user).await?;
        let limit = query.limit;
        query.limit += 1;
        let mut messages = self.read(&room, &query).await?;
        let more = messages.len() > limit;
        messages.truncate(limit);
        Ok(HistoryPage { messages, more })
    }

    /// Opens (or finds) the direct room of `user` and `peer`.
    pub async fn open_direct(&self, user: &UserId, peer: &str) -> ChatResult<(Room, bool)> {
        let peer = UserId::parse(peer).map_err(|e| ChatError::bad_field(format!("peer: {e}")))?;
        if &peer == user {
            return Err(ChatError::bad_field(
                "peer: cannot open a direct room with yourself",
            ));
        }
        let id = RoomId::direct(user, &peer);
        let existed = self.store.room(&id).await?.is_some();
        if !existed {
            self.require_room_capacity(&[user.clone(), peer.clone()])
                .await?;
        }
        let room = self
            .store
            .ensure_direct_room(user, &peer, self.clock.now())
            .await?;
        if !existed {
            self.announce_added(&room, &room.members).await;
        }
        Ok((room, !existed))
    }

    pub async fn create_group(
        &self,
        creator: &UserId,
        name: &str,
        members: &[String],
    ) -> ChatResult<Room> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_GROUP_NAME {
            return Err(ChatError::bad_field(format!(
                "name must be 1 to {MAX_GROUP_NAME} characters"
            )));
        }
        let mut all = self.parse_users(members)?;
        all.insert(creator.clone());
        if all.len() > self.limits.max_group_members {
            return Err(ChatError::bad_field(format!(
                "a group has at most {} members",
                self.limits.max_group_members
            )));
        }
        let all: Vec<UserId> = all.into_iter().collect();
        self.require_room_capacity(&all).await?;
        let group = NewGroup {
            id: RoomId::new_group(),
            name: name.to_owned(),
            created_by: creator.clone(),
            members: all,
        };
        let room = self.store.create_group(group, self.clock.now()).await?;
        self.announce_added(&room, &room.members).await;
        Ok(room)
    }

    pub async fn add_members(
        &self,
        user: &UserId,
        room: &str,
        members: &[String],
    ) -> ChatResult<Room> {
        let room = self.room(user, room).await?;
        if room.kind == RoomKind::Direct {
            return Err(ChatError::Forbidden(
                "a direct room's members cannot change".into(),
            ));
        }
        let wanted = self.parse_users(members)?;
        if wanted.is_empty() {
            return Err(ChatError::bad_field("members must name at least one user"));
        }
        let total =
            room.members.len() + wanted.iter().filter(|u| !room.members.contains(u)).count();
        if total > self.limits.max_group_members {
            return Err(ChatError::bad_field(format!(
                "a group has at most {} members",
                self.limits.max_group_members
            )));
        }
        let wanted: Vec<UserId> = wanted
            .into_iter()
            .filter(|u| !room.members.contains(u))
            .collect();
        if wanted.is_empty() {
            return Ok(room);
        }
        self.require_room_capacity(&wanted).await?;
        let added = self
            .store
            .add_members(&room.id, &wanted, self.clock.now())
            .await?;
        let room = self
            .store
            .room(&room.id)
            .await?
            .ok_or(ChatError::RoomNotFound)?;
        if !added.is_empty() {
            self.announce_added(&room, &added).await;
            self.announce_members(&room).await;
        }
        Ok(room)
    }

    /// Removes `target` from a group; members may remove anyone, including themselves.
    pub async fn remove_member(&self, user: &UserId, room: &str, target: &str) -> ChatResult<()> {
        let room = self.room(user, room).await?;
        if room.kind == RoomKind::Direct {
            return Err(ChatError::Forbidden(
                "a direct room's members cannot change".into(),
            ));
        }
        let target =
            UserId::parse(target).map_err(|e| ChatError::bad_field(format!("user: {e}")))?;
        if self.store.remove_member(&room.id, &target).await? {
            let event = BusEvent::RoomRemoved {
                room: room.id.clone(),
            };
            self.publish_quietly(&Topic::User(target.clone()), &event)
                .await;
            if let Some(room) = self.store.room(&room.id).await? {
                self.announce_members(&room).await;
            }
        }
        Ok(())
    }

    /// Refuses to add users who are in `limits.max_rooms_per_user` rooms already. Checked
    /// before the write: concurrent additions can overshoot the cap by the number racing.
    async fn require_room_capacity(&self, users: &[UserId]) -> ChatResult<()> {
        let cap = self.limits.max_rooms_per_user as u64;
        let counts = self.store.membership_counts(users).await?;
        let full: Vec<&str> = users
            .iter()
            .zip(counts)
            .filter(|(_, n)| *n >= cap)
            .map(|(u, _)| u.as_str())
            .collect();
        if full.is_empty() {
            return Ok(());
        }
        Err(ChatError::invalid(
            ErrorCode::TooManyRooms,
            format!("in {cap} rooms already: {}", full.join(", ")),
        ))
    }

    /// One page of the user's rooms, in room id order: at most `limit` rooms after the cursor
    /// `after` (a room id), and the cursor of the next page if there is one.
    pub async fn list_rooms(
        &self,
        user: &UserId,
        after: Option<&str>,
        limit: usize,
    ) -> ChatResult<(Vec<RoomSummary>, Option<RoomId>)> {
        if limit == 0 || limit > MAX_ROOM_PAGE {
            return Err(ChatError::bad_field(format!(
                "limit must be 1 to {MAX_ROOM_PAGE}"
            )));
        }
        let after = after
            .map(|a| RoomId::parse(a).map_err(|_| ChatError::bad_field("after: not a room cursor")))
            .transpose()?;
        let mut memberships = self
            .store
            .memberships_page(user, after.as_ref(), limit + 1)
            .await?;
        let next = (memberships.len() > limit).then(|| {
            memberships.truncate(limit);
            memberships.last().map(|m| m.room.clone())
        });
        let summaries = memberships.into_iter().map(|m| async move {
            let room = self
                .store
                .room(&m.room)
                .await?
                .ok_or(ChatError::RoomNotFound)?;
            let last_message = self.read(&m.room, &HistoryQuery::latest(1)).await?.pop();
            let unread = self
                .store
                .count_unread(&m.room, user, m.read_seq, UNREAD_CAP)
                .await?;
            Ok::<_, ChatError>(RoomSummary {
                last_seq: last_message.as_ref().map_or(0, |msg| msg.seq),
                room,
                last_message,
                read_seq: m.read_seq,
                unread,
            })
        });
        // A few rooms at a time: a page costs the store a bounded number of reads at once.
        let rooms = futures_util::stream::iter(summaries)
            .buffered(16)
            .try_collect()
            .await?;
        Ok((rooms, next.flatten()))
    }

    /// The ids of the user's rooms (what a new connection subscribes to).
    pub async fn room_ids(&self, user: &UserId) -> ChatResult<Vec<RoomId>> {
        Ok(self
            .store
            .memberships_of(user)
            .await?
            .into_iter()
            .map(|m| m.room)
            .collect())
    }

    /// Moves the user's read position forward and, if it moved, tells the room.
    pub async fn mark_read(&self, user: &UserId, room: &str, seq: Seq) -> ChatResult<Seq> {
        let room = parse_room(room)?;
        self.require_member(&room, user).await?;
        let ReadMark { read_seq, moved } = self.store.mark_read(&room, user, seq).await?;
        if moved {
            let event = BusEvent::Receipt {
                room: room.clone(),
                user: user.clone(),
                read_seq,
            };
            self.publish_quietly(&Topic::Room(room), &event).await;
        }
        Ok(read_seq)
    }

    /// The room's members and whether each is online.
    pub async fn presence(&self, user: &UserId, room: &str) -> ChatResult<Vec<MemberPresence>> {
        let room = self.room(user, room).await?;
        let online = self
            .presence
            .online(&room.members)
            .await
            .map_err(|e| ChatError::Bus(e.to_string()))?;
        Ok(room
            .members
            .into_iter()
            .zip(online)
            .map(|(user, online)| MemberPresence { user, online })
            .collect())
    }

    /// A history read: the newest page comes from the recent cache when it can vouch for it.
    async fn read(&self, room: &RoomId, query: &HistoryQuery) -> ChatResult<Vec<Message>> {
        if *query == HistoryQuery::latest(query.limit)
            && let Some(messages) = self.cached(room, query).await?
        {
            return Ok(messages);
        }
        Ok(self.store.history(room, query).await?)
    }

    /// What the recent cache holds for `query` (the newest page, or everything after a seq),
    /// if it can prove that is what the store holds: contiguous (checked by the cache) and
    /// reaching the store's last seq. The last check matters: a node that died between
    /// storing a message and caching it leaves the store ahead of the cache.
    async fn cached(
        &self,
        room: &RoomId,
        query: &HistoryQuery,
    ) -> ChatResult<Option<Vec<Message>>> {
        let Some(recent) = &self.recent else {
            return Ok(None);
        };
        let (found, last_seq) = match query.after {
            Some(after) => tokio::join!(
                recent.after(room, after, query.limit),
                self.store.last_seq(room)
            ),
            None => tokio::join!(recent.latest(room, query.limit), self.store.last_seq(room)),
        };
        let (Some(found), last_seq) = (found, last_seq?) else {
            return Ok(None);
        };
        let newest = match query.after {
            Some(after) => found.last().map_or(after, |m| m.seq),
            None => found.first().map_or(0, |m| m.seq),
        };
        // A page that is full may legitimately stop short of the last seq.
        let complete = newest == last_seq || (query.after.is_some() && found.len() == query.limit);
        metrics::counter!("chatd_recent_cache_reads_total", "hit" => complete.to_string())
            .increment(1);
        Ok(complete.then_some(found))
    }

    fn parse_users(&self, users: &[String]) -> ChatResult<BTreeSet<UserId>> {
        users
            .iter()
            .map(|u| UserId::parse(u).map_err(|e| ChatError::bad_field(format!("members: {e}"))))
            .collect()
    }

    async fn announce_added(&self, room: &Room, users: &[UserId]) {
        let event = BusEvent::RoomAdded { room: room.clone() };
        for user in users {
            self.publish_quietly(&Topic::User(user.clone()), &event)
                .await;
        }
    }

    async fn announce_members(&self, room: &Room) {
        let event = BusEvent::Members {
            room: room.id.clone(),
            members: room.members.clone(),
        };
        self.publish_quietly(&Topic::Room(room.id.clone()), &event)
            .await;
    }

    /// For events whose loss a client repairs by itself (room lists and receipts are
    /// re-read on reconnect): logged, not failed.
    async fn publish_quietly(&self, topic: &Topic, event: &BusEvent) {
        if let Err(e) = self.bus.publish(topic, event.encode()).await {
            tracing::warn!(error = %e, ?topic, "event not published");
        }
    }
}

/// A room id from a client. Malformed ids name no room, so they get the same answer as
/// unknown rooms.
fn parse_room(room: &str) -> ChatResult<RoomId> {
    RoomId::parse(room).map_err(|_| ChatError::RoomNotFound)
}

fn validate_client_msg_id(id: &str) -> ChatResult<()> {
    let printable = |c: char| c.is_ascii_graphic();
    if id.is_empty() || id.len() > MAX_CLIENT_MSG_ID || !id.chars().all(printable) {
        return Err(ChatError::bad_field(format!(
            "clientMsgId must be 1 to {MAX_CLIENT_MSG_ID} printable ASCII characters"
        )));
    }
    Ok(())
}
