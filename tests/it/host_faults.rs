//! The real binary on a host that fails it: a read-only or full state directory,
//! and no name resolution. Each runs in namespaces of its own (`unshare`, as root,
//! which these tests need and fail without), so nothing of the machine changes and
//! no packet leaves: the mounts vanish with the process, and the name lookup runs
//! in a network namespace with no interface up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hostbeat_refplane::PlaneConfig;

use crate::binary::{Host, Process, eventually, plane};
use crate::support::{Row, SECRET, assert_no_token, files_under};

/// `unshare` with a mount namespace of its own, running `script` before the agent.
fn in_mount_namespace(script: &str) -> Vec<String> {
    [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-ec",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([format!("{script}\nexec \"$@\""), "sh".to_owned()])
    .collect()
}

/// The agent's state directory as the agent (in its own mount namespace) sees it.
fn seen_by(agent: &Process, dir: &Path) -> PathBuf {
    Path::new(&format!("/proc/{}/root", agent.pid())).join(dir.strip_prefix("/").unwrap())
}

fn count(text: &str, event: &str) -> usize {
    text.matches(&format!("event=\"{event}\"")).count()
}

/// Fails if the token is in the agent's output or state directory.
fn scan(row: &mut Row, agent: &Process, state: &Path) {
    let mut written = files_under(state);
    written.push(("the agent's output".into(), agent.text().into_bytes()));
    assert_no_token(&written, &[SECRET]);
    row.figure(
        "token in output",
        format!("none (output and {} state files)", written.len() - 1),
    );
}

#[tokio::test]
async fn a_read_only_state_directory_costs_nothing_but_a_warning() {
    let (plane, url) = plane(PlaneConfig::default()).await;
    let host = Host::new(&format!("HOSTBEAT_CLIENT_TOKEN={SECRET}\n"));
    let state = host.dir.path().join("state");
    let wrapper = in_mount_namespace(
        "mount --bind \"$HOSTBEAT_STATE_DIR\" \"$HOSTBEAT_STATE_DIR\"\n\
         mount -o remount,bind,ro \"$HOSTBEAT_STATE_DIR\"",
    );
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let vars = [
        ("HOSTBEAT_SERVER_URL", url.as_str()),
        ("HOSTBEAT_HEARTBEAT_INTERVAL", "1s"),
    ];
    let mut agent = Process::spawn(host.command_in(&wrapper, &vars));
    assert!(
        eventually(Duration::from_secs(20), || plane.heartbeats().len() >= 3).await,
        "{}",
        agent.text()
    );
    agent.signal("TERM");
    assert!(
        agent.wait(Duration::from_secs(10)).await.success(),
        "{}",
        agent.text()
    );
    let text = agent.text();
    assert_eq!(count(&text, "state_unwritable"), 1, "{text}");
    assert_eq!(count(&text, "status_unwritable"), 1, "{text}");
    assert!(text.contains("Read-only file system"), "{text}");
    assert_eq!(plane.heartbeats().last().unwrap().status(), "offline");
    assert!(
        files_under(&state).is_empty(),
        "wrote through a read-only mount"
    );

    // Writable again: the same agent id, by registration on the logical id.
    let agent_id = plane.heartbeats()[0].agent_id.clone();
    let mut again = Process::spawn(host.command(&vars));
    assert!(
        eventually(Duration::from_secs(20), || plane.heartbeats().len() >= 6).await,
        "{}",
        again.text()
    );
    again.signal("TERM");
    assert!(again.wait(Duration::from_secs(10)).await.success());
    assert!(plane.heartbeats().iter().all(|h| h.agent_id == agent_id));
    let mut row = Row::new("state-read-only");
    row.figure(
        "heartbeats accepted while read-only",
        plane.heartbeats().len() - 3,
    )
    .figure("log entries about it", 2)
    .figure("agent id after a restart", "the same");
    scan(&mut row, &agent, &state);
    row.done();
}

#[tokio::test]
async fn a_full_state_directory_is_written_again_once_there_is_room() {
    let (plane, url) = plane(PlaneConfig::default()).await;
    let host = Host::new(&format!("HOSTBEAT_CLIENT_TOKEN={SECRET}\n"));
    let state = host.dir.path().join("state");
    // A 64 KiB tmpfs, filled to the last block before the agent starts.
    let wrapper = in_mount_namespace(
        "mount -t tmpfs -o size=64k,mode=0700 hostbeat-test \"$HOSTBEAT_STATE_DIR\"\n\
         head -c 1M /dev/zero > \"$HOSTBEAT_STATE_DIR/filler\" 2>/dev/null || true",
    );
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let vars = [
        ("HOSTBEAT_SERVER_URL", url.as_str()),
        ("HOSTBEAT_HEARTBEAT_INTERVAL", "1s"),
    ];
    let mut agent = Process::spawn(host.command_in(&wrapper, &vars));
    assert!(
        eventually(Duration::from_secs(20), || plane.heartbeats().len() >= 2
            && count(&agent.text(), "state_unwritable") == 1)
        .await,
        "{}",
        agent.text()
    );
    let mounted = seen_by(&agent, &state);
    assert!(!mounted.join("state.json").exists());
    // Room again: the next accepted heartbeat saves the state.
    std::fs::remove_file(mounted.join("filler")).unwrap();
    let freed = plane.heartbeats().len();
    assert!(
        eventually(Duration::from_secs(20), || count(
            &agent.text(),
            "state_saved"
        ) == 1)
        .await,
        "{}",
        agent.text()
    );
    let saved = std::fs::read_to_string(mounted.join("state.json")).unwrap();
    let agent_id = plane.heartbeats()[0].agent_id.clone();
    assert!(saved.contains(&agent_id), "{saved}");
    let mut row = Row::new("state-full");
    row.figure("heartbeats accepted while full", freed)
        .figure(
            "saved after room was made",
            format!("at the next heartbeat, {} B", saved.len()),
        )
        .figure(
            "log entries about it",
            count(&agent.text(), "state_unwritable") + 1,
        );
    scan(&mut row, &agent, &mounted);
    agent.signal("TERM");
    assert!(
        agent.wait(Duration::from_secs(10)).await.success(),
        "{}",
        agent.text()
    );
    assert_eq!(
        count(&agent.text(), "state_unwritable"),
        1,
        "{}",
        agent.text()
    );
    row.done();
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_retried_and_said_once() {
    let host = Host::new(&format!("HOSTBEAT_CLIENT_TOKEN={SECRET}\n"));
    let state = host.dir.path().join("state");
    // No interface up: the resolver's query cannot leave the namespace.
    let wrapper = ["unshare", "--net"];
    let vars = [
        (
            "HOSTBEAT_SERVER_URL",
            "https://control.hostbeat-test.invalid:8443",
        ),
        ("HOSTBEAT_LOG_LEVEL", "debug"),
        // Retries are paced by the interval: a second apart, not 30.
        ("HOSTBEAT_HEARTBEAT_INTERVAL", "1s"),
        ("HOSTBEAT_BACKOFF_CAP", "2s"),
    ];
    let mut agent = Process::spawn(host.command_in(&wrapper, &vars));
    assert!(
        eventually(Duration::from_secs(20), || agent
            .text()
            .matches("reason=\"dns\"")
            .count()
            >= 4)
        .await,
        "{}",
        agent.text()
    );
    let stopping = tokio::time::Instant::now();
    agent.signal("TERM");
    assert!(
        agent.wait(Duration::from_secs(10)).await.success(),
        "{}",
        agent.text()
    );
    let stopped = stopping.elapsed();
    let text = agent.text();
    let logged: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("event=\"heartbeat_failed\""))
        .collect();
    assert_eq!(logged.len(), 1, "{text}");
    assert!(
        logged[0].contains("reason=\"dns\"") && logged[0].contains("control.hostbeat-test.invalid"),
        "{}",
        logged[0]
    );
    assert!(
        stopped < Duration::from_secs(2),
        "stopped after {stopped:?}"
    );
    let mut row = Row::new("dns-failure");
    row.figure("log entries at info", logged.len())
        .figure("attempts (debug)", text.matches("reason=\"dns\"").count())
        .figure("stopped after", format!("{} ms", stopped.as_millis()));
    scan(&mut row, &agent, &state);
    row.done();
}
