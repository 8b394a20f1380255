//! What load runs measure: each session's counts and latencies ([`SessionStats`]) and the
//! totals all sessions of a run share ([`Tally`]). Kept apart from the session's rules, which
//! any client needs; the checker and the bench read these.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use chatd_protocol::model::{RoomId, Seq};

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SessionStats {
    pub sent: u64,
    pub resent: u64,
    pub acked: u64,
    /// Message frames received (live or replayed).
    pub frames: u64,
    /// Message frames for a seq already held (dropped, never shown twice).
    pub duplicate_frames: u64,
    /// Message frames whose seq was below an earlier frame of the same room on the same
    /// connection (the server promises seq order per connection).
    pub misordered_frames: u64,
    pub gap_fills: u64,
    pub reconnects: u64,
    /// Sends the server refused for good, by error code.
    pub rejected: BTreeMap<String, u64>,
    /// Errors that were retried, by code.
    pub retried: BTreeMap<String, u64>,
    /// Why connections ended, by close code.
    pub closes: BTreeMap<u16, u64>,
    /// End-to-end latencies of live messages that carried a send stamp, in microseconds.
    #[serde(skip)]
    pub latencies_us: Vec<u64>,
}

/// What all the clients of one test or load run know together: the highest acked seq per
/// room, and how many clients still have messages to send.
#[derive(Debug, Default)]
pub struct Tally {
    max_acked: Mutex<HashMap<RoomId, Seq>>,
    senders_left: AtomicUsize,
    /// Running totals over all sessions, for progress reports.
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub delivered: AtomicU64,
    pub reconnects: AtomicU64,
}

impl Tally {
    pub fn new(senders: usize) -> Self {
        Self {
            max_acked: Mutex::default(),
            senders_left: AtomicUsize::new(senders),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
        }
    }

    pub(crate) fn acked(&self, room: &RoomId, seq: Seq) {
        let mut max = self.max_acked.lock().expect("tally lock");
        let entry = max.entry(room.clone()).or_default();
        *entry = (*entry).max(seq);
    }

    pub(crate) fn sender_done(&self) {
        self.senders_left.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn all_sent(&self) -> bool {
        self.senders_left.load(Ordering::SeqCst) == 0
    }

    pub fn max_acked(&self, room: &RoomId) -> Seq {
        self.max_acked
            .lock()
            .expect("tally lock")
            .get(room)
            .copied()
            .unwrap_or(0)
    }
}

/// Microseconds since the epoch (what stamped texts carry).
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A text that carries its send time, so receivers can measure end-to-end latency.
pub fn stamp(label: &str) -> String {
    format!("{label} @{}", now_us())
}
