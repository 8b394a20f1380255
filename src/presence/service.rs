//! The one owner of presence: connections report in, out and activity here; a task keeps
//! the node's lease, drops dead nodes' connections, re-evaluates users whose time came and
//! reconciles the registry with the node's live connections; changes are announced on the
//! bus (topic [`Topic::Presence`]) by whichever node made them. Times come from the node's
//! clock.

use std::{
    collections::HashSet,
    slice,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;

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
/// Users of a dead node changed at once.
const RELEASE_CONCURRENCY: usize = 16;

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
    /// Record entries of this node without a live connection at the last reconciliation.
    suspects: Mutex<HashSet<String>>,
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
            suspects: Mutex::default(),
        }
    }

    fn now(&self) -> Millis {
        self.clock.now().timestamp_millis()
    }

    /// The key of a connection in the records: unique across the cluster.
    fn key(&self, conn: ConnId) -> String {
        format!("{}:{conn}", self.node)
    }

    /// How often the lease is renewed and the registry reconciled.
    pub fn refresh_every(&self) -> Duration {
        self.refresh
    }

    /// Applies `change` to the user's record and announces what contacts should now see,
    /// if that changed. Read, change, compare-and-swap, again if another node got there first.
    /// `change` is told whether the record is new (nothing stored).
    async fn change(
        &self,
        user: &UserId,
        change: impl Fn(&mut Record, Millis, bool),
    ) -> PresenceResult<()> {
        // What this call wrote, if the swap's answer was lost (then it reads as "changed").
        let mut attempted: Option<(String, Option<UserPresence>)> = None;
        for _ in 0..SWAP_ROUNDS {
            let stored = self
                .registry
                .load(slice::from_ref(user))
                .await?
                .pop()
                .flatten();
            if let Some((written, announcement)) = attempted.take()
                && stored.as_deref() == Some(written.as_str())
            {
                // The write did happen (or one to the same content): finish it.
                if let Some(presence) = announcement {
                    self.announce(presence).await;
                }
                return Ok(());
            }
            let mut record = Record::parse(stored.as_deref());
            let now = self.now();
            change(&mut record, now, stored.is_none());
            let announcement = record.settle(user, now, self.away_after);
            let due = record.next_due(now, self.away_after);
            let encoded = record.encode();
            if self
                .registry
                .swap(user, stored.as_deref(), &encoded, due)
                .await?
            {
                if let Some(presence) = announcement {
                    self.announce(presence).await;
                }
                return Ok(());
            }
            attempted = Some((encoded, announcement));
        }
        Err(PresenceError::Unavailable(
            "presence record too contended".into(),
        ))
    }

    async fn announce(&self, presence: UserPresence) {
        let topic = Topic::Presence(presence.user.clone());
        let event = BusEvent::Presence { presence };
        metrics::counter!("chatd_presence_announcements_total").increment(1);
        // Lost announcements heal: every connection gets a fresh snapshot when it reconnects.
        if let Err(e) = self.bus.publish(&topic, event.encode()).await {
            tracing::warn!(error = %e, "presence change not announced");
        }
    }

    /// A connection went live.
    pub async fn connected(&self, user: &UserId, conn: ConnId) -> PresenceResult<()> {
        // The registry holds the setting once it has a record (`set_hidden` keeps it there);
        // the store's copy only seeds a new record (read only then), so a reconnect racing a
        // change of the setting cannot undo it.
        let stored = self.registry.load(slice::from_ref(user)).await?;
        let known = stored.first().is_some_and(Option::is_some);
        let hidden = if known {
            None
        } else {
            match self.store.user_settings(user).await {
                Ok(settings) => Some(settings.hide_presence),
                Err(e) => {
                    tracing::warn!(error = %e, "settings unreadable; presence keeps the last known");
                    None
                }
            }
        };
        let key = self.key(conn);
        self.registry.set_node_user(&self.node, user, true).await?;
        self.change(user, |record, now, fresh| {
            if let Some(hidden) = hidden.filter(|_| fresh) {
                record.hidden = hidden;
            }
            record.connect(&key, &self.node, now);
        })
        .await
    }

    /// The user did something on this connection.
    pub async fn active(&self, user: &UserId, conn: ConnId) -> PresenceResult<()> {
        let key = self.key(conn);
        self.change(user, |record, now, _| record.activity(&key, now))
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
        self.change(user, |record, now, _| record.disconnect(&key, now, grace))
            .await?;
        if last_here {
            self.registry.set_node_user(&self.node, user, false).await?;
        }
        Ok(())
    }

    /// The user's `hidePresence` setting changed.
    pub async fn set_hidden(&self, user: &UserId, hidden: bool) -> PresenceResult<()> {
        self.change(user, |record, _, _| record.hidden = hidden)
            .await
    }

    /// What contacts were last told about these users (never seen: offline, version 0).
    /// The registry's record of `user` (what the admin API shows).
    pub async fn record(&self, user: &UserId) -> PresenceResult<crate::presence::record::Record> {
        let stored = self.registry.load(std::slice::from_ref(user)).await?;
        Ok(crate::presence::record::Record::parse(
            stored.into_iter().next().flatten().as_deref(),
        ))
    }

    /// For each user, whether they can be reached live: a connection on any node (whatever
    /// they show: hidden users read too), and with `active_only`, one they used within
    /// `presence.away_after_ms` (an `away` user is not reached).
    pub async fn reachable(
        &self,
        users: &[UserId],
        active_only: bool,
    ) -> PresenceResult<Vec<bool>> {
        let records = self.registry.load(users).await?;
        let now = self.now();
        Ok(records
            .iter()
            .map(|stored| {
                let record = Record::parse(stored.as_deref());
                record
                    .conns
                    .values()
                    .any(|c| !active_only || now.saturating_sub(c.active_at) < self.away_after)
            })
            .collect())
    }

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
            self.change(&user, |_, _, _| {}).await?;
        }
        Ok(())
    }

    /// Renews this node's lease (every `refresh_every`, in a task of its own: nothing may
    /// delay it, or the other nodes take this one for dead).
    pub async fn renew_lease(&self) -> PresenceResult<()> {
        let until = self.now().saturating_add(self.ttl);
        self.registry.renew_lease(&self.node, until).await
    }

    /// Claims the nodes whose lease ran out and drops their connections (see
    /// [`PresenceRegistry::claim_expired`]).
    pub async fn release_expired(&self) -> PresenceResult<()> {
        let now = self.now();
        for dead in self.registry.expired_nodes(now).await? {
            if dead == self.node {
                continue; // this node is alive: its lease task is only late
            }
            let until = now.saturating_add(self.ttl);
            if self.registry.claim_expired(&dead, now, until).await? {
                self.release(&dead).await?;
            }
        }
        Ok(())
    }

    /// Drops every connection of `node` and forgets it: for a dead node, and for this one when
    /// it stops (or starts: a previous process may have had its name). A user that cannot be
    /// changed now is logged and left for the next claim: the node is forgotten only when all
    /// of them were.
    pub async fn release(&self, node: &str) -> PresenceResult<()> {
        let users = self.registry.node_users(node).await?;
        tracing::info!(node, users = users.len(), "releasing a node's presence");
        let failed = futures_util::stream::iter(users)
            .map(|user| async move {
                self.change(&user, |record, now, _| {
                    record.drop_nodes(|n| n == node, now)
                })
                .await
                .inspect_err(|e| tracing::warn!(error = %e, %user, "presence not released"))
                .is_err()
            })
            .buffer_unordered(RELEASE_CONCURRENCY)
            .filter(|failed| std::future::ready(*failed))
            .count()
            .await;
        if failed > 0 {
            return Err(PresenceError::Unavailable(format!(
                "{failed} users of {node} not released"
            )));
        }
        self.registry.forget_node(node).await
    }

    /// Releases this node (a graceful stop: its users go offline at once).
    pub async fn release_self(&self) -> PresenceResult<()> {
        self.release(&self.node.clone()).await
    }

    /// Makes the registry agree with this node's live connections, after a lost update or a
    /// registry that lost its data: `local` are the users connected here, `live` says which
    /// connections a user has here at the moment it is asked. A record entry of this node
    /// that is not live is dropped only if it was already stale in the previous round, so a
    /// connection whose own disconnect is still on its way keeps its grace.
    pub async fn reconcile(
        &self,
        local: &[UserId],
        live: impl Fn(&UserId) -> Vec<ConnId>,
    ) -> PresenceResult<()> {
        let listed: HashSet<UserId> = self
            .registry
            .node_users(&self.node)
            .await?
            .into_iter()
            .collect();
        for user in local.iter().filter(|u| !listed.contains(*u)) {
            self.registry.set_node_user(&self.node, user, true).await?;
        }
        let mut users: Vec<UserId> = local.to_vec();
        let local: HashSet<&UserId> = local.iter().collect();
        users.extend(listed.iter().filter(|u| !local.contains(u)).cloned());
        let records = self.registry.load(&users).await?;
        let previous = std::mem::take(&mut *self.suspects.lock().expect("suspects lock"));
        let mut suspects = HashSet::new();
        for (user, stored) in users.iter().zip(records) {
            let record = Record::parse(stored.as_deref());
            let keys: HashSet<String> = live(user).into_iter().map(|c| self.key(c)).collect();
            let stale: Vec<String> = record
                .conns
                .iter()
                .filter(|(key, conn)| conn.node == self.node && !keys.contains(*key))
                .map(|(key, _)| key.clone())
                .collect();
            let (drop, wait): (Vec<String>, Vec<String>) =
                stale.into_iter().partition(|key| previous.contains(key));
            suspects.extend(wait.iter().cloned());
            let missing = keys.iter().any(|key| !record.conns.contains_key(key));
            if !drop.is_empty() || missing {
                tracing::info!(%user, stale = drop.len(), missing, "presence reconciled");
                self.change(user, |record, now, _| {
                    for key in &drop {
                        record.disconnect(key, now, None);
                    }
                    // Asked again now: a connection may have come or gone since the list.
                    for conn in live(user) {
                        let key = self.key(conn);
                        if !record.conns.contains_key(&key) {
                            record.connect(&key, &self.node, now);
                        }
                    }
                })
                .await?;
            }
            if keys.is_empty() && wait.is_empty() && live(user).is_empty() {
                self.registry.set_node_user(&self.node, user, false).await?;
            }
        }
        *self.suspects.lock().expect("suspects lock") = suspects;
        Ok(())
    }
}
