//! The soak (docs/reliability.md, "Soak"): the real `hostbeat run` process against
//! the reference control plane on loopback, in real time, for 100,000 heartbeats or
//! more, with short-lived access tokens (refreshed every few seconds), outages,
//! reloads (SIGHUP) and a token rotation along the way. Samples the process's
//! resident memory, open file descriptors and threads once a second; the pass mark
//! is no growth.
//!
//! The agent is the soak build (`cargo build --release --features soak`): the same
//! code with the heartbeat interval's floor lowered from 1 s to 1 ms, so that
//! 100,000 heartbeats take minutes, not a day. scripts/reliability builds it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use clap::Parser;
use hostbeat_bench::figures::soak::{
    FDS_TOLERANCE, OUTAGE_EVERY_S, OUTAGE_S, RELOAD_EVERY_S, RSS_TOLERANCE_KIB, TOKEN_LIFETIME_S,
};
use hostbeat_bench::figures::{SoakReport as Report, Spread};
use hostbeat_bench::procfs::ProcessSample;
use hostbeat_bench::{wall_clock, write_json};
use hostbeat_refplane::{ControlPlane, Fault, PlaneConfig, Scope};
use tokio::process::{Child, Command};

/// The token scan of the tests (tests/common/scan.rs).
#[allow(
    dead_code,
    reason = "the benchmark uses the scan, not the test assertion"
)]
#[path = "../../../tests/common/scan.rs"]
mod scan;

const CLIENT_ID: &str = "soak";
const SECRET: &str = "ct_SoAkSeCrEt-0123456789abcdefXYZ";
const ROTATED: &str = "ct_SoAkRoTaTeD-9876543210fedcbaQRS";

#[derive(Parser)]
#[command(about = "Soak: the real daemon for 100,000 heartbeats, sampled for growth")]
struct Args {
    /// The soak build of hostbeat (`--features soak`).
    #[arg(long)]
    agent: PathBuf,
    /// Stop after this many accepted heartbeats.
    #[arg(long, default_value_t = 100_000)]
    heartbeats: u64,
    /// The heartbeat interval.
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Write the figures here (JSON).
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let report = runtime.block_on(soak(&args))?;
    println!(
        "soak: {} heartbeats in {:.0} s, {} token exchanges, {} outages, {} reloads, \
         {} rotation; RSS KiB first {} last {} max {}; fds first {} last {} max {}; \
         threads first {} last {} max {}; {} log lines; token in output: {}; {}",
        report.heartbeats,
        report.real_seconds,
        report.token_exchanges,
        report.outages,
        report.reloads,
        report.rotations,
        report.rss_kib.first,
        report.rss_kib.last,
        report.rss_kib.max,
        report.fds.first,
        report.fds.last,
        report.fds.max,
        report.threads.first,
        report.threads.last,
        report.threads.max,
        report.log_lines,
        if report.token_in_output { "YES" } else { "no" },
        if report.pass { "PASS" } else { "FAIL" },
    );
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    if report.pass {
        Ok(())
    } else {
        Err("the soak failed: see the figures above".into())
    }
}

/// What happened during the run, apart from the samples.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    heartbeats: u64,
    token_exchanges: u64,
    outages: u32,
    reloads: u32,
    rotations: u32,
}

async fn soak(args: &Args) -> Result<Report, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let plane = ControlPlane::new(PlaneConfig {
        token_lifetime: Duration::from_secs(TOKEN_LIFETIME_S),
        ..PlaneConfig::default()
    });
    plane.add_client(CLIENT_ID, SECRET);
    let addr = plane
        .start()
        .await
        .map_err(|e| format!("cannot bind 127.0.0.1: {e}"))?;
    std::fs::create_dir(dir.path().join("etc")).map_err(|e| e.to_string())?;
    write_env_file(dir.path(), SECRET)?;
    let mut child = start_agent(args, dir.path(), &format!("http://{addr}"))?;
    let pid = child.id().ok_or("the agent exited at once")?;

    let mut counts = Counts::default();
    let mut samples = Vec::new();
    let mut started = None;
    let time_limit = wall_clock::now();
    let budget = args.interval * u32::try_from(args.heartbeats).unwrap_or(u32::MAX) * 4
        + Duration::from_secs(300);
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    let mut seconds = 0u64;
    while counts.heartbeats < args.heartbeats {
        ticks.tick().await;
        seconds += 1;
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the agent exited during the soak: {status}"));
        }
        if wall_clock::seconds_since(time_limit) > budget.as_secs_f64() {
            return Err(format!(
                "only {} heartbeats within {budget:?}: the agent is stuck",
                counts.heartbeats
            ));
        }
        let (requests, heartbeats) = plane.drain_records();
        counts.heartbeats += heartbeats.len() as u64;
        counts.token_exchanges += plane.token_exchanges(&requests);
        if started.is_none() && counts.heartbeats > 0 {
            started = Some(wall_clock::now());
        }
        // Samples count from the first accepted heartbeat: start-up is not growth.
        if started.is_none() {
            continue;
        }
        disturb(&plane, dir.path(), pid, seconds, &mut counts)?;
        let now = sample(pid, counts.heartbeats)?;
        if seconds.is_multiple_of(60) {
            eprintln!(
                "soak: {} heartbeats, RSS {} KiB, {} fds, {} threads",
                now.heartbeats, now.rss_kib, now.fds, now.threads
            );
        }
        samples.push(now);
    }
    let real_seconds = started.map_or(0.0, wall_clock::seconds_since);
    let exit_status = stop(&mut child, pid).await?;
    finish(
        dir.path(),
        args,
        counts,
        &samples,
        real_seconds,
        exit_status,
    )
}

/// Outages, reloads and one rotation, on a schedule in whole seconds.
fn disturb(
    plane: &ControlPlane,
    dir: &Path,
    pid: u32,
    seconds: u64,
    counts: &mut Counts,
) -> Result<(), String> {
    if seconds.is_multiple_of(OUTAGE_EVERY_S) {
        plane.set_fault(Fault::Outage, Scope::All, None);
        counts.outages += 1;
    } else if seconds % OUTAGE_EVERY_S == OUTAGE_S {
        plane.clear_fault();
    }
    if counts.rotations == 0 && seconds >= RELOAD_EVERY_S * 3 / 2 {
        // Rotated the way an operator does: the new secret at the plane, then in the
        // env file, then a reload.
        plane.rotate(CLIENT_ID, ROTATED);
        write_env_file(dir, ROTATED)?;
        signal(pid, "HUP")?;
        counts.rotations += 1;
        counts.reloads += 1;
    } else if seconds.is_multiple_of(RELOAD_EVERY_S) {
        signal(pid, "HUP")?;
        counts.reloads += 1;
    }
    Ok(())
}

fn write_env_file(dir: &Path, token: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("etc/hostbeat.env");
    std::fs::write(&path, format!("HOSTBEAT_CLIENT_TOKEN={token}\n"))
        .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn start_agent(args: &Args, dir: &Path, url: &str) -> Result<Child, String> {
    std::fs::write(dir.join("etc/hostbeat.toml"), "").map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir.join("out/state")).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join("out/stderr.log")).map_err(|e| e.to_string())?;
    Command::new(&args.agent)
        .arg("run")
        .arg("--config")
        .arg(dir.join("etc/hostbeat.toml"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOSTBEAT_SERVER_URL", url)
        .env("HOSTBEAT_TOKEN_URL", format!("{url}/oauth/token"))
        .env("HOSTBEAT_CLIENT_ID", CLIENT_ID)
        .env("HOSTBEAT_ENV_FILE", dir.join("etc/hostbeat.env"))
        .env("HOSTBEAT_STATE_DIR", dir.join("out/state"))
        .env("HOSTBEAT_METRICS_TEXTFILE", dir.join("out/hostbeat.prom"))
        .env(
            "HOSTBEAT_HEARTBEAT_INTERVAL",
            humantime::format_duration(args.interval).to_string(),
        )
        .env("HOSTBEAT_REFRESH_MARGIN", "5s")
        .env("HOSTBEAT_BACKOFF_CAP", "1s")
        .env("HOSTBEAT_AUTH_BACKOFF_CAP", "1s")
        .env("HOSTBEAT_CLOUD", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", args.agent.display()))
}

fn signal(pid: u32, name: &str) -> Result<(), String> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .map_err(|e| format!("kill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -{name} {pid}: {status}"))
    }
}

/// SIGTERM, and the exit within ten seconds.
async fn stop(child: &mut Child, pid: u32) -> Result<String, String> {
    signal(pid, "TERM")?;
    match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
        Ok(Ok(status)) => Ok(status.to_string()),
        Ok(Err(e)) => Err(format!("waiting for the agent: {e}")),
        Err(_) => Err("the agent did not exit within 10 s of SIGTERM".into()),
    }
}

/// One look at the process.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Accepted heartbeats so far.
    heartbeats: u64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
}

fn sample(pid: u32, heartbeats: u64) -> Result<Sample, String> {
    let process = ProcessSample::read(pid)?;
    Ok(Sample {
        heartbeats,
        rss_kib: process.rss_kib,
        fds: process.fds,
        threads: process.threads,
    })
}

fn finish(
    dir: &Path,
    args: &Args,
    counts: Counts,
    samples: &[Sample],
    real_seconds: f64,
    exit_status: String,
) -> Result<Report, String> {
    let log_lines = std::fs::read_to_string(dir.join("out/stderr.log"))
        .map_err(|e| e.to_string())?
        .lines()
        .count();
    // Everything the agent wrote: its stderr, the state directory, the metrics file.
    let token_in_output = scan::files_under(&dir.join("out"))
        .iter()
        .any(|(_, bytes)| [SECRET, ROTATED].iter().any(|t| scan::contains(bytes, t)));
    let rss_kib = spread(samples, |s| s.rss_kib, RSS_TOLERANCE_KIB);
    let fds = spread(samples, |s| s.fds, FDS_TOLERANCE);
    let threads = spread(samples, |s| s.threads, 0);
    let pass = rss_kib.flat
        && fds.flat
        && threads.flat
        && !token_in_output
        && counts.heartbeats >= args.heartbeats;
    Ok(Report {
        heartbeats: counts.heartbeats,
        interval_ms: u64::try_from(args.interval.as_millis()).unwrap_or(u64::MAX),
        token_exchanges: counts.token_exchanges,
        outages: counts.outages,
        reloads: counts.reloads,
        rotations: counts.rotations,
        real_seconds,
        log_lines,
        token_in_output,
        exit_status,
        rss_kib,
        fds,
        threads,
        pass,
    })
}

fn spread(samples: &[Sample], value: impl Fn(&Sample) -> u64, tolerance: u64) -> Spread {
    Spread::of(&samples.iter().map(value).collect::<Vec<_>>(), tolerance)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(rss: &[u64]) -> Vec<Sample> {
        rss.iter()
            .map(|&rss_kib| Sample {
                heartbeats: 0,
                rss_kib,
                fds: 10,
                threads: 1,
            })
            .collect()
    }

    #[test]
    fn flat_is_the_late_median_within_tolerance_of_the_early_one() {
        let steady = samples(&[5000, 5100, 5000, 5050, 5000, 5100, 5000, 5050, 5000, 5100]);
        let spread_of = |s: &[Sample]| spread(s, |s| s.rss_kib, RSS_TOLERANCE_KIB);
        let flat = spread_of(&steady);
        assert!(flat.flat);
        assert_eq!((flat.first, flat.last, flat.max), (5000, 5100, 5100));
        let growing: Vec<u64> = (0..100).map(|i| 5000 + 10 * i).collect();
        let grows = spread_of(&samples(&growing));
        assert!(!grows.flat, "1 MiB of growth passed as flat");
        assert!(grows.growth > 256);
    }
}
