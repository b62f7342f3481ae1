//! The footprint benchmark's figures (`docs/performance/footprint.json`) and the
//! page they render (`docs/performance.md`): hostbeat beside the agents an operator
//! would otherwise install, measured side by side on one machine, in several runs.
//! Each figure on the page is the median over the runs; each ratio is taken within
//! a run (hostbeat's figure and the peer's, measured at the same time) and then the
//! median over the runs. The benchmark is `src/bin/footprint.rs`;
//! `scripts/footprint` runs it.

#![allow(
    missing_docs,
    reason = "the fields are the JSON's; the ones that need it say so"
)]
#![allow(
    clippy::cast_precision_loss,
    reason = "kibibytes, bytes and counts of a few minutes' run, far below 2^52"
)]

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::figures::{Spread, median};

/// When, at which commit, on what machine, and how long the agents were sampled.
#[derive(Debug, Serialize, Deserialize)]
pub struct Run {
    pub date: String,
    pub commit: String,
    pub machine: String,
    /// Seconds of steady state sampled in each run (after the warm-up).
    pub sampled_s: f64,
    /// Steady runs, one after the other, each with every agent started afresh.
    pub runs: usize,
    /// Seconds each agent ran before the sampling began.
    pub warm_up_s: u64,
    /// Starts timed per agent.
    pub starts: usize,
}

/// One agent's figures.
#[derive(Debug, Serialize, Deserialize)]
pub struct Agent {
    /// As the page names it: `hostbeat`, `zabbix_agent2`, ...
    pub name: String,
    /// What its `--version` (or `-V`) printed first.
    pub version: String,
    pub language: String,
    /// What it sends, how often, over what (the unit of "per report").
    pub report: String,
    /// What "started" means for it.
    pub started_when: String,
    /// Processes at the end of the run (the agent and its children).
    pub processes: u64,
    /// The main process.
    pub rss_kib: Spread,
    pub pss_kib: Spread,
    /// Every process of the agent, summed.
    pub rss_all_kib: Spread,
    pub pss_all_kib: Spread,
    pub threads: Spread,
    pub fds: Spread,
    /// CPU time over the sampled window, scaled to an hour.
    pub cpu_s_per_hour: f64,
    /// Reports the endpoint received during the sampled window.
    pub reports: u64,
    pub cpu_ms_per_report: f64,
    /// Voluntary context switches, all threads of all processes, per minute.
    pub wakeups_per_minute: f64,
    pub wakeups_per_report: f64,
    /// The program file.
    pub executable_bytes: u64,
    /// The program and every shared library it maps executable.
    pub mapped_code_bytes: u64,
    /// Milliseconds from exec to started, one per start, in order.
    pub start_ms: Vec<f64>,
}

impl Agent {
    pub fn start_median_ms(&self) -> f64 {
        median(&self.start_ms)
    }
}

/// hostbeat's own schedule over the sampled window: what its wake-ups are for.
#[derive(Debug, Serialize, Deserialize)]
pub struct Schedule {
    pub heartbeats: u64,
    pub token_exchanges: u64,
    pub watchdog_pings: u64,
    /// Polls of the EC2 metadata service for a spot notice (the packaged settings'
    /// watcher; each asks for the interruption notice and the rebalance advice).
    #[serde(default)]
    pub imds_polls: u64,
    pub wakeups: u64,
}

impl Schedule {
    pub fn events(&self) -> u64 {
        self.heartbeats + self.token_exchanges + self.watchdog_pings + self.imds_polls
    }
}

/// The benchmark's report.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub run: Run,
    /// One per steady run.
    pub runs: Vec<Measured>,
}

/// What one steady run measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct Measured {
    /// hostbeat first.
    pub agents: Vec<Agent>,
    pub hostbeat_schedule: Schedule,
    /// A second hostbeat in the same run with a 10-minute heartbeat and hour-long
    /// tokens: what it costs with nothing to do.
    pub hostbeat_idle: Agent,
    pub idle_schedule: Schedule,
    /// hostbeat at the packaged settings and, with `--compare`, another build
    /// beside it at the same settings, in that order.
    #[serde(default)]
    pub packaged: Vec<Packaged>,
    /// Where the first hostbeat's resident memory was at the end of the run.
    pub hostbeat_resident: Vec<Mapping>,
    /// How much of each of the program's sections was resident then.
    #[serde(default)]
    pub hostbeat_sections: Vec<Section>,
}

/// hostbeat at the packaged settings: a heartbeat every 30 s, 15-minute tokens,
/// the EC2 metadata watcher polling a mock every 5 s, the watchdog armed.
#[derive(Debug, Serialize, Deserialize)]
pub struct Packaged {
    /// "as packaged", or what the compared build changes.
    pub build: String,
    pub agent: Agent,
    pub schedule: Schedule,
}

/// One section of the program: its size and how much of it was resident.
#[derive(Debug, Serialize, Deserialize)]
pub struct Section {
    pub name: String,
    pub size_kib: u64,
    pub resident_kib: u64,
}

/// One mapped file, or one kind of anonymous memory, of a process.
#[derive(Debug, Serialize, Deserialize)]
pub struct Mapping {
    pub name: String,
    pub rss_kib: u64,
    pub pss_kib: u64,
}

impl Report {
    /// The agents as the first run saw them (names, versions: the same in all).
    fn agents(&self) -> &[Agent] {
        &self.runs[0].agents
    }

    /// The median over the runs of agent `i`'s `value`.
    fn median(&self, i: usize, value: impl Fn(&Agent) -> f64) -> f64 {
        self.over_runs(|r| value(&r.agents[i]))
    }

    /// The median over the runs of `value`.
    fn over_runs(&self, value: impl Fn(&Measured) -> f64) -> f64 {
        median(&self.runs.iter().map(value).collect::<Vec<_>>())
    }

    /// The median over the runs of hostbeat's `value` divided by agent `i`'s in the
    /// same run; none when the peer's is 0 in some run.
    fn median_ratio(&self, i: usize, value: impl Fn(&Agent) -> f64) -> Option<f64> {
        let ratios: Option<Vec<f64>> = self
            .runs
            .iter()
            .map(|r| {
                let peer = value(&r.agents[i]);
                (peer > 0.0).then(|| value(&r.agents[0]) / peer)
            })
            .collect();
        ratios.map(|ratios| median(&ratios))
    }

    /// The run whose hostbeat RSS is the median one (for what only one run can show).
    fn typical(&self) -> &Measured {
        let mut by_rss: Vec<&Measured> = self.runs.iter().collect();
        by_rss.sort_by_key(|r| r.agents[0].rss_kib.median);
        by_rss[by_rss.len() / 2]
    }
}

/// A goal of issue 8: what was measured, whether it was met, and when it was not,
/// by how much and why.
struct Goal {
    what: &'static str,
    target: &'static str,
    measured: String,
    met: bool,
    /// Said under the table when the goal is missed.
    why_missed: String,
}

const KIB_PER_MIB: f64 = 1024.0;

/// The most wake-ups a watchdog ping may cost: its timer's (src/wheel.rs).
const WAKE_UPS_PER_PING: u64 = 1;
/// The most wake-ups a heartbeat or token exchange may cost: its timer, the
/// answer to its request, and the handshakes of a connection opened anew.
const WAKE_UPS_PER_REQUEST: u64 = 5;
const BYTES_PER_MIB: f64 = 1024.0 * 1024.0;

fn goals(report: &Report) -> Vec<Goal> {
    let peer = |name: &str| report.agents().iter().position(|a| a.name == name);
    let rss = report.median(0, |a| a.rss_kib.median as f64);
    let mut goals = vec![Goal {
        what: "Resident memory at steady state",
        target: "under 4 MiB",
        measured: format!("{:.2} MiB (median VmRSS)", rss / KIB_PER_MIB),
        met: rss < 4.0 * KIB_PER_MIB,
        why_missed: why_resident(report),
    }];
    if let Some(agent2) = peer("zabbix_agent2") {
        let ratio = report
            .median_ratio(agent2, |a| a.rss_kib.median as f64)
            .unwrap_or(f64::INFINITY);
        let theirs = report.median(agent2, |a| a.rss_kib.median as f64);
        goals.push(Goal {
            what: "Resident memory against zabbix_agent2",
            target: "at most a quarter",
            measured: format!("{ratio:.2} of its {theirs:.0} KiB"),
            met: ratio <= 0.25,
            why_missed: format!(
                "hostbeat would need {:.0} KiB or less, {:.0} KiB fewer; see the \
                 resident memory above.",
                theirs / 4.0,
                rss - theirs / 4.0
            ),
        });
    }
    if let Some(agentd) = peer("zabbix_agentd") {
        let theirs = report.median(agentd, |a| a.rss_kib.median as f64);
        goals.push(Goal {
            what: "Resident memory against zabbix_agentd's main process",
            target: "below it",
            measured: format!("{rss:.0} KiB against {theirs:.0} KiB"),
            met: rss < theirs,
            why_missed: "see the resident memory above.".into(),
        });
    }
    let cpu = report.median(0, |a| a.cpu_ms_per_report);
    goals.push(Goal {
        what: "CPU per heartbeat, TLS connection reused",
        target: "under 1 ms",
        measured: format!("{cpu:.3} ms"),
        met: cpu < 1.0,
        why_missed: "the machine may have been busy (CPU time is the scheduler's count \
                     of this process alone, but a busy cache costs cycles); re-run it \
                     on a quiet machine before looking for a cause in the code."
            .into(),
    });
    goals.push(idle_goal(report));
    let size = report.agents()[0].executable_bytes as f64 / BYTES_PER_MIB;
    goals.push(Goal {
        what: "Stripped binary",
        target: "under 6 MiB",
        measured: format!("{size:.2} MiB"),
        met: size < 6.0,
        why_missed: format!("{:.2} MiB over.", size - 6.0),
    });
    let start = report.agents()[0].start_median_ms();
    goals.push(Goal {
        what: "Exec to READY=1, server unreachable",
        target: "under 20 ms",
        measured: format!(
            "{start:.1} ms (median of {})",
            report.agents()[0].start_ms.len()
        ),
        met: start < 20.0,
        why_missed: format!("{:.1} ms over.", start - 20.0),
    });
    goals.push(flat_goal(report));
    goals
}

/// At idle, only the schedule's wake-ups.
fn idle_goal(report: &Report) -> Goal {
    // A scheduled event takes a wake-up or a few; between events there must be
    // none.
    let idle_wakeups: u64 = report.runs.iter().map(|r| r.idle_schedule.wakeups).sum();
    let idle_events: u64 = report.runs.iter().map(|r| r.idle_schedule.events()).sum();
    let idle_minutes = report.run.sampled_s * report.runs.len() as f64 / 60.0;
    let allowed: u64 = report
        .runs
        .iter()
        .map(|r| {
            let s = &r.idle_schedule;
            WAKE_UPS_PER_PING * s.watchdog_pings
                + WAKE_UPS_PER_REQUEST * (s.heartbeats + s.token_exchanges)
        })
        .sum();
    Goal {
        what: "No wake-ups at idle beyond the schedule",
        target: "only the scheduled events' (1 a watchdog ping, 5 a heartbeat or token \
                 exchange)",
        measured: format!(
            "{:.1} a minute idle ({idle_wakeups} wake-ups for {idle_events} scheduled \
             events in {:.0} s)",
            idle_wakeups as f64 / idle_minutes,
            idle_minutes * 60.0
        ),
        met: idle_wakeups <= allowed,
        why_missed: format!(
            "{idle_wakeups} wake-ups where the {idle_events} scheduled events account for \
             {allowed} at most: either something polls, or the events cost more than \
             they should (a timer off the wheel's boundaries costs one wake-up per level \
             it moves down; a request on a new connection adds the round trips of its \
             TCP and TLS handshakes). \
             `strace -tt -p PID` on the idle agent tells which: polling is a wake-up \
             that leads to no event."
        ),
    }
}

/// No growth in hostbeat's memory or descriptors over any run.
fn flat_goal(report: &Report) -> Goal {
    let growth = |value: fn(&Agent) -> i64| {
        report
            .runs
            .iter()
            .map(|r| format!("{:+}", value(&r.agents[0])))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Goal {
        what: "Memory and file descriptors flat",
        target: "no growth over a run",
        measured: format!(
            "RSS {} KiB, PSS {} KiB, fds {} (each run)",
            growth(|a| a.rss_kib.growth),
            growth(|a| a.pss_kib.growth),
            growth(|a| a.fds.growth)
        ),
        met: report.runs.iter().all(|r| {
            let hostbeat = &r.agents[0];
            hostbeat.rss_kib.flat && hostbeat.pss_kib.flat && hostbeat.fds.flat
        }),
        why_missed: "growth over a few minutes: run the soak (scripts/reliability soak) \
                     to see whether it goes on."
            .into(),
    }
}

/// Why hostbeat's resident memory is what it is, from where it lies.
fn why_resident(report: &Report) -> String {
    let over = report.median(0, |a| a.rss_kib.median as f64) - 4.0 * KIB_PER_MIB;
    let typical = report.typical();
    let hostbeat = &typical.agents[0];
    let (mut program, mut libraries, mut libraries_pss, mut anonymous) = (0, 0, 0, 0);
    for mapping in &typical.hostbeat_resident {
        if mapping.name.starts_with('[') {
            anonymous += mapping.rss_kib;
        } else if mapping.name.ends_with("/hostbeat") {
            program += mapping.rss_kib;
        } else {
            libraries += mapping.rss_kib;
            libraries_pss += mapping.pss_kib;
        }
    }
    let code = typical
        .hostbeat_sections
        .iter()
        .find(|s| s.name == ".text")
        .map(|text| {
            format!(
                " Its code (`.text`) is {} of {} KiB resident: what start-up and the \
                 steady state run is spread all over it.",
                text.resident_kib, text.size_kib
            )
        })
        .unwrap_or_default();
    format!(
        "{over:.0} KiB over. Of the resident memory, {program} KiB are the program's own \
         pages: the kernel maps a file's pages in around each page touched (fault-around, \
         up to 64 KiB at a time), so most of the {size:.2} MiB program is resident \
         although the steady state runs little of it.{code} The C library, the loader and libgcc are \
         {libraries} KiB, pages every process on the host shares (their PSS: \
         {libraries_pss} KiB); heap and stack are {anonymous} KiB. What would close it: \
         a smaller program, which leaves fewer pages to fault in (its largest parts are \
         the standard library, which as the toolchain ships it keeps its backtrace \
         printer even in a `panic = \"abort\"` build, rustls and ring, the HTTP client \
         and the command line's parser), or no shared C library, loader and libgcc mapped at all: a static \
         build against musl, whose C library is small, for some CPU (musl's allocator \
         and string functions are slower); this machine's toolchain has no musl target \
         and cannot fetch one. Linking glibc statically instead \
         (`FOOTPRINT_LINK=static-glibc scripts/footprint`) brings VmRSS under 4 MiB \
         and is no gain: glibc's archive adds about 1 MiB of program whose pages are \
         hostbeat's alone, so PSS, what the host pays, rises by about what VmRSS falls \
         (and a static glibc resolves names only with the NSS modules of its own \
         version). Counted proportionally (PSS), hostbeat is {pss} KiB.",
        size = hostbeat.executable_bytes as f64 / BYTES_PER_MIB,
        pss = report.median(0, |a| a.pss_kib.median as f64),
    )
}

/// One row of the comparison: what it measures, its value for each agent (the
/// median over the runs), hostbeat's ratio to each peer (the median of the runs'
/// ratios), and how a value is shown.
struct Row {
    label: &'static str,
    values: Vec<f64>,
    ratios: Vec<Option<f64>>,
    show: fn(f64) -> String,
}

fn rows(report: &Report) -> Vec<Row> {
    let row = |label, value: fn(&Agent) -> f64, show| Row {
        label,
        values: (0..report.agents().len())
            .map(|i| report.median(i, value))
            .collect(),
        ratios: (1..report.agents().len())
            .map(|i| report.median_ratio(i, value))
            .collect(),
        show,
    };
    let whole: fn(f64) -> String = |v| format!("{v:.0}");
    let one: fn(f64) -> String = |v| format!("{v:.1}");
    let ms: fn(f64) -> String = |v| format!("{v:.3}");
    let mib: fn(f64) -> String = |v| format!("{:.2} MiB", v / BYTES_PER_MIB);
    vec![
        row(
            "VmRSS, main process, median (KiB)",
            |a| a.rss_kib.median as f64,
            whole,
        ),
        row(
            "VmRSS, main process, max (KiB)",
            |a| a.rss_kib.max as f64,
            whole,
        ),
        row(
            "PSS, main process, median (KiB)",
            |a| a.pss_kib.median as f64,
            whole,
        ),
        row(
            "PSS, all processes, median (KiB)",
            |a| a.pss_all_kib.median as f64,
            whole,
        ),
        row(
            "PSS, all processes, max (KiB)",
            |a| a.pss_all_kib.max as f64,
            whole,
        ),
        row("Processes", |a| a.processes as f64, whole),
        row(
            "Threads, all processes (max)",
            |a| a.threads.max as f64,
            whole,
        ),
        row(
            "Open files, all processes (max)",
            |a| a.fds.max as f64,
            whole,
        ),
        row("CPU seconds per hour", |a| a.cpu_s_per_hour, one),
        row("CPU ms per report", |a| a.cpu_ms_per_report, ms),
        row("Wake-ups per minute", |a| a.wakeups_per_minute, one),
        row("Wake-ups per report", |a| a.wakeups_per_report, one),
        row("Program file", |a| a.executable_bytes as f64, mib),
        row(
            "Program + shared libraries mapped",
            |a| a.mapped_code_bytes as f64,
            mib,
        ),
        row("Exec to started, median (ms)", Agent::start_median_ms, one),
    ]
}

/// docs/performance.md.
pub fn render_page(report: &Report) -> String {
    let mut page = String::new();
    intro(&mut page, report);
    comparison(&mut page, report);
    schedule(&mut page, report);
    packaged(&mut page, report);
    page.push_str("\n## Goals\n\n| Goal | Target | Measured | Met |\n|---|---|---|---|\n");
    let goals = goals(report);
    for goal in &goals {
        let _ = writeln!(
            page,
            "| {} | {} | {} | {} |",
            goal.what,
            goal.target,
            goal.measured,
            if goal.met { "yes" } else { "**no**" }
        );
    }
    let missed: Vec<&Goal> = goals.iter().filter(|g| !g.met).collect();
    if !missed.is_empty() {
        page.push_str("\nWhere a goal is missed:\n\n");
        for goal in missed {
            let _ = writeln!(page, "- **{}**: {}", goal.what, goal.why_missed);
        }
    }
    resident(&mut page, report);
    page.push_str(DESIGN);
    page
}

fn intro(page: &mut String, report: &Report) {
    let run = &report.run;
    let _ = write!(
        page,
        "<!-- Generated by scripts/footprint from docs/performance/footprint.json; \
         do not edit. -->\n\n\
         # Performance: hostbeat's footprint beside its peers\n\n\
         A host agent is a guest on every machine of the fleet, and its cost is paid \
         on each. This page sets hostbeat beside the agents an operator would \
         otherwise install for the job, measured side by side on one machine by \
         `scripts/footprint` (bench/src/bin/footprint.rs) on {date}, hostbeat built \
         at commit {commit}, on {machine}. In each of {runs} runs all the agents were started \
         at once, each against a local endpoint, left {warm} s to settle, then \
         sampled once a second for {sampled:.0} s. The machine is shared and noisy: \
         read the ratios (hostbeat's figure divided by the peer's, measured side by \
         side in one run; the median over the runs) rather than the absolute times.\n\n\
         Re-run it with `scripts/footprint` (it installs the peers from Debian's \
         packages; about 45 minutes after the builds; `FOOTPRINT_SAMPLE=1m \
         FOOTPRINT_RUNS=1` for a quick look).\n\n\
         ## The agents\n\n\
         | Agent | Version | Language | Reports | Started when |\n|---|---|---|---|---|\n",
        date = run.date,
        commit = run.commit,
        machine = run.machine,
        warm = run.warm_up_s,
        sampled = run.sampled_s,
        runs = report.runs.len(),
    );
    for agent in report.agents() {
        let _ = writeln!(
            page,
            "| {} | {} | {} | {} | {} |",
            agent.name, agent.version, agent.language, agent.report, agent.started_when
        );
    }
    page.push_str(
        "\nhostbeat is the release build, as packaged, in token exchange mode against \
         the reference control plane over TLS (a private CA in `ca_file`), with \
         60-second access tokens and the watchdog armed as the unit arms it \
         (`WatchdogSec=2min`); the benchmark reads its notifications as systemd \
         would. The Zabbix agents run in active mode with `BufferSend=1` against a \
         minimal Zabbix server in the benchmark, which gives them one item, \
         `agent.ping` every second: Zabbix's own heartbeat. They speak plain TCP and \
         open a connection per exchange, which spares them TLS; hostbeat pays for TLS \
         in every figure below. node-exporter runs with its default collectors and is \
         scraped every 15 s, Prometheus's usual interval; a scrape collects far more \
         than a heartbeat carries, so its per-report figures measure another job. \
         Everyone runs as the same user, on loopback only.\n\n\
         Memory is read from `/proc/PID/status` (VmRSS) and `/proc/PID/smaps_rollup` \
         (PSS: shared pages divided among the processes sharing them); CPU time is the \
         scheduler's count in nanoseconds (`/proc/PID/task/*/schedstat`); a wake-up is \
         a voluntary context switch (the process slept and was woken), summed over \
         every thread of every process of the agent. zabbix_agentd forks workers: its \
         main process and all its processes are shown apart.\n",
    );
}

fn comparison(page: &mut String, report: &Report) {
    let _ = write!(
        page,
        "\n## Side by side\n\nEach value is the median over the {} runs; each ratio, the \
         median of the runs' ratios.\n\n| Measure |",
        report.runs.len()
    );
    let agents = report.agents();
    for agent in agents {
        let _ = write!(page, " {} |", agent.name);
    }
    for peer in &agents[1..] {
        let _ = write!(page, " hostbeat ÷ {} |", peer.name);
    }
    page.push_str("\n|---|");
    page.push_str(&"---:|".repeat(agents.len() * 2 - 1));
    page.push('\n');
    for Row {
        label,
        values,
        ratios,
        show,
    } in rows(report)
    {
        let _ = write!(page, "| {label} |");
        for &value in &values {
            let _ = write!(page, " {} |", show(value));
        }
        for ratio in ratios {
            match ratio {
                Some(ratio) => {
                    let _ = write!(page, " {ratio:.2} |");
                }
                None => page.push_str(" – |"),
            }
        }
        page.push('\n');
    }
    page.push_str("\nhostbeat in each run:\n\n");
    for (i, run) in report.runs.iter().enumerate() {
        let hostbeat = &run.agents[0];
        let _ = writeln!(
            page,
            "- run {}: VmRSS from {} to {} KiB (max {}), open files from {} to {}, \
             {:.3} ms CPU per heartbeat ({:.2}x zabbix_agentd's per value)",
            i + 1,
            hostbeat.rss_kib.first,
            hostbeat.rss_kib.last,
            hostbeat.rss_kib.max,
            hostbeat.fds.first,
            hostbeat.fds.last,
            hostbeat.cpu_ms_per_report,
            run.agents
                .iter()
                .find(|a| a.name == "zabbix_agentd")
                .map_or(0.0, |a| hostbeat.cpu_ms_per_report / a.cpu_ms_per_report),
        );
    }
    let hostbeat = &agents[0];
    let _ = writeln!(
        page,
        "\nExec to `READY=1` took {} ms over {} starts.",
        hostbeat
            .start_ms
            .iter()
            .map(|ms| format!("{ms:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
        hostbeat.start_ms.len()
    );
    heavier(page, report);
}

/// Where a peer is lighter than hostbeat: which measure, against whom, by how
/// much, and why.
fn heavier(page: &mut String, report: &Report) {
    let mut lines = Vec::new();
    for Row { label, ratios, .. } in rows(report) {
        let lighter: Vec<String> = report.agents()[1..]
            .iter()
            .zip(ratios)
            .filter_map(|(agent, ratio)| Some((agent, ratio?)))
            .filter(|(_, ratio)| *ratio > 1.05)
            .map(|(agent, ratio)| format!("{} ({ratio:.2}x)", agent.name))
            .collect();
        if !lighter.is_empty() {
            lines.push(format!(
                "- **{label}**: hostbeat is above {}. {}",
                lighter.join(", "),
                why_heavier(label)
            ));
        }
    }
    if !lines.is_empty() {
        page.push_str(
            "
Where a peer is lighter (by more than 5%):

",
        );
        page.push_str(&lines.join("\n"));
        page.push('\n');
    }
}

fn why_heavier(label: &str) -> &'static str {
    if label.starts_with("CPU") {
        "Every heartbeat is an HTTPS request: the TLS records are encrypted and \
         authenticated, the answer is JSON, and the status file and systemd's status \
         line are updated. The Zabbix agents send plain TCP, which this comparison \
         spares them (Zabbix's own TLS would cost them a handshake per connection); \
         node-exporter reports 4 times a minute to hostbeat's 60."
    } else if label.starts_with("Wake-ups") {
        "A heartbeat wakes the agent at least twice, when its timer fires and when \
         the answer arrives, and once more when its timer crosses a level of tokio's \
         timer wheel (a 1-second wait across one of its 4.096 s boundaries) or a token \
         is exchanged (see \"What wakes hostbeat\")."
    } else if label.starts_with("Open files") {
        "hostbeat keeps its TLS connection open between heartbeats, and its runtime \
         holds an epoll instance, an eventfd and the signal handlers' sockets; an \
         agent that connects once per report holds no socket in between."
    } else if label == "Program file" {
        "zabbix_agentd's program is small because most of its code is in shared \
         libraries (GnuTLS, curl, LDAP, PCRE2 and more: the next row); hostbeat maps \
         only the C library, libgcc and the loader."
    } else if label.starts_with("Exec to started") {
        "Before `READY=1` hostbeat reads and checks its whole configuration, the env \
         file's permissions and its state file; a peer's port accepts as soon as it \
         listens."
    } else {
        "See the goals below."
    }
}

fn schedule(page: &mut String, report: &Report) {
    let minutes = report.run.sampled_s / 60.0;
    let per_event = |s: &Schedule| s.wakeups as f64 / s.events().max(1) as f64;
    page.push_str(
        "\n## What wakes hostbeat\n\n\
         Every wake-up of hostbeat should be one of its scheduled events: a heartbeat, \
         a token refresh, a watchdog ping (or an IMDS poll on EC2, off here). A second \
         hostbeat ran beside the first with a 10-minute heartbeat and hour-long tokens, \
         so that between its events it had nothing to do.\n\n\
         | Run | hostbeat | Heartbeats | Token exchanges | Watchdog pings | Wake-ups | Per event | Per minute |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for (i, run) in report.runs.iter().enumerate() {
        for (which, s) in [
            ("1 s heartbeat", &run.hostbeat_schedule),
            ("idle", &run.idle_schedule),
        ] {
            let _ = writeln!(
                page,
                "| {} | {which} | {} | {} | {} | {} | {:.1} | {:.1} |",
                i + 1,
                s.heartbeats,
                s.token_exchanges,
                s.watchdog_pings,
                s.wakeups,
                per_event(s),
                s.wakeups as f64 / minutes,
            );
        }
    }
    let idle = |value: fn(&Agent) -> f64| report.over_runs(|r| value(&r.hostbeat_idle));
    let _ = write!(
        page,
        "\nIdle, hostbeat used {:.3} CPU seconds an hour and {:.0} KiB resident \
         (medians over the runs). Its first contact (token exchange, registration, \
         state saved) is over before the window: it starts with a 1 s heartbeat and, \
         once online, is reloaded (SIGHUP) to the 10-minute interval, as an operator \
         would do it.\n\n\
         tokio's timer wheel wakes the process once for each level a timer moves \
         down on its way to being due: three times for a timer 5 s or a minute away, \
         twice when its deadline lies on a 64 ms boundary, once on a boundary of the \
         level it is filed at. So deadlines that may move are put on a boundary \
         (`src/wheel.rs`): the watchdog's ping early, within the second half of its \
         period, where it costs one; a heartbeat or a metadata poll late by 64 ms at \
         most, where it costs two (the next section measures what that saves). The \
         watchdog ping rides on a heartbeat when the next one would \
         come too late for it, and no timer looks for idle connections (TCP keepalive \
         finds a dead one). The answer to a request wakes the agent once more, a \
         connection opened anew adds its handshakes' round trips, and a state file \
         saved with fsync may block. The goal allows {WAKE_UPS_PER_PING} a watchdog \
         ping and {WAKE_UPS_PER_REQUEST} a heartbeat or token exchange; none may come \
         from looking for work that is not there. `strace -tt -p PID` on the idle \
         agent shows what \
         each one is: every `epoll_wait` that returns leads to a watchdog ping, a \
         heartbeat or a refresh.\n",
        idle(|a| a.cpu_s_per_hour),
        idle(|a| a.rss_kib.median as f64),
    );
}

/// hostbeat at the packaged settings, and the build it was compared with, if any.
fn packaged(page: &mut String, report: &Report) {
    if report.runs.iter().any(|r| r.packaged.is_empty()) {
        return;
    }
    let compared = report.runs[0].packaged.get(1).map(|p| p.build.as_str());
    let _ = write!(
        page,
        "\n## At the packaged settings\n\n\
         The figures above are at a 1 s heartbeat, to compare per report with the \
         peers. Here is hostbeat as the packaged unit runs it on an EC2 spot instance, \
         in the same runs: a heartbeat every 30 s, 15-minute access tokens (each \
         refreshed 11¼ to 12 minutes after it was issued, 3 minutes ahead less a \
         jitter), the metadata watcher polling a mock of the instance metadata \
         service every 5 s (each poll asks for the interruption notice and the \
         rebalance advice), and the watchdog armed. An event is a heartbeat, a token \
         exchange, a poll or a watchdog ping. {}\n\n\
         | Run | Build | Heartbeats | Token exchanges | Metadata polls | Watchdog pings \
         | Wake-ups | Per event | Per minute | CPU s/h |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        compared.map_or(String::new(), |label| format!(
            "Beside it, at the same settings, ran another build of hostbeat: {label}."
        )),
    );
    for (i, run) in report.runs.iter().enumerate() {
        for one in &run.packaged {
            let s = &one.schedule;
            let _ = writeln!(
                page,
                "| {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.2} |",
                i + 1,
                one.build,
                s.heartbeats,
                s.token_exchanges,
                s.imds_polls,
                s.watchdog_pings,
                s.wakeups,
                s.wakeups as f64 / s.events().max(1) as f64,
                one.agent.wakeups_per_minute,
                one.agent.cpu_s_per_hour,
            );
        }
    }
    let median_of =
        |which: usize, value: fn(&Packaged) -> f64| report.over_runs(|r| value(&r.packaged[which]));
    let per_minute = |p: &Packaged| p.agent.wakeups_per_minute;
    let cpu = |p: &Packaged| p.agent.cpu_s_per_hour;
    let _ = write!(
        page,
        "\nAs packaged, hostbeat woke {:.1} times a minute and used {:.2} CPU seconds an \
         hour (medians over the runs)",
        median_of(0, per_minute),
        median_of(0, cpu),
    );
    if let Some(label) = compared {
        // A run where the packaged build measured 0 has no ratio: "n/a".
        let ratio = |value: fn(&Packaged) -> f64| {
            if report.runs.iter().any(|r| value(&r.packaged[0]) <= 0.0) {
                return "n/a".to_owned();
            }
            format!(
                "{:.2}",
                report.over_runs(|r| value(&r.packaged[1]) / value(&r.packaged[0]))
            )
        };
        let _ = write!(
            page,
            "; {label}, {:.1} wake-ups a minute and {:.2} CPU seconds an hour. The \
             compared build's figure divided by the packaged one's, in the same run \
             (the median of the runs' ratios): {} for wake-ups, {} for CPU time",
            median_of(1, per_minute),
            median_of(1, cpu),
            ratio(per_minute),
            ratio(cpu),
        );
    }
    page.push_str(".\n");
}

fn resident(page: &mut String, report: &Report) {
    page.push_str(
        "\n## Where hostbeat's resident memory is\n\n\
         From `/proc/PID/smaps` at the end of the run with the median RSS: each mapped \
         file, and the anonymous memory.\n\n\
         | Mapping | RSS (KiB) | PSS (KiB) |\n|---|---:|---:|\n",
    );
    for mapping in &report.typical().hostbeat_resident {
        // The program's path is the build's; its name is what matters.
        let name = if mapping.name.ends_with("/hostbeat") {
            "hostbeat (the program)"
        } else {
            mapping.name.as_str()
        };
        let _ = writeln!(
            page,
            "| {name} | {} | {} |",
            mapping.rss_kib, mapping.pss_kib
        );
    }
    let sections = &report.typical().hostbeat_sections;
    if !sections.is_empty() {
        page.push_str(
            "\nThe program's own pages by section (from its headers, and \
             `/proc/PID/pagemap` at the same moment): `.text` is the code, `.rodata` \
             the constants, `.eh_frame` the tables only a backtrace reads, `.rela.dyn` \
             the relocations the loader applies at start and `.data.rel.ro` what they \
             patch.\n\n\
             | Section | Size (KiB) | Resident (KiB) |\n|---|---:|---:|\n",
        );
        for section in sections {
            let _ = writeln!(
                page,
                "| `{}` | {} | {} |",
                section.name, section.size_kib, section.resident_kib
            );
        }
    }
}

const DESIGN: &str = "
## What keeps it small

Choices a reviewer can see in the code, not features left out:

- **One thread.** A current-thread tokio runtime (`src/main.rs`): no worker pool, no
  work stealing, no thread stacks; the heartbeat loop, the token refresher and the
  signal handlers are tasks on it.
- **rustls, not OpenSSL**, and one HTTPS connection kept open and reused
  (`pool_max_idle_per_host(1)`): a heartbeat is one request on a warm connection,
  with no handshake.
- **The system's CA roots read once** (`src/trust.rs`), from the distribution's
  bundle, one certificate at a time: only their trust anchors stay on the heap.
  reqwest's own loader read the bundle and the certificate directory both, and held
  every root twice.
- **Timers, not polling.** Every wait is a tokio timer or a socket; nothing wakes
  to check. Deadlines that may move sit on the boundaries of tokio's timer wheel
  (`src/wheel.rs`): a heartbeat's wait or a metadata poll costs two wake-ups rather
  than three, a watchdog ping one; the watchdog ping rides on a heartbeat when it
  can; no timer looks for idle connections.
- **Quiet logs.** One line per state change, never one per successful heartbeat; a
  failure that repeats is summarised.
- **A lean release profile** (`Cargo.toml`): `opt-level = \"z\"`, fat LTO, one codegen
  unit, `panic = \"abort\"`, stripped.
";

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn docs() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
    }

    /// The figures in docs/performance/footprint.json.
    fn committed() -> Report {
        let path = docs().join("performance/footprint.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (scripts/footprint writes it)", path.display()));
        serde_json::from_str(&text).expect("the committed figures parse")
    }

    fn goal_row<'a>(page: &'a str, goal: &str) -> &'a str {
        page.lines()
            .find(|line| line.starts_with(&format!("| {goal} |")))
            .unwrap_or_else(|| panic!("no row for {goal:?}"))
    }

    #[test]
    fn the_committed_page_is_what_the_committed_figures_render() {
        let page = std::fs::read_to_string(docs().join("performance.md")).expect("the page");
        assert!(
            page == render_page(&committed()),
            "docs/performance.md is not what docs/performance/footprint.json renders: \
             re-run scripts/footprint (or render the page again) and commit both"
        );
    }

    #[test]
    fn a_missed_memory_goal_says_by_how_much_and_where_the_memory_is() {
        let mut report = committed();
        let set_rss = |report: &mut Report, kib| {
            for run in &mut report.runs {
                run.agents[0].rss_kib.median = kib;
            }
        };
        set_rss(&mut report, 5000);
        let page = render_page(&report);
        assert!(goal_row(&page, "Resident memory at steady state").ends_with("| **no** |"));
        assert!(
            page.contains("**Resident memory at steady state**: 904 KiB over."),
            "{page}"
        );
        set_rss(&mut report, 3000);
        let page = render_page(&report);
        assert!(goal_row(&page, "Resident memory at steady state").ends_with("| yes |"));
        assert!(!page.contains("**Resident memory at steady state**:"));
    }

    #[test]
    fn where_a_peer_is_lighter_the_page_says_by_how_much_and_why() {
        let mut report = committed();
        let line = |page: &str| {
            page.lines()
                .find(|l| l.starts_with("- **CPU ms per report**"))
                .map(str::to_owned)
        };
        let set_cpu = |report: &mut Report, times: f64| {
            for run in &mut report.runs {
                run.agents[0].cpu_ms_per_report = run.agents[2].cpu_ms_per_report * times;
            }
        };
        set_cpu(&mut report, 2.0);
        let page = render_page(&report);
        let said = line(&page).expect("hostbeat above zabbix_agentd is said");
        assert!(said.contains("zabbix_agentd (2.00x)"), "{said}");
        assert!(said.contains("HTTPS"), "{said}");
        set_cpu(&mut report, 1.0);
        assert_eq!(line(&render_page(&report)), None, "equal is not heavier");
    }

    #[test]
    fn wake_ups_at_idle_beyond_the_schedule_miss_the_goal() {
        let mut report = committed();
        for run in &mut report.runs {
            run.idle_schedule = Schedule {
                heartbeats: 0,
                token_exchanges: 0,
                watchdog_pings: 3,
                imds_polls: 0,
                wakeups: 3,
            };
        }
        report.runs[1].idle_schedule.heartbeats = 1;
        report.runs[1].idle_schedule.wakeups = 8;
        let goal = "No wake-ups at idle beyond the schedule";
        assert!(goal_row(&render_page(&report), goal).ends_with("| yes |"));
        report.runs[0].idle_schedule.wakeups = 4;
        let page = render_page(&report);
        assert!(goal_row(&page, goal).ends_with("| **no** |"));
        assert!(page.contains("a wake-up that leads to no event"), "{page}");
    }

    #[test]
    fn the_packaged_settings_show_the_compared_build_beside_them() {
        let mut report = committed();
        let hostbeat = serde_json::to_value(&report.runs[0].agents[0]).expect("figures");
        let minutes = report.run.sampled_s / 60.0;
        let packaged = |build: &str, wakeups: u64, cpu_s_per_hour: f64| {
            let mut agent = serde_json::from_value::<Agent>(hostbeat.clone()).expect("figures");
            agent.cpu_s_per_hour = cpu_s_per_hour;
            agent.wakeups_per_minute = wakeups as f64 / minutes;
            Packaged {
                build: build.into(),
                agent,
                schedule: Schedule {
                    heartbeats: 6,
                    token_exchanges: 0,
                    watchdog_pings: 3,
                    imds_polls: 36,
                    wakeups,
                },
            }
        };
        for run in &mut report.runs {
            run.packaged.clear();
        }
        assert!(!render_page(&report).contains("## At the packaged settings"));

        // Ratios within each run, then their median: 1.5, 2.0, 1.25 for wake-ups.
        let figures = [
            (100, 0.4, 150, 0.5),
            (100, 0.4, 200, 0.4),
            (120, 0.5, 150, 0.5),
        ];
        for (run, (wakeups, cpu, other_wakeups, other_cpu)) in report.runs.iter_mut().zip(figures) {
            run.packaged = vec![
                packaged("as packaged", wakeups, cpu),
                packaged("without X", other_wakeups, other_cpu),
            ];
        }
        let page = render_page(&report);
        let section = &page[page
            .find("## At the packaged settings")
            .expect("the section")..];
        assert!(
            section.contains("| 2 | without X | 6 | 0 | 36 | 3 | 200 |"),
            "{section}"
        );
        assert!(
            section.contains("1.50 for wake-ups, 1.00 for CPU time"),
            "{section}"
        );
    }
}
