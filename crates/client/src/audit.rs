//! The audit after a run: every client's view of every room against the store.
//!
//! - lost: an acknowledged message missing from the store, or from a member's view;
//! - duplicated: a message shown twice in one view;
//! - misordered: a view whose order differs from the store's (seq -> id must match);
//! - phantom: a message shown that the store does not hold (publish-before-persist).
//!
//! Frames that arrived twice or out of order on the wire are counted separately (a client
//! following the rules hides them, but the server promises neither happens).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::{Client, Session};
use chatd_protocol::model::{Message, RoomId};

#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditReport {
    pub clients: usize,
    pub rooms: usize,
    pub sent: u64,
    pub acked: u64,
    /// Messages in the store, over all audited rooms.
    pub stored: u64,
    /// Messages shown, summed over every member's view.
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub misordered: u64,
    pub phantom: u64,
    pub duplicate_frames: u64,
    pub misordered_frames: u64,
    pub reconnects: u64,
    pub resent: u64,
    pub gap_fills: u64,
    /// A few concrete problems, for the person reading the report.
    pub examples: Vec<String>,
}

impl AuditReport {
    pub fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.misordered == 0 && self.phantom == 0
    }

    fn example(&mut self, text: String) {
        if self.examples.len() < 10 {
            self.examples.push(text);
        }
    }
}

/// Audits `sessions`; each must have tracked the rooms it is a member of. `reader` must be
/// able to read every room's history (a member of all, or one client per room is used).
pub async fn audit(
    sessions: &[Session],
    readers: &HashMap<RoomId, Client>,
) -> anyhow::Result<AuditReport> {
    let mut report = AuditReport {
        clients: sessions.len(),
        rooms: readers.len(),
        ..AuditReport::default()
    };
    let mut stored: HashMap<RoomId, Vec<Message>> = HashMap::new();
    for (room, reader) in readers {
        let history = reader.history_after(room, 0).await?;
        report.stored += history.len() as u64;
        stored.insert(room.clone(), history);
    }
    let stored_ids: HashMap<&RoomId, HashSet<&str>> = stored
        .iter()
        .map(|(room, history)| (room, history.iter().map(|m| m.id.as_str()).collect()))
        .collect();

    for session in sessions {
        let stats = session.stats();
        report.sent += stats.sent;
        report.acked += stats.acked;
        report.duplicate_frames += stats.duplicate_frames;
        report.misordered_frames += stats.misordered_frames;
        report.reconnects += stats.reconnects;
        report.resent += stats.resent;
        report.gap_fills += stats.gap_fills;

        // Acknowledged messages must be stored.
        for (client_msg_id, (room, seq)) in session.acks() {
            let held = stored.get(room).and_then(|h| h.get(*seq as usize - 1));
            if held.is_none_or(|m| &m.client_msg_id != client_msg_id) {
                report.lost += 1;
                report.example(format!(
                    "acked {client_msg_id} (room {room} seq {seq}) is not stored"
                ));
            }
        }

        for (room, log) in session.logs() {
            let Some(history) = stored.get(room) else {
                continue;
            };
            let mut seen = HashSet::new();
            let view: Vec<&Message> = log.messages().collect();
            report.delivered += view.len() as u64;
            for message in &view {
                if !seen.insert(message.id.as_str()) {
                    report.duplicated += 1;
                    report.example(format!("{} shown twice in room {room}", message.id));
                }
                if !stored_ids[room].contains(message.id.as_str()) {
                    report.phantom += 1;
                    report.example(format!("{} shown but not stored (room {room})", message.id));
                }
            }
            // The view must be the store's order, position by position, with nothing missing.
            let by_seq: BTreeMap<u64, &str> = view.iter().map(|m| (m.seq, m.id.as_str())).collect();
            for stored_message in history {
                match by_seq.get(&stored_message.seq) {
                    None => {
                        report.lost += 1;
                        report.example(format!(
                            "room {room} seq {} missing from a view",
                            stored_message.seq
                        ));
                    }
                    Some(id) if *id != stored_message.id => {
                        report.misordered += 1;
                        report.example(format!(
                            "room {room} seq {} shows another message",
                            stored_message.seq
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
    }
    Ok(report)
}
