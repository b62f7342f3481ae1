//! The footprint benchmark (docs/performance.md): hostbeat beside the agents an
//! operator would otherwise put on every host, in one run on one machine.
//!
//! - hostbeat (the release build) against the reference control plane over TLS
//!   (a private CA in `ca_file`), a heartbeat every second, 60-second access
//!   tokens, a watchdog armed as the unit arms it (`WatchdogSec=2min`);
//! - zabbix_agent2 (Go) and zabbix_agentd (C) in active mode against a minimal
//!   Zabbix server in this process, which hands out one item, `agent.ping` every
//!   second, with `BufferSend=1` so each value is sent as it is taken;
//! - prometheus-node-exporter with its default collectors, scraped by this process
//!   every 15 seconds (Prometheus's usual interval);
//! - hostbeat at the packaged settings (a heartbeat every 30 seconds, 15-minute
//!   tokens, the EC2 metadata watcher polling a mock every 5 seconds), and with
//!   `--compare` another build of hostbeat beside it at the same settings: what a
//!   change to the daemon costs or saves where users run it.
//!
//! First each agent is started and stopped a few times to time exec to started
//! (hostbeat: `READY=1` on its notify socket with the server unreachable; the
//! peers: their port accepting connections). Then, in each of `--runs` runs, all
//! four start afresh at once, settle, and are sampled once a second from /proc:
//! memory, threads, files, CPU time, voluntary context switches (wake-ups). Writes
//! the figures as JSON and renders docs/performance.md (medians over the runs).
//! Traffic stays on 127.0.0.1.

#![allow(
    clippy::cast_precision_loss,
    reason = "counts, bytes and nanoseconds of a few minutes' run, far below 2^52"
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use hostbeat_bench::figures::Spread;
use hostbeat_bench::footprint::{
    Agent, Mapping, Measured, Packaged, Report, Run, Schedule, Section,
};
use hostbeat_bench::procfs::{
    TreeSample, executable_files, resident_by_mapping, resident_sections,
};
use hostbeat_bench::zabbix::ZabbixServer;
use hostbeat_bench::{wall_clock, write_json};
use hostbeat_refplane::imds::MockImds;
use hostbeat_refplane::tls::{Authority, ServerIdentity, Validity};
use hostbeat_refplane::{ControlPlane, PlaneConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixDatagram};
use tokio::process::{Child, Command};

const CLIENT_ID: &str = "footprint";
const SECRET: &str = "ct_FooTpRiNt-0123456789abcdefXYZ";
/// The packaged unit's `WatchdogSec=2min`, as systemd passes it.
const WATCHDOG_USEC: &str = "120000000";
/// The access tokens' lifetime for hostbeat at the packaged settings: 15 minutes, a
/// common identity provider's choice.
const PACKAGED_TOKEN_LIFETIME_S: u64 = 900;

#[derive(Parser)]
#[command(about = "Footprint: hostbeat beside zabbix_agent2, zabbix_agentd and node-exporter")]
struct Args {
    /// The hostbeat release build.
    #[arg(long, required_unless_present = "render")]
    hostbeat: Option<PathBuf>,
    #[arg(long, default_value = "/usr/sbin/zabbix_agent2")]
    zabbix_agent2: PathBuf,
    #[arg(long, default_value = "/usr/sbin/zabbix_agentd")]
    zabbix_agentd: PathBuf,
    #[arg(long, default_value = "/usr/bin/prometheus-node-exporter")]
    node_exporter: PathBuf,
    /// How long to sample the steady state in each run. 12 minutes, with the
    /// warm-up, hold the refresh of a 15-minute token at the packaged settings (11¼
    /// to 12 minutes after it was issued).
    #[arg(long, default_value = "12m", value_parser = humantime::parse_duration)]
    sample: Duration,
    /// Steady runs, one after the other (the page shows medians over them).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    runs: u16,
    /// How long every agent runs before the sampling begins.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    warm_up: Duration,
    /// Timed starts per agent.
    #[arg(long, default_value_t = 7)]
    starts: usize,
    /// Another build of hostbeat, run beside the first at the packaged settings
    /// (scripts/footprint's `FOOTPRINT_COMPARE`).
    #[arg(long)]
    compare: Option<PathBuf>,
    /// What `--compare` changes, for the page ("without the timer grid").
    #[arg(long, requires = "compare", default_value = "another build")]
    compare_label: String,
    /// How often node-exporter is scraped.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    scrape_interval: Duration,
    /// Write the figures here (JSON).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Render docs/performance.md here.
    #[arg(long)]
    page: Option<PathBuf>,
    /// Measure nothing: render `--page` from these figures (after a change to the
    /// page's text).
    #[arg(long, requires = "page")]
    render: Option<PathBuf>,
    /// For the page: the date, the commit and the machine of this run.
    #[arg(long, default_value = "")]
    date: String,
    #[arg(long, default_value = "")]
    commit: String,
    #[arg(long, default_value = "")]
    machine: String,
}

/// The four agents (hostbeat in each of its runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Hostbeat(Role),
    ZabbixAgent2,
    ZabbixAgentd,
    NodeExporter,
}

/// What a hostbeat of the benchmark is run for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    /// Beside the peers: a heartbeat every second.
    Main,
    /// With nothing to do but its watchdog (steady run only).
    Idle,
    /// At the packaged settings (steady run only).
    Packaged,
    /// `--compare` at the packaged settings (steady run only).
    Compared,
}

const HOSTBEAT: Kind = Kind::Hostbeat(Role::Main);

const KINDS: [Kind; 4] = [
    HOSTBEAT,
    Kind::ZabbixAgent2,
    Kind::ZabbixAgentd,
    Kind::NodeExporter,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Hostbeat(Role::Main) => "hostbeat",
            Self::Hostbeat(Role::Idle) => "hostbeat-idle",
            Self::Hostbeat(Role::Packaged) => "hostbeat-packaged",
            Self::Hostbeat(Role::Compared) => "hostbeat-compared",
            Self::ZabbixAgent2 => "zabbix_agent2",
            Self::ZabbixAgentd => "zabbix_agentd",
            Self::NodeExporter => "node-exporter",
        }
    }

    fn binary(self, args: &Args) -> &Path {
        match self {
            Self::Hostbeat(Role::Compared) => {
                args.compare.as_deref().unwrap_or(Path::new("hostbeat"))
            }
            Self::Hostbeat(_) => args.hostbeat.as_deref().unwrap_or(Path::new("hostbeat")),
            Self::ZabbixAgent2 => &args.zabbix_agent2,
            Self::ZabbixAgentd => &args.zabbix_agentd,
            Self::NodeExporter => &args.node_exporter,
        }
    }

    fn language(self) -> &'static str {
        match self {
            Self::Hostbeat(_) => "Rust",
            Self::ZabbixAgent2 | Self::NodeExporter => "Go",
            Self::ZabbixAgentd => "C",
        }
    }

    fn report(self, args: &Args) -> String {
        match self {
            Self::Hostbeat(Role::Main) => {
                "a heartbeat every 1 s, HTTPS, one reused connection".into()
            }
            Self::Hostbeat(Role::Idle) => "a heartbeat every 10 min, HTTPS".into(),
            Self::Hostbeat(Role::Packaged) => "a heartbeat every 30 s, HTTPS, as packaged".into(),
            Self::Hostbeat(Role::Compared) => format!("as packaged, {}", args.compare_label),
            Self::ZabbixAgent2 | Self::ZabbixAgentd => {
                "`agent.ping` every 1 s (active check), plain TCP, a connection each".into()
            }
            Self::NodeExporter => format!(
                "a scrape of /metrics every {}, plain HTTP",
                humantime::format_duration(args.scrape_interval)
            ),
        }
    }

    fn started_when(self) -> &'static str {
        match self {
            Self::Hostbeat(_) => "`READY=1`, server unreachable",
            _ => "its port accepts a connection",
        }
    }

    /// What the program says its version is (first line).
    fn version(self, args: &Args) -> String {
        let flag = match self {
            Self::ZabbixAgent2 | Self::ZabbixAgentd => "-V",
            Self::Hostbeat(_) | Self::NodeExporter => "--version",
        };
        std::process::Command::new(self.binary(args))
            .arg(flag)
            .output()
            .ok()
            .and_then(|out| {
                let text = String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr);
                text.lines().next().map(str::to_owned)
            })
            .unwrap_or_default()
    }
}

/// Where an agent is told to send its reports.
enum Endpoint {
    /// The reference control plane (or, for the timed starts, an address nothing
    /// answers at), the CA that signed its certificate, the heartbeat interval, and
    /// the EC2 metadata service's URL (a mock) if the watcher is on.
    Plane {
        url: String,
        ca_file: PathBuf,
        interval: &'static str,
        imds_url: Option<String>,
    },
    /// A Zabbix server (for the timed starts, an address nothing answers at).
    Zabbix(std::net::SocketAddr),
    /// Nothing: node-exporter listens and is scraped.
    Listener,
}

/// One running agent.
struct Running {
    kind: Kind,
    child: Child,
    pid: u32,
    dir: PathBuf,
    listen: Option<std::net::SocketAddr>,
    notify: Option<UnixDatagram>,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    if let (Some(figures), Some(page)) = (&args.render, &args.page) {
        let text =
            std::fs::read_to_string(figures).map_err(|e| format!("{}: {e}", figures.display()))?;
        let report: Report =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", figures.display()))?;
        return std::fs::write(page, hostbeat_bench::footprint::render_page(&report))
            .map_err(|e| format!("{}: {e}", page.display()));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let report = runtime.block_on(footprint(&args))?;
    for agent in report.runs.iter().flat_map(|r| &r.agents) {
        println!(
            "footprint: {:<14} RSS {:>6} KiB (PSS all {:>6} KiB), {:>3} threads, \
             {:>7.1} CPU s/h, {:>6.3} ms/report, {:>6.1} wake-ups/min, start {:>6.1} ms",
            agent.name,
            agent.rss_kib.median,
            agent.pss_all_kib.median,
            agent.threads.max,
            agent.cpu_s_per_hour,
            agent.cpu_ms_per_report,
            agent.wakeups_per_minute,
            agent.start_median_ms(),
        );
    }
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    if let Some(path) = &args.page {
        std::fs::write(path, hostbeat_bench::footprint::render_page(&report))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

async fn footprint(args: &Args) -> Result<Report, String> {
    if let Some(compare) = args.compare.as_deref().filter(|path| !path.is_file()) {
        return Err(format!("--compare: no hostbeat at {}", compare.display()));
    }
    for kind in KINDS {
        let binary = kind.binary(args);
        if !binary.is_file() {
            return Err(format!(
                "{} is not at {}: scripts/footprint installs the peers from Debian's \
                 packages (or pass --{} PATH)",
                kind.name(),
                binary.display(),
                kind.name().replace('_', "-")
            ));
        }
    }
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let authority = Authority::new("hostbeat footprint CA");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, authority.pem()).map_err(|e| e.to_string())?;

    let starts = timed_starts(args, dir.path(), &ca_file).await?;
    let identity = authority.issue(&["127.0.0.1"], Validity::Current);
    let mut runs = Vec::new();
    for run in 1..=args.runs {
        let run_dir = dir.path().join(format!("run-{run}"));
        runs.push(measure(args, &run_dir, &ca_file, &identity, &starts).await?);
        eprintln!("footprint: run {run} of {} done", args.runs);
    }
    Ok(Report {
        run: Run {
            date: args.date.clone(),
            commit: args.commit.clone(),
            machine: args.machine.clone(),
            sampled_s: args.sample.as_secs_f64(),
            runs: usize::from(args.runs),
            warm_up_s: args.warm_up.as_secs(),
            starts: args.starts,
        },
        runs,
    })
}

/// One steady run: every agent started afresh, settled, sampled, stopped.
async fn measure(
    args: &Args,
    dir: &Path,
    ca_file: &Path,
    identity: &ServerIdentity,
    starts: &BTreeMap<Kind, Vec<f64>>,
) -> Result<Measured, String> {
    let mut steady = start_steady(args, dir, ca_file, identity).await?;
    tokio::time::sleep(args.warm_up).await;
    let (samples, received, sampled_s) = sample(args, &mut steady).await?;
    let hostbeat_resident = resident_by_mapping(steady[0].agent.pid)?
        .into_iter()
        .map(|(name, rss_kib, pss_kib)| Mapping {
            name,
            rss_kib,
            pss_kib,
        })
        .collect();
    let hostbeat_sections = resident_sections(steady[0].agent.pid, HOSTBEAT.binary(args))?
        .into_iter()
        .map(|(name, size_kib, resident_kib)| Section {
            name,
            size_kib,
            resident_kib,
        })
        .collect();

    let mut agents = Vec::new();
    let mut hostbeat_schedule = None;
    let mut idle = None;
    let mut packaged = Vec::new();
    for ((one, series), received) in steady.iter().zip(&samples).zip(received) {
        let kind = one.agent.kind;
        if received.reports == 0 && kind != Kind::Hostbeat(Role::Idle) {
            return Err(format!(
                "{} reported nothing while sampled; its output: {}",
                kind.name(),
                std::fs::read_to_string(one.agent.dir.join("output.log")).unwrap_or_default()
            ));
        }
        let mapped = executable_files(one.agent.pid)?;
        let agent = figures_of(
            kind,
            args,
            series,
            sampled_s,
            received.reports,
            std::fs::metadata(kind.binary(args)).map_or(0, |m| m.len()),
            mapped.iter().map(|(_, size)| size).sum(),
            starts.get(&kind).cloned().unwrap_or_default(),
        );
        let switches = |s: Option<&TreeSample>| s.map_or(0, |s| s.all.voluntary_switches);
        let schedule = Schedule {
            heartbeats: received.reports,
            token_exchanges: received.token_exchanges,
            watchdog_pings: received.watchdog_pings,
            imds_polls: received.imds_polls,
            wakeups: switches(series.last()) - switches(series.first()),
        };
        match kind {
            Kind::Hostbeat(Role::Main) => {
                hostbeat_schedule = Some(schedule);
                agents.push(agent);
            }
            Kind::Hostbeat(Role::Idle) => idle = Some((agent, schedule)),
            Kind::Hostbeat(Role::Packaged) => packaged.push(Packaged {
                build: "as packaged".into(),
                agent,
                schedule,
            }),
            Kind::Hostbeat(Role::Compared) => packaged.push(Packaged {
                build: args.compare_label.clone(),
                agent,
                schedule,
            }),
            Kind::ZabbixAgent2 | Kind::ZabbixAgentd | Kind::NodeExporter => agents.push(agent),
        }
    }
    for one in &mut steady {
        one.end();
        stop(&mut one.agent).await?;
    }
    let (hostbeat_idle, idle_schedule) = idle.ok_or("no idle hostbeat")?;
    Ok(Measured {
        agents,
        hostbeat_schedule: hostbeat_schedule.ok_or("no hostbeat")?,
        hostbeat_idle,
        idle_schedule,
        packaged,
        hostbeat_resident,
        hostbeat_sections,
    })
}

/// Exec to started, `args.starts` times per agent, one agent at a time, each
/// towards an address nothing answers at.
async fn timed_starts(
    args: &Args,
    dir: &Path,
    ca_file: &Path,
) -> Result<BTreeMap<Kind, Vec<f64>>, String> {
    let mut starts: BTreeMap<Kind, Vec<f64>> = BTreeMap::new();
    let unreachable = format!("https://127.0.0.1:{}", free_port()?);
    for round in 0..args.starts {
        for kind in KINDS {
            let endpoint = match kind {
                Kind::Hostbeat(_) => Endpoint::Plane {
                    url: unreachable.clone(),
                    ca_file: ca_file.to_owned(),
                    interval: "1s",
                    imds_url: None,
                },
                Kind::ZabbixAgent2 | Kind::ZabbixAgentd => {
                    Endpoint::Zabbix(([127, 0, 0, 1], free_port()?).into())
                }
                Kind::NodeExporter => Endpoint::Listener,
            };
            let agent_dir = dir.join(format!("start-{}-{round}", kind.name()));
            let began = wall_clock::now();
            let mut agent = launch(kind, args, &agent_dir, &endpoint)?;
            wait_started(&mut agent).await?;
            starts
                .entry(kind)
                .or_default()
                .push(wall_clock::seconds_since(began) * 1000.0);
            stop(&mut agent).await?;
        }
    }
    Ok(starts)
}

/// The steady run: every agent at once, each towards its endpoint, and a second
/// hostbeat with nothing to do but its watchdog (a 10-minute heartbeat, hour-long
/// tokens) to show it idle. That one starts with a 1 s heartbeat, so that its first
/// contact (token exchange, registration, state saved) is over before the warm-up
/// ends, and is then reloaded to the 10-minute interval (see [`settle_idle`]).
async fn start_steady(
    args: &Args,
    dir: &Path,
    ca_file: &Path,
    identity: &ServerIdentity,
) -> Result<Vec<Steady>, String> {
    let mut steady = Vec::new();
    let packaged = [Kind::Hostbeat(Role::Packaged)].into_iter().chain(
        args.compare
            .is_some()
            .then_some(Kind::Hostbeat(Role::Compared)),
    );
    for kind in KINDS
        .into_iter()
        .chain([Kind::Hostbeat(Role::Idle)])
        .chain(packaged)
    {
        let (endpoint, counter) = match kind {
            Kind::Hostbeat(role) => {
                let as_packaged = matches!(role, Role::Packaged | Role::Compared);
                let token_lifetime = match role {
                    Role::Main => 60,
                    Role::Idle => 3600,
                    Role::Packaged | Role::Compared => PACKAGED_TOKEN_LIFETIME_S,
                };
                let plane = ControlPlane::new(PlaneConfig {
                    token_lifetime: Duration::from_secs(token_lifetime),
                    ..PlaneConfig::default()
                });
                plane.add_client(CLIENT_ID, SECRET);
                let addr = plane
                    .start_tls(identity)
                    .await
                    .map_err(|e| format!("cannot bind 127.0.0.1: {e}"))?;
                let imds = if as_packaged {
                    let imds = MockImds::new();
                    let imds_addr = imds
                        .start()
                        .await
                        .map_err(|e| format!("cannot bind 127.0.0.1: {e}"))?;
                    Some((imds, format!("http://{imds_addr}")))
                } else {
                    None
                };
                let endpoint = Endpoint::Plane {
                    url: format!("https://{addr}"),
                    ca_file: ca_file.to_owned(),
                    interval: if as_packaged { "30s" } else { "1s" },
                    imds_url: imds.as_ref().map(|(_, url)| url.clone()),
                };
                (endpoint, Counter::plane(plane, imds.map(|(imds, _)| imds)))
            }
            Kind::ZabbixAgent2 | Kind::ZabbixAgentd => {
                let server = ZabbixServer::start().await.map_err(|e| e.to_string())?;
                (Endpoint::Zabbix(server.addr), Counter::Zabbix(server))
            }
            Kind::NodeExporter => (Endpoint::Listener, Counter::Scrapes(Arc::default())),
        };
        let mut agent = launch(kind, args, &dir.join(kind.name()), &endpoint)?;
        wait_started(&mut agent).await?;
        let mut one = Steady::begin(agent, counter, args);
        if kind == Kind::Hostbeat(Role::Idle) {
            settle_idle(&mut one).await?;
        }
        steady.push(one);
    }
    Ok(steady)
}

/// The idle hostbeat: once its first heartbeat is in, its env file gets
/// `HOSTBEAT_HEARTBEAT_INTERVAL=10m` and a reload (SIGHUP), as an operator would do
/// it. The reload's heartbeat, due within the old 1 s interval, is awaited too: from then on its
/// only events are the watchdog's pings, and heartbeats and a token refresh that the
/// schedule puts further apart than a run.
async fn settle_idle(idle: &mut Steady) -> Result<(), String> {
    heartbeats_by(idle, 1, "first heartbeat").await?;
    let env_file = idle.agent.dir.join("hostbeat.env");
    std::fs::write(
        &env_file,
        format!("HOSTBEAT_CLIENT_TOKEN={SECRET}\nHOSTBEAT_HEARTBEAT_INTERVAL=10m\n"),
    )
    .map_err(|e| format!("{}: {e}", env_file.display()))?;
    // Counted before the signal: the reload's heartbeat may arrive at once.
    let seen = idle.counter.received().reports;
    signal(idle.agent.pid, "HUP");
    heartbeats_by(idle, seen + 1, "heartbeat after its reload").await
}

/// Until `one`'s plane has received `count` heartbeats; 20 seconds at most.
async fn heartbeats_by(one: &mut Steady, count: u64, what: &str) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while one.counter.received().reports < count {
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "{} sent no {what} within 20 s; its output: {}",
                one.agent.kind.name(),
                std::fs::read_to_string(one.agent.dir.join("output.log")).unwrap_or_default()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Samples every agent once a second for `args.sample`: the samples, what each
/// endpoint received meanwhile, and the seconds it took.
async fn sample(
    args: &Args,
    steady: &mut [Steady],
) -> Result<(Vec<Vec<TreeSample>>, Vec<Received>, f64), String> {
    let mut samples: Vec<Vec<TreeSample>> = vec![Vec::new(); steady.len()];
    let mut at_start = Vec::new();
    let began = wall_clock::now();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    for round in 0..=args.sample.as_secs().max(2) {
        ticks.tick().await;
        for (one, series) in steady.iter_mut().zip(&mut samples) {
            if let Ok(Some(status)) = one.agent.child.try_wait() {
                return Err(format!(
                    "{} exited during the run: {status}",
                    one.agent.kind.name()
                ));
            }
            series.push(TreeSample::read(one.agent.pid)?);
            let received = one.counter.received();
            if round == 0 {
                // What came before belongs to the warm-up.
                at_start.push(received);
            }
        }
    }
    let sampled_s = wall_clock::seconds_since(began);
    let received = steady
        .iter_mut()
        .zip(at_start)
        .map(|(one, start)| one.counter.received().since(start))
        .collect();
    Ok((samples, received, sampled_s))
}

/// What an agent's endpoint received; for hostbeat, also its token exchanges and
/// watchdog pings (its schedule).
#[derive(Debug, Default, Clone, Copy)]
struct Received {
    reports: u64,
    token_exchanges: u64,
    watchdog_pings: u64,
    imds_polls: u64,
}

impl Received {
    fn since(self, start: Self) -> Self {
        Self {
            reports: self.reports - start.reports,
            token_exchanges: self.token_exchanges - start.token_exchanges,
            watchdog_pings: self.watchdog_pings - start.watchdog_pings,
            imds_polls: self.imds_polls - start.imds_polls,
        }
    }
}

/// Counts what an agent's endpoint receives.
enum Counter {
    Plane {
        plane: ControlPlane,
        /// The mock metadata service, for an agent at the packaged settings.
        imds: Option<MockImds>,
        /// Drained from the plane so far (its records would pile up otherwise).
        drained: Received,
        watchdog_pings: Arc<AtomicU64>,
    },
    Zabbix(ZabbixServer),
    Scrapes(Arc<AtomicU64>),
}

impl Counter {
    fn plane(plane: ControlPlane, imds: Option<MockImds>) -> Self {
        Self::Plane {
            plane,
            imds,
            drained: Received::default(),
            watchdog_pings: Arc::default(),
        }
    }

    /// Everything received so far.
    fn received(&mut self) -> Received {
        match self {
            Self::Plane {
                plane,
                imds,
                drained,
                watchdog_pings,
            } => {
                let (requests, heartbeats) = plane.drain_records();
                drained.reports += heartbeats.len() as u64;
                drained.token_exchanges += plane.token_exchanges(&requests);
                drained.watchdog_pings = watchdog_pings.load(Ordering::Relaxed);
                drained.imds_polls = imds.as_ref().map_or(0, |imds| {
                    imds.requests_for(hostbeat::cloud::ec2::INSTANCE_ACTION) as u64
                });
                *drained
            }
            Self::Zabbix(server) => Received {
                reports: server.values(),
                ..Received::default()
            },
            Self::Scrapes(scrapes) => Received {
                reports: scrapes.load(Ordering::Relaxed),
                ..Received::default()
            },
        }
    }
}

/// An agent in the steady run, with the task that listens to it (hostbeat's
/// notifications) or calls on it (node-exporter's scrapes).
struct Steady {
    agent: Running,
    counter: Counter,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Steady {
    fn begin(mut agent: Running, counter: Counter, args: &Args) -> Self {
        let task = match (&counter, agent.notify.take(), agent.listen) {
            // systemd reads every notification at once; so must the benchmark,
            // or the agent blocks on a full socket (net.unix.max_dgram_qlen: 10).
            (Counter::Plane { watchdog_pings, .. }, Some(socket), _) => Some(tokio::spawn(
                read_notifications(socket, Arc::clone(watchdog_pings)),
            )),
            (Counter::Scrapes(scrapes), _, Some(addr)) => Some(tokio::spawn(scrape_forever(
                addr,
                args.scrape_interval,
                Arc::clone(scrapes),
            ))),
            _ => None,
        };
        Self {
            agent,
            counter,
            task,
        }
    }

    fn end(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[allow(clippy::too_many_arguments, reason = "one call, every figure named")]
fn figures_of(
    kind: Kind,
    args: &Args,
    samples: &[TreeSample],
    sampled_s: f64,
    reports: u64,
    executable_bytes: u64,
    mapped_code_bytes: u64,
    start_ms: Vec<f64>,
) -> Agent {
    let spread = |value: fn(&TreeSample) -> u64, tolerance: u64| {
        Spread::of(&samples.iter().map(value).collect::<Vec<_>>(), tolerance)
    };
    let delta = |value: fn(&TreeSample) -> u64| {
        let first = samples.first().map_or(0, value);
        samples.last().map_or(0, value).saturating_sub(first)
    };
    let cpu_s = delta(|s| s.all.cpu_ns) as f64 / 1e9;
    let wakeups = delta(|s| s.all.voluntary_switches) as f64;
    let per_report = |value: f64| {
        if reports == 0 {
            0.0
        } else {
            value / reports as f64
        }
    };
    Agent {
        name: kind.name().into(),
        version: kind.version(args),
        language: kind.language().into(),
        report: kind.report(args),
        started_when: kind.started_when().into(),
        processes: samples.last().map_or(0, |s| s.processes),
        rss_kib: spread(|s| s.main.rss_kib, 256),
        pss_kib: spread(|s| s.main.pss_kib, 256),
        rss_all_kib: spread(|s| s.all.rss_kib, 256),
        pss_all_kib: spread(|s| s.all.pss_kib, 256),
        threads: spread(|s| s.all.threads, 0),
        fds: spread(|s| s.all.fds, 1),
        cpu_s_per_hour: cpu_s * 3600.0 / sampled_s,
        reports,
        cpu_ms_per_report: per_report(cpu_s * 1000.0),
        wakeups_per_minute: wakeups * 60.0 / sampled_s,
        wakeups_per_report: per_report(wakeups),
        executable_bytes,
        mapped_code_bytes,
        start_ms,
    }
}

/// A port nothing listens on (bound, then released).
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot bind 127.0.0.1: {e}"))
}

/// A free port the Zabbix agents accept for `ListenPort` (1024-32767: below the
/// kernel's ephemeral range, so [`free_port`] cannot find one).
fn free_zabbix_port() -> Result<u16, String> {
    // Start somewhere that differs between runs, so that two runs do not race.
    let offset = u16::try_from(std::process::id() % 10_000).unwrap_or(0);
    (0..10_000u16)
        .map(|i| 20_000 + (offset + i) % 10_000)
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .ok_or_else(|| "no free port in 20000-29999 on 127.0.0.1".into())
}

/// Starts `kind` in `dir` towards `endpoint`.
fn launch(kind: Kind, args: &Args, dir: &Path, endpoint: &Endpoint) -> Result<Running, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let log = std::fs::File::create(dir.join("output.log")).map_err(|e| e.to_string())?;
    let mut program = kind.binary(args).to_owned();
    if matches!(kind, Kind::Hostbeat(role) if role != Role::Main) {
        // A copy: two processes of one file share its pages, which would halve
        // the other hostbeat's PSS (the compared build may be the same file).
        let copy = dir.join("hostbeat");
        std::fs::copy(&program, &copy).map_err(|e| format!("{}: {e}", copy.display()))?;
        program = copy;
    }
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .kill_on_drop(true);
    let mut listen = None;
    let mut notify = None;
    match kind {
        Kind::Hostbeat(_) => {
            notify = Some(configure_hostbeat(&mut command, dir, endpoint)?);
        }
        Kind::ZabbixAgent2 | Kind::ZabbixAgentd => {
            let Endpoint::Zabbix(server) = endpoint else {
                return Err("a Zabbix agent needs a server".into());
            };
            let port = free_zabbix_port()?;
            listen = Some(([127, 0, 0, 1], port).into());
            let mut conf = format!(
                "Hostname=footprint-{name}\nServer=127.0.0.1\nServerActive={server}\n\
                 ListenIP=127.0.0.1\nListenPort={port}\nBufferSend=1\nLogType=console\n\
                 PidFile={pid}\n",
                name = kind.name(),
                pid = dir.join("agent.pid").display(),
            );
            if kind == Kind::ZabbixAgent2 {
                let _ = writeln!(conf, "ControlSocket={}", dir.join("agent.sock").display());
                command.arg("-c").arg(write_file(dir, "agent.conf", &conf)?);
            } else {
                // As root it would switch to the zabbix user; the others run as the
                // caller too.
                conf += "AllowRoot=1\n";
                command
                    .arg("-f")
                    .arg("-c")
                    .arg(write_file(dir, "agent.conf", &conf)?);
            }
        }
        Kind::NodeExporter => {
            let port = free_port()?;
            listen = Some(([127, 0, 0, 1], port).into());
            command.arg(format!("--web.listen-address=127.0.0.1:{port}"));
        }
    }
    let child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", kind.name()))?;
    let pid = child.id().ok_or("the agent exited at once")?;
    Ok(Running {
        kind,
        child,
        pid,
        dir: dir.to_owned(),
        listen,
        notify,
    })
}

/// hostbeat's files in `dir` and its command line towards `endpoint`: the socket
/// its notifications arrive on.
fn configure_hostbeat(
    command: &mut Command,
    dir: &Path,
    endpoint: &Endpoint,
) -> Result<UnixDatagram, String> {
    let Endpoint::Plane {
        url,
        ca_file,
        interval,
        imds_url,
    } = endpoint
    else {
        return Err("hostbeat needs the plane".into());
    };
    // The interval in the env file, not the environment: the environment
    // wins over the env file, and the idle agent is reloaded to another
    // interval by rewriting the file (`settle_idle`).
    let env_file = write_file(
        dir,
        "hostbeat.env",
        &format!("HOSTBEAT_CLIENT_TOKEN={SECRET}\nHOSTBEAT_HEARTBEAT_INTERVAL={interval}\n"),
    )?;
    set_mode(&env_file, 0o600)?;
    let config = write_file(dir, "hostbeat.toml", "")?;
    let socket_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&socket_path).map_err(|e| e.to_string())?;
    command
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("HOSTBEAT_SERVER_URL", url)
        .env("HOSTBEAT_TOKEN_URL", format!("{url}/oauth/token"))
        .env("HOSTBEAT_CLIENT_ID", CLIENT_ID)
        .env("HOSTBEAT_CA_FILE", ca_file)
        .env("HOSTBEAT_ENV_FILE", env_file)
        .env("HOSTBEAT_STATE_DIR", dir.join("state"))
        .env("NOTIFY_SOCKET", socket_path)
        .env("WATCHDOG_USEC", WATCHDOG_USEC);
    match imds_url {
        Some(imds_url) => command
            .env("HOSTBEAT_CLOUD", "ec2")
            .env("HOSTBEAT_EC2_METADATA_URL", imds_url),
        None => command.env("HOSTBEAT_CLOUD", "off"),
    };
    Ok(notify)
}

/// Writes `text` to `name` in `dir`.
fn write_file(dir: &Path, name: &str, text: &str) -> Result<PathBuf, String> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Until hostbeat says `READY=1`, or a peer's port accepts a connection; ten
/// seconds at most.
async fn wait_started(agent: &mut Running) -> Result<(), String> {
    let deadline = Duration::from_secs(10);
    let started = async {
        if let Some(socket) = &agent.notify {
            let mut buffer = vec![0u8; 4096];
            loop {
                let n = socket.recv(&mut buffer).await.map_err(|e| e.to_string())?;
                if buffer[..n]
                    .split(|&b| b == b'\n')
                    .any(|line| line == b"READY=1")
                {
                    return Ok::<_, String>(());
                }
            }
        }
        let addr = agent.listen.ok_or("nothing to wait for")?;
        loop {
            if TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    match tokio::time::timeout(deadline, started).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "{} did not start within {deadline:?}; its output: {}",
            agent.kind.name(),
            std::fs::read_to_string(agent.dir.join("output.log")).unwrap_or_default()
        )),
    }
}

/// SIGTERM, and the exit within ten seconds (then SIGKILL).
async fn stop(agent: &mut Running) -> Result<(), String> {
    signal(agent.pid, "TERM");
    if tokio::time::timeout(Duration::from_secs(10), agent.child.wait())
        .await
        .is_err()
    {
        agent.child.kill().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Sends SIGname to `pid` (kill(1): the benchmark forbids unsafe code too). A
/// process already gone is no error.
fn signal(pid: u32, name: &str) {
    let _ = std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status();
}

/// Reads hostbeat's notifications as systemd would, counting `WATCHDOG=1`.
async fn read_notifications(socket: UnixDatagram, watchdog_pings: Arc<AtomicU64>) {
    let mut buffer = vec![0u8; 4096];
    while let Ok(n) = socket.recv(&mut buffer).await {
        if buffer[..n]
            .split(|&b| b == b'\n')
            .any(|line| line == b"WATCHDOG=1")
        {
            watchdog_pings.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// GET /metrics every `interval`, counting the complete answers.
async fn scrape_forever(addr: std::net::SocketAddr, interval: Duration, scrapes: Arc<AtomicU64>) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        if scrape(addr).await.is_ok() {
            scrapes.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn scrape(addr: std::net::SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    if answer.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(std::io::Error::other("not 200"))
    }
}
