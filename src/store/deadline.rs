//! Every store call under one deadline (`store.timeout_ms`): a store that hangs (a stalled
//! disk, a network link that drops packets without closing) answers `Unavailable` in bounded
//! time instead of holding the caller, its connection and its memory indefinitely.
//!
//! A write that times out may still complete in the backend; that is the same uncertainty as
//! a lost reply, and the same remedy applies: appends are retried with the same clientMsgId
//! (the store de-duplicates), and every other write is idempotent.

use std::{future::Future, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    Appended, HistoryQuery, Mark, Marked, MemberReceipt, NewGroup, NewMessage, Store, StoreError,
    StoreResult, UserSettings,
    push::{Device, JobKind, LedgerEntry, PushJob, PushStore, Registered},
};
use crate::domain::{Membership, Message, Role, Room, RoomId, Seq, UserId};

pub struct DeadlineStore {
    inner: Arc<dyn Store>,
    limit: Duration,
}

impl DeadlineStore {
    pub fn new(inner: Arc<dyn Store>, limit: Duration) -> Self {
        Self { inner, limit }
    }

    async fn within<T>(&self, call: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        match tokio::time::timeout(self.limit, call).await {
            Ok(result) => result,
            Err(_) => {
                metrics::counter!("chatd_store_timeouts_total").increment(1);
                Err(StoreError::Unavailable(format!(
                    "no answer within {} ms",
                    self.limit.as_millis()
                )))
            }
        }
    }
}

#[async_trait]
impl Store for DeadlineStore {
    async fn append(&self, new: NewMessage, now: DateTime<Utc>) -> StoreResult<Appended> {
        self.within(self.inner.append(new, now)).await
    }

    async fn history(&self, room: &RoomId, query: &HistoryQuery) -> StoreResult<Vec<Message>> {
        self.within(self.inner.history(room, query)).await
    }

    async fn entry_by_client_msg_id(
        &self,
        room: &RoomId,
        sender: &UserId,
        client_msg_id: &str,
    ) -> StoreResult<Option<Message>> {
        self.within(
            self.inner
                .entry_by_client_msg_id(room, sender, client_msg_id),
        )
        .await
    }

    async fn entries(&self, room: &RoomId, seqs: &[Seq]) -> StoreResult<Vec<Message>> {
        self.within(self.inner.entries(room, seqs)).await
    }

    async fn changes(&self, room: &RoomId, targets: &[Seq]) -> StoreResult<Vec<Message>> {
        self.within(self.inner.changes(room, targets)).await
    }

    async fn last_seq(&self, room: &RoomId) -> StoreResult<Seq> {
        self.within(self.inner.last_seq(room)).await
    }

    async fn count_unread(
        &self,
        room: &RoomId,
        user: &UserId,
        after_seq: Seq,
        cap: u64,
    ) -> StoreResult<u64> {
        self.within(self.inner.count_unread(room, user, after_seq, cap))
            .await
    }

    async fn ensure_direct_room(
        &self,
        a: &UserId,
        b: &UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<Room> {
        self.within(self.inner.ensure_direct_room(a, b, now)).await
    }

    async fn create_group(&self, group: NewGroup, now: DateTime<Utc>) -> StoreResult<Room> {
        self.within(self.inner.create_group(group, now)).await
    }

    async fn add_members(
        &self,
        room: &RoomId,
        users: &[UserId],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<UserId>> {
        self.within(self.inner.add_members(room, users, now)).await
    }

    async fn remove_member(&self, room: &RoomId, user: &UserId) -> StoreResult<bool> {
        self.within(self.inner.remove_member(room, user)).await
    }

    async fn set_role(&self, room: &RoomId, user: &UserId, role: Role) -> StoreResult<bool> {
        self.within(self.inner.set_role(room, user, role)).await
    }

    async fn room(&self, room: &RoomId) -> StoreResult<Option<Room>> {
        self.within(self.inner.room(room)).await
    }

    async fn membership(&self, room: &RoomId, user: &UserId) -> StoreResult<Option<Membership>> {
        self.within(self.inner.membership(room, user)).await
    }

    async fn memberships_of(&self, user: &UserId) -> StoreResult<Vec<Membership>> {
        self.within(self.inner.memberships_of(user)).await
    }

    async fn memberships_page(
        &self,
        user: &UserId,
        after: Option<&RoomId>,
        limit: usize,
    ) -> StoreResult<Vec<Membership>> {
        self.within(self.inner.memberships_page(user, after, limit))
            .await
    }

    async fn membership_counts(&self, users: &[UserId]) -> StoreResult<Vec<u64>> {
        self.within(self.inner.membership_counts(users)).await
    }

    async fn mark(
        &self,
        room: &RoomId,
        user: &UserId,
        mark: Mark,
        seq: Seq,
    ) -> StoreResult<Marked> {
        self.within(self.inner.mark(room, user, mark, seq)).await
    }

    async fn receipts(&self, room: &RoomId) -> StoreResult<Vec<MemberReceipt>> {
        self.within(self.inner.receipts(room)).await
    }

    async fn user_settings(&self, user: &UserId) -> StoreResult<UserSettings> {
        self.within(self.inner.user_settings(user)).await
    }

    async fn set_user_settings(&self, user: &UserId, settings: UserSettings) -> StoreResult<()> {
        self.within(self.inner.set_user_settings(user, settings))
            .await
    }

    async fn revoke_tokens(
        &self,
        user: &UserId,
        before: DateTime<Utc>,
    ) -> StoreResult<DateTime<Utc>> {
        self.within(self.inner.revoke_tokens(user, before)).await
    }

    async fn tokens_revoked_before(&self, user: &UserId) -> StoreResult<Option<DateTime<Utc>>> {
        self.within(self.inner.tokens_revoked_before(user)).await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.within(self.inner.ping()).await
    }

    fn observed(&self, message: &Message) {
        self.inner.observed(message);
    }
}

#[async_trait]
impl PushStore for DeadlineStore {
    async fn register_device(
        &self,
        device: Device,
        max_per_user: usize,
    ) -> StoreResult<Registered> {
        self.within(self.inner.register_device(device, max_per_user))
            .await
    }

    async fn devices(&self, users: &[UserId]) -> StoreResult<Vec<Device>> {
        self.within(self.inner.devices(users)).await
    }

    async fn remove_device(&self, user: &UserId, id: &str) -> StoreResult<bool> {
        self.within(self.inner.remove_device(user, id)).await
    }

    async fn remove_devices(&self, ids: &[String]) -> StoreResult<()> {
        self.within(self.inner.remove_devices(ids)).await
    }

    async fn claim_undecided(
        &self,
        stored_before: DateTime<Utc>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<Message>> {
        self.within(
            self.inner
                .claim_undecided(stored_before, now, lease_until, limit),
        )
        .await
    }

    async fn mark_decided(&self, room: &RoomId, seq: Seq) -> StoreResult<()> {
        self.within(self.inner.mark_decided(room, seq)).await
    }

    async fn enqueue_job(
        &self,
        user: &UserId,
        room: &RoomId,
        kind: JobKind,
        seq: Seq,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.within(self.inner.enqueue_job(user, room, kind, seq, due_at, now))
            .await
    }

    async fn claim_jobs(
        &self,
        node: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<PushJob>> {
        self.within(self.inner.claim_jobs(node, now, lease_until, limit))
            .await
    }

    async fn reschedule_job(&self, job: &PushJob) -> StoreResult<bool> {
        self.within(self.inner.reschedule_job(job)).await
    }

    async fn finish_job(&self, job: &PushJob) -> StoreResult<bool> {
        self.within(self.inner.finish_job(job)).await
    }

    async fn record_decisions(&self, entries: &[LedgerEntry]) -> StoreResult<Vec<LedgerEntry>> {
        self.within(self.inner.record_decisions(entries)).await
    }

    async fn update_ledger(&self, entries: &[LedgerEntry]) -> StoreResult<()> {
        self.within(self.inner.update_ledger(entries)).await
    }

    async fn claim_ledger(
        &self,
        user: &UserId,
        room: &RoomId,
        seqs: &[Seq],
        owner: &str,
    ) -> StoreResult<Vec<LedgerEntry>> {
        self.within(self.inner.claim_ledger(user, room, seqs, owner))
            .await
    }

    async fn ledger(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        limit: usize,
    ) -> StoreResult<Vec<LedgerEntry>> {
        self.within(self.inner.ledger(user, room, limit)).await
    }

    async fn notified_between(
        &self,
        user: &UserId,
        room: &RoomId,
        after: Seq,
        upto: Seq,
    ) -> StoreResult<bool> {
        self.within(self.inner.notified_between(user, room, after, upto))
            .await
    }

    async fn expire_ledger(&self, before: DateTime<Utc>, limit: usize) -> StoreResult<u64> {
        self.within(self.inner.expire_ledger(before, limit)).await
    }
}
