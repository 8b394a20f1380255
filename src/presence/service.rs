//! The one owner of presence: connections report in, out and activity here; a task keeps
//! the node's lease, drops dead nodes' connections, re-evaluates users whose time came and
//! reconciles the registry with the node's live connections; changes are announced on the
//! bus (topic [`Topic::Presence`]) by whichever node made them. Times come from the node's
//! clock.

use std::{collections::HashMap, slice, sync::Arc, time::Duration};

use super::{Millis, PresenceError, PresenceRegistry, PresenceResult, Record};
use crate::{
    bus::{Bus, BusEvent, Topic},
    clock::Clock,
    config::PresenceSettings,
    domain::{UserId, UserPresence},
    hub::ConnId,
    store::Store,
};

/// Compare-and-swap rounds before a change gives up (only many nodes changing one user's
/// record at the same instant come near it).
const SWAP_ROUNDS: usize = 16;
/// Users re-evaluated per sweep, at most.
const DUE_BATCH: usize = 512;

pub struct PresenceService {
    registry: Arc<dyn PresenceRegistry>,
    bus: Arc<dyn Bus>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    node: String,
    ttl: Millis,
    refresh: Duration,
    grace: Millis,
    away_after: Millis,
}

fn millis(ms: u64) -> Millis {
    Millis::try_from(ms).unwrap_or(Millis::MAX)
}

impl PresenceService {
    pub fn new(
        registry: Arc<dyn PresenceRegistry>,
        bus: Arc<dyn Bus>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        node: &str,
        settings: &PresenceSettings,
    ) -> Self {
        Self {
            registry,
            bus,
            store,
            clock,
            node: node.to_owned(),
            ttl: millis(settings.ttl_ms),
            refresh: Duration::from_millis(settings.refresh_ms),
            grace: millis(settings.leave_grace_ms),
            away_after: millis(settings.away_after_ms),
        }
    }

    fn now(&self) -> Millis {
        self.clock.now().timestamp_millis()
    }

    /// The key of a connection in the records: unique across the cluster.
    fn key(&self, conn: ConnId) -> String {
        format!("{}:{conn}", self.node)
    }

    /// How often [`maintain`](Self::maintain) must run.
    pub fn refresh_every(&self) -> Duration {
        self.refresh
    }

    /// Applies `change` to the user's record and announces what contacts should now see,
    /// if that changed. Read, change, compare-and-swap, again if another node got there first.
    async fn change(
        &self,
        user: &UserId,
        change: impl Fn(&mut Record, Millis),
    ) -> PresenceResult<()> {
        for _ in 0..SWAP_ROUNDS {
            let stored = self
                .registry
                .load(slice::from_ref(user))
                .await?
                .pop()
                .flatten();
            let mut record = Record::parse(stored.as_deref());
            let now = self.now();
            change(&mut record, now);
            let announcement = record.settle(user, now, self.away_after);
            let due = record.next_due(now, self.away_after);
            if self
                .registry
                .swap(user, stored.as_deref(), &record.encode(), due)
                .await?
            {
                if let Some(presence) = announcement {
                    self.announce(presence).await;
                }
                return Ok(());
            }
        }
        Err(PresenceError::Unavailable(
            "presence record too contended".into(),
        ))
    }

    async fn announce(&self, presence: UserPresence) {
        let topic = Topic::Presence(presence.user.clone());
        let event = BusEvent::Presence { presence };
        // Lost announcements heal: every connection gets a fresh snapshot when it reconnects.
        if let Err(e) = self.bus.publish(&topic, event.encode()).await {
            tracing::warn!(error = %e, "presence change not announced");
        }
    }

    /// A connection went live.
    pub async fn connected(&self, user: &UserId, conn: ConnId) -> PresenceResult<()> {
        let hidden = match self.store.user_settings(user).await {
            Ok(settings) => Some(settings.hide_presence),
            Err(e) => {
                tracing::warn!(error = %e, "settings unreadable; presence keeps the last known");
                None
            }
        };
        let key = self.key(conn);
        self.registry.set_node_user(&self.node, user, true).await?;
        self.change(user, |record, now| {
            if let Some(hidden) = hidden {
                record.hidden = hidden;
            }
            record.connect(&key, &self.node, now);
        })
        .await
    }

    /// The user did something on this connection.
    pub async fn active(&self, user: &UserId, conn: ConnId) -> PresenceResult<()> {
        let key = self.key(conn);
        self.change(user, |record, now| record.activity(&key, now))
            .await
    }

    /// A connection ended: `cleanly` (a close, or a deliberate close by this node) or not
    /// (then the user keeps their state for `presence.leave_grace_ms`); `last_here` when the
    /// user has no other connection on this node.
    pub async fn disconnected(
        &self,
        user: &UserId,
        conn: ConnId,
        cleanly: bool,
        last_here: bool,
    ) -> PresenceResult<()> {
        let key = self.key(conn);
        let grace = (!cleanly).then_some(self.grace);
        self.change(user, |record, now| record.disconnect(&key, now, grace))
            .await?;
        if last_here {
            self.registry.set_node_user(&self.node, user, false).await?;
        }
        Ok(())
    }

    /// The user's `hidePresence` setting changed.
    pub async fn set_hidden(&self, user: &UserId, hidden: bool) -> PresenceResult<()> {
        self.change(user, |record, _| record.hidden = hidden).await
    }

    /// What contacts were last told about these users (never seen: offline, version 0).
    pub async fn snapshot(&self, users: &[UserId]) -> PresenceResult<Vec<UserPresence>> {
        let records = self.registry.load(users).await?;
        Ok(users
            .iter()
            .zip(records)
            .map(|(user, stored)| Record::parse(stored.as_deref()).view(user))
            .collect())
    }

    /// Re-evaluates the users whose time came (a grace or an active window ran out).
    pub async fn sweep_due(&self) -> PresenceResult<()> {
        for user in self.registry.due(self.now(), DUE_BATCH).await? {
            self.change(&user, |_, _| {}).await?;
        }
        Ok(())
    }

    /// Every `refresh_every`: renews this node's lease, drops the connections of nodes whose
    /// lease ran out, and makes the registry agree with `local`, this node's live connections
    /// (after a lost update or a registry that lost its data).
    pub async fn maintain(&self, local: &[(UserId, ConnId)]) -> PresenceResult<()> {
        let now = self.now();
        self.registry
            .renew_lease(&self.node, now.saturating_add(self.ttl))
            .await?;
        for dead in self.registry.expired_nodes(now).await? {
            if dead != self.node {
                self.release(&dead).await?;
            }
        }
        self.reconcile(local).await
    }

    /// Drops every connection of `node` and forgets it: for a dead node, and for this one when
    /// it stops (or starts: a previous process may have had its name).
    pub async fn release(&self, node: &str) -> PresenceResult<()> {
        let users = self.registry.node_users(node).await?;
        tracing::info!(node, users = users.len(), "releasing a node's presence");
        for user in users {
            self.change(&user, |record, now| record.drop_nodes(|n| n == node, now))
                .await?;
        }
        self.registry.forget_node(node).await
    }

    /// Releases this node (a graceful stop: its users go offline at once).
    pub async fn release_self(&self) -> PresenceResult<()> {
        self.release(&self.node.clone()).await
    }

    async fn reconcile(&self, local: &[(UserId, ConnId)]) -> PresenceResult<()> {
        let mut wanted: HashMap<UserId, Vec<String>> = HashMap::new();
        for (user, conn) in local {
            wanted
                .entry(user.clone())
                .or_default()
                .push(self.key(*conn));
        }
        let listed = self.registry.node_users(&self.node).await?;
        for user in wanted.keys().filter(|u| !listed.contains(u)) {
            self.registry.set_node_user(&self.node, user, true).await?;
        }
        let mut users: Vec<UserId> = wanted.keys().cloned().collect();
        users.extend(listed.into_iter().filter(|u| !wanted.contains_key(u)));
        let records = self.registry.load(&users).await?;
        for (user, stored) in users.iter().zip(records) {
            let record = Record::parse(stored.as_deref());
            let keys = wanted.get(user).map(Vec::as_slice).unwrap_or_default();
            let stale: Vec<String> = record
                .conns
                .iter()
                .filter(|(key, conn)| conn.node == self.node && !keys.contains(key))
                .map(|(key, _)| key.clone())
                .collect();
            let missing: Vec<&String> = keys
                .iter()
                .filter(|key| !record.conns.contains_key(*key))
                .collect();
            if stale.is_empty() && missing.is_empty() {
                continue;
            }
            tracing::info!(%user, stale = stale.len(), missing = missing.len(), "presence reconciled");
            self.change(user, |record, now| {
                for key in &stale {
                    record.disconnect(key, now, None);
                }
                for key in &missing {
                    record.connect(key, &self.node, now);
                }
            })
            .await?;
            if keys.is_empty() {
                self.registry.set_node_user(&self.node, user, false).await?;
            }
        }
        Ok(())
    }
}
