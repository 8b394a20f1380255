//! One room as a client shows it.

use std::collections::BTreeMap;

use chatd_protocol::model::{Message, Seq};

/// One room's messages as a client should show them.
#[derive(Debug, Default, Clone)]
pub struct RoomLog {
    messages: BTreeMap<Seq, Message>,
    /// Every seq up to this one is present.
    contiguous: Seq,
    duplicates: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    New,
    /// Already held (same seq): dropped.
    Duplicate,
}

impl RoomLog {
    pub fn insert(&mut self, message: Message) -> Inserted {
        if message.seq <= self.contiguous || self.messages.contains_key(&message.seq) {
            self.duplicates += 1;
            return Inserted::Duplicate;
        }
        self.messages.insert(message.seq, message);
        while self.messages.contains_key(&(self.contiguous + 1)) {
            self.contiguous += 1;
        }
        Inserted::New
    }

    /// The seq to resume from: everything up to it is held.
    pub fn contiguous(&self) -> Seq {
        self.contiguous
    }

    /// The first missing range as (after, before), both exclusive.
    pub fn gap(&self) -> Option<(Seq, Seq)> {
        self.messages
            .range(self.contiguous + 1..)
            .next()
            .map(|(&seq, _)| (self.contiguous, seq))
    }

    pub fn messages(&self) -> impl Iterator<Item = &Message> {
        self.messages.values()
    }

    pub fn seqs(&self) -> Vec<Seq> {
        self.messages.keys().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Messages that arrived again and were dropped.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: Seq) -> Message {
        Message::example(seq)
    }

    #[test]
    fn sorts_deduplicates_and_reports_gaps() {
        let mut log = RoomLog::default();
        for seq in [2, 1, 5, 2, 4] {
            log.insert(msg(seq));
        }
        assert_eq!(log.seqs(), vec![1, 2, 4, 5]);
        assert_eq!(log.contiguous(), 2);
        assert_eq!(log.gap(), Some((2, 4)));
        assert_eq!(log.duplicates(), 1);
        assert_eq!(log.insert(msg(3)), Inserted::New);
        assert_eq!((log.contiguous(), log.gap()), (5, None));
        assert_eq!(log.insert(msg(1)), Inserted::Duplicate);
    }
}
