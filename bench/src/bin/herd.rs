//! The fleet herd simulation (docs/reliability.md, "Fleet herd"): N agents in one
//! process tree, each the real `hostbeat::run` (heartbeat loop, backoff, request
//! budget, token exchange and refresh, state and status files), on paused-clock
//! runtimes, against the reference control plane on loopback. The plane has a
//! fixed capacity, in multiples of the fleet's heartbeat rate (agents / 30 s), and
//! each case ([`Case`]) takes it away or shrinks it for a while. One run per case
//! and retry policy: hostbeat's and two that peer agents use (a fixed retry
//! interval; exponential without jitter, and without a budget). Only the retry
//! policy differs between the runs of a case.
//!
//! Reports, per run: the request rate at the plane over time (10-second buckets)
//! and the share of agents live (a heartbeat accepted within the last two
//! intervals), the steady rate before the event, the peak during it and after it,
//! how long after it every agent had a heartbeat accepted, and when 99% of the
//! fleet was live again for good. Writes them as JSON (`--json`) and a plot per case
//! (`--plot-dir`).
//!
//! Virtual time: a 35-minute run of 10,000 agents takes minutes of real time, all
//! of it the agents' and the plane's own work. Traffic stays on 127.0.0.1.
//!
//! The fleet runs in shards, one process each (this binary again, with
//! `--worker`): every agent holds a socket at both ends of its connection, and one
//! process may hold only so many (the hard open-files limit is 20,000 on the
//! machines this was written on). Each shard's plane has the shard's share of the
//! capacity, and agents never see one another, so N agents in k shards of N/k,
//! their counts summed bucket by bucket, are the fleet against k planes behind a
//! balancer that splits it evenly.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use hostbeat::config::Settings;
use hostbeat::retry::RetryPolicy;
use hostbeat_bench::figures::{
    HerdCase as CaseReport, HerdOutcome as Outcome, HerdReport as Report, herd as goals,
};
use hostbeat_bench::{plot, wall_clock};
use hostbeat_refplane::{
    Capacity, ControlPlane, Fault, HeartbeatRecord, Overload, PlaneConfig, RecordedRequest, Scope,
};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The width of one bucket of the request rate.
const BUCKET: Duration = Duration::from_secs(10);
/// The steady rate is measured from here to the event, and the plane's capacity
/// holds from here on: after every agent's start-up splay (one 30 s interval) and
/// first contact (an exchange, a registration and a heartbeat at once).
const STEADY_FROM: Duration = Duration::from_secs(180);
/// The agents' heartbeat interval (the packaged one), which the capacity is
/// counted in.
const INTERVAL: Duration = Duration::from_secs(30);
/// How long a stalling plane takes to answer beyond its capacity.
const STALL: Duration = Duration::from_secs(15);
/// How long a queueing plane holds a request before it drops it.
const QUEUE: Duration = Duration::from_secs(goals::QUEUE_S);
const CLIENT_ID: &str = "fleet";
const CLIENT_SECRET: &str = "ct_herd-benchmark-client-secret";

#[derive(Parser)]
#[command(about = "Fleet herd simulation: N agents against a plane of fixed capacity")]
struct Args {
    /// How many agents.
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// The cases to run, in order.
    #[arg(long, value_enum, num_args = 1.., default_values_t = Case::ALL)]
    case: Vec<Case>,
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
    /// Draw each case here, as herd-CASE.png.
    #[arg(long)]
    plot_dir: Option<PathBuf>,
    /// Agents per shard process (see the module doc).
    #[arg(long, default_value_t = 4000)]
    shard_size: usize,
    /// The plane serves everything, whatever the case's capacity: for the small
    /// fleets of the unit tests, whose chance bunches a per-second capacity of a
    /// request or two would refuse.
    #[arg(long, hide = true)]
    unlimited: bool,
    /// Run one shard of `--agents` agents under this policy, in the one case
    /// given, and print what the plane saw as JSON (how the main process runs its
    /// shards).
    #[arg(long, value_enum, hide = true)]
    worker: Option<Policy>,
}

/// What happens to the plane, and when. Capacities are multiples of the fleet's
/// heartbeat rate; the plane serves everything until [`STEADY_FROM`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "kebab-case")]
enum Case {
    /// Away (connections closed) for 10 minutes at minute 10, at 1.5 times.
    Outage,
    /// Away for 60 seconds at minute 6, at 1.2 times.
    ShortOutage,
    /// Down to 0.8 times for 5 minutes at minute 6, refusing the rest with 503;
    /// 1.5 times before and after.
    Brownout,
    /// The same, with a plane that answers the rest after [`STALL`], past the
    /// agents' 10 s timeout.
    BrownoutStall,
    /// The same, with a plane that sheds the rest: 429 with a `Retry-After`
    /// spread over one to three minutes (protocol.md section 3, "Shedding load
    /// across a fleet").
    BrownoutShed,
    /// Down to 0.7 times for 5 minutes at minute 6, with a plane that queues the
    /// rest ([`Overload::Queue`]): work spent on requests already abandoned.
    /// (At 0.8 times its queue settles below the agents' timeout: an agent waits
    /// for its answer before its next beat, so a fleet of N agents on a 30 s
    /// interval and a 10 s timeout never asks more than N / 40 s.)
    BrownoutQueue,
}

/// A case's timeline.
struct Timeline {
    start: Duration,
    length: Duration,
    /// The capacity before and after the event.
    capacity: f64,
    /// The capacity during it; none: the plane is away.
    during: Option<f64>,
    overload: Overload,
    /// How long the run goes on after the event.
    after: Duration,
}

impl Case {
    const ALL: [Self; 6] = [
        Self::Outage,
        Self::ShortOutage,
        Self::Brownout,
        Self::BrownoutStall,
        Self::BrownoutShed,
        Self::BrownoutQueue,
    ];

    fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default()
    }

    fn timeline(self) -> Timeline {
        let refuse = Overload::Refuse;
        let queue = Overload::Queue {
            queue_ms: millis(QUEUE),
        };
        let minutes = |m: u64| Duration::from_secs(60 * m);
        match self {
            Self::Outage => Timeline {
                start: minutes(10),
                length: minutes(10),
                capacity: 1.5,
                during: None,
                overload: refuse,
                after: minutes(15),
            },
            Self::ShortOutage => Timeline {
                start: minutes(6),
                length: minutes(1),
                capacity: 1.2,
                during: None,
                overload: refuse,
                after: minutes(12),
            },
            Self::Brownout => Timeline {
                start: minutes(6),
                length: minutes(5),
                capacity: 1.5,
                during: Some(0.8),
                overload: refuse,
                after: minutes(12),
            },
            Self::BrownoutStall => Timeline {
                overload: Overload::Stall {
                    delay_ms: millis(STALL),
                },
                ..Self::Brownout.timeline()
            },
            Self::BrownoutShed => Timeline {
                overload: Overload::Shed {
                    min_s: 60,
                    max_s: 180,
                },
                ..Self::Brownout.timeline()
            },
            Self::BrownoutQueue => Timeline {
                during: Some(0.7),
                overload: queue,
                ..Self::Brownout.timeline()
            },
        }
    }

    fn title(self) -> String {
        let t = self.timeline();
        let (from, to) = (t.start.as_secs() / 60, (t.start + t.length).as_secs() / 60);
        let beyond = match t.overload {
            Overload::Refuse => "503 beyond it".to_owned(),
            Overload::Stall { delay_ms } => {
                format!("answers after {} s beyond it", delay_ms / 1000)
            }
            Overload::Shed { min_s, max_s } => {
                format!("429 with Retry-After {min_s} to {max_s} s beyond it")
            }
            Overload::Queue { .. } => "a queue beyond it".to_owned(),
        };
        match t.during {
            None => format!(
                "Away from minute {from} to {to}; capacity {}x, {beyond}",
                t.capacity
            ),
            Some(during) => format!(
                "Capacity {during}x from minute {from} to {to}, {}x else; {beyond}",
                t.capacity
            ),
        }
    }
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
    fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default()
    }

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
        let [case] = args.case[..] else {
            return Err("a worker runs exactly one --case".into());
        };
        let shard = simulate(&args, case, policy)?;
        println!(
            "{}",
            serde_json::to_string(&shard).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let mut cases = Vec::new();
    for &case in &args.case {
        let mut outcomes = Vec::new();
        for &policy in &args.policy {
            let started = wall_clock::now();
            let shards = run_shards(&args, case, policy)?;
            let mut outcome = Shard::merge(&shards).outcome(policy.label(&args), case);
            outcome.real_seconds = wall_clock::seconds_since(started);
            print_outcome(case, &outcome);
            outcomes.push(outcome);
        }
        let t = case.timeline();
        cases.push(CaseReport {
            case: case.name(),
            title: case.title(),
            event_start_s: t.start.as_secs(),
            event_s: t.length.as_secs(),
            plane_away: t.during.is_none(),
            outcomes,
        });
    }
    let report = Report {
        agents: args.agents,
        bucket_s: BUCKET.as_secs(),
        interval_s: INTERVAL.as_secs(),
        cases,
    };
    if let Some(path) = &args.json {
        hostbeat_bench::write_json(path, &report)?;
    }
    if let Some(dir) = &args.plot_dir {
        for case in &report.cases {
            draw(&dir.join(format!("herd-{}.png", case.case)), &report, case)?;
        }
    }
    Ok(())
}

/// Runs the fleet in `case` under `policy` as shard processes, all at once, and
/// collects what each one's plane saw.
fn run_shards(args: &Args, case: Case, policy: Policy) -> Result<Vec<Shard>, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let shard_size = args.shard_size.max(1);
    let mut children = Vec::new();
    let mut remaining = args.agents;
    while remaining > 0 {
        let agents = remaining.min(shard_size);
        remaining -= agents;
        let child = std::process::Command::new(&me)
            .args(["--worker", &policy.name(), "--case", &case.name()])
            .args(["--agents", &agents.to_string()])
            .arg("--fixed-interval")
            .arg(humantime::format_duration(args.fixed_interval).to_string())
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

fn print_outcome(case: Case, outcome: &Outcome) {
    let seconds = |s: Option<f64>| s.map_or_else(|| "never".to_owned(), |s| format!("{s:.0} s"));
    println!(
        "herd {}: {}: steady {:.0}/s, peak during {:.2}x, after {:.2}x, every agent back after {}, \
         99% live for good after {} ({:.0} s real)",
        case.name(),
        outcome.policy,
        outcome.steady_rate,
        outcome.event_peak_rate / outcome.steady_rate,
        outcome.return_peak_rate / outcome.steady_rate,
        seconds(outcome.all_back_after_s),
        seconds(outcome.live_after_s),
        outcome.real_seconds,
    );
}

fn simulate(args: &Args, case: Case, policy: Policy) -> Result<Shard, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(run_fleet(args, case, policy))
}

async fn run_fleet(args: &Args, case: Case, policy: Policy) -> Result<Shard, String> {
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

    let t = case.timeline();
    // This shard's share of the capacity.
    #[allow(clippy::cast_precision_loss, reason = "agent counts are small")]
    let capacity_at = |multiple: f64| Capacity {
        per_second: multiple * args.agents as f64 / INTERVAL.as_secs_f64(),
        overload: t.overload,
    };
    let back_at = t.start + t.length;
    let mut tally = Tally::new(millis(back_at), args.agents);
    let mut ticks = tokio::time::interval(BUCKET);
    // The plane's switches happen on bucket edges.
    let mut switches = vec![
        (STEADY_FROM, Some(t.capacity), false),
        (t.start, t.during, t.during.is_none()),
        (back_at, Some(t.capacity), false),
    ]
    .into_iter()
    .peekable();
    loop {
        ticks.tick().await;
        let now = tokio::time::Instant::now().duration_since(tally.start);
        while let Some((_, capacity, away)) = switches.next_if(|(at, ..)| now >= *at) {
            if now >= t.start && now < back_at && plane.agent_count() != args.agents {
                return Err(format!(
                    "only {} of {} agents registered before the event",
                    plane.agent_count(),
                    args.agents
                ));
            }
            if away {
                plane.set_fault(Fault::Outage, Scope::All, None);
            } else {
                plane.clear_fault();
            }
            if let Some(multiple) = capacity.filter(|_| !args.unlimited) {
                plane.set_capacity(Some(capacity_at(multiple)));
            }
        }
        let (requests, heartbeats) = plane.drain_records();
        tally.add(&requests, &heartbeats, millis(now));
        if now >= back_at + t.after {
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
        .var("HOSTBEAT_CLOUD", "off")
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
    live_per_bucket: Vec<u64>,
    /// When each agent last had a heartbeat accepted.
    last_accepted: HashMap<String, u64>,
    /// Agents with a heartbeat accepted after the event, and when the last did.
    back: usize,
    all_back_ms: Option<u64>,
}

impl Tally {
    fn new(back_ms: u64, agents: usize) -> Self {
        Self {
            start: tokio::time::Instant::now(),
            back_ms,
            agents,
            requests_per_bucket: Vec::new(),
            live_per_bucket: Vec::new(),
            last_accepted: HashMap::new(),
            back: 0,
            all_back_ms: None,
        }
    }

    /// Adds what the plane recorded up to `now_ms`, the end of a bucket.
    fn add(&mut self, requests: &[RecordedRequest], heartbeats: &[HeartbeatRecord], now_ms: u64) {
        for request in requests {
            let bucket = usize::try_from(request.at_ms / millis(BUCKET)).unwrap_or(usize::MAX);
            if self.requests_per_bucket.len() <= bucket {
                self.requests_per_bucket.resize(bucket + 1, 0);
            }
            self.requests_per_bucket[bucket] += 1;
        }
        for heartbeat in heartbeats {
            let before = self
                .last_accepted
                .insert(heartbeat.agent_id.clone(), heartbeat.at_ms);
            let first_since_back =
                heartbeat.at_ms >= self.back_ms && before.is_none_or(|at| at < self.back_ms);
            if first_since_back {
                self.back += 1;
                if self.back == self.agents {
                    self.all_back_ms = Some(heartbeat.at_ms);
                }
            }
        }
        // Live: a heartbeat accepted within the last two intervals.
        let since = now_ms.saturating_sub(millis(INTERVAL * 2));
        let live = self
            .last_accepted
            .values()
            .filter(|&&at| at > since)
            .count();
        let bucket = usize::try_from(now_ms / millis(BUCKET)).unwrap_or(usize::MAX);
        // The tick at the end of bucket b - 1 is at b's start.
        if let Some(ended) = bucket.checked_sub(1) {
            if self.live_per_bucket.len() <= ended {
                self.live_per_bucket.resize(ended + 1, 0);
            }
            self.live_per_bucket[ended] = live as u64;
        }
    }

    fn shard(self) -> Shard {
        Shard {
            agents: self.agents,
            back_ms: self.back_ms,
            requests_per_bucket: self.requests_per_bucket,
            live_per_bucket: self.live_per_bucket,
            all_back_ms: self.all_back_ms,
        }
    }
}

/// What one shard's plane saw: what a shard process prints.
#[derive(Debug, Serialize, Deserialize)]
struct Shard {
    agents: usize,
    /// When the event ended (ms since the start).
    back_ms: u64,
    /// Requests that reached the plane, per 10-second bucket from the start.
    requests_per_bucket: Vec<u64>,
    /// Agents live at the end of each bucket.
    live_per_bucket: Vec<u64>,
    /// When the last agent had a heartbeat accepted after the event, if all did.
    all_back_ms: Option<u64>,
}

impl Shard {
    /// The whole fleet: counts summed bucket by bucket, the last agent back.
    fn merge(shards: &[Self]) -> Self {
        let sum = |series: fn(&Self) -> &Vec<u64>| {
            let buckets = shards.iter().map(|s| series(s).len()).max().unwrap_or(0);
            (0..buckets)
                .map(|b| shards.iter().filter_map(|s| series(s).get(b)).sum())
                .collect()
        };
        Self {
            agents: shards.iter().map(|s| s.agents).sum(),
            back_ms: shards.first().map_or(0, |s| s.back_ms),
            requests_per_bucket: sum(|s| &s.requests_per_bucket),
            live_per_bucket: sum(|s| &s.live_per_bucket),
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
    fn outcome(&self, policy: String, case: Case) -> Outcome {
        let per_second = |count: u64| count as f64 / BUCKET.as_secs_f64();
        let bucket_of = |at: Duration| usize::try_from(millis(at) / millis(BUCKET)).unwrap_or(0);
        let t = case.timeline();
        let back_at = t.start + t.length;
        let counts = &self.requests_per_bucket;
        let (steady, during, after) = (
            bucket_of(STEADY_FROM)..bucket_of(t.start),
            bucket_of(t.start)..bucket_of(back_at),
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
        let live: Vec<f64> = self
            .live_per_bucket
            .iter()
            .map(|&n| n as f64 / self.agents.max(1) as f64)
            .collect();
        // The first bucket after the event from which 99% or more stay live.
        let from = bucket_of(back_at);
        let live_after_s = (from..live.len())
            .find(|&b| live[b..].iter().all(|&share| share >= goals::LIVE_SHARE))
            .map(|b| (b + 1 - from) as f64 * BUCKET.as_secs_f64());
        Outcome {
            policy,
            agents: self.agents,
            steady_rate: per_second(sum(steady.clone())) / steady.len().max(1) as f64,
            event_peak_rate: peak(during.clone()),
            return_peak_rate: peak(after),
            all_back_after_s: self
                .all_back_ms
                .map(|at| at.saturating_sub(self.back_ms) as f64 / 1000.0),
            live_after_s,
            requests_during_event: sum(during),
            rate_series: counts.iter().map(|&c| per_second(c)).collect(),
            live_series: live,
            real_seconds: 0.0,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[allow(clippy::cast_precision_loss, reason = "bucket indexes are small")]
fn draw(path: &Path, report: &Report, case: &CaseReport) -> Result<(), String> {
    let bucket_minutes = report.bucket_s as f64 / 60.0;
    let series = |values: fn(&Outcome) -> &Vec<f64>, scale: f64| {
        case.outcomes
            .iter()
            .map(|outcome| plot::Line {
                label: outcome.policy.clone(),
                points: values(outcome)
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| (i as f64 * bucket_minutes, v * scale))
                    .collect(),
            })
            .collect::<Vec<_>>()
    };
    let steady = case.outcomes.first().map_or(0.0, |o| o.steady_rate);
    let shaded = (
        case.event_start_s as f64 / 60.0,
        (case.event_start_s + case.event_s) as f64 / 60.0,
    );
    let shaded_label = if case.plane_away {
        "control plane away"
    } else {
        "capacity reduced"
    };
    plot::over_time(
        path,
        &[
            plot::Chart {
                title: format!("{} agents. {}", report.agents, case.title),
                y_desc: "requests per second at the control plane".into(),
                shaded,
                shaded_label: shaded_label.into(),
                threshold: Some((
                    goals::AFTER_PEAK * steady,
                    format!("{}x the steady rate", goals::AFTER_PEAK),
                )),
                lines: series(|o| &o.rate_series, 1.0),
            },
            plot::Chart {
                title: "Agents live: a heartbeat accepted within the last two intervals".into(),
                y_desc: "% of the fleet".into(),
                shaded,
                shaded_label: shaded_label.into(),
                threshold: Some((goals::LIVE_SHARE * 100.0, "99%".into())),
                lines: series(|o| &o.live_series, 100.0),
            },
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_fleet(case: &str, policy: &str) -> Args {
        Args::parse_from([
            "herd",
            "--agents",
            "40",
            "--case",
            case,
            "--policy",
            policy,
            "--unlimited",
            "--work-dir",
            std::env::temp_dir().to_str().unwrap(),
        ])
    }

    #[test]
    fn shards_merge_bucket_by_bucket_and_the_last_agent_back_counts() {
        let shard = |counts: Vec<u64>, back: Option<u64>| Shard {
            agents: 2,
            back_ms: 1000,
            live_per_bucket: counts.iter().map(|c| c % 3).collect(),
            requests_per_bucket: counts,
            all_back_ms: back,
        };
        let merged = Shard::merge(&[
            shard(vec![1, 2, 3], Some(4000)),
            shard(vec![10, 20], Some(9000)),
        ]);
        assert_eq!(merged.agents, 4);
        assert_eq!(merged.requests_per_bucket, vec![11, 22, 3]);
        assert_eq!(merged.live_per_bucket, vec![2, 4, 0]);
        assert_eq!(merged.all_back_ms, Some(9000));
        let one_missing = Shard::merge(&[shard(vec![1], Some(4000)), shard(vec![1], None)]);
        assert_eq!(
            one_missing.all_back_ms, None,
            "an agent not back is not back"
        );
    }

    #[test]
    fn a_small_fleet_under_hostbeats_policy_sends_no_more_while_away_and_is_back_within_one_cap() {
        let case = Case::ShortOutage;
        let args = small_fleet("short-outage", "hostbeat");
        let outcome = simulate(&args, case, Policy::Hostbeat)
            .unwrap()
            .outcome("hostbeat".into(), case);
        // 40 agents at a 30 s interval: 4/3 requests a second.
        assert!(
            (1.0..1.7).contains(&outcome.steady_rate),
            "steady rate {}",
            outcome.steady_rate
        );
        assert!(outcome.requests_during_event > 0, "nobody tried while away");
        // Within one bucket's noise of the steady rate: 40 agents are few.
        assert!(
            outcome.event_peak_rate <= 1.0 + outcome.steady_rate * 1.5,
            "peak while away {} at a steady {}",
            outcome.event_peak_rate,
            outcome.steady_rate
        );
        let back = outcome.all_back_after_s.expect("every agent back");
        assert!(back <= 300.0, "back after {back} s, beyond the 5 min cap");
        let live = outcome.live_after_s.expect("live again");
        assert!(live <= 600.0, "99% live after {live} s");
    }

    #[test]
    fn a_small_fleet_retrying_at_a_fixed_interval_multiplies_its_load_while_away() {
        let case = Case::ShortOutage;
        let args = small_fleet("short-outage", "fixed");
        let outcome = simulate(&args, case, Policy::Fixed)
            .unwrap()
            .outcome("fixed".into(), case);
        let back = outcome.all_back_after_s.expect("every agent back");
        assert!(back <= 11.0, "back after {back} s with a 10 s retry");
        // Every agent tries every 10 s while away: three times its 30 s heartbeat
        // rate (less the noise of the steady rate's +-10% jitter).
        assert!(
            outcome.event_peak_rate >= 2.5 * outcome.steady_rate,
            "peak while away {} at a steady {}",
            outcome.event_peak_rate,
            outcome.steady_rate
        );
    }
}
