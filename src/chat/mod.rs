//! The service layer: the message pipeline and room management of shared/design.md §2.
//! WebSocket and REST both come through here; it sees the store, the bus and the clock only
//! through their traits.
//!
//! The pipeline of a send: validate -> authorize (member?) -> store (which deduplicates by
//! clientMsgId and assigns seq and createdAt atomically) -> publish -> ack. The ack is only
//! given once the message is both durable and announced; if announcing fails the sender gets
//! a retryable error, and its retry (same clientMsgId) finds the stored message and announces
//! it again.

use std::sync::Arc;

use crate::{
    bus::{Bus, BusEvent, Topic, Trace},
    cache::RecentCache,
    clock::Clock,
    config::{Limits, PresenceSettings},
    domain::{EntryKind, Message, Room, RoomId, UserId},
    presence::PresenceService,
    protocol::ErrorCode,
    store::{Appended, NewMessage, Store, StoreError},
};

mod changes;
mod history;
mod presence;
mod receipts;
mod rooms;

pub use changes::{MAX_EMOJI_BYTES, Pending, Write};
pub use presence::{MemberPresence, RoomPresence};
pub use receipts::{ReceiptBatcher, unread_counts};

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
    pub(crate) fn invalid(code: ErrorCode, message: impl Into<String>) -> Self {
        ChatError::Invalid {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_field(message: impl Into<String>) -> Self {
        Self::invalid(ErrorCode::BadField, message)
    }

    /// What a client may see of this error: its code, and a message. For internal causes
    /// (store, bus, bugs) the message is fixed and the detail is logged under a request id
    /// that the client also gets, so an operator can find it.
    pub fn public(&self) -> PublicError {
        let code = self.code();
        metrics::counter!("chatd_errors_total", "code" => code.as_str()).increment(1);
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
pub struct HistoryPage<T = Message> {
    pub messages: Vec<T>,
    /// More messages match beyond this page.
    pub more: bool,
}

pub struct Chat {
    pub(super) store: Arc<dyn Store>,
    pub(super) bus: Arc<dyn Bus>,
    /// Cluster mode: serves resumes and newest pages when it can vouch for them.
    pub(super) recent: Option<Arc<dyn RecentCache>>,
    pub(super) presence: Arc<PresenceService>,
    pub(super) receipts: Arc<ReceiptBatcher>,
    /// Offline notifications: handed each new message and each read, never waited for.
    pub(super) push: Arc<crate::push::Push>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) limits: Limits,
    pub(super) presence_settings: PresenceSettings,
    /// This node's id (in trace logs).
    pub(super) node: String,
    /// Memberships trusted without the store (see `crate::membership`).
    pub(super) memberships: Arc<crate::membership::MembershipCache>,
}

/// What a [`Chat`] is built from besides the store and bus.
pub struct ChatParts {
    pub recent: Option<Arc<dyn RecentCache>>,
    pub presence: Arc<PresenceService>,
    pub receipts: Arc<ReceiptBatcher>,
    pub push: Arc<crate::push::Push>,
    pub clock: Arc<dyn Clock>,
    pub limits: Limits,
    pub presence_settings: PresenceSettings,
    pub node: String,
    pub memberships: Arc<crate::membership::MembershipCache>,
}

impl Chat {
    pub fn new(store: Arc<dyn Store>, bus: Arc<dyn Bus>, parts: ChatParts) -> Self {
        let ChatParts {
            recent,
            presence,
            receipts,
            push,
            clock,
            limits,
            presence_settings,
            node,
            memberships,
        } = parts;
        Self {
            store,
            bus,
            recent,
            presence,
            receipts,
            push,
            clock,
            limits,
            presence_settings,
            node,
            memberships,
        }
    }

    /// The message pipeline for a plain message (see [`Chat::write`] for the rest). Returns
    /// the stored message (the first one, for a retry).
    pub async fn send(
        &self,
        sender: &UserId,
        room: &str,
        client_msg_id: &str,
        text: &str,
    ) -> ChatResult<Appended> {
        let message = Write::Message {
            text,
            reply_to: None,
        };
        self.write(sender, room, client_msg_id, message).await
    }

    /// Store, then cache, then publish: each ack waits for all three. The entries are
    /// stored in one batch and announced in their order.
    async fn append_all(&self, mut news: Vec<NewMessage>) -> Vec<ChatResult<Appended>> {
        if news.is_empty() {
            return Vec::new();
        }
        for new in &mut news {
            // Marked in the same write, so no crash between storing and deciding loses it.
            new.notify = new.kind == EntryKind::Message && self.push.enabled();
        }
        let started = std::time::Instant::now();
        let stored = self.store.append_batch(news, self.clock.now()).await;
        metrics::histogram!("chatd_store_append_seconds").record(started.elapsed());
        let mut answers = Vec::with_capacity(stored.len());
        for appended in stored {
            let announced = match appended {
                Ok(appended) => self.announce(&appended).await.map(|()| appended),
                Err(e) => Err(e.into()),
            };
            answers.push(announced);
        }
        answers
    }

    /// Tells the cache and the bus of a stored entry (again, for a retry: its first attempt
    /// may have failed right here).
    async fn announce(&self, appended: &Appended) -> ChatResult<()> {
        let room = appended.message.room.clone();
        if appended.message.is_message() && !appended.duplicate && self.push.enabled() {
            self.push.message_stored(&appended.message);
        }
        metrics::counter!("chatd_messages_stored_total", "duplicate" => appended.duplicate.to_string())
            .increment(1);
        if let Some(recent) = &self.recent {
            let message = &appended.message;
            let cached = match (message.kind, message.target) {
                // The cache holds the text the delete removed: it starts over for the room.
                (EntryKind::Delete, _) => recent.forget(&room).await,
                // An edit cached just after a delete made the cache forget would bring its
                // text back: the delete marks its message first, so look after pushing.
                (EntryKind::Edit, Some(target)) if !message.deleted => {
                    let pushed = recent.push(message).await;
                    let now_deleted = self.store.entries(&room, &[target]).await?;
                    if pushed.is_ok() && now_deleted.first().is_some_and(|m| m.deleted) {
                        recent.forget(&room).await
                    } else {
                        pushed
                    }
                }
                _ => recent.push(message).await,
            };
            cached.map_err(|e| ChatError::Bus(format!("stored, not yet delivered ({e})")))?;
        }
        let message = &appended.message;
        let trace = Trace {
            id: uuid::Uuid::new_v4().simple().to_string(),
            node: self.node.clone(),
            published_at_ms: chrono::Utc::now().timestamp_millis(),
        };
        // Never the text (it is the users'), only what finds the message.
        tracing::info!(
            target: "chatd::trace", hop = "stored", room = %room, seq = message.seq,
            id = %message.id, trace = %trace.id, node = %trace.node,
            duplicate = appended.duplicate, "message stored"
        );
        let event = BusEvent::Message {
            message: message.clone(),
            trace: Some(trace.clone()),
        };
        let started = std::time::Instant::now();
        self.bus
            .publish(&Topic::Room(room.clone()), event.encode())
            .await
            .map_err(|e| ChatError::Bus(format!("stored, not yet delivered ({e})")))?;
        metrics::histogram!("chatd_bus_publish_seconds").record(started.elapsed());
        tracing::info!(
            target: "chatd::trace", hop = "published", room = %room, seq = message.seq,
            id = %message.id, trace = %trace.id, node = %trace.node, "message published"
        );
        Ok(())
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

    pub(super) async fn require_member(&self, room: &RoomId, user: &UserId) -> ChatResult<()> {
        if self.memberships.is_member(room, user) {
            return Ok(());
        }
        let ticket = self.memberships.ticket();
        match self.store.membership(room, user).await? {
            Some(_) => {
                self.memberships.remember(room, user, ticket);
                Ok(())
            }
            None => Err(ChatError::RoomNotFound),
        }
    }

    /// The room, if `user` is a member.
    pub async fn room(&self, user: &UserId, room: &str) -> ChatResult<Room> {
        let room = parse_room(room)?;
        self.require_member(&room, user).await?;
        self.store.room(&room).await?.ok_or(ChatError::RoomNotFound)
    }

    pub(super) async fn announce_added(&self, room: &Room, users: &[UserId]) {
        let event = BusEvent::RoomAdded { room: room.clone() };
        for user in users {
            self.publish_quietly(&Topic::User(user.clone()), &event)
                .await;
        }
    }

    /// Tells the room's members, and every node that follows it, who its members are now.
    /// This node forgets what it knew of them at once; the others when the event arrives.
    pub(super) async fn announce_members(&self, room: &Room) {
        self.memberships.forget_room(&room.id);
        let event = BusEvent::Members {
            room: room.id.clone(),
            members: room.members.clone(),
            roles: room.roles.clone(),
        };
        self.publish_quietly(&Topic::Room(room.id.clone()), &event)
            .await;
    }

    /// For events whose loss a client repairs by itself (room lists and receipts are
    /// re-read on reconnect): logged, not failed.
    pub(super) async fn publish_quietly(&self, topic: &Topic, event: &BusEvent) {
        if let Err(e) = self.bus.publish(topic, event.encode()).await {
            tracing::warn!(error = %e, ?topic, "event not published");
        }
    }
}

/// A room id from a client. Malformed ids name no room, so they get the same answer as
/// unknown rooms.
pub(super) fn parse_room(room: &str) -> ChatResult<RoomId> {
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
