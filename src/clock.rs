//! Time, injected. chatd reads the wall clock in exactly one place (here), so tests can make a
//! node's clock run behind or jump backwards and check that message order survives it.

use std::sync::Mutex;

use chrono::{DateTime, Duration, DurationRound, Utc};

pub trait Clock: Send + Sync + 'static {
    /// Now, truncated to milliseconds (the precision every store keeps).
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock, optionally shifted by a fixed offset (`server.clock_offset_ms`), which
/// exists so that a test can run one node of a cluster with its clock seconds behind.
#[derive(Debug, Default)]
pub struct SystemClock {
    offset: Duration,
}

impl SystemClock {
    pub fn with_offset_ms(offset_ms: i64) -> Self {
        Self {
            offset: Duration::milliseconds(offset_ms),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        truncate_to_millis(Utc::now() + self.offset)
    }
}

/// A clock that only moves when told to; used by tests to step time backwards.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self(Mutex::new(truncate_to_millis(start)))
    }

    pub fn set(&self, t: DateTime<Utc>) {
        *self.0.lock().expect("clock lock") = truncate_to_millis(t);
    }

    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().expect("clock lock");
        *t = truncate_to_millis(*t + by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock lock")
    }
}

pub fn truncate_to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::milliseconds(1)).unwrap_or(t)
}

/// The `createdAt` rule of every store: a message is never stamped earlier than the message
/// before it in the same room. With clocks that disagree (or step backwards) this is what keeps
/// `createdAt` monotonic as `seq` grows; `seq` stays the order, `createdAt` stays honest.
pub fn next_created_at(previous: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
    match previous {
        Some(prev) if prev > now => prev,
        _ => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_at_never_goes_backwards() {
        let t0 = Utc::now();
        let behind = t0 - Duration::seconds(5);
        assert_eq!(next_created_at(Some(t0), behind), t0);
        assert_eq!(next_created_at(Some(behind), t0), t0);
        assert_eq!(next_created_at(None, behind), behind);
    }

    #[test]
    fn manual_clock_steps_both_ways() {
        let start = Utc::now();
        let clock = ManualClock::new(start);
        clock.advance(Duration::seconds(-10));
        assert!(clock.now() < truncate_to_millis(start));
    }
}
