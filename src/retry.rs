//! Backoff timing: exponential growth from `base` to `cap`, with full jitter, never
//! giving up (protocol.md section 3).
//!
//! The schedule's ceilings come from `backon`'s exponential iterator (`base * 2^n`,
//! capped); each delay is drawn uniformly from `0..=ceiling` ("full jitter"), which
//! spreads a fleet's retries over the whole window instead of bunching them at its
//! end. backon's own `with_jitter` adds `0..d` on top of `d` and overshoots the cap,
//! so it is not used. Invariant: `0 <= delay <= cap`, for every attempt, forever.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// A validated backoff policy: `0 < base <= cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    base: Duration,
    cap: Duration,
    jitter: Jitter,
}

/// How a delay is drawn under its ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Uniformly from `0..=ceiling`: what hostbeat does, always.
    Full,
    /// The ceiling itself. Only for comparison: the fleet herd benchmark
    /// (bench/src/bin/herd.rs) runs the agent with it to show the herd that plain
    /// exponential backoff (base = cap: a fixed retry interval) makes.
    None,
}

impl RetryPolicy {
    /// A policy growing from `base` up to `cap`. A zero base becomes 1 ms and a cap
    /// below the base becomes the base, so that the type is total (config
    /// validation refuses such values with a message before they get here).
    pub fn new(base: Duration, cap: Duration) -> Self {
        let base = base.max(Duration::from_millis(1));
        Self {
            base,
            cap: cap.max(base),
            jitter: Jitter::Full,
        }
    }

    /// The same schedule with every delay at its ceiling (see [`Jitter::None`]).
    #[must_use]
    pub fn without_jitter(self) -> Self {
        Self {
            jitter: Jitter::None,
            ..self
        }
    }

    /// The first ceiling.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The largest delay ever drawn.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// A fresh schedule, starting at the first attempt.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            policy: *self,
            ceilings: self.ceilings(),
            failures: 0,
        }
    }

    fn ceilings(&self) -> ExponentialBackoff {
        ExponentialBuilder::new()
            .with_min_delay(self.base)
            .with_max_delay(self.cap)
            .with_factor(2.0)
            .with_total_delay(None)
            .without_max_times()
            .build()
    }
}

/// One running schedule: the state of a stretch of consecutive failures.
#[derive(Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    ceilings: ExponentialBackoff,
    failures: u32,
}

impl Backoff {
    /// The delay before the next attempt, after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.next_ceiling();
        match self.policy.jitter {
            Jitter::Full => ceiling.mul_f64(fastrand::f64()),
            Jitter::None => ceiling,
        }
    }

    /// Counts a failure and returns its ceiling without drawing a delay; for waits
    /// that the server dictates (`Retry-After`) but that still lengthen the stretch.
    pub fn next_ceiling(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        // The iterator never ends (no max times, no total), but stay total anyway.
        self.ceilings
            .next()
            .unwrap_or(self.policy.cap)
            .min(self.policy.cap)
    }

    /// Failures counted since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Back to the first attempt, after a success.
    pub fn reset(&mut self) {
        self.ceilings = self.policy.ceilings();
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_the_growing_ceiling_and_the_cap_forever() {
        for (base_ms, cap_ms) in [
            (1, 1),
            (1000, 300_000),
            (250, 900_000),
            (10, 7),
            (3, 1_000_000),
        ] {
            let policy = RetryPolicy::new(
                Duration::from_millis(base_ms),
                Duration::from_millis(cap_ms),
            );
            let mut backoff = policy.backoff();
            for attempt in 0..10_000u32 {
                let delay = backoff.next_delay();
                let ceiling = policy
                    .base()
                    .saturating_mul(2u32.saturating_pow(attempt.min(31)))
                    .min(policy.cap());
                assert!(
                    delay <= ceiling,
                    "attempt {attempt}: {delay:?} > {ceiling:?}"
                );
            }
            assert_eq!(backoff.failures(), 10_000);
        }
    }

    #[test]
    fn jitter_is_full_not_additive() {
        // Over many draws at the cap, delays cover the low half of the window too.
        let policy = RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(8));
        let mut backoff = policy.backoff();
        for _ in 0..4 {
            backoff.next_delay();
        }
        let draws: Vec<Duration> = (0..2000).map(|_| backoff.next_delay()).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_secs(8)));
        assert!(draws.iter().any(|d| *d < Duration::from_secs(2)));
        assert!(draws.iter().any(|d| *d > Duration::from_secs(6)));
    }

    #[test]
    fn without_jitter_every_delay_is_its_ceiling() {
        let policy = RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(10));
        let mut plain = policy.without_jitter().backoff();
        let delays: Vec<u64> = (0..6).map(|_| plain.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        let fixed = RetryPolicy::new(Duration::from_secs(10), Duration::from_secs(10));
        let mut fixed = fixed.without_jitter().backoff();
        assert!((0..5).all(|_| fixed.next_delay() == Duration::from_secs(10)));
    }

    #[test]
    fn reset_starts_over() {
        let policy = RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(300));
        let mut backoff = policy.backoff();
        for _ in 0..20 {
            backoff.next_ceiling();
        }
        assert_eq!(backoff.next_ceiling(), Duration::from_secs(300));
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
        assert_eq!(backoff.next_ceiling(), Duration::from_secs(1));
        assert_eq!(backoff.next_ceiling(), Duration::from_secs(2));
    }
}
