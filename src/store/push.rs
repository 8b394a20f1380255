//! What push notifications keep in the store: devices, the jobs that send notifications,
//! and the ledger that says what became of each message for each member
//! (docs/protocol.md, "Push notifications"; the rules are in `crate::push`).
//!
//! The durable trail of one message: it is stored with a "to decide" mark (in the append
//! itself, so a node that dies right after storing loses nothing); deciding it writes a job
//! per notified member and a ledger entry per member, then clears the mark; a job is claimed
//! under a lease, and finished (deleted) or rescheduled after its attempt.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StoreResult;
use crate::domain::{Message, RoomId, Seq, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Webpush,
    Gateway,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Webpush => "webpush",
            DeviceKind::Gateway => "gateway",
        }
    }
}

/// Where a device's notifications go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "lowercase",
    rename_all_fields = "camelCase"
)]
pub enum DeviceTarget {
    /// A browser's push subscription (keys base64url, as the browser gives them).
    Webpush {
        endpoint: String,
        p256dh: String,
        auth: String,
    },
    /// An app's push key, sent through the push gateway.
    Gateway {
        app_id: String,
        push_key: String,
        data: serde_json::Map<String, serde_json::Value>,
    },
}

impl DeviceTarget {
    pub fn kind(&self) -> DeviceKind {
        match self {
            DeviceTarget::Webpush { .. } => DeviceKind::Webpush,
            DeviceTarget::Gateway { .. } => DeviceKind::Gateway,
        }
    }

    /// What makes two registrations the same device, whoever made them.
    pub fn key(&self) -> String {
        match self {
            DeviceTarget::Webpush { endpoint, .. } => format!("webpush {endpoint}"),
            DeviceTarget::Gateway {
                app_id, push_key, ..
            } => format!("gateway {app_id} {push_key}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub id: String,
    pub user: UserId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub target: DeviceTarget,
}

/// The outcome of [`PushStore::register_device`].
#[derive(Debug, Clone, PartialEq)]
pub enum Registered {
    /// New for this user (maybe moved from another user).
    Created(Device),
    /// The user had registered it already; its name and data are updated.
    Existing(Device),
    /// The user has the most devices allowed.
    TooMany,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// New messages of one room for one member.
    Message,
    /// A member read: clear their badge for one room.
    Badge,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Message => "message",
            JobKind::Badge => "badge",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "message" => Some(JobKind::Message),
            "badge" => Some(JobKind::Badge),
            _ => None,
        }
    }
}

/// A notification to send: to one member, about one room.
#[derive(Debug, Clone, PartialEq)]
pub struct PushJob {
    /// Also the idempotency key receivers see.
    pub id: String,
    pub user: UserId,
    pub room: RoomId,
    pub kind: JobKind,
    /// The messages it covers (collapsed), ascending; for a badge, the read position.
    pub seqs: Vec<Seq>,
    pub due_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// Attempts made so far.
    pub attempts: u32,
    /// Devices already sent to (a retry skips them).
    pub done_devices: Vec<String>,
    /// This claim of the job (a new one each time it is claimed): a node whose lease ran
    /// out can no longer reschedule or finish it.
    pub lease: String,
    pub lease_until: DateTime<Utc>,
}

/// The most messages one job covers; later ones start a new job (a stalled sender must not
/// grow one without bound).
pub const MAX_JOB_SEQS: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Queued,
    Sent,
    Collapsed,
    Skipped,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Queued => "queued",
            Outcome::Sent => "sent",
            Outcome::Collapsed => "collapsed",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Online,
    Read,
    Deleted,
    NoDevice,
    Left,
    Rejected,
    GaveUp,
    Refused,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Online => "online",
            Reason::Read => "read",
            Reason::Deleted => "deleted",
            Reason::NoDevice => "no_device",
            Reason::Left => "left",
            Reason::Rejected => "rejected",
            Reason::GaveUp => "gave_up",
            Reason::Refused => "refused",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    Sent,
    Rejected,
    Failed,
}

/// What happened at one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceOutcome {
    pub device: String,
    pub kind: DeviceKind,
    pub status: DeviceStatus,
    pub at: DateTime<Utc>,
    /// Why it failed, in words for support (never a response body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What became of one message for one member: the ledger users read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    #[schema(value_type = String)]
    pub user: UserId,
    #[schema(value_type = String)]
    pub room: RoomId,
    pub seq: Seq,
    pub message_id: String,
    #[schema(value_type = String)]
    pub sender: UserId,
    pub outcome: Outcome,
    pub reason: Option<Reason>,
    pub collapsed_into: Option<Seq>,
    pub attempts: u32,
    pub devices: Vec<DeviceOutcome>,
    pub decided_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl LedgerEntry {
    /// The decision about `message` for `user`, made `now`.
    pub fn decided(
        message: &Message,
        user: &UserId,
        outcome: Outcome,
        reason: Option<Reason>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            user: user.clone(),
            room: message.room.clone(),
            seq: message.seq,
            message_id: message.id.clone(),
            sender: message.sender.clone(),
            outcome,
            reason,
            collapsed_into: None,
            attempts: 0,
            devices: Vec::new(),
            decided_at: now,
            updated_at: now,
        }
    }
}

#[async_trait]
pub trait PushStore: Send + Sync {
    /// Registers a device for its user: the same target again is [`Registered::Existing`]
    /// (name and data updated), one of another user's moves to this one.
    async fn register_device(&self, device: Device, max_per_user: usize)
    -> StoreResult<Registered>;

    /// The devices of these users, by user id, then oldest first.
    async fn devices(&self, users: &[UserId]) -> StoreResult<Vec<Device>>;

    /// Removes the user's device; false if they have none with this id.
    async fn remove_device(&self, user: &UserId, id: &str) -> StoreResult<bool>;

    /// Removes devices a push service or the gateway rejected.
    async fn remove_devices(&self, ids: &[String]) -> StoreResult<()>;

    /// Claims up to `limit` messages whose notifications are still to be decided, stored
    /// before `stored_before` and not claimed by a node since `now`: they are this caller's
    /// until `lease_until`.
    async fn claim_undecided(
        &self,
        stored_before: DateTime<Utc>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<Message>>;

    /// The message's notifications are decided (jobs and ledger written).
    async fn mark_decided(&self, room: &RoomId, seq: Seq) -> StoreResult<()>;

    /// Adds message `seq` to the open job of (user, room, kind), or makes one due at
    /// `due_at`: messages collapse until the job is first claimed (or holds
    /// [`MAX_JOB_SEQS`]); one open job per (user, room, kind), however many nodes enqueue
    /// at once. A badge job keeps the furthest position given.
    async fn enqueue_job(
        &self,
        user: &UserId,
        room: &RoomId,
        kind: JobKind,
        seq: Seq,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// Claims up to `limit` jobs due by `now` that no node holds: `node`'s until
    /// `lease_until`, each under a new [`PushJob::lease`].
    async fn claim_jobs(
        &self,
        node: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<PushJob>>;

    /// Gives the job back for another attempt at `job.due_at` (with its attempts and done
    /// devices as they are now), if `job.lease` still holds it; false if it does not.
    async fn reschedule_job(&self, job: &PushJob) -> StoreResult<bool>;

    /// The job is done (sent, skipped or given up), if `job.lease` still holds it; false if
    /// it does not.
    async fn finish_job(&self, job: &PushJob) -> StoreResult<bool>;

    /// Writes the entries that are not in the ledger yet (by user, room and seq); returns
    /// the ledger's entry for each, in their order: the first decision stands.
    async fn record_decisions(&self, entries: &[LedgerEntry]) -> StoreResult<Vec<LedgerEntry>>;

    /// Writes the entries, replacing what the ledger had for them.
    async fn update_ledger(&self, entries: &[LedgerEntry]) -> StoreResult<()>;

    /// Makes job `owner` the one that settles these entries of the user in the room: those
    /// still `queued` and owned by no job or by it. Returns them, by seq. (A message that
    /// got into two jobs is sent by one.)
    async fn claim_ledger(
        &self,
        user: &UserId,
        room: &RoomId,
        seqs: &[Seq],
        owner: &str,
    ) -> StoreResult<Vec<LedgerEntry>>;

    /// The user's ledger, newest decision first (optionally of one room).
    async fn ledger(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        limit: usize,
    ) -> StoreResult<Vec<LedgerEntry>>;

    /// Whether the user was sent a notification of a message of the room with a seq in
    /// `(after, upto]`.
    async fn notified_between(
        &self,
        user: &UserId,
        room: &RoomId,
        after: Seq,
        upto: Seq,
    ) -> StoreResult<bool>;

    /// Forgets up to `limit` ledger entries last updated before `before`; returns how many
    /// (call again while it returns `limit`).
    async fn expire_ledger(&self, before: DateTime<Utc>, limit: usize) -> StoreResult<u64>;
}
