//! The figures the benchmarks write to docs/reliability/ and xtask reads back to
//! render docs/reliability.md: one definition for both sides. xtask includes this
//! file by path (it needs nothing of the benchmarks but serde).

#![allow(
    missing_docs,
    reason = "the fields are the JSON's; the ones that need it say so"
)]

use serde::{Deserialize, Serialize};

/// One run of the herd: a case under one retry policy.
#[derive(Debug, Serialize, Deserialize)]
pub struct HerdOutcome {
    pub policy: String,
    pub agents: usize,
    /// Mean requests per second from minute 3 (every agent past its start) to the
    /// event.
    pub steady_rate: f64,
    /// The highest 10-second rate during the event.
    pub event_peak_rate: f64,
    /// The highest 10-second rate from the event's end to the end of the run.
    pub return_peak_rate: f64,
    /// Seconds from the event's end until the last agent had a heartbeat
    /// accepted; none if some agent was not back by the end of the run.
    pub all_back_after_s: Option<f64>,
    /// Seconds from the event's end until [`herd::LIVE_SHARE`] of the fleet was
    /// live (a heartbeat accepted within two intervals) and stayed so to the end
    /// of the run; none if it never did.
    pub live_after_s: Option<f64>,
    /// Requests that reached the plane during the event.
    pub requests_during_event: u64,
    /// Requests per second, one value per 10-second bucket from the start.
    pub rate_series: Vec<f64>,
    /// The share of the fleet live at the end of each bucket.
    pub live_series: Vec<f64>,
    /// Real seconds the run took (for whoever sizes the next one).
    pub real_seconds: f64,
}

/// One case of the herd: what happened to the plane, and each policy's run.
#[derive(Debug, Serialize, Deserialize)]
pub struct HerdCase {
    /// Its name (`--case`), and the plot's: `herd-CASE.png`.
    pub case: String,
    /// What happens, in words.
    pub title: String,
    pub event_start_s: u64,
    pub event_s: u64,
    /// Whether the plane is away during the event (else its capacity shrinks).
    pub plane_away: bool,
    pub outcomes: Vec<HerdOutcome>,
}

/// The herd's report (`herd.json`).
#[derive(Debug, Serialize, Deserialize)]
pub struct HerdReport {
    pub agents: usize,
    pub bucket_s: u64,
    /// The agents' heartbeat interval.
    pub interval_s: u64,
    pub cases: Vec<HerdCase>,
}

/// The herd's goals (issue 21), which the benchmark draws and docs/reliability.md
/// judges.
pub mod herd {
    /// The most the request rate may reach during the event, in every 10-second
    /// bucket, as a multiple of the steady rate.
    pub const EVENT_PEAK: f64 = 1.1;
    /// The same after the event.
    pub const AFTER_PEAK: f64 = 1.2;
    /// The backoff cap: every agent back within one after an outage.
    pub const CAP_S: f64 = 300.0;
    /// The share of the fleet live again, for good, within two caps.
    pub const LIVE_SHARE: f64 = 0.99;
    /// How long a queueing plane holds a request before it drops it.
    pub const QUEUE_S: u64 = 60;
}

/// The soak's schedule and pass mark, which docs/reliability.md states.
pub mod soak {
    /// The access tokens' lifetime (refreshed 5 to 10 s before expiry).
    pub const TOKEN_LIFETIME_S: u64 = 20;
    /// The plane is taken away this often...
    pub const OUTAGE_EVERY_S: u64 = 120;
    /// ...for this long.
    pub const OUTAGE_S: u64 = 5;
    /// A reload (SIGHUP) this often.
    pub const RELOAD_EVERY_S: u64 = 30;
    /// How much the late median of resident memory may exceed the early one and
    /// still be flat: the allocator moves by pages.
    pub const RSS_TOLERANCE_KIB: u64 = 256;
    /// The same for open files: a reconnect after an outage is one.
    pub const FDS_TOLERANCE: u64 = 1;
}

/// The median of `values`: the middle one, or the mean of the middle two for an
/// even count (0 for none).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => f64::midpoint(sorted[n / 2 - 1], sorted[n / 2]),
    }
}

/// First, last, median and max of one measure, and whether it grew.
#[derive(Debug, Serialize, Deserialize)]
pub struct Spread {
    pub first: u64,
    pub last: u64,
    pub median: u64,
    pub max: u64,
    /// The median of the last tenth of the samples minus that of the first tenth.
    pub growth: i64,
    pub flat: bool,
}

impl Spread {
    /// The spread of `values` in the order taken. `tolerance`: how much the late
    /// median may exceed the early one and still be flat (RSS moves by allocator
    /// pages; a reconnect after an outage is one fd).
    pub fn of(values: &[u64], tolerance: u64) -> Self {
        // Counts and kibibytes of one run, far below 2^52: exact as f64, and the
        // mean of two of them rounds to a whole one.
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "see above"
        )]
        let median_of = |slice: &[u64]| {
            median(&slice.iter().map(|&v| v as f64).collect::<Vec<_>>()).round() as u64
        };
        let tenth = (values.len() / 10).max(1);
        let early = median_of(&values[..tenth.min(values.len())]);
        let late = median_of(&values[values.len().saturating_sub(tenth)..]);
        let growth = i64::try_from(late).unwrap_or(i64::MAX) - i64::try_from(early).unwrap_or(0);
        Self {
            first: values.first().copied().unwrap_or(0),
            last: values.last().copied().unwrap_or(0),
            median: median_of(values),
            max: values.iter().copied().max().unwrap_or(0),
            growth,
            flat: late <= early + tolerance,
        }
    }
}

/// The soak's report (`soak.json`).
#[derive(Debug, Serialize, Deserialize)]
pub struct SoakReport {
    pub heartbeats: u64,
    pub interval_ms: u64,
    pub token_exchanges: u64,
    pub outages: u32,
    pub reloads: u32,
    pub rotations: u32,
    pub real_seconds: f64,
    pub log_lines: usize,
    pub token_in_output: bool,
    pub exit_status: String,
    pub rss_kib: Spread,
    pub fds: Spread,
    pub threads: Spread,
    pub pass: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_middle_twos_mean() {
        assert!((median(&[4.0, 1.0, 3.0, 2.0]) - 2.5).abs() < 1e-9);
        assert!((median(&[5.0, 1.0, 3.0]) - 3.0).abs() < 1e-9);
        assert!(median(&[]).abs() < 1e-9);
    }

    #[test]
    fn a_spread_rounds_the_median_of_an_even_count() {
        assert_eq!(Spread::of(&[1, 4, 2, 3], 0).median, 3);
        assert_eq!(Spread::of(&[1, 3, 2, 3], 0).median, 3);
        assert_eq!(Spread::of(&[10, 20, 30], 0).median, 20);
    }
}
