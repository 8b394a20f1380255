//! Rate limits (token buckets, from `governor`): how many frames one connection may send,
//! and how many messages one user may send on this node, over the WebSocket and REST alike.
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

/// The node-wide, per-user limit on sent messages.
pub struct SendThrottle {
    per_user: DefaultKeyedRateLimiter<UserId>,
}

impl SendThrottle {
    pub fn new(limits: &Limits) -> Self {
        Self {
            per_user: RateLimiter::dashmap(quota(limits.sends_per_second, limits.sends_burst)),
        }
    }

    pub fn check(&self, user: &UserId) -> Verdict {
        verdict(self.per_user.check_key(user))
    }

    /// Forgets users whose buckets are full again (run now and then, so the map stays small).
    pub fn forget_idle(&self) {
        self.per_user.retain_recent();
        self.per_user.shrink_to_fit();
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
        let throttle = SendThrottle::new(&limits);
        let (a, b) = (UserId::parse("a").unwrap(), UserId::parse("b").unwrap());
        assert!(throttle.check(&a).is_ok());
        assert!(throttle.check(&a).is_err());
        assert!(throttle.check(&b).is_ok());
    }
}
