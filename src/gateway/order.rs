//! The per-connection order rules of the writer, without a socket: a room's messages go out
//! in seq order and each once, and live traffic waits while a resume replays.
//!
//! It remembers the highest seq sent in each room and drops any message at or below it,
//! whether it comes live or from a resume. During a resume it holds live messages back, so
//! the replay goes first and live traffic follows without overlap, even when the resume
//! arrives after live traffic started (invariant 4 of ARCHITECTURE.md).

use std::{collections::HashMap, sync::Arc};

use axum::extract::ws::Utf8Bytes;

use crate::{
    domain::{RoomId, Seq},
    hub::{LiveMessage, Outbound},
};

/// Too many live messages were held during a resume: the client is too slow (4100).
#[derive(Debug, PartialEq, Eq)]
pub struct HoldOverflow;

pub struct LiveOrder {
    /// Live messages held during a resume; `None` when not holding.
    held: Option<Vec<Arc<LiveMessage>>>,
    /// Per room, the highest seq sent on this connection.
    sent: HashMap<RoomId, Seq>,
    hold_limit: usize,
}

impl LiveOrder {
    /// Starts holding: live traffic waits for the client's resume (or the resume deadline).
    pub fn new(hold_limit: usize) -> Self {
        Self {
            held: Some(Vec::new()),
            sent: HashMap::new(),
            hold_limit,
        }
    }

    /// Takes the next queued item; appends the frames to write now, in order, to `out`.
    pub fn accept(&mut self, item: Outbound, out: &mut Vec<Utf8Bytes>) -> Result<(), HoldOverflow> {
        match item {
            Outbound::Frame(frame) => out.push(frame),
            Outbound::Replay(message) => self.message(&message, out),
            Outbound::Live(live) => match &mut self.held {
                Some(held) if held.len() >= self.hold_limit => return Err(HoldOverflow),
                Some(held) => held.push(live),
                None => self.message(&live, out),
            },
            Outbound::HoldLive => {
                self.held.get_or_insert_with(Vec::new);
            }
            Outbound::ReleaseLive => {
                // Held messages of a room are in seq order already (the dispatcher sends them
                // so); those the replay covered are dropped here.
                for live in self.held.take().unwrap_or_default() {
                    self.message(&live, out);
                }
            }
        }
        Ok(())
    }

    /// The connection is closing: held live traffic no longer matters (the client resumes
    /// elsewhere), and nothing more is held.
    pub fn stop_holding(&mut self) {
        self.held = None;
    }

    /// A message frame, unless this connection already had it (or a later one).
    fn message(&mut self, message: &LiveMessage, out: &mut Vec<Utf8Bytes>) {
        let sent = self.sent.entry(message.room.clone()).or_default();
        if message.seq > *sent {
            *sent = message.seq;
            out.push(message.frame.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Message;

    fn live(seq: Seq) -> Arc<LiveMessage> {
        LiveMessage::new(&Message::example(seq))
    }

    /// Feeds items; returns the seqs written (frames that are not messages as 0).
    fn feed(order: &mut LiveOrder, items: Vec<Outbound>) -> Vec<Seq> {
        let mut out = Vec::new();
        for item in items {
            order.accept(item, &mut out).unwrap();
        }
        out.iter()
            .map(|f| {
                let v: serde_json::Value = serde_json::from_str(f.as_str()).unwrap();
                v["seq"].as_u64().unwrap_or(0)
            })
            .collect()
    }

    #[test]
    fn live_waits_for_the_first_resume_and_never_repeats_the_replay() {
        let mut order = LiveOrder::new(100);
        let written = feed(
            &mut order,
            vec![
                Outbound::Live(live(5)),
                Outbound::Live(live(6)),
                Outbound::HoldLive,
                Outbound::Replay(live(4)),
                Outbound::Replay(live(5)),
                Outbound::ReleaseLive,
                Outbound::Live(live(7)),
            ],
        );
        assert_eq!(written, [4, 5, 6, 7]);
    }

    #[test]
    fn a_resume_after_live_traffic_replays_nothing_twice_nor_steps_back() {
        let mut order = LiveOrder::new(100);
        let written = feed(
            &mut order,
            vec![
                Outbound::ReleaseLive, // the resume deadline passed
                Outbound::Live(live(1)),
                Outbound::Live(live(2)),
                // A late resume from seq 0 replays 1..3; live 3 and 4 arrive meanwhile.
                Outbound::HoldLive,
                Outbound::Replay(live(1)),
                Outbound::Live(live(3)),
                Outbound::Replay(live(2)),
                Outbound::Replay(live(3)),
                Outbound::Live(live(4)),
                Outbound::ReleaseLive,
                Outbound::Live(live(4)),
            ],
        );
        assert_eq!(written, [1, 2, 3, 4]);
    }

    #[test]
    fn holding_more_than_the_limit_is_an_overflow() {
        let mut order = LiveOrder::new(2);
        let mut out = Vec::new();
        assert!(order.accept(Outbound::Live(live(1)), &mut out).is_ok());
        assert!(order.accept(Outbound::Live(live(2)), &mut out).is_ok());
        assert_eq!(
            order.accept(Outbound::Live(live(3)), &mut out),
            Err(HoldOverflow)
        );
        let frame = crate::protocol::encode(&crate::protocol::ServerFrame::Pong { id: None });
        assert!(order.accept(Outbound::Frame(frame), &mut out).is_ok());
        assert_eq!(out.len(), 1, "replies are never held");
    }
}
