//! The fleet herd simulation (docs/reliability.md, "Fleet herd"): N agents in one
//! process, each the real `hostbeat::run` (heartbeat loop, backoff, token exchange
//! and refresh, state and status files), on one paused-clock runtime, against the
//! reference control plane on loopback, which goes away for ten minutes and comes
//! back. One run per retry policy: hostbeat's (exponential, full jitter) and two that
//! peer agents use (a fixed retry interval; exponential without jitter). Only the
//! retry policy differs between the runs.
//!
//! Reports, per policy: the request rate at the plane over time (10-second
//! buckets), the steady rate before the outage, the peak after the return and its
//! ratio to the steady rate, and how long after the return the last agent had a
//! heartbeat accepted. Writes them as JSON (`--json`) and as a plot (`--plot`).
//!
//! Virtual time: a 35-minute run of 10,000 agents takes minutes of real time, all
//! of it the agents' and the plane's own work. Traffic stays on 127.0.0.1.
//!
//! The fleet runs in shards, one process each (this binary again, with
//! `--worker`): every agent holds a socket at both ends of its connection, and one
//! process may hold only so many (the hard open-files limit is 20,000 on the
//! machines this was written on). Agents never see one another and the plane models
//! no capacity, so N agents in k shards of N/k, with their request counts summed
//! bucket by bucket, are the same fleet as N agents in one process.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use hostbeat::config::Settings;
use hostbeat::retry::RetryPolicy;
use hostbeat_bench::figures::{HerdOutcome as Outcome, HerdReport as Report};
use hostbeat_bench::{plot, wall_clock};
use hostbeat_refplane::{
    ControlPlane, Fault, HeartbeatRecord, PlaneConfig, RecordedRequest, Scope,
};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The width of one bucket of the request rate.
const BUCKET: Duration = Duration::from_secs(10);
/// The steady rate is measured from here to the outage: after every agent's
/// start-up splay (one 30 s interval) and first contact.
const STEADY_FROM: Duration = Duration::from_secs(180);
const CLIENT_ID: &str = "fleet";
const CLIENT_SECRET: &str = "ct_herd-benchmark-client-secret";

#[derive(Parser)]
#[command(about = "Fleet herd simulation: N agents, a 10-minute outage, three retry policies")]
struct Args {
    /// How many agents.
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// When the control plane goes away (virtual time from the start).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    outage_start: Duration,
    /// How long it stays away.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    outage: Duration,
    /// How long the run goes on after it is back.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    after: Duration,
    /// The retry interval of the fixed-interval policy.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    fixed_interval: Duration,
    /// The policies to run, in order.
    #[arg(long, value_enum, num_args = 1.., default_values_t = [Policy::Hostbeat, Policy::Fixed, Policy::ExponentialNoJitter])]
    policy: Vec<Policy>,
    /// Where the agents' state directories go (tmpfs keeps the disk out of it).
    #[arg(long, default_value = "/dev/shm")]
    work_dir: PathBuf,
    /// Write the figures and the series here (JSON).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw the request rate of every policy here (PNG).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Agents per shard process (see the module doc).
    #[arg(long, default_value_t = 4000)]
    shard_size: usize,
    /// Run one shard of `--agents` agents under this policy and print what the
    /// plane saw as JSON (how the main process runs its shards).
    #[arg(long, value_enum, hide = true)]
    worker: Option<Policy>,
}

/// A retry policy under test. The agent's heartbeat cadence (one interval, +-10%
/// jitter, the start-up splay) is the same in every run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "kebab-case")]
enum Policy {
    /// hostbeat's (protocol.md section 3): at least one interval after a failure,
    /// then a ceiling doubling from one interval up to `backoff_cap` (5 min) with
    /// full jitter, and one request budget per host.
    Hostbeat,
    /// A fixed retry interval (`--fixed-interval`), no jitter.
    Fixed,
    /// Exponential from 1 s to 5 min, every delay at its ceiling.
    ExponentialNoJitter,
}

impl Policy {
    fn label(self, args: &Args) -> String {
        match self {
            Self::Hostbeat => {
                "hostbeat: paced by the 30 s interval, full jitter up to 5 min, one budget".into()
            }
            Self::Fixed => format!(
                "fixed retry every {}, no jitter",
                humantime::format_duration(args.fixed_interval)
            ),
            Self::ExponentialNoJitter => "exponential 1 s to 5 min, no jitter".into(),
        }
    }

    /// Puts this policy in place of the configured one, for transient failures and
    /// for rejected credentials alike. The naive policies are unpaced, and so keep
    /// no request budget: as peer agents do.
    fn apply(self, settings: &mut Settings, args: &Args) {
        let policy = match self {
            Self::Hostbeat => return,
            Self::Fixed => RetryPolicy::new(args.fixed_interval, args.fixed_interval),
            Self::ExponentialNoJitter => {
                RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(300))
            }
        }
        .without_jitter();
        settings.backoff = policy;
        settings.auth_backoff = policy;
    }
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    if let Some(policy) = args.worker {
        hostbeat_bench::check_open_files_limit(2 * args.agents + 256)?;
        let shard = simulate(&args, policy)?;
        println!(
            "{}",
            serde_json::to_string(&shard).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let mut outcomes = Vec::new();
    for &policy in &args.policy {
        let started = wall_clock::now();
        let shards = run_shards(&args, policy)?;
        let mut outcome = Shard::merge(&shards).outcome(policy.label(&args), &args);
        outcome.real_seconds = wall_clock::seconds_since(started);
        print_outcome(&outcome);
        outcomes.push(outcome);
    }
    let report = Report {
        agents: args.agents,
        outage_start_s: args.outage_start.as_secs(),
        outage_s: args.outage.as_secs(),
        bucket_s: BUCKET.as_secs(),
        outcomes,
    };
    if let Some(path) = &args.json {
        hostbeat_bench::write_json(path, &report)?;
    }
    if let Some(path) = &args.plot {
        draw(path, &report)?;
    }
    Ok(())
}

/// Runs the fleet under `policy` as shard processes, all at once, and collects what
/// each one's plane saw.
fn run_shards(args: &Args, policy: Policy) -> Result<Vec<Shard>, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let shard_size = args.shard_size.max(1);
    let mut children = Vec::new();
    let mut remaining = args.agents;
    while remaining > 0 {
        let agents = remaining.min(shard_size);
        remaining -= agents;
        let policy_name = policy
            .to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default();
        let mut command = std::process::Command::new(&me);
        command.args(["--worker", &policy_name, "--agents", &agents.to_string()]);
        for (flag, value) in [
            ("--outage-start", args.outage_start),
            ("--outage", args.outage),
            ("--after", args.after),
            ("--fixed-interval", args.fixed_interval),
        ] {
            command
                .arg(flag)
                .arg(humantime::format_duration(value).to_string());
        }
        let child = command
            .arg("--work-dir")
            .arg(&args.work_dir)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start a shard: {e}"))?;
        children.push(child);
    }
    children
        .into_iter()
        .map(|mut child| {
            let mut out = String::new();
            if let Some(stdout) = child.stdout.as_mut() {
                stdout.read_to_string(&mut out).map_err(|e| e.to_string())?;
            }
            let status = child.wait().map_err(|e| e.to_string())?;
            if !status.success() {
                return Err(format!("a shard failed ({status}); its error is above"));
            }
            serde_json::from_str(&out).map_err(|e| format!("a shard's answer: {e}"))
        })
        .collect()
}

fn print_outcome(outcome: &Outcome) {
    let back = outcome
        .all_back_after_s
        .map_or_else(|| "NOT all back".to_owned(), |s| format!("{s:.0} s"));
    println!(
        "herd: {}: steady {:.0}/s, outage peak {:.0}/s, return peak {:.0}/s ({:.2}x steady), \
         all {} back after {back}, {} requests while away ({:.0} s real)",
        outcome.policy,
        outcome.steady_rate,
        outcome.outage_peak_rate,
        outcome.return_peak_rate,
        outcome.peak_ratio,
        outcome.agents,
        outcome.requests_during_outage,
        outcome.real_seconds,
    );
}

fn simulate(args: &Args, policy: Policy) -> Result<Shard, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(run_fleet(args, policy))
}

async fn run_fleet(args: &Args, policy: Policy) -> Result<Shard, String> {
    let plane = ControlPlane::new(PlaneConfig::default());
    plane.add_client(CLIENT_ID, CLIENT_SECRET);
    let addr = plane
        .start()
        .await
        .map_err(|e| format!("cannot bind 127.0.0.1: {e}"))?;
    let work = tempfile::Builder::new()
        .prefix("hostbeat-herd-")
        .tempdir_in(&args.work_dir)
        .map_err(|e| {
            format!(
                "cannot create a directory in {}: {e}",
                args.work_dir.display()
            )
        })?;
    let config_file = work.path().join("hostbeat.toml");
    std::fs::write(&config_file, "# every setting comes from the environment\n")
        .map_err(|e| format!("{}: {e}", config_file.display()))?;
    let shutdown = CancellationToken::new();
    let mut agents = JoinSet::new();
    for index in 0..args.agents {
        let mut settings = agent_settings(work.path(), index, &format!("http://{addr}"))?;
        policy.apply(&mut settings, args);
        let controls = hostbeat::Controls {
            shutdown: shutdown.clone(),
            ..hostbeat::Controls::new()
        };
        agents.spawn(hostbeat::run(settings, controls));
    }

    let back_at = args.outage_start + args.outage;
    let mut tally = Tally::new(millis(back_at), args.agents);
    let mut ticks = tokio::time::interval(BUCKET);
    let (mut away, mut returned) = (false, false);
    loop {
        ticks.tick().await;
        let now = tokio::time::Instant::now().duration_since(tally.start);
        // The plane's switches happen on bucket edges: 10 min is 60 buckets.
        if !away && now >= args.outage_start {
            if plane.agent_count() != args.agents {
                return Err(format!(
                    "only {} of {} agents registered before the outage",
                    plane.agent_count(),
                    args.agents
                ));
            }
            plane.set_fault(Fault::Outage, Scope::All, None);
            away = true;
        } else if away && !returned && now >= back_at {
            plane.clear_fault();
            returned = true;
        }
        let (requests, heartbeats) = plane.drain_records();
        tally.add(&requests, &heartbeats);
        if now >= back_at + args.after {
            break;
        }
    }
    shutdown.cancel();
    while agents.join_next().await.is_some() {}
    Ok(tally.shard())
}

/// One agent's configuration: the defaults, the plane on loopback, exchange mode
/// (15-minute access tokens), a state directory and machine id of its own.
fn agent_settings(work: &Path, index: usize, url: &str) -> Result<Settings, String> {
    let dir = work.join(format!("agent-{index}"));
    let state = dir.join("state");
    std::fs::create_dir_all(&state).map_err(|e| format!("{}: {e}", state.display()))?;
    let machine_id = hostbeat::identity::generate().map_err(|e| format!("random id: {e}"))?;
    let machine_id_file = dir.join("machine-id");
    std::fs::write(&machine_id_file, format!("{machine_id}\n"))
        .map_err(|e| format!("{}: {e}", machine_id_file.display()))?;
    let inputs = hostbeat::ConfigInputs::new()
        .config_file(work.join("hostbeat.toml"))
        .var("HOSTBEAT_SERVER_URL", url)
        .var("HOSTBEAT_TOKEN_URL", format!("{url}/oauth/token"))
        .var("HOSTBEAT_CLIENT_ID", CLIENT_ID)
        .var("HOSTBEAT_CLIENT_TOKEN", CLIENT_SECRET)
        .var(
            "HOSTBEAT_STATE_DIR",
            state.to_str().ok_or("work dir not UTF-8")?,
        )
        .var(
            "HOSTBEAT_ENV_FILE",
            dir.join("hostbeat.env")
                .to_str()
                .ok_or("work dir not UTF-8")?,
        )
        .var("HOSTBEAT_IMDS", "off")
        .machine_id_file(machine_id_file);
    hostbeat::config::load(inputs)
        .map(|loaded| loaded.settings)
        .map_err(|e| format!("agent {index}: {e}"))
}

/// What one shard's plane saw, as it happens.
struct Tally {
    start: tokio::time::Instant,
    back_ms: u64,
    agents: usize,
    requests_per_bucket: Vec<u64>,
    back: HashSet<String>,
    all_back_ms: Option<u64>,
}

impl Tally {
    fn new(back_ms: u64, agents: usize) -> Self {
        Self {
            start: tokio::time::Instant::now(),
            back_ms,
            agents,
            requests_per_bucket: Vec::new(),
            back: HashSet::new(),
            all_back_ms: None,
        }
    }

    fn add(&mut self, requests: &[RecordedRequest], heartbeats: &[HeartbeatRecord]) {
        for request in requests {
            let bucket = usize::try_from(request.at_ms / millis(BUCKET)).unwrap_or(usize::MAX);
            if self.requests_per_bucket.len() <= bucket {
                self.requests_per_bucket.resize(bucket + 1, 0);
            }
            self.requests_per_bucket[bucket] += 1;
        }
        for heartbeat in heartbeats.iter().filter(|h| h.at_ms >= self.back_ms) {
            if self.back.insert(heartbeat.agent_id.clone()) && self.back.len() == self.agents {
                self.all_back_ms = Some(heartbeat.at_ms);
            }
        }
    }

    fn shard(self) -> Shard {
        Shard {
            agents: self.agents,
            back_ms: self.back_ms,
            requests_per_bucket: self.requests_per_bucket,
            all_back_ms: self.all_back_ms,
        }
    }
}

/// What one shard's plane saw: what a shard process prints.
#[derive(Debug, Serialize, Deserialize)]
struct Shard {
    agents: usize,
    /// When the plane came back (ms since the start).
    back_ms: u64,
    /// Requests that reached the plane, per 10-second bucket from the start.
    requests_per_bucket: Vec<u64>,
    /// When the last agent had a heartbeat accepted after the return, if all did.
    all_back_ms: Option<u64>,
}

impl Shard {
    /// The whole fleet: requests summed bucket by bucket, the last agent back.
    fn merge(shards: &[Self]) -> Self {
        let buckets = shards
            .iter()
            .map(|s| s.requests_per_bucket.len())
            .max()
            .unwrap_or(0);
        Self {
            agents: shards.iter().map(|s| s.agents).sum(),
            back_ms: shards.first().map_or(0, |s| s.back_ms),
            requests_per_bucket: (0..buckets)
                .map(|b| {
                    shards
                        .iter()
                        .filter_map(|s| s.requests_per_bucket.get(b))
                        .sum()
                })
                .collect(),
            all_back_ms: shards
                .iter()
                .map(|s| s.all_back_ms)
                .collect::<Option<Vec<_>>>()
                .and_then(|all| all.into_iter().max()),
        }
    }

    #[allow(
        clippy::cast_precision_loss,
        reason = "request counts are far below 2^52"
    )]
    fn outcome(&self, policy: String, args: &Args) -> Outcome {
        let per_second = |count: u64| count as f64 / BUCKET.as_secs_f64();
        let bucket_of = |at: Duration| usize::try_from(millis(at) / millis(BUCKET)).unwrap_or(0);
        let back_at = args.outage_start + args.outage;
        let counts = &self.requests_per_bucket;
        let (steady, away, after) = (
            bucket_of(STEADY_FROM)..bucket_of(args.outage_start),
            bucket_of(args.outage_start)..bucket_of(back_at),
            bucket_of(back_at)..counts.len(),
        );
        let sum = |range: std::ops::Range<usize>| counts.get(range).map_or(0, |c| c.iter().sum());
        let peak = |range: std::ops::Range<usize>| {
            per_second(
                counts
                    .get(range)
                    .and_then(|c| c.iter().copied().max())
                    .unwrap_or(0),
            )
        };
        let steady_rate = per_second(sum(steady.clone())) / steady.len().max(1) as f64;
        let return_peak_rate = peak(after);
        Outcome {
            policy,
            agents: self.agents,
            steady_rate,
            outage_peak_rate: peak(away.clone()),
            return_peak_rate,
            peak_ratio: return_peak_rate / steady_rate,
            all_back_after_s: self
                .all_back_ms
                .map(|at| at.saturating_sub(self.back_ms) as f64 / 1000.0),
            requests_during_outage: sum(away),
            rate_series: counts.iter().map(|&c| per_second(c)).collect(),
            real_seconds: 0.0,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[allow(clippy::cast_precision_loss, reason = "bucket indexes are small")]
fn draw(path: &Path, report: &Report) -> Result<(), String> {
    let bucket_minutes = report.bucket_s as f64 / 60.0;
    let lines = report
        .outcomes
        .iter()
        .map(|outcome| plot::Line {
            label: format!("{} (peak {:.2}x)", outcome.policy, outcome.peak_ratio),
            points: outcome
                .rate_series
                .iter()
                .enumerate()
                .map(|(i, &rate)| (i as f64 * bucket_minutes, rate))
                .collect(),
        })
        .collect::<Vec<_>>();
    let steady = report.outcomes.first().map_or(0.0, |o| o.steady_rate);
    plot::rate_over_time(
        path,
        &plot::Chart {
            title: format!(
                "{} agents, control plane away from minute {} to {}",
                report.agents,
                report.outage_start_s / 60,
                (report.outage_start_s + report.outage_s) / 60
            ),
            shaded: (
                report.outage_start_s as f64 / 60.0,
                (report.outage_start_s + report.outage_s) as f64 / 60.0,
            ),
            threshold: Some((1.5 * steady, "1.5x the steady rate".to_owned())),
            lines,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_fleet(policy: &str) -> Args {
        Args::parse_from([
            "herd",
            "--agents",
            "40",
            "--outage-start",
            "5m",
            "--outage",
            "2m",
            "--after",
            "6m",
            "--policy",
            policy,
            "--work-dir",
            std::env::temp_dir().to_str().unwrap(),
        ])
    }

    #[test]
    fn shards_merge_bucket_by_bucket_and_the_last_agent_back_counts() {
        let shard = |counts: Vec<u64>, back: Option<u64>| Shard {
            agents: 2,
            back_ms: 1000,
            requests_per_bucket: counts,
            all_back_ms: back,
        };
        let merged = Shard::merge(&[
            shard(vec![1, 2, 3], Some(4000)),
            shard(vec![10, 20], Some(9000)),
        ]);
        assert_eq!(merged.agents, 4);
        assert_eq!(merged.requests_per_bucket, vec![11, 22, 3]);
        assert_eq!(merged.all_back_ms, Some(9000));
        let one_missing = Shard::merge(&[shard(vec![1], Some(4000)), shard(vec![1], None)]);
        assert_eq!(
            one_missing.all_back_ms, None,
            "an agent not back is not back"
        );
    }

    #[test]
    fn a_small_fleet_under_hostbeats_policy_is_all_back_within_one_cap() {
        let args = small_fleet("hostbeat");
        let shard = simulate(&args, Policy::Hostbeat).unwrap();
        let outcome = shard.outcome("hostbeat".into(), &args);
        // 40 agents at a 30 s interval: 4/3 requests a second.
        assert!(
            (1.0..1.7).contains(&outcome.steady_rate),
            "steady rate {}",
            outcome.steady_rate
        );
        assert!(
            outcome.requests_during_outage > 0,
            "nobody tried while away"
        );
        let back = outcome.all_back_after_s.expect("every agent back");
        assert!(back <= 300.0, "back after {back} s, beyond the 5 min cap");
    }

    #[test]
    fn a_small_fleet_retrying_at_a_fixed_interval_is_back_within_that_interval() {
        let args = small_fleet("fixed");
        let shard = simulate(&args, Policy::Fixed).unwrap();
        let outcome = shard.outcome("fixed".into(), &args);
        let back = outcome.all_back_after_s.expect("every agent back");
        assert!(back <= 11.0, "back after {back} s with a 10 s retry");
        // Every agent tries every 10 s while away: three times its 30 s heartbeat
        // rate (less the noise of the steady rate's +-10% jitter).
        assert!(
            outcome.outage_peak_rate >= 2.5 * outcome.steady_rate,
            "peak while away {} at a steady {}",
            outcome.outage_peak_rate,
            outcome.steady_rate
        );
    }
}
