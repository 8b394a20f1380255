//! Who is a member of which room, remembered by a node so that a send needs no store read for
//! it: the membership half of the one-round-trip send (the other half is the store's own
//! cache of each room's last seq).
//!
//! Only what this node would hear the end of is kept: an entry is remembered only for a room
//! the node follows on the bus (a local connection is in it: its topic is subscribed before
//! the room counts as followed), is forgotten with the room's `members` event (which every
//! change of membership publishes, and the node making the change forgets at once), with a
//! bus resync (events may have been lost), when the node stops following the room, and after
//! [`TTL`] in any case. So a removed member's sends are refused once the node hears of the
//! removal: when delivery to them stops too, within the bus's latency (or [`TTL`], if the
//! bus loses the event without a resync).
//!
//! A store read that started before something was forgotten may answer what is no longer
//! true: every forget moves an epoch, and a read's answer is remembered only if the epoch has
//! not moved since the read began ([`MembershipCache::ticket`]), its age counted from then.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use dashmap::{DashMap, DashSet};

use crate::domain::{RoomId, UserId};

/// The longest a membership is trusted without the store.
pub const TTL: Duration = Duration::from_secs(30);
/// Rooms kept at most; past it the cache starts over (a miss costs one store read). A room
/// holds at most its members.
const MAX_ROOMS: usize = 50_000;

#[derive(Default)]
pub struct MembershipCache {
    /// By room, so that forgetting a room is one removal.
    members: DashMap<RoomId, HashMap<UserId, Instant>>,
    /// Rooms whose events reach this node (kept by the hub).
    followed: DashSet<RoomId>,
    /// Moves with every forget (see [`Ticket`]).
    epoch: AtomicU64,
}

/// Taken before a store read of a membership: its answer may be remembered only if nothing
/// was forgotten since.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    epoch: u64,
    taken: Instant,
}

impl MembershipCache {
    /// Whether `user` was seen to be a member of `room` within [`TTL`], with nothing heard
    /// since that could have changed it.
    pub fn is_member(&self, room: &RoomId, user: &UserId) -> bool {
        if !self.followed.contains(room) {
            return false;
        }
        let Some(mut known) = self.members.get_mut(room) else {
            return false;
        };
        match known.get(user) {
            Some(at) if at.elapsed() < TTL => true,
            Some(_) => {
                known.remove(user);
                false
            }
            None => false,
        }
    }

    /// To take before reading a membership from the store.
    pub fn ticket(&self) -> Ticket {
        Ticket {
            epoch: self.epoch.load(Ordering::SeqCst),
            taken: Instant::now(),
        }
    }

    /// The store said, in a read begun at `ticket`, that `user` is a member of `room`:
    /// remembered if the node follows the room and nothing was forgotten since.
    pub fn remember(&self, room: &RoomId, user: &UserId, ticket: Ticket) {
        if !self.followed.contains(room) {
            return;
        }
        if self.members.len() >= MAX_ROOMS {
            self.forget_all();
            return;
        }
        // Checked under the room's entry: a forget of the room waits for it, or this sees
        // the epoch it moved.
        let mut known = self.members.entry(room.clone()).or_default();
        if self.epoch.load(Ordering::SeqCst) == ticket.epoch {
            known.insert(user.clone(), ticket.taken);
        }
    }

    /// The room's members changed (or may have).
    pub fn forget_room(&self, room: &RoomId) {
        // The epoch moves under the room's entry, so a remember of it sees it moved.
        let entry = self.members.entry(room.clone());
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let dashmap::Entry::Occupied(known) = entry {
            known.remove();
        }
    }

    /// Events may have been lost: nothing remembered is trusted.
    pub fn forget_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.members.clear();
    }

    /// The room's events reach this node from now on.
    pub fn follow(&self, room: &RoomId) {
        self.followed.insert(room.clone());
    }

    /// The node no longer follows the room.
    pub fn unfollow(&self, room: &RoomId) {
        self.followed.remove(room);
        self.forget_room(room);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (RoomId, UserId) {
        (
            RoomId::parse("0190f7b0-0000-7000-8000-000000000001").unwrap(),
            UserId::parse("alice").unwrap(),
        )
    }

    #[test]
    fn only_followed_rooms_are_remembered_until_something_changes() {
        let cache = MembershipCache::default();
        let (room, alice) = ids();
        let remember = |cache: &MembershipCache| cache.remember(&room, &alice, cache.ticket());
        remember(&cache);
        assert!(
            !cache.is_member(&room, &alice),
            "not followed: never remembered"
        );
        cache.follow(&room);
        remember(&cache);
        assert!(cache.is_member(&room, &alice));
        cache.forget_room(&room);
        assert!(!cache.is_member(&room, &alice));
        remember(&cache);
        cache.forget_all();
        assert!(!cache.is_member(&room, &alice));
        remember(&cache);
        cache.unfollow(&room);
        assert!(!cache.is_member(&room, &alice));
        remember(&cache);
        assert!(
            !cache.is_member(&room, &alice),
            "unfollowed: not remembered"
        );
    }

    #[test]
    fn an_answer_read_before_a_forget_is_not_remembered() {
        let cache = MembershipCache::default();
        let (room, alice) = ids();
        cache.follow(&room);
        let ticket = cache.ticket();
        // The store answers "member"; meanwhile the node hears the room's members changed.
        cache.forget_room(&room);
        cache.remember(&room, &alice, ticket);
        assert!(!cache.is_member(&room, &alice));
        cache.remember(&room, &alice, cache.ticket());
        assert!(cache.is_member(&room, &alice));
    }
}
