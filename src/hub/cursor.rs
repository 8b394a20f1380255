//! Per-room ordering at the node. The bus may deliver a room's messages out of order (two
//! nodes publish seq 5 and 6 at once) or lose some (Redis restarts). The cursor hands
//! messages on strictly in seq order and exactly once, holds those that arrive early, and
//! says when a gap has lasted long enough that the missing range must be read from the store.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use crate::domain::{Message, Seq};

/// Early messages held per room before the gap is filled from the store without waiting.
pub const MAX_HELD: usize = 10_000;

#[derive(Debug)]
pub struct RoomCursor {
    /// The seq that can be delivered next; everything below it has been.
    next: Seq,
    held: BTreeMap<Seq, Message>,
    gap_since: Option<Instant>,
}

impl RoomCursor {
    /// A cursor for a room whose messages up to `last_seq` need no delivery by this node.
    pub fn new(last_seq: Seq) -> Self {
        Self {
            next: last_seq + 1,
            held: BTreeMap::new(),
            gap_since: None,
        }
    }

    /// Everything up to here has been handed on.
    pub fn delivered_up_to(&self) -> Seq {
        self.next - 1
    }

    /// Takes one message; appends to `out` whatever is now deliverable, in seq order.
    /// Duplicates and already delivered seqs are dropped.
    pub fn accept(&mut self, message: Message, now: Instant, out: &mut Vec<Message>) {
        let seq = message.seq;
        if seq < self.next || self.held.contains_key(&seq) {
            return;
        }
        if seq > self.next {
            self.held.insert(seq, message);
            self.gap_since.get_or_insert(now);
            return;
        }
        out.push(message);
        self.next += 1;
        while let Some(m) = self.held.remove(&self.next) {
            out.push(m);
            self.next += 1;
        }
        // A gap that remains is a new one (the old one just closed).
        self.gap_since = (!self.held.is_empty()).then_some(now);
    }

    /// Messages held behind a gap.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The missing range as (after, before), both exclusive, if there is a gap.
    pub fn gap(&self) -> Option<(Seq, Seq)> {
        let (&first_held, _) = self.held.first_key_value()?;
        Some((self.next - 1, first_held))
    }

    /// Whether the gap has waited long enough (or grown big enough) to be fetched.
    pub fn gap_overdue(&self, now: Instant, patience: Duration) -> bool {
        self.held.len() >= MAX_HELD
            || self
                .gap_since
                .is_some_and(|since| now.duration_since(since) >= patience)
    }

    /// Gives up on the missing range (the store does not have it): delivers what is held.
    pub fn skip_gap(&mut self, now: Instant, out: &mut Vec<Message>) {
        if let Some((&first, _)) = self.held.first_key_value() {
            self.next = first;
            while let Some(m) = self.held.remove(&self.next) {
                out.push(m);
                self.next += 1;
            }
            self.gap_since = (!self.held.is_empty()).then_some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Message;

    fn msg(seq: Seq) -> Message {
        Message::example(seq)
    }

    fn feed(cursor: &mut RoomCursor, seqs: &[Seq]) -> Vec<Seq> {
        let mut out = Vec::new();
        for &s in seqs {
            cursor.accept(msg(s), Instant::now(), &mut out);
        }
        out.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn reorders_and_deduplicates() {
        let mut c = RoomCursor::new(4);
        assert_eq!(feed(&mut c, &[6, 7, 5, 5, 6, 3, 8]), vec![5, 6, 7, 8]);
        assert_eq!(c.delivered_up_to(), 8);
        assert_eq!(c.gap(), None);
    }

    #[test]
    fn reports_and_skips_gaps() {
        let mut c = RoomCursor::new(0);
        assert_eq!(feed(&mut c, &[1, 4, 5]), vec![1]);
        assert_eq!(c.gap(), Some((1, 4)));
        assert!(!c.gap_overdue(Instant::now(), Duration::from_secs(60)));
        assert!(c.gap_overdue(
            Instant::now() + Duration::from_secs(61),
            Duration::from_secs(60)
        ));
        assert_eq!(feed(&mut c, &[3, 2]), vec![2, 3, 4, 5]);
        assert_eq!(feed(&mut c, &[8]), Vec::<Seq>::new());
        let mut out = Vec::new();
        c.skip_gap(Instant::now(), &mut out);
        assert_eq!(out.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![8]);
        assert_eq!(c.delivered_up_to(), 8);
    }
}
