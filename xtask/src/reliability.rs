//! Renders docs/reliability.md from what scripts/reliability gathered:
//!
//! - `run.json`: when, on what, at which commit;
//! - `matrix.jsonl`: one line per fault-matrix test that reached its end
//!   (tests/it/support/figures.rs writes them when `HOSTBEAT_FIGURES` is set);
//! - `fuzz.jsonl`: one line per fuzz target (scripts/fuzz with `FUZZ_REPORT`);
//! - `soak.json` and `herd.json`: the two benchmarks of bench/;
//! - `herd-CASE.png`: the herd's plot of each case, linked from the page.
//!
//! The matrix's rows, their order and their words live here, in [`ROWS`]; a row
//! without figures (its test failed or is gone) or figures without a row (a test
//! nobody described) is an error, so that the page never drops a fault quietly.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;

/// The benchmarks' figures, as bench/ writes them.
#[allow(
    dead_code,
    reason = "the page shows some of what the benchmarks record"
)]
#[path = "../../bench/src/figures.rs"]
mod figures;

use figures::soak::{FDS_TOLERANCE, OUTAGE_S, RSS_TOLERANCE_KIB, TOKEN_LIFETIME_S};
use figures::{HerdReport as Herd, SoakReport as Soak};

/// A group of rows: its heading and its rows as (key, fault, what hostbeat does).
type Group = (
    &'static str,
    &'static [(&'static str, &'static str, &'static str)],
);

/// The fault matrix, in the order of the page.
const ROWS: &[Group] = &[
    (
        "The control plane and the network",
        &[
            (
                "outage-1h",
                "Control plane down for 1 hour",
                "Backs off exponentially with full jitter up to `backoff_cap` (5 min), never gives up; back within one cap of the return. One line when it starts, a summary every 10 min, one on recovery.",
            ),
            (
                "outage-24h",
                "Control plane down for 24 hours",
                "The same, for a day: requests per hour stay at the cap's rate; the log grows by a summary every 10 min, not by every attempt.",
            ),
            (
                "server-errors",
                "HTTP 500 on every call for 6 hours",
                "Transient: the same backoff, capped, never giving up.",
            ),
            (
                "retry-after-seconds",
                "429 with `Retry-After` in seconds",
                "Waits what the server asked (instead of its own backoff).",
            ),
            (
                "retry-after-date",
                "503 with `Retry-After` as an HTTP date",
                "Waits until that date, at most `retry_after_max`.",
            ),
            (
                "slow-answers",
                "Answers slower than `request_timeout`",
                "Gives up on the call at the timeout and retries with backoff.",
            ),
            (
                "cut-mid-body",
                "Connection cut in the middle of the body",
                "A transient failure: retried with backoff.",
            ),
            (
                "oversized",
                "An answer larger than the body limit, on a 200",
                "Stops reading at the limit; a protocol error, retried; never buffered whole.",
            ),
            (
                "invalid-json",
                "Invalid JSON, and JSON of the wrong shape, on a 200",
                "A protocol error, logged without quoting the answer (it may echo anything); retried.",
            ),
            (
                "dns-failure",
                "DNS failure (a network namespace with no resolver)",
                "Retried with backoff; said once at info, each attempt at debug.",
            ),
            (
                "redirect",
                "A redirect to another origin",
                "Not followed: the `Authorization` header never leaves the configured server.",
            ),
        ],
    ),
    (
        "TLS (real rustls against a test server with generated certificates)",
        &[
            (
                "tls-unknown-ca",
                "Certificate from an unknown CA",
                "Refused; no request reaches the server; the log says why.",
            ),
            (
                "tls-ca-file",
                "The same certificate with its CA in `ca_file`",
                "Accepted.",
            ),
            (
                "tls-expired",
                "An expired certificate from a trusted CA",
                "Refused.",
            ),
            (
                "tls-wrong-name",
                "A certificate for another host name",
                "Refused.",
            ),
        ],
    ),
    (
        "Credentials and clocks",
        &[
            (
                "token-expiry-mid-outage",
                "The access token expires in the middle of an outage",
                "Refreshes are retried through the outage; after the return a fresh token first, then the heartbeat.",
            ),
            (
                "client-deactivated",
                "Client deactivated, then reactivated",
                "Backs off on the auth schedule (`auth_backoff_cap`, 15 min), logs why with structured fields; resumes after reactivation.",
            ),
            (
                "token-rotated",
                "Client token rotated in the env file",
                "The first rejection re-reads the token; the new one is used at once, without re-registering.",
            ),
            (
                "clock-ahead",
                "The system clock an hour ahead",
                "Skew reported once; tokens still refreshed before expiry (lifetimes count on the monotonic clock).",
            ),
            (
                "clock-behind",
                "The system clock an hour behind",
                "The same.",
            ),
        ],
    ),
    (
        "The host",
        &[
            (
                "state-read-only",
                "State directory read-only (a read-only bind mount)",
                "Warns once; heartbeats go on; the agent id survives a restart (registration is idempotent).",
            ),
            (
                "state-full",
                "State directory full (a 64 KiB tmpfs)",
                "Warns; heartbeats go on; the state is saved again at the first heartbeat after room is made.",
            ),
            (
                "state-corrupt",
                "A corrupt state file",
                "Set aside as `state.json.corrupt-*`, bytes kept, not overwritten; the same agent id.",
            ),
            (
                "sighup-broken-config",
                "SIGHUP with a broken configuration",
                "Refused, naming the setting and the fix; the running configuration stays.",
            ),
            (
                "sigterm-backoff",
                "SIGTERM in the middle of a backoff wait",
                "Stops waiting at once and says goodbye (`offline`).",
            ),
            (
                "sigterm-hung-request",
                "SIGTERM in the middle of a hung request",
                "Exits within `shutdown_timeout`.",
            ),
            (
                "sigterm-hung-refresh",
                "SIGTERM while a token refresh hangs (`request_timeout = 25s`)",
                "The refresh is dropped; the goodbye ends within `shutdown_timeout`, inside the unit's `TimeoutStopSec=20s`.",
            ),
        ],
    ),
    (
        "The clouds' metadata services",
        &[
            (
                "cloud-none",
                "`cloud = auto` on a host whose DMI names no cloud (EC2, Google Cloud and Azure mocks listening)",
                "No metadata request at all, to any of them; said once.",
            ),
            (
                "notice-ec2",
                "An EC2 spot interruption notice",
                "At the control plane within one poll (5 s) plus one request, once; `terminating` from then on.",
            ),
            (
                "notice-gcp",
                "A Google Cloud preemption",
                "At the control plane at once (a hanging request), once; the deadline `gcp_preemption_notice` (30 s) after it was seen.",
            ),
            (
                "notice-azure",
                "An Azure `Preempt` of this VM, after a neighbour's",
                "At the control plane within one poll plus one request, once; the neighbour's event and a later incarnation ignored; the deadline is `NotBefore`.",
            ),
            (
                "notice-flapping",
                "A Google Cloud maintenance value flapping every 1.5 s for 2 minutes",
                "Each notice said and sent once; a heartbeat brought forward at most once a cadence.",
            ),
            (
                "gcp-misbehaving",
                "Google Cloud's metadata server without `Metadata-Flavor: Google`, then down, then garbage, 3 minutes each",
                "Nothing believed; each trouble logged once, the recovery once; the heartbeats keep their cadence; the requests bounded.",
            ),
            (
                "gcp-blip",
                "A 503 blip while a preemption lands",
                "Retried after a second without a line; the next request carries the last `ETag`, so the change is not missed.",
            ),
            (
                "azure-misbehaving",
                "Azure's IMDS down, then garbage, 3 minutes each",
                "Each trouble logged once, the recovery once; the heartbeats keep their cadence.",
            ),
            (
                "azure-slow-first",
                "Azure's first Scheduled Events answer after 110 s",
                "The first heartbeat does not wait for it; notices are watched once it answers.",
            ),
        ],
    ),
    (
        "Configuration checks that guard the token",
        &[
            (
                "plain-http",
                "Plain `http://` to a host that is not loopback",
                "Refused at start (exit 78) unless `allow_insecure_http = true`.",
            ),
            (
                "env-file-mode",
                "The env file holding the token is readable by every user",
                "Warned about at start with the `chmod` that fixes it; `hostbeat check` warns too.",
            ),
            (
                "config-file-token",
                "A TOML syntax error on the token's line, or a string left open above it",
                "Refused with the line and column, or the setting it ran into; the file is never quoted.",
            ),
            (
                "proxy-loopback",
                "Every proxy variable set, with a plain-http control plane on loopback",
                "The plane is reached directly: a proxy's loopback is not this host's, and the token would cross to it in clear text.",
            ),
        ],
    ),
    (
        "Hostile answers: no piece of a secret out, no abort, bounded",
        &[
            (
                "echo-cut-short",
                "An error echoing the token after 190 characters, and its Basic and URL-encoded forms",
                "Redacted before it is cut to a log line's length: no 10-byte run of the token, in any form, is logged.",
            ),
            (
                "retry-after-huge",
                "`Retry-After: 18446744073709551615` under the highest `retry_after_max`",
                "Waits `retry_after_max` (at most a day), then beats again; the clock never overflows.",
            ),
            (
                "token-lifetime-short",
                "Access tokens that live 50 ms",
                "Believed to live a minute: a bounded number of exchanges, said once with the figure.",
            ),
            (
                "imds-ttl-huge",
                "A metadata session granted for 2^64-1 seconds",
                "Held to the six hours asked: one session, heartbeats go on.",
            ),
        ],
    ),
];

/// What each fuzz target parses.
const FUZZ_TARGETS: &[(&str, &str)] = &[
    ("env_file", "the env file reader"),
    (
        "token_cleaner",
        "the token cleaner (quotes, whitespace, `Bearer`)",
    ),
    ("jwt_payload", "the JWT payload decoder (for `exp`)"),
    (
        "server_answers",
        "the control plane's answers (token, register, heartbeat, errors)",
    ),
    ("retry_after", "`Retry-After` (seconds and HTTP dates)"),
    (
        "imds_answers",
        "every cloud's metadata answers (EC2's notices, Google Cloud's values, Azure's instance document and Scheduled Events)",
    ),
    (
        "config_file",
        "the TOML config file, its errors included (no piece of the token in an error or another setting)",
    ),
    (
        "redact",
        "the last-line redactor (no 10-byte run of a secret, raw or encoded, in what it lets out)",
    ),
];

#[derive(Deserialize)]
struct Run {
    date: String,
    commit: String,
    machine: String,
}

#[derive(Deserialize)]
struct RowFigures {
    row: String,
    test: String,
    figures: Vec<(String, String)>,
}

#[derive(Deserialize)]
struct Fuzz {
    target: String,
    seconds: u64,
    executions: u64,
    corpus: u64,
}

/// Reads the figures in `dir` and writes the page to `out`.
pub fn render(dir: &Path, out: &Path) -> Result<(), String> {
    let page = page(dir)?;
    std::fs::write(out, page).map_err(|e| format!("{}: {e}", out.display()))
}

/// The page, from the figures in `dir` (which sits next to the page: the plots
/// are linked as `DIR_NAME/herd-CASE.png`).
fn page(dir: &Path) -> Result<String, String> {
    let run: Run = read_json(&dir.join("run.json"))?;
    let rows: Vec<RowFigures> = read_lines(&dir.join("matrix.jsonl"))?;
    let fuzz: Vec<Fuzz> = read_lines(&dir.join("fuzz.jsonl"))?;
    let soak: Soak = read_json(&dir.join("soak.json"))?;
    let herd: Herd = read_json(&dir.join("herd.json"))?;
    for case in &herd.cases {
        let plot = dir.join(format!("herd-{}.png", case.case));
        if !plot.exists() {
            return Err(format!("{} is missing", plot.display()));
        }
    }
    let plots = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut page = String::new();
    intro(&mut page, &run);
    matrix(&mut page, rows)?;
    fuzzing(&mut page, &fuzz)?;
    soak_section(&mut page, &soak);
    herd_section(&mut page, &herd, &plots)?;
    Ok(page)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))
        })
        .collect()
}

fn intro(page: &mut String, run: &Run) {
    let _ = write!(
        page,
        "# Reliability: faults, fuzzing, a soak and the fleet herd\n\n\
         What hostbeat does when the network, the control plane, the host and the \
         operator do their worst, with the figures that prove it. Every figure below \
         comes from a test or a benchmark in this repository and is regenerated, page \
         and all, by one script:\n\n\
         ```sh\nscripts/reliability\n```\n\n\
         It runs the fault-matrix tests (`cargo test --test it`, which assert the \
         behaviour and record the figures), each fuzz target with `scripts/fuzz` for \
         `FUZZ_SECONDS` (five minutes unless set; the fuzzing table says what this run \
         gave each), the soak (`bench/src/bin/soak.rs`) and the herd simulation \
         (`bench/src/bin/herd.rs`), then renders this page (`cargo run -p xtask -- \
         reliability`) from the files it left in `docs/reliability/`. Do not edit it by \
         hand.\n\n\
         This run: {} at commit `{}`, on {}.\n\n",
        run.date, run.commit, run.machine
    );
}

fn matrix(page: &mut String, rows: Vec<RowFigures>) -> Result<(), String> {
    let mut by_key: BTreeMap<String, RowFigures> = BTreeMap::new();
    for row in rows {
        if by_key.insert(row.row.clone(), row).is_some() {
            return Err("a fault-matrix row was recorded twice".into());
        }
    }
    page.push_str(
        "## Fault matrix\n\n\
         One test per row. Each asserts what the agent does, records what it cost \
         (requests made, time to recovery, entries logged), and then scans everything \
         the agent wrote (its log, the state directory with the status and metrics \
         files) for the client token's bytes. Time is virtual (a paused tokio clock) \
         except in the rows that run the real binary in a namespace of its own (DNS, \
         read-only and full state directory) and in the accepted-TLS row (a paused \
         clock jumps in the middle of a handshake). Nothing panics in any row: an \
         agent that panics fails its test. The rows that restart the agent (read-only \
         and corrupt state) check that its id survives; in the others one agent runs \
         throughout and keeps its id.\n\n",
    );
    let mut missing = Vec::new();
    for (heading, rows) in ROWS {
        let _ = write!(
            page,
            "### {heading}\n\n| Fault | What hostbeat does | Figures | Token in output | Test |\n|---|---|---|---|---|\n"
        );
        for (key, fault, behaviour) in *rows {
            let Some(found) = by_key.remove(*key) else {
                missing.push(*key);
                continue;
            };
            let scan = found
                .figures
                .iter()
                .find(|(name, _)| name == "token in output")
                .map_or("not applicable (no agent runs)", |(_, value)| {
                    value.as_str()
                });
            let figures = found
                .figures
                .iter()
                .filter(|(name, _)| name != "token in output")
                .map(|(name, value)| format!("{name}: **{value}**"))
                .collect::<Vec<_>>()
                .join("; ");
            let _ = writeln!(
                page,
                "| {fault} | {behaviour} | {figures} | {scan} | `{}` |",
                found.test
            );
        }
        page.push('\n');
    }
    if !missing.is_empty() {
        return Err(format!(
            "no figures for the rows {missing:?}: their tests failed or no longer record them"
        ));
    }
    if let Some(unknown) = by_key.keys().next() {
        return Err(format!(
            "figures for the row {unknown:?}, which ROWS does not describe"
        ));
    }
    Ok(())
}

fn fuzzing(page: &mut String, fuzz: &[Fuzz]) -> Result<(), String> {
    page.push_str(
        "## Fuzzing\n\n\
         Every parser of outside input has a cargo-fuzz target (`fuzz/`); CI runs each \
         for a minute (`.ci/run`), this run for longer. Each run starts from the seeds in \
         `fuzz/seeds/`; any crash found becomes a regression test before it is fixed \
         (see CHANGELOG.md, under Fixed).\n\n\
         | Target | Parses | Seconds | Executions | Corpus at the end | Crashes |\n\
         |---|---|---|---|---|---|\n",
    );
    for (target, parses) in FUZZ_TARGETS {
        let run = fuzz
            .iter()
            .find(|f| f.target == *target)
            .ok_or_else(|| format!("no fuzz run for the target {target}"))?;
        let _ = writeln!(
            page,
            "| `{target}` | {parses} | {} | {} | {} | none |",
            run.seconds,
            thousands(run.executions),
            run.corpus
        );
    }
    page.push('\n');
    Ok(())
}

fn soak_section(page: &mut String, soak: &Soak) {
    let verdict = if soak.pass { "**pass**" } else { "**FAIL**" };
    let _ = write!(
        page,
        "## Soak\n\n\
         The real daemon (`hostbeat run`, the release build with the heartbeat floor \
         lowered for the soak: feature `soak`) against the reference control plane on \
         loopback, in real time: {} heartbeats at a {} ms interval in {:.0} s, with {} \
         token exchanges ({TOKEN_LIFETIME_S} s access tokens), {} outages of \
         {OUTAGE_S} s, {} reloads (SIGHUP) and {} token rotation, then SIGTERM (exit: \
         {}). Sampled once a second from /proc after the first heartbeat. The pass mark \
         is no growth: the median of the last tenth of the samples no higher than that \
         of the first tenth (give or take {RSS_TOLERANCE_KIB} KiB of resident memory, \
         {FDS_TOLERANCE} descriptor): {verdict}.\n\n\
         | Measure | First | Last | Median | Max | Growth (last tenth vs first) | Flat |\n\
         |---|---|---|---|---|---|---|\n",
        thousands(soak.heartbeats),
        soak.interval_ms,
        soak.real_seconds,
        soak.token_exchanges,
        soak.outages,
        soak.reloads,
        soak.rotations,
        soak.exit_status,
    );
    for (name, spread) in [
        ("Resident memory (KiB)", &soak.rss_kib),
        ("Open file descriptors", &soak.fds),
        ("Threads", &soak.threads),
    ] {
        let _ = writeln!(
            page,
            "| {name} | {} | {} | {} | {} | {:+} | {} |",
            spread.first,
            spread.last,
            spread.median,
            spread.max,
            spread.growth,
            if spread.flat { "yes" } else { "NO" }
        );
    }
    let _ = write!(
        page,
        "\nThe log: {} lines in all (state changes only; a heartbeat is not one). The \
         token in anything the agent wrote (stderr, state directory, metrics file): {}.\n\n",
        soak.log_lines,
        if soak.token_in_output {
            "**FOUND**"
        } else {
            "none"
        }
    );
}

#[allow(clippy::cast_precision_loss, reason = "minutes of a run")]
fn herd_section(page: &mut String, herd: &Herd, plots: &str) -> Result<(), String> {
    use figures::herd as goal;
    let _ = write!(
        page,
        "## Fleet herd\n\n\
         {} agents in one process tree, each the real `hostbeat::run` (heartbeat loop, \
         backoff, request budget, token exchange and refresh with 15-minute tokens, \
         state files) on virtual time, against the reference control plane on \
         loopback. The plane has a fixed capacity, in multiples of the fleet's \
         heartbeat rate ({} agents / {} s), from minute 3 on; each case below takes it \
         away or shrinks it for a while. Beyond its capacity the plane answers 503 at \
         once; or answers after 15 s, past the agents' 10 s timeout; or answers 429 \
         with a `Retry-After` spread over one to three minutes; or queues: first come \
         first served, no admission control, a request dropped after {} s, so that \
         past the agents' timeout the plane spends its work on requests already \
         abandoned (that case shrinks the capacity to 0.7 times, not 0.8: an agent \
         waits for its answer before its next beat, so 10,000 agents on a 30 s \
         interval and a 10 s timeout never ask more than 10,000 / 40 s, and at 0.8 \
         times the queue settles below the timeout). Each shard of the fleet (at most 4,000 agents, one process) has \
         a plane with its share of the capacity. The same fleet runs once per retry \
         policy, and only the retry schedule and the request budget differ (the \
         naive runs keep hostbeat's token refresher, and its spread of the first \
         beat after a recovery over a whole interval). Rates are requests at the \
         plane per second, in {}-second buckets; the steady rate is the mean from \
         minute 3 to the event, before the fleet's first token refreshes (minute 8 \
         to 12), so the ratios to it err high by the exchanges' share of the load. \
         An agent is live while it has had a heartbeat accepted within the last two \
         intervals. `bench/src/bin/herd.rs` says how it is built.\n\n\
         hostbeat's goals: while the plane is away, at most {} times the steady rate in \
         every bucket; after it is back, at most {} times, and every agent back (a \
         heartbeat accepted) within one backoff cap ({:.0} s); and in every case, {:.0}% \
         of the fleet live again, for good, within two caps of the end of the event. \
         The rates during and after a brownout are shown, not judged: a plane that is \
         up answers what it can, and the agents it refused come back to it.\n",
        thousands(herd.agents as u64),
        thousands(herd.agents as u64),
        herd.interval_s,
        figures::herd::QUEUE_S,
        herd.bucket_s,
        goal::EVENT_PEAK,
        goal::AFTER_PEAK,
        goal::CAP_S,
        goal::LIVE_SHARE * 100.0,
    );
    for case in &herd.cases {
        herd_case(page, herd, case, plots)?;
    }
    page.push_str(READING_THE_HERD);
    Ok(())
}

/// One case of the herd: its plot, its table, and the verdicts on hostbeat's
/// goals.
fn herd_case(
    page: &mut String,
    herd: &Herd,
    case: &figures::HerdCase,
    plots: &str,
) -> Result<(), String> {
    use figures::herd as goal;
    let seconds =
        |s: Option<f64>| s.map_or_else(|| "**never**".to_owned(), |s| format!("{s:.0} s"));
    let _ = write!(
        page,
        "\n### {}\n\n\
         ![Request rate at the control plane and agents live over time, per retry \
         policy]({plots}/herd-{}.png)\n\n\
         | Policy | Steady | Peak during / steady | Peak after / steady | Every agent back after | {:.0}% live for good after | Requests during |\n\
         |---|---|---|---|---|---|---|\n",
        case.title,
        case.case,
        goal::LIVE_SHARE * 100.0,
    );
    for o in &case.outcomes {
        let _ = writeln!(
            page,
            "| {} | {:.0}/s | **{:.2}** | **{:.2}** | {} | {} | {} |",
            o.policy,
            o.steady_rate,
            o.event_peak_rate / o.steady_rate,
            o.return_peak_rate / o.steady_rate,
            seconds(o.all_back_after_s),
            seconds(o.live_after_s),
            thousands(o.requests_during_event)
        );
    }
    let ours = case
        .outcomes
        .iter()
        .find(|o| o.policy.starts_with("hostbeat"))
        .ok_or_else(|| format!("the herd's {} case has no hostbeat run", case.case))?;
    let verdict = |met: bool| if met { "met" } else { "**NOT met**" };
    let (during, after) = (
        ours.event_peak_rate / ours.steady_rate,
        ours.return_peak_rate / ours.steady_rate,
    );
    let live = format!(
        "{:.0}% live after {} ({})",
        goal::LIVE_SHARE * 100.0,
        seconds(ours.live_after_s),
        verdict(ours.live_after_s.is_some_and(|s| s <= 2.0 * goal::CAP_S)),
    );
    if case.plane_away {
        let _ = writeln!(
            page,
            "\nhostbeat's goals: {during:.2} times the steady rate while away ({}), \
             {after:.2} times after ({}), every agent back after {} ({}), {live}.",
            verdict(during <= goal::EVENT_PEAK),
            verdict(after <= goal::AFTER_PEAK),
            seconds(ours.all_back_after_s),
            verdict(ours.all_back_after_s.is_some_and(|s| s <= goal::CAP_S)),
        );
    } else {
        let _ = writeln!(page, "\nhostbeat's goal: {live}.");
    }
    let stuck: Vec<&str> = case
        .outcomes
        .iter()
        .filter(|o| o.live_after_s.is_none())
        .map(|o| o.policy.as_str())
        .collect();
    if !stuck.is_empty() {
        let _ = writeln!(
            page,
            "\nNever back to {:.0}% live for good in the {} the run went on after the \
             event: {}.",
            goal::LIVE_SHARE * 100.0,
            run_after_event(herd, case),
            stuck.join("; ")
        );
    }
    Ok(())
}

/// How long the run went on after the event, in words.
fn run_after_event(herd: &Herd, case: &figures::HerdCase) -> String {
    let buckets = case.outcomes.first().map_or(0, |o| o.rate_series.len());
    let end = u64::try_from(buckets)
        .unwrap_or(u64::MAX)
        .saturating_mul(herd.bucket_s);
    let after = end.saturating_sub(case.event_start_s + case.event_s);
    format!("{} minutes", after / 60)
}

/// What the plots show, by design of each policy (true of any run; the figures are
/// in the tables above).
const READING_THE_HERD: &str = "
How to read them:

- **hostbeat.** A failed attempt is retried no sooner than the next beat would
  have gone, and then after a full-jitter draw under a ceiling that doubles from one
  interval to the 5-minute cap; every request of a failing stretch draws from one
  budget of one request an interval (protocol.md section 3). So the fleet sends no
  more while the plane is away or overloaded than while it is healthy, and less as
  the stretch goes on; after the event the agents come back spread over one cap,
  each with a token exchange (if its token expired) and a heartbeat. A plane that
  refuses what it cannot serve sheds the load at once; one that queues it gets
  fewer requests each interval until its queue drains.
- **A fixed retry interval** keeps every agent that fails trying every interval
  for the whole event: a multiple of the load on the way down and on the way
  back. Against a plane that queues without admission control, retries that keep
  the queue past the agents' timeout make every answer come too late; where a
  table says never, the fleet stayed failing after the capacity was back: the
  metastable failure.
- **`Retry-After`** is honoured by every policy here, so a plane that sheds with
  429 and spreads the waits it asks for sets the pace of any fleet.
- **Exponential backoff without jitter** is gentle on the way down, but every agent
  keeps the phase it had when the event began: the fleet comes back as it left, in
  bursts, and at the mercy of anything that lines agents up (a fleet started at
  once, a plane whose restart drops every connection together).
";

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")
    }

    #[test]
    fn the_committed_page_is_what_the_committed_figures_render() {
        let rendered = page(&committed().join("reliability")).unwrap();
        let on_disk = std::fs::read_to_string(committed().join("reliability.md")).unwrap();
        assert!(
            rendered == on_disk,
            "docs/reliability.md differs from what its figures render: run \
             `cargo run -p xtask -- reliability docs/reliability docs/reliability.md`"
        );
    }

    #[test]
    fn a_row_without_figures_is_refused_by_name() {
        let figures = tempfile::Builder::new().tempdir().unwrap();
        let dir = figures.path().join("reliability");
        std::fs::create_dir(&dir).unwrap();
        for entry in std::fs::read_dir(committed().join("reliability")).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
        let matrix = std::fs::read_to_string(dir.join("matrix.jsonl")).unwrap();
        let without_dns = matrix
            .lines()
            .filter(|l| !l.contains("\"dns-failure\""))
            .collect::<Vec<_>>()
            .join("\n");
        assert_ne!(matrix, without_dns, "the committed matrix has a DNS row");
        std::fs::write(dir.join("matrix.jsonl"), without_dns).unwrap();
        let error = page(&dir).unwrap_err();
        assert!(error.contains("dns-failure"), "{error}");
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
