//! The status file, `hostbeat status`, and the Prometheus textfile, while the agent
//! runs through an auth failure and a recovery, and after it stops.

// Metric values here are small integers the agent wrote; compared exactly.
#![allow(clippy::float_cmp)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use hostbeat::report::status_file::{self, Daemon};
use hostbeat::report::{AgentState, Snapshot};
use hostbeat_refplane::PlaneConfig;
use prometheus_parse::{Scrape, Value};

use crate::binary::{Host, Process, eventually, plane};
use crate::support::{
    CLIENT_ID, SECRET, World, assert_no_token, files_under, mins, until, with_real_time_limit,
};

#[test]
fn status_file_and_metrics_follow_a_failure_a_recovery_and_the_stop() {
    with_real_time_limit(Duration::from_secs(60), || async {
        let world = World::start().await;
        let metrics = world.dir.path().join("hostbeat.prom");
        let inputs = world
            .inputs()
            .var("HOSTBEAT_METRICS_TEXTFILE", metrics.to_str().unwrap())
            .var("HOSTBEAT_AUTH_BACKOFF_CAP", "1m");
        let agent = world.spawn_online(inputs).await;
        let state_dir = world.state_dir();

        let online = assert_online(&state_dir, &metrics).await;
        assert_auth_failure_counted(&world, &state_dir, &metrics).await;

        // Reactivated: online again; the last failure is still on record.
        world.plane.activate(CLIENT_ID);
        let recovered = wait_for_state(&state_dir, AgentState::Online).await;
        assert_eq!(recovered.consecutive_failures, 0);
        assert_eq!(recovered.last_failure.unwrap().reason, "client_inactive");
        assert!(recovered.counters.heartbeats_accepted > online.counters.heartbeats_accepted);
        assert_eq!(gauge(&self::scrape(&metrics), "hostbeat_up", &[]), 1.0);

        // Stopped: the file says so, whatever runs under its pid.
        agent.stop().await;
        let stopped = status_file::read(&state_dir).unwrap();
        assert_eq!(stopped.state, AgentState::Stopped);
        assert_eq!(
            status_file::daemon(&stopped, std::time::SystemTime::now(), |_, _| true),
            Daemon::Stopped
        );
        let scrape = self::scrape(&metrics);
        assert_eq!(gauge(&scrape, "hostbeat_up", &[]), 0.0);
        assert_eq!(
            gauge(&scrape, "hostbeat_state", &[("state", "stopped")]),
            1.0
        );

        let mut written = files_under(&state_dir);
        written.push((metrics.clone(), std::fs::read(&metrics).unwrap()));
        assert_no_token(&written, &[SECRET]);
    });
}

/// Online: the status file and the metrics agree, zero series included.
async fn assert_online(state_dir: &Path, metrics: &Path) -> Snapshot {
    // Online.
    let online = wait_for_state(state_dir, AgentState::Online).await;
    assert_eq!(online.consecutive_failures, 0);
    assert!(online.agent_id.is_some() && online.last_success.is_some());
    assert!(online.next_attempt_at.unwrap() > online.written_at);
    assert_eq!(online.pid, std::process::id());
    let scrape = scrape(metrics);
    assert_eq!(gauge(&scrape, "hostbeat_up", &[]), 1.0);
    assert_eq!(
        gauge(&scrape, "hostbeat_state", &[("state", "online")]),
        1.0
    );
    assert_eq!(
        gauge(&scrape, "hostbeat_state", &[("state", "auth_failure")]),
        0.0
    );
    assert!(
        counter(
            &scrape,
            "hostbeat_heartbeats_total",
            &[("result", "accepted")]
        ) >= 1.0
    );
    let success = gauge(&scrape, "hostbeat_last_success_timestamp_seconds", &[]);
    let expected = online.last_success.as_ref().unwrap().at;
    let expected = expected
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((success - expected).abs() < 1.0, "{success} vs {expected}");
    // Zero counters exist before their first increment, so rate() sees them.
    assert_eq!(
        counter(
            &scrape,
            "hostbeat_auth_failures_total",
            &[("reason", "client_inactive")]
        ),
        0.0
    );
    assert_eq!(mode(&status_file::path(state_dir)), 0o640);
    assert_eq!(mode(metrics), 0o644);
    online
}

/// The client deactivated: auth failure, counted by reason.
async fn assert_auth_failure_counted(world: &World, state_dir: &Path, metrics: &Path) {
    world.plane.deactivate(CLIENT_ID);
    let failing = wait_for_state(state_dir, AgentState::AuthFailure).await;
    assert!(failing.consecutive_failures >= 1);
    let failure = failing.last_failure.as_ref().unwrap();
    assert_eq!(failure.reason, "client_inactive");
    assert!(
        failing.status_line.starts_with("auth failure"),
        "{}",
        failing.status_line
    );
    let scrape = scrape(metrics);
    assert_eq!(gauge(&scrape, "hostbeat_up", &[]), 0.0);
    assert_eq!(
        gauge(&scrape, "hostbeat_state", &[("state", "auth_failure")]),
        1.0
    );
    assert!(
        counter(
            &scrape,
            "hostbeat_auth_failures_total",
            &[("reason", "client_inactive")]
        ) >= 1.0
    );
    assert!(
        counter(
            &scrape,
            "hostbeat_heartbeats_total",
            &[("result", "failed")]
        ) >= 1.0
    );
    assert!(gauge(&scrape, "hostbeat_consecutive_failures", &[]) >= 1.0);
}

/// The real binary's `hostbeat status`: running (as a renamed copy: liveness is the
/// process, not its name), killed, never ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostbeat_status_says_running_not_running_or_unknown_with_its_exit_status() {
    let (plane, url) = plane(PlaneConfig::default()).await;
    let host = Host::new(&format!("HOSTBEAT_CLIENT_TOKEN={SECRET}\n"));
    let state_dir = host.dir.path().join("state");
    let renamed = host.dir.path().join("fleet-agent");
    std::fs::copy(env!("CARGO_BIN_EXE_hostbeat"), &renamed).unwrap();
    let mut agent = Process::spawn(host.program_in(
        &[],
        &renamed,
        &["run"],
        &[
            ("HOSTBEAT_SERVER_URL", &url),
            ("HOSTBEAT_HEARTBEAT_INTERVAL", "1s"),
        ],
    ));
    assert!(
        eventually(Duration::from_secs(20), || plane.heartbeats().len() >= 2).await,
        "{}",
        agent.text()
    );
    let pid = agent.pid();

    let (code, text) = hostbeat_status(&state_dir, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.starts_with(&format!("hostbeat: online (pid {pid})")),
        "{text}"
    );
    for line in ["last success", "(seq ", "next attempt", "agent        "] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }
    let (code, json) = hostbeat_status(&state_dir, &["--json"]);
    assert_eq!(code, 0, "{json}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["daemon"], "running");
    assert_eq!(json["state"], "online");
    assert_eq!(json["pid"], pid);

    // Killed without a goodbye: the file still says online, the command knows better.
    agent.signal("KILL");
    agent.wait(Duration::from_secs(10)).await;
    let (code, text) = hostbeat_status(&state_dir, &[]);
    assert_eq!(code, 3, "{text}");
    assert!(
        text.starts_with(&format!("hostbeat: not running: pid {pid} is gone")),
        "{text}"
    );
    let (_, json) = hostbeat_status(&state_dir, &["--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&json).unwrap()["daemon"],
        "not_running"
    );

    // Never ran here: said in words, and in JSON for scripts.
    let empty = tempfile::tempdir().unwrap();
    let (code, text) = hostbeat_status(empty.path(), &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("no status file at"), "{text}");
    let output = status_command(
        &["--state-dir", empty.path().to_str().unwrap(), "--json"],
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["daemon"], "never_ran");
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("no status file at")
    );
}

/// `hostbeat status` finds the state directory named by `HOSTBEAT_STATE_DIR` even
/// when the rest of the configuration does not load (no server, no token).
#[test]
fn status_honours_the_state_directory_when_the_configuration_does_not_load() {
    let empty = tempfile::tempdir().unwrap();
    let dir = empty.path().join("elsewhere");
    let output = status_command(
        &["--json"],
        &[("HOSTBEAT_STATE_DIR", dir.to_str().unwrap())],
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        json["status_file"],
        dir.join("status.json").display().to_string()
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("does not load") && stderr.contains("elsewhere"),
        "{stderr}"
    );
}

/// `hostbeat check | head -1` and friends: a reader that goes away is no panic
/// (the release build would abort with status 134); each command keeps its own exit
/// status.
#[test]
fn no_subcommand_panics_on_a_closed_pipe() {
    let empty = tempfile::tempdir().unwrap();
    let state = empty.path().to_str().unwrap();
    for args in [
        &["check", "--json"][..],
        &["check"],
        &["status", "--json", "--state-dir", state],
        &["--help"],
    ] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hostbeat"))
            .args(args)
            .env_clear()
            .env("HOSTBEAT_ENV_FILE", empty.path().join("none.env"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Close the reading end before the command writes.
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.code().is_some() && !stderr.contains("panicked"),
            "{args:?}: {:?} {stderr}",
            output.status
        );
    }
}

/// `hostbeat ARGS` with only `vars` in its environment.
fn status_command(args: &[&str], vars: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_hostbeat"))
        .arg("status")
        .args(args)
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .unwrap()
}

/// `hostbeat status --state-dir DIR ARGS`: exit code, stdout and stderr.
fn hostbeat_status(state_dir: &Path, args: &[&str]) -> (i32, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hostbeat"))
        .arg("status")
        .arg("--state-dir")
        .arg(state_dir)
        .args(args)
        .env_clear()
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

/// Waits (virtual time) until the status file shows `state`.
async fn wait_for_state(state_dir: &Path, state: AgentState) -> Snapshot {
    let mut last = None;
    let reached = until(mins(5), || {
        last = status_file::read(state_dir).ok();
        last.as_ref().is_some_and(|s| s.state == state)
    })
    .await;
    assert!(reached, "never {state:?}; last: {last:#?}");
    last.unwrap()
}

/// The metrics file, parsed as Prometheus parses the text format.
pub(crate) fn scrape(path: &Path) -> Scrape {
    let text = std::fs::read_to_string(path).unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

fn sample<'a>(scrape: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> &'a Value {
    &scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no {name}{labels:?} in {:#?}", scrape.samples))
        .value
}

pub(crate) fn gauge(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    match sample(scrape, name, labels) {
        Value::Gauge(v) => *v,
        other => panic!("{name} is not a gauge: {other:?}"),
    }
}

fn counter(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    match sample(scrape, name, labels) {
        Value::Counter(v) => *v,
        other => panic!("{name} is not a counter: {other:?}"),
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}
