//! The one owner of presence: connections report in and out here, a task vouches for this
//! node's connections every `presence.refresh_ms`, and the chat service asks who is online.
//! Times come from the node's clock.

use std::{sync::Arc, time::Duration};

use super::{Presence, PresenceError};
use crate::{clock::Clock, config::PresenceSettings, domain::UserId, hub::ConnId};

pub struct PresenceService {
    registry: Arc<dyn Presence>,
    clock: Arc<dyn Clock>,
    node: String,
    ttl: Duration,
    refresh: Duration,
}

impl PresenceService {
    pub fn new(
        registry: Arc<dyn Presence>,
        clock: Arc<dyn Clock>,
        node: &str,
        settings: &PresenceSettings,
    ) -> Self {
        Self {
            registry,
            clock,
            node: node.to_owned(),
            ttl: Duration::from_millis(settings.ttl_ms),
            refresh: Duration::from_millis(settings.refresh_ms),
        }
    }

    /// The key of a connection in the registry: unique across the cluster.
    fn key(&self, conn: ConnId) -> String {
        format!("{}:{conn}", self.node)
    }

    /// A connection went live.
    pub async fn connected(&self, user: &UserId, conn: ConnId) -> Result<(), PresenceError> {
        let entry = (user.clone(), self.key(conn));
        self.registry
            .refresh(&[entry], self.clock.now(), self.ttl)
            .await
    }

    /// A connection ended.
    pub async fn disconnected(&self, user: &UserId, conn: ConnId) -> Result<(), PresenceError> {
        self.registry
            .remove(user, &self.key(conn), self.clock.now())
            .await
    }

    /// Vouches for these connections of this node for another `presence.ttl_ms`.
    pub async fn vouch(&self, connections: &[(UserId, ConnId)]) -> Result<(), PresenceError> {
        let entries: Vec<_> = connections
            .iter()
            .map(|(user, conn)| (user.clone(), self.key(*conn)))
            .collect();
        self.registry
            .refresh(&entries, self.clock.now(), self.ttl)
            .await
    }

    /// How often [`vouch`](Self::vouch) must run.
    pub fn refresh_every(&self) -> Duration {
        self.refresh
    }

    /// Whether each user has a live connection anywhere.
    pub async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, PresenceError> {
        self.registry.online(users, self.clock.now()).await
    }
}
