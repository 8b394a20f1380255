//! One user's presence record and its rules, without I/O: which connections they have, what
//! was last announced, and how each event (a connection opening, acting, ending, a node
//! dying, time passing) changes what others see. The registries only store records; every
//! node applies these rules the same way (see [`super::PresenceService`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{PresenceState, UserId, UserPresence, timestamp::from_millis};

/// Milliseconds since the epoch (the registries keep times as such).
pub type Millis = i64;

/// One live connection of the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnEntry {
    pub node: String,
    /// When the user was last active on it.
    pub active_at: Millis,
}

/// What contacts were last told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Shown {
    pub state: PresenceState,
    pub last_seen: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Record {
    /// By key, "<node>:<connection id>".
    #[serde(default)]
    pub conns: BTreeMap<String, ConnEntry>,
    /// Increases with every change of `shown`: the next integer, or the time in ms if that
    /// is larger, so a record that was lost (a registry that lost its data) starts above
    /// every version clients hold.
    #[serde(default)]
    pub v: u64,
    #[serde(default)]
    pub shown: Shown,
    /// When the last connection ended.
    #[serde(default)]
    pub last_seen: Option<Millis>,
    #[serde(default)]
    pub hidden: bool,
    /// A connection that dropped without a close keeps the user as shown until then.
    #[serde(default)]
    pub grace_until: Option<Millis>,
}

impl Record {
    /// A stored record; one that cannot be read starts afresh (it is rebuilt by the nodes'
    /// reconciliation) rather than wedging the user.
    pub fn parse(stored: Option<&str>) -> Self {
        stored
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default()
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("records always serialize")
    }

    pub fn connect(&mut self, key: &str, node: &str, now: Millis) {
        self.conns.insert(
            key.to_owned(),
            ConnEntry {
                node: node.to_owned(),
                active_at: now,
            },
        );
        self.grace_until = None;
    }

    pub fn activity(&mut self, key: &str, now: Millis) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.active_at = conn.active_at.max(now);
        }
    }

    /// A connection ended; with `grace` (it dropped without a close) the user stays as shown
    /// for that long if it was their last.
    pub fn disconnect(&mut self, key: &str, now: Millis, grace: Option<Millis>) {
        if self.conns.remove(key).is_some() && self.conns.is_empty() {
            self.last_seen = Some(now);
            self.grace_until = grace.map(|g| now.saturating_add(g));
        }
    }

    /// Drops the connections of nodes that are gone (dead, or stopping); no grace.
    pub fn drop_nodes(&mut self, gone: impl Fn(&str) -> bool, now: Millis) {
        let before = self.conns.len();
        self.conns.retain(|_, c| !gone(&c.node));
        if before > 0 && self.conns.is_empty() {
            self.last_seen = Some(now);
            self.grace_until = None;
        }
    }

    /// What contacts should see now.
    pub fn visible(&self, now: Millis, away_after: Millis) -> Shown {
        if self.hidden {
            return Shown::default();
        }
        if !self.conns.is_empty() {
            let active = self
                .conns
                .values()
                .any(|c| now.saturating_sub(c.active_at) < away_after);
            let state = if active {
                PresenceState::Online
            } else {
                PresenceState::Away
            };
            return Shown {
                state,
                last_seen: None,
            };
        }
        if self.grace_until.is_some_and(|until| now < until) {
            return self.shown;
        }
        Shown {
            state: PresenceState::Offline,
            last_seen: self.last_seen,
        }
    }

    /// Brings `shown` up to date; returns the announcement if it changed.
    pub fn settle(
        &mut self,
        user: &UserId,
        now: Millis,
        away_after: Millis,
    ) -> Option<UserPresence> {
        let visible = self.visible(now, away_after);
        if visible == self.shown {
            return None;
        }
        self.shown = visible;
        self.v = (self.v + 1).max(u64::try_from(now).unwrap_or(0));
        Some(self.view(user))
    }

    /// When the visible state may next change by time alone (a grace or an active window
    /// running out): the registry re-evaluates the user then.
    pub fn next_due(&self, now: Millis, away_after: Millis) -> Option<Millis> {
        let grace = self.grace_until.filter(|&until| until > now);
        let idle = self
            .conns
            .values()
            .map(|c| c.active_at.saturating_add(away_after))
            .filter(|&at| at > now)
            .min();
        grace.into_iter().chain(idle).min()
    }

    /// The announced presence, as contacts get it.
    pub fn view(&self, user: &UserId) -> UserPresence {
        UserPresence {
            user: user.clone(),
            state: self.shown.state,
            last_seen: self.shown.last_seen.map(from_millis),
            v: self.v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AWAY: Millis = 300_000;

    fn alice() -> UserId {
        UserId::parse("alice").unwrap()
    }

    fn state_after(record: &mut Record, now: Millis) -> Option<PresenceState> {
        record.settle(&alice(), now, AWAY).map(|p| p.state)
    }

    #[test]
    fn online_while_any_connection_lives() {
        let mut r = Record::default();
        r.connect("n1:1", "n1", 0);
        assert_eq!(state_after(&mut r, 0), Some(PresenceState::Online));
        r.connect("n2:7", "n2", 10);
        assert_eq!(
            state_after(&mut r, 10),
            None,
            "a second device changes nothing"
        );
        r.disconnect("n1:1", 20, None);
        assert_eq!(state_after(&mut r, 20), None);
        r.disconnect("n2:7", 30, None);
        assert_eq!(state_after(&mut r, 30), Some(PresenceState::Offline));
        assert_eq!(r.view(&alice()).last_seen, Some(from_millis(30)));
        assert_eq!(r.v, 30, "versions follow the clock when it is ahead");
        let mut later = r.clone();
        later.connect("n1:3", "n1", 5);
        assert_eq!(
            later.settle(&alice(), 5, AWAY).unwrap().v,
            31,
            "and only go up"
        );
    }

    #[test]
    fn a_drop_within_the_grace_shows_nothing() {
        let mut r = Record::default();
        r.connect("n1:1", "n1", 0);
        r.settle(&alice(), 0, AWAY);
        r.disconnect("n1:1", 100, Some(10_000));
        assert_eq!(state_after(&mut r, 100), None);
        assert_eq!(r.next_due(100, AWAY), Some(10_100));
        r.connect("n2:2", "n2", 5_000);
        assert_eq!(state_after(&mut r, 5_000), None, "back within the grace");
        r.disconnect("n2:2", 6_000, Some(10_000));
        assert_eq!(state_after(&mut r, 15_999), None);
        assert_eq!(state_after(&mut r, 16_000), Some(PresenceState::Offline));
        assert_eq!(r.shown.last_seen, Some(6_000), "last seen when it dropped");
    }

    #[test]
    fn idle_connections_are_away_until_activity() {
        let mut r = Record::default();
        r.connect("n1:1", "n1", 0);
        r.settle(&alice(), 0, AWAY);
        assert_eq!(r.next_due(0, AWAY), Some(AWAY));
        assert_eq!(state_after(&mut r, AWAY), Some(PresenceState::Away));
        r.activity("n1:1", AWAY + 5);
        assert_eq!(state_after(&mut r, AWAY + 5), Some(PresenceState::Online));
    }

    #[test]
    fn a_dead_node_takes_its_connections_along_at_once() {
        let mut r = Record::default();
        r.connect("n1:1", "n1", 0);
        r.connect("n1:2", "n1", 0);
        r.settle(&alice(), 0, AWAY);
        r.disconnect("n1:2", 5, Some(10_000));
        r.drop_nodes(|node| node == "n1", 50);
        assert_eq!(state_after(&mut r, 50), Some(PresenceState::Offline));
    }

    #[test]
    fn hidden_users_look_offline_without_last_seen() {
        let mut r = Record::default();
        r.connect("n1:1", "n1", 0);
        r.settle(&alice(), 0, AWAY);
        r.hidden = true;
        let shown = r.settle(&alice(), 1, AWAY).unwrap();
        assert_eq!(
            (shown.state, shown.last_seen),
            (PresenceState::Offline, None)
        );
        r.disconnect("n1:1", 2, None);
        assert_eq!(
            state_after(&mut r, 2),
            None,
            "nothing to tell: still offline"
        );
        r.hidden = false;
        let shown = r.settle(&alice(), 3, AWAY).unwrap();
        assert_eq!(shown.last_seen, Some(from_millis(2)));
    }

    #[test]
    fn unreadable_records_start_afresh() {
        assert_eq!(Record::parse(Some("{not json")), Record::default());
        let mut r = Record::default();
        r.connect("n1:1", "n1", 9);
        assert_eq!(Record::parse(Some(&r.encode())), r);
    }
}
