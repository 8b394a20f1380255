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
use futures_util::FutureExt;

use super::{
    Appended, HistoryQuery, Mark, Marked, MemberReceipt, NewGroup, NewMessage, RoomState, Store,
    StoreError, StoreResult, UserSettings,
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

    /// Counted by name (`chatd_store_calls_total{call}`): what a reconnect or a send costs
    /// in store calls, whatever the backend.
    async fn within<T>(
        &self,
        name: &'static str,
        call: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        metrics::counter!("chatd_store_calls_total", "call" => name).increment(1);
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
        self.within("append", self.inner.append(new, now)).await
    }

    /// One deadline for the batch: an entry answered late is answered `Unavailable`, like a
    /// late single append (its retry finds it if it was stored).
    async fn append_batch(
        &self,
        news: Vec<NewMessage>,
        now: DateTime<Utc>,
    ) -> Vec<StoreResult<Appended>> {
        let count = news.len();
        let batch = self.inner.append_batch(news, now);
        match self.within("append_batch", batch.map(Ok)).await {
            Ok(answers) => answers,
            Err(e) => vec![Err(e); count],
        }
    }

    async fn history(&self, room: &RoomId, query: &HistoryQuery) -> StoreResult<Vec<Message>> {
        self.within("history", self.inner.history(room, query))
            .await
    }

    async fn entry_by_client_msg_id(
        &self,
        room: &RoomId,
        sender: &UserId,
        client_msg_id: &str,
    ) -> StoreResult<Option<Message>> {
        self.within(
            "entry_by_client_msg_id",
            self.inner
                .entry_by_client_msg_id(room, sender, client_msg_id),
        )
        .await
    }

    async fn entries(&self, room: &RoomId, seqs: &[Seq]) -> StoreResult<Vec<Message>> {
        self.within("entries", self.inner.entries(room, seqs)).await
    }

    async fn changes(&self, room: &RoomId, targets: &[Seq]) -> StoreResult<Vec<Message>> {
        self.within("changes", self.inner.changes(room, targets))
            .await
    }

    async fn last_seq(&self, room: &RoomId) -> StoreResult<Seq> {
        self.within("last_seq", self.inner.last_seq(room)).await
    }

    async fn count_unread(
        &self,
        room: &RoomId,
        user: &UserId,
        after_seq: Seq,
        cap: u64,
    ) -> StoreResult<u64> {
        self.within(
            "count_unread",
            self.inner.count_unread(room, user, after_seq, cap),
        )
        .await
    }

    async fn ensure_direct_room(
        &self,
        a: &UserId,
        b: &UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<Room> {
        self.within(
            "ensure_direct_room",
            self.inner.ensure_direct_room(a, b, now),
        )
        .await
    }

    async fn create_group(&self, group: NewGroup, now: DateTime<Utc>) -> StoreResult<Room> {
        self.within("create_group", self.inner.create_group(group, now))
            .await
    }

    async fn add_members(
        &self,
        room: &RoomId,
        users: &[UserId],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<UserId>> {
        self.within("add_members", self.inner.add_members(room, users, now))
            .await
    }

    async fn remove_member(&self, room: &RoomId, user: &UserId) -> StoreResult<bool> {
        self.within("remove_member", self.inner.remove_member(room, user))
            .await
    }

    async fn set_role(&self, room: &RoomId, user: &UserId, role: Role) -> StoreResult<bool> {
        self.within("set_role", self.inner.set_role(room, user, role))
            .await
    }

    async fn room(&self, room: &RoomId) -> StoreResult<Option<Room>> {
        self.within("room", self.inner.room(room)).await
    }

    async fn membership(&self, room: &RoomId, user: &UserId) -> StoreResult<Option<Membership>> {
        self.within("membership", self.inner.membership(room, user))
            .await
    }

    async fn memberships_of(&self, user: &UserId) -> StoreResult<Vec<Membership>> {
        self.within("memberships_of", self.inner.memberships_of(user))
            .await
    }

    async fn rooms(&self, ids: &[RoomId]) -> StoreResult<Vec<Room>> {
        self.within("rooms", self.inner.rooms(ids)).await
    }

    async fn memberships_among(
        &self,
        user: &UserId,
        rooms: &[RoomId],
    ) -> StoreResult<Vec<Membership>> {
        self.within(
            "memberships_among",
            self.inner.memberships_among(user, rooms),
        )
        .await
    }

    async fn room_states(
        &self,
        memberships: &[Membership],
        unread_cap: u64,
    ) -> StoreResult<Vec<RoomState>> {
        self.within(
            "room_states",
            self.inner.room_states(memberships, unread_cap),
        )
        .await
    }

    async fn histories_after(
        &self,
        from: &[(RoomId, Seq)],
        limit: usize,
    ) -> StoreResult<Vec<Vec<Message>>> {
        self.within("histories_after", self.inner.histories_after(from, limit))
            .await
    }

    async fn memberships_page(
        &self,
        user: &UserId,
        after: Option<&RoomId>,
        limit: usize,
    ) -> StoreResult<Vec<Membership>> {
        self.within(
            "memberships_page",
            self.inner.memberships_page(user, after, limit),
        )
        .await
    }

    async fn membership_counts(&self, users: &[UserId]) -> StoreResult<Vec<u64>> {
        self.within("membership_counts", self.inner.membership_counts(users))
            .await
    }

    async fn mark(
        &self,
        room: &RoomId,
        user: &UserId,
        mark: Mark,
        seq: Seq,
    ) -> StoreResult<Marked> {
        self.within("mark", self.inner.mark(room, user, mark, seq))
            .await
    }

    async fn receipts(&self, room: &RoomId) -> StoreResult<Vec<MemberReceipt>> {
        self.within("receipts", self.inner.receipts(room)).await
    }

    async fn user_settings(&self, user: &UserId) -> StoreResult<UserSettings> {
        self.within("user_settings", self.inner.user_settings(user))
            .await
    }

    async fn set_user_settings(&self, user: &UserId, settings: UserSettings) -> StoreResult<()> {
        self.within(
            "set_user_settings",
            self.inner.set_user_settings(user, settings),
        )
        .await
    }

    async fn revoke_tokens(
        &self,
        user: &UserId,
        before: DateTime<Utc>,
    ) -> StoreResult<DateTime<Utc>> {
        self.within("revoke_tokens", self.inner.revoke_tokens(user, before))
            .await
    }

    async fn tokens_revoked_before(&self, user: &UserId) -> StoreResult<Option<DateTime<Utc>>> {
        self.within(
            "tokens_revoked_before",
            self.inner.tokens_revoked_before(user),
        )
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.within("ping", self.inner.ping()).await
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
        self.within(
            "register_device",
            self.inner.register_device(device, max_per_user),
        )
        .await
    }

    async fn devices(&self, users: &[UserId]) -> StoreResult<Vec<Device>> {
        self.within("devices", self.inner.devices(users)).await
    }

    async fn remove_device(&self, user: &UserId, id: &str) -> StoreResult<bool> {
        self.within("remove_device", self.inner.remove_device(user, id))
            .await
    }

    async fn remove_devices(&self, ids: &[String]) -> StoreResult<()> {
        self.within("remove_devices", self.inner.remove_devices(ids))
            .await
    }

    async fn claim_undecided(
        &self,
        stored_before: DateTime<Utc>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<Message>> {
        self.within(
            "claim_undecided",
            self.inner
                .claim_undecided(stored_before, now, lease_until, limit),
        )
        .await
    }

    async fn mark_decided(&self, room: &RoomId, seq: Seq) -> StoreResult<()> {
        self.within("mark_decided", self.inner.mark_decided(room, seq))
            .await
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
        self.within(
            "enqueue_job",
            self.inner.enqueue_job(user, room, kind, seq, due_at, now),
        )
        .await
    }

    async fn claim_jobs(
        &self,
        node: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<PushJob>> {
        self.within(
            "claim_jobs",
            self.inner.claim_jobs(node, now, lease_until, limit),
        )
        .await
    }

    async fn reschedule_job(&self, job: &PushJob) -> StoreResult<bool> {
        self.within("reschedule_job", self.inner.reschedule_job(job))
            .await
    }

    async fn finish_job(&self, job: &PushJob) -> StoreResult<bool> {
        self.within("finish_job", self.inner.finish_job(job)).await
    }

    async fn record_decisions(&self, entries: &[LedgerEntry]) -> StoreResult<Vec<LedgerEntry>> {
        self.within("record_decisions", self.inner.record_decisions(entries))
            .await
    }

    async fn update_ledger(&self, entries: &[LedgerEntry]) -> StoreResult<()> {
        self.within("update_ledger", self.inner.update_ledger(entries))
            .await
    }

    async fn claim_ledger(
        &self,
        user: &UserId,
        room: &RoomId,
        seqs: &[Seq],
        owner: &str,
    ) -> StoreResult<Vec<LedgerEntry>> {
        self.within(
            "claim_ledger",
            self.inner.claim_ledger(user, room, seqs, owner),
        )
        .await
    }

    async fn ledger(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        limit: usize,
    ) -> StoreResult<Vec<LedgerEntry>> {
        self.within("ledger", self.inner.ledger(user, room, limit))
            .await
    }

    async fn notified_between(
        &self,
        user: &UserId,
        room: &RoomId,
        after: Seq,
        upto: Seq,
    ) -> StoreResult<bool> {
        self.within(
            "notified_between",
            self.inner.notified_between(user, room, after, upto),
        )
        .await
    }

    async fn expire_ledger(&self, before: DateTime<Utc>, limit: usize) -> StoreResult<u64> {
        self.within("expire_ledger", self.inner.expire_ledger(before, limit))
            .await
    }
}
