//! Deciding a message's notifications: once per member, in the ledger first.

use std::collections::HashSet;

use super::{Push, ms};
use crate::{
    domain::{Message, RoomId, Seq, UserId},
    store::{
        StoreError,
        push::{JobKind, LedgerEntry, Outcome, Reason},
    },
};

impl Push {
    /// Records a decision per member other than the sender (online, no device, queued) and
    /// adds each queued one to the member's open job of the room, then clears the message's
    /// mark. Done twice (a sweep after a node died midway) it changes nothing: decisions
    /// already in the ledger stand, a job holds a message once, and sending skips messages
    /// the ledger no longer has as queued.
    pub(super) async fn decide(&self, message: &Message) -> Result<(), StoreError> {
        let now = self.clock.now();
        let Some(room) = self.store.room(&message.room).await? else {
            return self.store.mark_decided(&message.room, message.seq).await;
        };
        let members: Vec<UserId> = room
            .members
            .iter()
            .filter(|u| **u != message.sender)
            .cloned()
            .collect();
        let reachable = self
            .presence
            .reachable(&members, self.settings.notify_when_away)
            .await
            .map_err(|e| StoreError::Unavailable(format!("presence: {e}")))?;
        let offline: Vec<UserId> = members
            .iter()
            .zip(&reachable)
            .filter(|(_, live)| !**live)
            .map(|(user, _)| user.clone())
            .collect();
        let devices = self.store.devices(&offline).await?;
        let equipped: HashSet<&UserId> = devices.iter().map(|d| &d.user).collect();
        let entries: Vec<LedgerEntry> = members
            .iter()
            .zip(&reachable)
            .map(|(user, live)| {
                let (outcome, reason) = if *live {
                    (Outcome::Skipped, Some(Reason::Online))
                } else if !equipped.contains(user) {
                    (Outcome::Skipped, Some(Reason::NoDevice))
                } else {
                    (Outcome::Queued, None)
                };
                LedgerEntry::decided(message, user, outcome, reason, now)
            })
            .collect();
        // What the ledger holds decides: a decision made again (after a crash) follows the
        // first one, and a queued entry whose job was never made gets it now.
        let stored = self.store.record_decisions(&entries).await?;
        let due = now + ms(self.settings.collapse_ms);
        for entry in stored.iter().filter(|e| e.outcome == Outcome::Queued) {
            self.store
                .enqueue_job(
                    &entry.user,
                    &room.id,
                    JobKind::Message,
                    message.seq,
                    due,
                    now,
                )
                .await?;
        }
        for entry in &stored {
            let decision = entry.reason.map_or(entry.outcome.as_str(), Reason::as_str);
            metrics::counter!("chatd_push_decisions_total", "decision" => decision).increment(1);
        }
        self.store.mark_decided(&room.id, message.seq).await
    }

    /// A read that passes messages the user was notified of sends their devices a badge
    /// update (no content), so the badge and the shown notifications clear.
    pub(super) async fn clear_badges(
        &self,
        user: &UserId,
        room: &RoomId,
        before: Seq,
        after: Seq,
    ) -> Result<(), StoreError> {
        if !self
            .store
            .notified_between(user, room, before, after)
            .await?
        {
            return Ok(());
        }
        let now = self.clock.now();
        self.store
            .enqueue_job(user, room, JobKind::Badge, after, now, now)
            .await
    }
}
