//! Who is online: each live connection is an entry with an expiry, refreshed by its node.
//! A node that dies stops refreshing, so its users go offline within `presence.ttl_ms`,
//! with nobody having to notice the death. The registry is in-process for one node
//! ([`LocalPresence`]) or in Redis for a cluster (`crate::redis::RedisPresence`); the rest of
//! the node talks to it only through [`PresenceService`].

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::UserId;

mod local;
mod service;

pub use local::LocalPresence;
pub use service::PresenceService;

/// One connection: its user and a key unique in the cluster ("<node>:<conn id>").
pub type PresenceEntry = (UserId, String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresenceError {
    #[error("presence unavailable: {0}")]
    Unavailable(String),
}

/// A registry of connections with expiries; `now` is the node's clock.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Marks these connections online until `now + ttl`.
    async fn refresh(
        &self,
        entries: &[PresenceEntry],
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<(), PresenceError>;

    /// Marks one connection offline now.
    async fn remove(
        &self,
        user: &UserId,
        conn: &str,
        now: DateTime<Utc>,
    ) -> Result<(), PresenceError>;

    /// Whether each user has at least one live connection anywhere.
    async fn online(
        &self,
        users: &[UserId],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>, PresenceError>;
}
