//! The bus: how nodes tell each other (and themselves) that something happened in a room.
//!
//! Every event goes through the bus, even on a single node (the local bus loops publishes
//! back), so one node and a cluster deliver along the same path. The bus is only the fast
//! path: it may drop events (Redis Pub/Sub does, during a disconnect), which is why the hub
//! orders messages by `seq` and fetches anything missing from the store.
//!
//! Topics are rooms (message, receipt, typing and member events, wanted by every node with a
//! local member), users (rooms added or removed, unread counts, wanted by every node where
//! that user is connected) and users' presence (wanted by every node where a contact of that
//! user is connected). Subscriptions are reference-counted per node by the hub, never per connection.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::domain::{Message, Role, Room, RoomId, Seq, UserId, UserPresence};

/// One message's path through the cluster: an id the storing node chose, logged at every
/// hop (`target: chatd::trace`), and when it was published (for delivery latency).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trace {
    pub id: String,
    /// The node that stored and published it.
    pub node: String,
    pub published_at_ms: i64,
}

pub mod local;

pub use local::{LocalBroker, LocalBus};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    Room(RoomId),
    User(UserId),
    Presence(UserId),
}

/// What a bus hands to its node, in the order it received it.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Event {
        topic: Topic,
        payload: Bytes,
    },
    /// The bus was disconnected and is subscribed again: events published meanwhile may be
    /// lost, so the node must catch up from the store. Sent before any event that follows the
    /// reconnection.
    Resynced,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    #[error("bus unavailable: {0}")]
    Unavailable(String),
}

/// Deliveries waiting for the node; past this the bus stops reading (back-pressure).
pub const DELIVERY_QUEUE: usize = 4096;

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Sends `payload` to every node subscribed to `topic` (this one included).
    async fn publish(&self, topic: &Topic, payload: Bytes) -> Result<(), BusError>;

    /// Starts receiving `topic`. The intent is registered when this is called (so calls take
    /// effect in call order); the future resolves once events of the topic are flowing.
    fn subscribe(&self, topic: &Topic) -> BoxFuture<'static, Result<(), BusError>>;

    /// Stops receiving `topic`, ordered after every earlier subscribe call.
    fn unsubscribe(&self, topic: &Topic);

    /// Cheap round trip, for readiness checks.
    async fn ping(&self) -> Result<(), BusError>;
}

/// What travels between nodes. JSON, so a node of a newer version can be rolled in beside an
/// older one; unknown events are logged and skipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum BusEvent {
    /// On the room topic: a stored message (or change), and how to follow it in the logs.
    Message {
        message: Message,
        /// Absent in events from nodes that did not trace.
        #[serde(default)]
        trace: Option<Trace>,
    },
    /// On the room topic: a member's public positions moved.
    Receipt {
        room: RoomId,
        user: UserId,
        #[serde(default)]
        delivered_seq: Seq,
        read_seq: Seq,
    },
    /// On the room topic: a member started or stopped typing.
    Typing {
        room: RoomId,
        user: UserId,
        typing: bool,
    },
    /// On a user topic: the user's own read position in a room moved.
    Unread {
        room: RoomId,
        unread: u64,
        read_seq: Seq,
        total: u64,
    },
    /// On a presence topic: what the user's contacts see changed.
    Presence { presence: UserPresence },
    /// On the room topic: the member list or the roles changed.
    Members {
        room: RoomId,
        members: Vec<UserId>,
        /// Absent in events from nodes without roles.
        #[serde(default)]
        roles: BTreeMap<UserId, Role>,
    },
    /// On a user topic: the user is now a member of this room.
    RoomAdded { room: Room },
    /// On a user topic: the user is no longer a member of this room.
    RoomRemoved { room: RoomId },
    /// On a user topic: the user's tokens issued before `before` are revoked.
    Revoked {
        #[serde(with = "crate::domain::timestamp")]
        before: chrono::DateTime<chrono::Utc>,
    },
}

impl BusEvent {
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("bus events always serialize"))
    }

    pub fn decode(payload: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}
