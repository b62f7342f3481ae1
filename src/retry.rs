//! Backoff timing: exponential growth with full jitter, never giving up
//! (protocol.md section 3).
//!
//! A schedule paced by the heartbeat's cadence ([`RetryPolicy::paced`], what the
//! agent uses for the control plane) waits at least one cadence after every
//! failure, and then a delay drawn uniformly from `0..=ceiling`, where the ceiling
//! starts at one cadence and doubles up to `cap` minus the cadence: the n-th
//! consecutive failure waits 1 to 2 cadences, then 1 to 3, 1 to 5, 1 to 9, ... and
//! never more than `cap` in all. A quick retry buys a heartbeat nothing (the
//! plane's liveness timeout spans several intervals) and, fleet-wide, it is the
//! spike that meets a plane in trouble: so no retry comes sooner than the next beat
//! would have. An unpaced schedule ([`RetryPolicy::new`]: the metadata watcher, and
//! the naive policies the herd benchmark compares) has no such floor.
//!
//! The ceilings come from `backon`'s exponential iterator (`base * 2^n`, capped);
//! drawing the whole delay below the ceiling ("full jitter") spreads a fleet's
//! retries over the whole window instead of bunching them at its end. backon's own
//! `with_jitter` adds `0..d` on top of `d` and overshoots the cap, so it is not
//! used. Invariant: `floor <= delay <= max(cap, floor)`, for every attempt, forever.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// A validated backoff policy: `0 < base`; the longest wait is `max(cap, floor)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The least wait after any failure: the cadence of a paced policy, else zero.
    floor: Duration,
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
            floor: Duration::ZERO,
            base,
            cap: cap.max(base),
            jitter: Jitter::Full,
        }
    }

    /// A policy paced by `cadence` (see the module doc): at least one cadence after
    /// every failure, at most `cap` (or the cadence, if `cap` is below it). The
    /// cadence is at least 1 ms.
    pub fn paced(cadence: Duration, cap: Duration) -> Self {
        let cadence = cadence.max(Duration::from_millis(1));
        Self {
            floor: cadence,
            base: cadence,
            // As configured: a cadence above it wins while it lasts (`longest`).
            cap,
            jitter: Jitter::Full,
        }
    }

    /// The same policy at another cadence (the control plane asked for one); an
    /// unpaced policy stays as it is.
    #[must_use]
    pub fn at_cadence(self, cadence: Duration) -> Self {
        if self.is_paced() {
            Self {
                jitter: self.jitter,
                ..Self::paced(cadence, self.cap)
            }
        } else {
            self
        }
    }

    /// Whether the policy is paced by a cadence: the least wait after a failure.
    pub fn is_paced(&self) -> bool {
        !self.floor.is_zero()
    }

    /// The least wait after a failure (zero for an unpaced policy).
    pub fn floor(&self) -> Duration {
        self.floor
    }

    /// The same schedule with every delay at its ceiling (see [`Jitter::None`]).
    #[must_use]
    pub fn without_jitter(self) -> Self {
        Self {
            jitter: Jitter::None,
            ..self
        }
    }

    /// The first ceiling of the part drawn above the floor.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The cap as configured.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The longest wait ever: the cap, or the floor if that is longer.
    pub fn longest(&self) -> Duration {
        self.cap.max(self.floor)
    }

    /// A fresh schedule, starting at the first attempt.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            policy: *self,
            ceilings: self.ceilings(),
            failures: 0,
        }
    }

    /// The part drawn above the floor may reach this.
    fn spread(&self) -> Duration {
        self.longest().saturating_sub(self.floor)
    }

    fn ceilings(&self) -> ExponentialBackoff {
        ExponentialBuilder::new()
            .with_min_delay(self.base)
            .with_max_delay(self.spread().max(self.base))
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
    /// The delay before the next attempt, after one more failure: the floor, and
    /// a part drawn below the growing ceiling.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.next_spread();
        self.policy.floor
            + match self.policy.jitter {
                Jitter::Full => ceiling.mul_f64(fastrand::f64()),
                Jitter::None => ceiling,
            }
    }

    /// Counts a failure and returns the longest wait it may bring, without drawing
    /// one; for waits that the server dictates (`Retry-After`) but that still
    /// lengthen the stretch.
    pub fn next_ceiling(&mut self) -> Duration {
        self.policy.floor + self.next_spread()
    }

    /// Counts a failure and returns the ceiling of the part above the floor.
    fn next_spread(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        // The iterator never ends (no max times, no total), but stay total anyway.
        let spread = self.policy.spread();
        self.ceilings.next().unwrap_or(spread).min(spread)
    }

    /// The same stretch at another cadence (see [`RetryPolicy::at_cadence`]): the
    /// failures so far still count.
    pub fn pace(&mut self, cadence: Duration) {
        self.adopt(self.policy.at_cadence(cadence));
    }

    /// The same stretch under another policy (a reload changed it): the failures
    /// so far still count.
    pub fn adopt(&mut self, policy: RetryPolicy) {
        if policy != self.policy {
            self.policy = policy;
            self.ceilings = policy.ceilings();
            for _ in 0..self.failures.min(64) {
                self.ceilings.next();
            }
        }
    }

    /// The policy of this schedule.
    pub fn policy(&self) -> RetryPolicy {
        self.policy
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
    fn a_paced_schedule_waits_a_cadence_and_then_a_doubling_spread_up_to_the_cap() {
        let cadence = Duration::from_secs(30);
        let policy = RetryPolicy::paced(cadence, Duration::from_secs(300));
        let mut ceilings = policy.without_jitter().backoff();
        let waits: Vec<u64> = (0..6).map(|_| ceilings.next_delay().as_secs()).collect();
        assert_eq!(waits, [60, 90, 150, 270, 300, 300]);
        let mut backoff = policy.backoff();
        for attempt in 0..10_000 {
            let wait = backoff.next_delay();
            assert!(
                (cadence..=Duration::from_secs(300)).contains(&wait),
                "attempt {attempt}: {wait:?}"
            );
        }
        // A cap under the cadence: every wait is the cadence.
        let mut short = RetryPolicy::paced(cadence, Duration::from_secs(10)).backoff();
        assert!((0..100).all(|_| short.next_delay() == cadence));
    }

    #[test]
    fn a_long_cadence_for_a_while_leaves_the_configured_cap() {
        let policy = RetryPolicy::paced(Duration::from_secs(30), Duration::from_secs(300));
        let asked = policy.at_cadence(Duration::from_secs(3600));
        assert_eq!(asked.longest(), Duration::from_secs(3600));
        let back = asked.at_cadence(Duration::from_secs(30));
        assert_eq!(back, policy);
        assert_eq!(back.longest(), Duration::from_secs(300));
    }

    #[test]
    fn a_new_cadence_keeps_the_stretch() {
        let policy = RetryPolicy::paced(Duration::from_secs(30), Duration::from_secs(600));
        let mut backoff = policy.without_jitter().backoff();
        backoff.next_delay();
        backoff.next_delay();
        backoff.pace(Duration::from_secs(60));
        // The third failure at a 60 s cadence: 60 s and a spread of 4 cadences.
        assert_eq!(backoff.next_delay(), Duration::from_secs(300));
        assert_eq!(backoff.failures(), 3);
        let unpaced = RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(8));
        assert_eq!(unpaced.at_cadence(Duration::from_secs(60)), unpaced);
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
