//! Delivered and read positions: stored at once, announced coalesced.
//!
//! A report moves the member's positions in the store (forward only, see
//! [`crate::store::Positions::advanced`]). If what members see moved, the receipt is handed
//! to the [`ReceiptBatcher`], which publishes at most one receipt per member and room per
//! `receipts.coalesce_ms`, and only for rooms of at most `receipts.live_max_members` members
//! (larger groups read receipts over REST: a receipt per member to every member would grow
//! with the square of the group). If the user's own read position moved, all of their
//! connections get their new unread counts.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use super::{Chat, ChatResult, UNREAD_CAP, parse_room};
use crate::{
    bus::{Bus, BusEvent, Topic},
    domain::{RoomId, Seq, UserId},
    store::{Mark, MemberReceipt, Positions, Store},
};

/// Receipts waiting for the next flush, at most; past it a flush happens at once.
const MAX_PENDING: usize = 10_000;
/// How long a room's member count is trusted for the live-receipts decision.
const ROOM_SIZE_TTL: Duration = Duration::from_secs(30);
/// Unread counts computed at once when totalling a user's rooms.
const COUNT_CONCURRENCY: usize = 8;

pub struct ReceiptBatcher {
    pending: Mutex<HashMap<(RoomId, UserId), Positions>>,
    sizes: Mutex<HashMap<RoomId, (usize, Instant)>>,
    full: tokio::sync::Notify,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    every: Duration,
    live_max_members: usize,
}

impl ReceiptBatcher {
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        every: Duration,
        live_max_members: usize,
    ) -> Self {
        Self {
            pending: Mutex::default(),
            sizes: Mutex::default(),
            full: tokio::sync::Notify::new(),
            store,
            bus,
            every,
            live_max_members,
        }
    }

    /// Queues a member's new public positions (the furthest per member and room wins:
    /// concurrent reports may be pushed out of order).
    pub fn push(&self, room: &RoomId, user: &UserId, positions: Positions) {
        let mut pending = self.pending.lock().expect("receipts lock");
        let entry = pending.entry((room.clone(), user.clone())).or_default();
        entry.delivered_seq = entry.delivered_seq.max(positions.delivered_seq);
        entry.read_seq = entry.read_seq.max(positions.read_seq);
        entry.public_read_seq = entry.public_read_seq.max(positions.public_read_seq);
        if pending.len() >= MAX_PENDING {
            self.full.notify_one();
        }
    }

    /// Publishes what is pending every interval, until `shutdown` (then once more).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopping = tokio::select! {
                _ = shutdown.cancelled() => true,
                _ = tick.tick() => false,
                _ = self.full.notified() => false,
            };
            self.flush().await;
            if stopping {
                return;
            }
        }
    }

    async fn flush(&self) {
        let batch = std::mem::take(&mut *self.pending.lock().expect("receipts lock"));
        for ((room, user), positions) in batch {
            if !self.live(&room).await {
                continue;
            }
            let event = BusEvent::Receipt {
                room: room.clone(),
                user,
                delivered_seq: positions.delivered_seq,
                read_seq: positions.public_read_seq,
            };
            metrics::counter!("chatd_receipts_published_total").increment(1);
            // A lost receipt heals: clients read positions again when they open the room.
            if let Err(e) = self.bus.publish(&Topic::Room(room), event.encode()).await {
                tracing::warn!(error = %e, "receipt not published");
            }
        }
    }

    /// Whether the room is small enough for live receipts (cached; unknown rooms are not).
    async fn live(&self, room: &RoomId) -> bool {
        let cached = self.sizes.lock().expect("sizes lock").get(room).copied();
        let size = match cached {
            Some((size, at)) if at.elapsed() < ROOM_SIZE_TTL => size,
            _ => match self.store.room(room).await {
                Ok(Some(r)) => {
                    let mut sizes = self.sizes.lock().expect("sizes lock");
                    if sizes.len() >= MAX_PENDING {
                        sizes.clear();
                    }
                    sizes.insert(room.clone(), (r.members.len(), Instant::now()));
                    r.members.len()
                }
                Ok(None) => return false,
                Err(e) => {
                    tracing::warn!(error = %e, "room size unknown; receipt not published");
                    return false;
                }
            },
        };
        size <= self.live_max_members
    }
}

/// The user's unread messages in each of their rooms (each counted up to 999).
pub async fn unread_counts(
    store: &dyn Store,
    user: &UserId,
) -> crate::store::StoreResult<Vec<(RoomId, u64)>> {
    let memberships = store.memberships_of(user).await?;
    futures_util::stream::iter(memberships)
        .map(|m| async move {
            let n = store
                .count_unread(&m.room, user, m.read_seq, UNREAD_CAP)
                .await?;
            Ok((m.room, n))
        })
        .buffer_unordered(COUNT_CONCURRENCY)
        .try_collect()
        .await
}

impl Chat {
    /// A delivered or read report: moves the positions and tells whoever needs to know.
    /// Returns the user's own read position.
    pub async fn mark(&self, user: &UserId, room: &str, mark: Mark, seq: Seq) -> ChatResult<Seq> {
        let room = parse_room(room)?;
        self.require_member(&room, user).await?;
        let marked = self.store.mark(&room, user, mark, seq).await?;
        if marked.receipt_moved() {
            self.receipts.push(&room, user, marked.after);
        }
        if marked.read_moved() {
            self.push
                .read_moved(user, &room, marked.before.read_seq, marked.after.read_seq);
            self.announce_unread(user, &room, marked.after.read_seq)
                .await;
        }
        Ok(marked.after.read_seq)
    }

    /// Tells all the user's connections their new unread count in `room` and in total.
    async fn announce_unread(&self, user: &UserId, room: &RoomId, read_seq: Seq) {
        let counts = match self.unread_counts(user).await {
            Ok(counts) => counts,
            Err(e) => {
                tracing::warn!(error = %e, "unread counts not announced");
                return;
            }
        };
        let unread = counts
            .iter()
            .find(|(r, _)| r == room)
            .map_or(0, |(_, n)| *n);
        let total = counts
            .iter()
            .fold(0u64, |sum, (_, n)| sum.saturating_add(*n));
        let event = BusEvent::Unread {
            room: room.clone(),
            unread,
            read_seq,
            total,
        };
        self.publish_quietly(&Topic::User(user.clone()), &event)
            .await;
    }

    /// The user's unread messages in each of their rooms (each counted up to 999).
    async fn unread_counts(&self, user: &UserId) -> crate::store::StoreResult<Vec<(RoomId, u64)>> {
        unread_counts(&*self.store, user).await
    }

    /// Every member's public positions, for a member of the room.
    pub async fn receipts(&self, user: &UserId, room: &str) -> ChatResult<Vec<MemberReceipt>> {
        let room = parse_room(room)?;
        self.require_member(&room, user).await?;
        Ok(self.store.receipts(&room).await?)
    }
}
