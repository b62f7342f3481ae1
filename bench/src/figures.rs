//! The figures the benchmarks write to docs/reliability/ and xtask reads back to
//! render docs/reliability.md: one definition for both sides. xtask includes this
//! file by path (it needs nothing of the benchmarks but serde).

#![allow(
    missing_docs,
    reason = "the fields are the JSON's; the ones that need it say so"
)]

use serde::{Deserialize, Serialize};

/// The figures of one policy's run.
#[derive(Debug, Serialize, Deserialize)]
pub struct HerdOutcome {
    pub policy: String,
    pub agents: usize,
    /// Mean requests per second from minute 3 (every agent past its start) to the
    /// outage.
    pub steady_rate: f64,
    /// The highest 10-second rate while the plane was away.
    pub outage_peak_rate: f64,
    /// The highest 10-second rate from the return to the end.
    pub return_peak_rate: f64,
    /// `return_peak_rate / steady_rate`.
    pub peak_ratio: f64,
    /// Seconds from the return until the last agent had a heartbeat accepted; none
    /// if some agent was not back by the end of the run.
    pub all_back_after_s: Option<f64>,
    /// Requests that reached the plane while it was away.
    pub requests_during_outage: u64,
    pub requests_total: u64,
    /// Requests per second, one value per 10-second bucket from the start.
    pub rate_series: Vec<f64>,
    /// Real seconds the run took (for whoever sizes the next one).
    pub real_seconds: f64,
}

/// The herd's report (`herd.json`).
#[derive(Debug, Serialize, Deserialize)]
pub struct HerdReport {
    pub agents: usize,
    pub outage_start_s: u64,
    pub outage_s: u64,
    pub bucket_s: u64,
    pub outcomes: Vec<HerdOutcome>,
}

/// One look at the process.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Sample {
    /// Real seconds since the first accepted heartbeat.
    pub at_s: f64,
    /// Accepted heartbeats so far.
    pub heartbeats: u64,
    pub rss_kib: u64,
    pub fds: u64,
    pub threads: u64,
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
        let median_of = |slice: &[u64]| {
            let mut sorted = slice.to_vec();
            sorted.sort_unstable();
            sorted.get(sorted.len() / 2).copied().unwrap_or(0)
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
    pub samples: Vec<Sample>,
}
