//! Per-user limits on imports, so that one user cannot take the server's
//! imports from everyone else (docs/security.md, "Import limits and
//! fairness"): how many may be unfinished, how fast they may be created,
//! and how many bytes of finished media a user may keep.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The per-user limits, from the settings.
#[derive(Debug, Clone)]
pub struct ImportLimits {
    /// Unfinished imports a user may have (all nodes: counted in the store).
    pub max_active_per_user: u64,
    /// Creates per minute a user may make on one node, on average.
    pub rate_per_min: u32,
    /// Creates a user may make at once before the rate applies.
    pub rate_burst: u32,
    /// Bytes of finished media a user may keep; `None`: no quota.
    pub quota_bytes: Option<u64>,
}

/// How often buckets that are full again are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The creation rate of each user on this node: a token bucket per user
/// (governor's GCRA, which is one). Per node, not shared: with several
/// nodes a user may create up to `nodes ×` the rate; the cap on unfinished
/// imports, which is shared, still holds.
pub struct CreationRate {
    buckets: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    last_sweep: Mutex<Instant>,
}

impl CreationRate {
    pub fn new(per_min: u32, burst: u32) -> CreationRate {
        let per_min = NonZeroU32::new(per_min).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let clock = DefaultClock::default();
        CreationRate {
            buckets: RateLimiter::dashmap_with_clock(
                Quota::per_minute(per_min).allow_burst(burst),
                clock.clone(),
            ),
            clock,
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    /// Takes a token from `user`'s bucket, or says how long until there is
    /// one again.
    pub fn take(&self, user: &str) -> Result<(), Duration> {
        self.sweep_now_and_then();
        self.buckets
            .check_key(&user.to_string())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets users whose bucket is full again, so memory follows the
    /// users active in the last minute or so, not every user ever seen.
    fn sweep_now_and_then(&self) {
        let Ok(mut last) = self.last_sweep.try_lock() else {
            return;
        };
        if last.elapsed() >= SWEEP_EVERY {
            *last = Instant::now();
            self.buckets.retain_recent();
            self.buckets.shrink_to_fit();
        }
    }
}

/// Whole seconds to announce in `Retry-After`: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_per_user() {
        let rate = CreationRate::new(60, 3);
        for _ in 0..3 {
            assert_eq!(rate.take("alice"), Ok(()));
        }
        let wait = rate.take("alice").expect_err("the burst is spent");
        assert!(
            wait <= Duration::from_secs(1),
            "one token a second: {wait:?}"
        );
        assert_eq!(rate.take("bob"), Ok(()), "buckets are per user");
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
