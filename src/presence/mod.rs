//! Who is online, away or offline, for the whole cluster.
//!
//! Each user has one [`Record`] in a registry: their live connections (each with the node it
//! is on) and what their contacts were last told, with a version. Every change is a
//! read-modify-write of that record with compare-and-swap, so whichever node makes a change
//! (a connection opening or ending, a dead node's connections being dropped, a grace period
//! running out) announces it exactly once, with the next version.
//!
//! Crash safety: each node holds a lease in the registry, renewed every `presence.refresh_ms`
//! and valid for `presence.ttl_ms`. When a node dies its lease runs out, and any surviving
//! node drops its connections from their users' records and announces those who went
//! offline. Time-driven changes (grace periods, idle connections turning away) are scheduled
//! in the registry and picked up by whichever node sweeps first.
//!
//! The registry is in-process for one node ([`LocalPresence`]) or in Redis for a cluster
//! (`crate::redis::RedisPresence`); both only store, the rules are in [`record`] and
//! [`PresenceService`], once.

use async_trait::async_trait;

use crate::domain::UserId;

mod local;
pub mod record;
mod service;

pub use local::LocalPresence;
pub use record::{Millis, Record};
pub use service::PresenceService;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresenceError {
    #[error("presence unavailable: {0}")]
    Unavailable(String),
}

pub type PresenceResult<T> = Result<T, PresenceError>;

/// Where the records, leases and schedules live. Records are opaque strings here.
#[async_trait]
pub trait PresenceRegistry: Send + Sync + 'static {
    /// The records of these users, in order (`None`: never stored, or expired).
    async fn load(&self, users: &[UserId]) -> PresenceResult<Vec<Option<String>>>;

    /// Stores `record` for `user` if the stored one is still `expected` (`None`: absent), and
    /// schedules the user's next evaluation at `due` (or unschedules it), atomically. False
    /// if the record changed meanwhile (the caller reads it again).
    async fn swap(
        &self,
        user: &UserId,
        expected: Option<&str>,
        record: &str,
        due: Option<Millis>,
    ) -> PresenceResult<bool>;

    /// Users whose evaluation is due at `now`, at most `limit`.
    async fn due(&self, now: Millis, limit: usize) -> PresenceResult<Vec<UserId>>;

    /// Marks `node` alive until `until`.
    async fn renew_lease(&self, node: &str, until: Millis) -> PresenceResult<()>;

    /// Nodes whose lease ran out before `now`.
    async fn expired_nodes(&self, now: Millis) -> PresenceResult<Vec<String>>;

    /// Takes over the lease of `node` until `until` if it ran out before `now`, atomically:
    /// of several nodes claiming one dead node, one wins (and releases its users; if it dies
    /// doing so, the claim runs out and another node claims it).
    async fn claim_expired(&self, node: &str, now: Millis, until: Millis) -> PresenceResult<bool>;

    /// Records whether `user` has connections on `node` (so the node's death finds them).
    async fn set_node_user(&self, node: &str, user: &UserId, present: bool) -> PresenceResult<()>;

    async fn node_users(&self, node: &str) -> PresenceResult<Vec<UserId>>;

    /// Forgets a node's lease and user list (once its users were handled).
    async fn forget_node(&self, node: &str) -> PresenceResult<()>;
}
