//! Sending a claimed job: check again, send to each device, then finish or reschedule, and
//! write down in the ledger what happened.

use std::collections::{BTreeMap, HashSet};

use chatd_protocol::state::Fold;
use futures_util::future::join_all;
use rand::Rng;

use super::{
    Delivery, Push,
    gateway::GatewayDevice,
    payload::{Notice, cut, topic},
    webpush::Urgency,
};
use crate::{
    domain::{RoomKind, Seq},
    store::{
        StoreError,
        push::{
            Device, DeviceOutcome, DeviceStatus, DeviceTarget, JobKind, LedgerEntry, Outcome,
            PushJob, Reason,
        },
    },
};

/// The ledger entries of a job that are still to be settled, by seq.
type Pending = BTreeMap<Seq, LedgerEntry>;

impl Push {
    pub(super) async fn execute(&self, job: PushJob) -> Result<(), StoreError> {
        match job.kind {
            JobKind::Message => self.notify(job).await,
            JobKind::Badge => self.badge(job).await,
        }
    }

    /// The delay before attempt `attempts + 1`: doubling from `push.retry_initial_ms` up to
    /// `push.retry_max_ms`, half of it random ("equal jitter"), so retries of many jobs
    /// spread out and each delay is still at least half the nominal one.
    fn backoff(&self, attempts: u32) -> chrono::Duration {
        let initial = self.settings.retry_initial_ms;
        let nominal = initial
            .saturating_mul(1u64 << attempts.saturating_sub(1).min(40))
            .min(self.settings.retry_max_ms);
        let half = nominal / 2;
        super::ms(half + rand::rng().random_range(0..=half))
    }

    /// Settles `entries` as `outcome` (with `reason`) now.
    async fn settle(
        &self,
        entries: impl IntoIterator<Item = LedgerEntry>,
        outcome: Outcome,
        reason: Option<Reason>,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let settled: Vec<LedgerEntry> = entries
            .into_iter()
            .map(|mut e| {
                e.outcome = outcome;
                e.reason = reason;
                e.updated_at = now;
                e
            })
            .collect();
        if settled.is_empty() {
            return Ok(());
        }
        let label = reason.map_or(outcome.as_str(), Reason::as_str);
        metrics::counter!("chatd_push_settled_total", "outcome" => label)
            .increment(settled.len() as u64);
        self.store.update_ledger(&settled).await
    }

    /// New messages of a room for one member.
    async fn notify(&self, mut job: PushJob) -> Result<(), StoreError> {
        let (user, room) = (job.user.clone(), job.room.clone());
        // Only what the ledger still has as queued and no other job owns: a message that got
        // into two jobs (a decision made again after a crash) is sent once.
        let mut pending: Pending = self
            .store
            .claim_ledger(&user, &room, &job.seqs, &job.id)
            .await?
            .into_iter()
            .map(|e| (e.seq, e))
            .collect();
        if pending.is_empty() {
            return self.finish(&job).await;
        }
        let Some(membership) = self.store.membership(&room, &user).await? else {
            self.settle(pending.into_values(), Outcome::Skipped, Some(Reason::Left))
                .await?;
            return self.finish(&job).await;
        };
        let unread = pending.split_off(&(membership.read_seq + 1));
        self.settle(pending.into_values(), Outcome::Skipped, Some(Reason::Read))
            .await?;
        let mut pending = unread;
        if pending.is_empty() {
            return self.finish(&job).await;
        }
        let live = self
            .presence
            .reachable(std::slice::from_ref(&user), self.settings.notify_when_away)
            .await
            .map_err(|e| StoreError::Unavailable(format!("presence: {e}")))?;
        if live.first() == Some(&true) {
            self.settle(
                pending.into_values(),
                Outcome::Skipped,
                Some(Reason::Online),
            )
            .await?;
            return self.finish(&job).await;
        }
        // The messages as they stand now: current text, deleted or not.
        let seqs: Vec<Seq> = pending.keys().copied().collect();
        let (entries, changes) = tokio::try_join!(
            self.store.entries(&room, &seqs),
            self.store.changes(&room, &seqs)
        )?;
        let mut fold = Fold::new();
        for entry in entries.iter().chain(&changes) {
            fold.apply(entry);
        }
        let standing: Vec<_> = seqs
            .iter()
            .filter_map(|seq| fold.state(*seq, &user))
            .filter(|s| s.deleted_at.is_none() && !s.message.deleted)
            .collect();
        let standing_seqs: HashSet<Seq> = standing.iter().map(|s| s.message.seq).collect();
        let gone: Vec<Seq> = seqs
            .iter()
            .copied()
            .filter(|s| !standing_seqs.contains(s))
            .collect();
        let gone = gone.iter().filter_map(|s| pending.remove(s));
        self.settle(gone, Outcome::Skipped, Some(Reason::Deleted))
            .await?;
        let Some(newest) = standing.last() else {
            return self.finish(&job).await;
        };
        let devices: Vec<Device> = self
            .store
            .devices(std::slice::from_ref(&user))
            .await?
            .into_iter()
            .filter(|d| !job.done_devices.contains(&d.id))
            .collect();
        if devices.is_empty() && job.done_devices.is_empty() {
            self.settle(
                pending.into_values(),
                Outcome::Skipped,
                Some(Reason::NoDevice),
            )
            .await?;
            return self.finish(&job).await;
        }
        // A group's name is the users' words too: ids only means none.
        let room_name = match self.store.room(&room).await? {
            _ if !self.settings.include_text => None,
            Some(r) if r.kind == RoomKind::Group => r.name,
            _ => Some(newest.message.sender.to_string()),
        };
        let mut senders = Vec::new();
        for state in &standing {
            if !senders.contains(&state.message.sender) {
                senders.push(state.message.sender.clone());
            }
        }
        let notice = Notice::Messages {
            room: room.clone(),
            room_name,
            seq: newest.message.seq,
            message_id: newest.message.id.clone(),
            sender: newest.message.sender.clone(),
            senders,
            text: self
                .settings
                .include_text
                .then(|| cut(&newest.message.text, self.settings.max_text_chars)),
            count: standing.len(),
            unread: self.unread_total(&user).await?,
        };
        self.lease_left(&job)?;
        let results = self.deliver(&job, &devices, &notice).await;
        let newest_seq = newest.message.seq;
        let now = self.clock.now();
        let mut retry = false;
        let mut refused = false;
        let mut outcomes = Vec::new();
        for (device, delivery) in &results {
            let (status, error) = match delivery {
                Delivery::Sent => {
                    job.done_devices.push(device.id.clone());
                    (DeviceStatus::Sent, None)
                }
                Delivery::Rejected(why) => (DeviceStatus::Rejected, Some(why.clone())),
                Delivery::Retry(why) => {
                    retry = true;
                    (DeviceStatus::Failed, Some(why.clone()))
                }
                Delivery::Refused(why) => {
                    refused = true;
                    (DeviceStatus::Failed, Some(why.clone()))
                }
            };
            outcomes.push(DeviceOutcome {
                device: device.id.clone(),
                kind: device.target.kind(),
                status,
                at: now,
                error,
            });
        }
        job.attempts += 1;
        for entry in pending.values_mut() {
            entry.attempts = job.attempts;
        }
        if let Some(entry) = pending.get_mut(&newest_seq) {
            entry.devices.extend(outcomes);
        }
        let gave_up = now - job.created_at >= super::ms(self.settings.give_up_after_ms);
        if retry && !gave_up {
            job.due_at = now + self.backoff(job.attempts);
            let waiting: Vec<LedgerEntry> = pending
                .into_values()
                .map(|mut e| {
                    e.updated_at = now;
                    e
                })
                .collect();
            self.store.update_ledger(&waiting).await?;
            metrics::counter!("chatd_push_retries_total").increment(1);
            return self.reschedule(&job).await;
        }
        let (outcome, reason) = if !job.done_devices.is_empty() {
            (Outcome::Sent, None)
        } else if retry {
            (Outcome::Failed, Some(Reason::GaveUp))
        } else if refused {
            (Outcome::Failed, Some(Reason::Refused))
        } else {
            (Outcome::Failed, Some(Reason::Rejected))
        };
        let newest_entry = pending.remove(&newest_seq);
        if outcome == Outcome::Sent {
            let collapsed: Vec<LedgerEntry> = pending
                .into_values()
                .map(|mut e| {
                    e.collapsed_into = Some(newest_seq);
                    e
                })
                .collect();
            self.settle(collapsed, Outcome::Collapsed, None).await?;
        } else {
            self.settle(pending.into_values(), outcome, reason).await?;
        }
        self.settle(newest_entry, outcome, reason).await?;
        self.finish(&job).await?;
        // A read that came while this was being sent found nothing notified yet: the badge
        // it would have cleared is cleared now.
        if outcome == Outcome::Sent {
            let read = self.store.membership(&room, &user).await?;
            if read.is_some_and(|m| m.read_seq >= newest_seq) {
                self.clear_badges(&user, &room, 0, newest_seq).await?;
            }
        }
        Ok(())
    }

    /// A badge update for one room: to every device of the user, whatever their presence.
    async fn badge(&self, mut job: PushJob) -> Result<(), StoreError> {
        let devices: Vec<Device> = self
            .store
            .devices(std::slice::from_ref(&job.user))
            .await?
            .into_iter()
            .filter(|d| !job.done_devices.contains(&d.id))
            .collect();
        let notice = Notice::Badge {
            room: job.room.clone(),
            unread: self.unread_total(&job.user).await?,
        };
        self.lease_left(&job)?;
        let results = self.deliver(&job, &devices, &notice).await;
        let mut retry = false;
        for (device, delivery) in &results {
            match delivery {
                Delivery::Sent => job.done_devices.push(device.id.clone()),
                Delivery::Retry(_) => retry = true,
                Delivery::Rejected(_) | Delivery::Refused(_) => {}
            }
        }
        job.attempts += 1;
        let now = self.clock.now();
        if retry && now - job.created_at < super::ms(self.settings.give_up_after_ms) {
            job.due_at = now + self.backoff(job.attempts);
            return self.reschedule(&job).await;
        }
        self.finish(&job).await
    }

    /// Sending must be over (one request deadline) before the lease is: else another node
    /// could take the job while this one still sends it.
    fn lease_left(&self, job: &PushJob) -> Result<(), StoreError> {
        let needed = super::ms(self.settings.request_timeout_ms.saturating_mul(2));
        if self.clock.now() + needed > job.lease_until {
            return Err(StoreError::Unavailable(
                "too little of the job's lease is left to send; it is tried again".into(),
            ));
        }
        Ok(())
    }

    async fn finish(&self, job: &PushJob) -> Result<(), StoreError> {
        if !self.store.finish_job(job).await? {
            tracing::warn!(job = %job.id, "push job finished after its lease ran out");
        }
        Ok(())
    }

    async fn reschedule(&self, job: &PushJob) -> Result<(), StoreError> {
        if !self.store.reschedule_job(job).await? {
            tracing::warn!(job = %job.id, "push job not rescheduled: its lease ran out");
        }
        Ok(())
    }

    /// An attempt that failed before it could settle (the store, the presence registry, too
    /// little lease): counted like a failed send, so it backs off and gives up in time.
    pub(super) async fn attempt_failed(&self, mut job: PushJob) -> Result<(), StoreError> {
        job.attempts += 1;
        let now = self.clock.now();
        if now - job.created_at >= super::ms(self.settings.give_up_after_ms) {
            let owned = self
                .store
                .claim_ledger(&job.user, &job.room, &job.seqs, &job.id)
                .await?;
            self.settle(owned, Outcome::Failed, Some(Reason::GaveUp))
                .await?;
            return self.finish(&job).await;
        }
        job.due_at = now + self.backoff(job.attempts);
        self.reschedule(&job).await
    }

    async fn unread_total(&self, user: &crate::domain::UserId) -> Result<u64, StoreError> {
        let counts = crate::chat::unread_counts(&*self.store, user).await?;
        Ok(counts.iter().fold(0, |sum, (_, n)| sum.saturating_add(*n)))
    }

    /// Sends `notice` to every device: the gateway's in one request, each browser on its own,
    /// all at once; devices the service rejected are removed.
    async fn deliver<'d>(
        &self,
        job: &PushJob,
        devices: &'d [Device],
        notice: &Notice,
    ) -> Vec<(&'d Device, Delivery)> {
        let (gateway_devices, browsers): (Vec<&Device>, Vec<&Device>) = devices
            .iter()
            .partition(|d| matches!(d.target, DeviceTarget::Gateway { .. }));
        let unconfigured = || Delivery::Refused("no sender of this kind is configured".into());
        let gateway = async {
            if gateway_devices.is_empty() {
                return Vec::new();
            }
            let Some(gateway) = &self.gateway else {
                return gateway_devices.iter().map(|_| unconfigured()).collect();
            };
            let listed: Vec<GatewayDevice<'_>> = gateway_devices
                .iter()
                .filter_map(|d| match &d.target {
                    DeviceTarget::Gateway {
                        app_id,
                        push_key,
                        data,
                    } => Some(GatewayDevice {
                        app_id,
                        push_key,
                        data,
                    }),
                    DeviceTarget::Webpush { .. } => None,
                })
                .collect();
            gateway
                .send(&job.id, notice.gateway_notification(), &listed)
                .await
        };
        let (urgency, payload) = match notice {
            Notice::Messages { .. } => (Urgency::High, notice.webpush_payload(&job.id)),
            Notice::Badge { .. } => (Urgency::Low, notice.webpush_payload(&job.id)),
        };
        let topic = topic(&job.user, notice.room());
        let browsers_sent = join_all(browsers.iter().map(|d| async {
            match (&self.webpush, &d.target) {
                (
                    Some(webpush),
                    DeviceTarget::Webpush {
                        endpoint,
                        p256dh,
                        auth,
                    },
                ) => {
                    webpush
                        .send(endpoint, p256dh, auth, &payload, urgency, &topic)
                        .await
                }
                _ => unconfigured(),
            }
        }));
        let (gateway_sent, browsers_sent) = tokio::join!(gateway, browsers_sent);
        let results: Vec<(&Device, Delivery)> = gateway_devices
            .into_iter()
            .zip(gateway_sent)
            .chain(browsers.into_iter().zip(browsers_sent))
            .collect();
        for (device, delivery) in &results {
            let result = match delivery {
                Delivery::Sent => "sent",
                Delivery::Rejected(_) => "rejected",
                Delivery::Retry(_) => "retry",
                Delivery::Refused(_) => "refused",
            };
            metrics::counter!("chatd_push_requests_total",
                "kind" => device.target.kind().as_str(), "result" => result)
            .increment(1);
        }
        let rejected: Vec<String> = results
            .iter()
            .filter(|(_, d)| matches!(d, Delivery::Rejected(_)))
            .map(|(device, _)| device.id.clone())
            .collect();
        if let Err(e) = self.store.remove_devices(&rejected).await {
            tracing::warn!(error = %e, "rejected devices not removed; they are tried again");
        }
        results
    }
}
