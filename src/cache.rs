//! The recent-message cache of cluster mode: the last N messages of each room (in Redis:
//! `crate::redis::RedisRecentCache`), which
//! serves the newest history page without a MongoDB read (a resume reads the store: one
//! query for all its rooms, see `Store::histories_after`).
//!
//! It never serves what the store does not hold (messages enter it only after the store
//! accepted them) and it never answers with a hole: a read is served only if the cache can
//! prove it holds the whole page, contiguous; otherwise the caller falls back to the store. Losing the cache (Redis restarted) costs speed, not correctness.
//! A failed cache write fails the send with a retryable error, so an acked message is in the
//! cache unless Redis itself lost it.

use async_trait::async_trait;

use crate::domain::{Message, RoomId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    #[error("recent cache unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait RecentCache: Send + Sync + 'static {
    /// Adds a stored message (idempotent).
    async fn push(&self, message: &Message) -> Result<(), CacheError>;

    /// Drops what the cache holds of `room` (a delete removed text it may hold).
    async fn forget(&self, room: &RoomId) -> Result<(), CacheError>;

    /// The newest `limit` messages, newest first, if the cache can vouch for them (contiguous;
    /// whether they reach the store's newest seq is for the caller to check).
    async fn latest(&self, room: &RoomId, limit: usize) -> Option<Vec<Message>>;
}
