//! Who is typing where, as this node has heard it from the bus, and the `typing` frames to
//! its connections. Nothing is stored: every node builds the same board from the same events,
//! entries expire by themselves, and each frame carries the full list, so a lost event heals
//! with the next one.
//!
//! Cost: one event per typist and room per `typing.throttle_ms` on the bus; per node and
//! room at most one flush per `typing.coalesce_ms`, which encodes the list once for the
//! members who are not typing and once per typist (their list leaves them out).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::extract::ws::Utf8Bytes;

use super::{ConnHandle, Outbound};
use crate::{
    domain::{RoomId, UserId},
    protocol::{ServerFrame, encode},
};

#[derive(Default)]
struct RoomTyping {
    /// Typist -> when their entry expires.
    typing: HashMap<UserId, Instant>,
    /// The list the members were last sent (sorted).
    shown: Vec<UserId>,
    /// A typist renewed their entry since the last flush: members get the list again, so
    /// their own expiry of it is renewed too (and a lost frame heals).
    renewed: bool,
}

pub struct TypingBoard {
    rooms: Mutex<HashMap<RoomId, RoomTyping>>,
    ttl: Duration,
}

/// A room whose list changed or was renewed: who types now, who typed at the last flush.
pub struct Change {
    pub room: RoomId,
    pub now: Vec<UserId>,
    pub before: Vec<UserId>,
    pub renewed: bool,
}

impl TypingBoard {
    pub fn new(ttl: Duration) -> Self {
        Self {
            rooms: Mutex::default(),
            ttl,
        }
    }

    pub fn apply(&self, room: &RoomId, user: &UserId, typing: bool, now: Instant) {
        let mut rooms = self.rooms.lock().expect("typing lock");
        let entry = rooms.entry(room.clone()).or_default();
        if typing {
            entry.renewed |= entry.typing.insert(user.clone(), now + self.ttl).is_some();
        } else {
            entry.typing.remove(user);
        }
    }

    /// Expires entries and returns the rooms whose list changed (or was renewed) since the
    /// last call.
    pub fn changes(&self, now: Instant) -> Vec<Change> {
        let mut rooms = self.rooms.lock().expect("typing lock");
        let mut changes = Vec::new();
        rooms.retain(|room, entry| {
            entry.typing.retain(|_, until| *until > now);
            let mut current: Vec<UserId> = entry.typing.keys().cloned().collect();
            current.sort();
            let renewed = std::mem::take(&mut entry.renewed) && !current.is_empty();
            if current != entry.shown || renewed {
                let before = std::mem::replace(&mut entry.shown, current.clone());
                changes.push(Change {
                    room: room.clone(),
                    now: current,
                    before,
                    renewed,
                });
            }
            !entry.typing.is_empty() || !entry.shown.is_empty()
        });
        changes
    }
}

impl Change {
    /// Sends each connection its list (the typists without its own user) if that changed
    /// for it, or was renewed and is not empty: a typist never hears of their own typing.
    pub fn send_to(&self, conns: &[std::sync::Arc<ConnHandle>]) {
        let mut frames: HashMap<Option<&UserId>, Utf8Bytes> = HashMap::new();
        for conn in conns {
            let me = &conn.user;
            let involved = self.now.contains(me) || self.before.contains(me);
            let without_me = |list: &[UserId]| -> Vec<UserId> {
                list.iter().filter(|u| *u != me).cloned().collect()
            };
            let users = without_me(&self.now);
            let renewed = self.renewed && !users.is_empty();
            if involved && users == without_me(&self.before) && !renewed {
                continue;
            }
            let frame = frames.entry(involved.then_some(me)).or_insert_with(|| {
                encode(&ServerFrame::Typing {
                    room: self.room.clone(),
                    users,
                })
            });
            conn.offer(Outbound::Frame(frame.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    #[test]
    fn lists_change_on_start_stop_and_expiry() {
        let board = TypingBoard::new(Duration::from_secs(6));
        let room = RoomId::new_group();
        let t0 = Instant::now();
        board.apply(&room, &user("bob"), true, t0);
        board.apply(&room, &user("alice"), true, t0);
        let changes = board.changes(t0);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].now, vec![user("alice"), user("bob")]);
        assert!(board.changes(t0).is_empty(), "nothing new, nothing sent");
        board.apply(&room, &user("bob"), true, t0);
        let renewed = board.changes(t0);
        assert!(renewed[0].renewed, "a renewed start is sent again");
        assert_eq!(renewed[0].now, renewed[0].before);
        board.apply(&room, &user("bob"), false, t0);
        assert_eq!(board.changes(t0)[0].now, vec![user("alice")]);
        let later = t0 + Duration::from_secs(6);
        assert_eq!(board.changes(later)[0].now, Vec::<UserId>::new());
        assert!(board.changes(later).is_empty());
        assert!(
            board.rooms.lock().unwrap().is_empty(),
            "forgotten once empty"
        );
    }
}
