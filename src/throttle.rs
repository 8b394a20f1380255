//! Rate limits (token buckets, from `governor`): how many frames one connection may send,
//! and, per user on this node, how many messages, read reports and resumed rooms, over the
//! WebSocket and REST alike.
//! A throttled request is refused with `rate_limited` and the time after which a retry will
//! be accepted; nothing is stored.

use std::{num::NonZeroU32, time::Duration};

use governor::{
    DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock,
    clock::DefaultClock,
};

use crate::{config::Limits, domain::UserId};

fn quota(per_second: u32, burst: u32) -> Quota {
    let nonzero = |n: u32| NonZeroU32::new(n.max(1)).expect("max(1) is non-zero");
    Quota::per_second(nonzero(per_second)).allow_burst(nonzero(burst))
}

/// `Err(wait)`: refused; a retry after `wait` will pass.
pub type Verdict = Result<(), Duration>;

type Instant = <DefaultClock as Clock>::Instant;

fn verdict(check: Result<(), governor::NotUntil<Instant>>) -> Verdict {
    check.map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
}

/// A node-wide, per-user limit (on sends, reads, resumed rooms).
pub struct UserThrottle {
    per_user: DefaultKeyedRateLimiter<UserId>,
}

impl UserThrottle {
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_user: RateLimiter::dashmap(quota(per_second, burst)),
        }
    }

    pub fn check(&self, user: &UserId) -> Verdict {
        self.check_n(user, 1)
    }

    /// Takes `n` tokens at once (a resume costs one per room). More than the burst can never
    /// pass; it is refused with the time a full bucket takes.
    pub fn check_n(&self, user: &UserId, n: u32) -> Verdict {
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(());
        };
        match self.per_user.check_key_n(user, n) {
            Ok(result) => verdict(result),
            Err(insufficient) => Err(Duration::from_secs(u64::from(insufficient.0).max(1))),
        }
    }

    /// Forgets users whose buckets are full again (run now and then, so the map stays small).
    pub fn forget_idle(&self) {
        self.per_user.retain_recent();
        self.per_user.shrink_to_fit();
    }
}

/// The per-user limits of one node.
pub struct UserLimits {
    pub sends: UserThrottle,
    pub reads: UserThrottle,
    pub resumed_rooms: UserThrottle,
}

impl UserLimits {
    pub fn new(limits: &Limits) -> Self {
        Self {
            sends: UserThrottle::new(limits.sends_per_second, limits.sends_burst),
            reads: UserThrottle::new(limits.reads_per_second, limits.reads_burst),
            resumed_rooms: UserThrottle::new(
                limits.resume_rooms_per_second,
                limits.resume_rooms_burst,
            ),
        }
    }

    pub fn forget_idle(&self) {
        self.sends.forget_idle();
        self.reads.forget_idle();
        self.resumed_rooms.forget_idle();
    }
}

/// One connection's limit on frames.
pub struct FrameThrottle {
    limiter: DefaultDirectRateLimiter,
}

impl FrameThrottle {
    pub fn new(limits: &Limits) -> Self {
        Self {
            limiter: RateLimiter::direct(quota(limits.frames_per_second, limits.frames_burst)),
        }
    }

    pub fn check(&self) -> Verdict {
        verdict(self.limiter.check())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_beyond_the_burst_and_says_when_to_retry() {
        let mut limits = crate::config::Settings::defaults().limits;
        limits.frames_per_second = 2;
        limits.frames_burst = 3;
        let throttle = FrameThrottle::new(&limits);
        for _ in 0..3 {
            assert!(throttle.check().is_ok());
        }
        let wait = throttle.check().unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
    }

    #[test]
    fn users_have_separate_buckets() {
        let mut limits = crate::config::Settings::defaults().limits;
        limits.sends_per_second = 1;
        limits.sends_burst = 1;
        let throttle = UserLimits::new(&limits).sends;
        let (a, b) = (UserId::parse("a").unwrap(), UserId::parse("b").unwrap());
        assert!(throttle.check(&a).is_ok());
        assert!(throttle.check(&a).is_err());
        assert!(throttle.check(&b).is_ok());
    }

    #[test]
    fn a_batch_costs_its_size() {
        let throttle = UserThrottle::new(1, 10);
        let a = UserId::parse("a").unwrap();
        assert!(throttle.check_n(&a, 8).is_ok());
        assert!(throttle.check_n(&a, 8).is_err(), "only 2 left");
        assert!(
            throttle.check_n(&a, 11).is_err(),
            "more than the burst never passes"
        );
        assert!(throttle.check_n(&a, 0).is_ok());
    }
}
