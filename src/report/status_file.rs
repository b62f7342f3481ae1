//! Reading the status file back, for `hostbeat status`: whether the daemon that
//! wrote it still runs, and the file for a person ("last heartbeat 12 s ago") or as
//! JSON for scripts. Reads files only; asks the daemon nothing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::timestamp::rfc3339;
use super::{STATUS_FILE, STATUS_FORMAT, Snapshot};

/// How long past its due attempt a running daemon may leave the file unchanged
/// before it is called stale: longer than any one attempt (a token exchange, a
/// registration and a heartbeat, each bounded by `request_timeout`).
pub const STALE_AFTER: Duration = Duration::from_secs(120);

/// Why the status file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No file: the daemon never ran with this state directory.
    #[error(
        "no status file at {0}: hostbeat has not run with this state directory (start it: systemctl start hostbeat; another directory: --state-dir)"
    )]
    Missing(PathBuf),
    /// The file exists but cannot be read (permissions, above all).
    #[error(
        "cannot read {0}: {1} (the file is readable by root and the hostbeat group: sudo, or usermod -aG hostbeat $USER)"
    )]
    Unreadable(PathBuf, std::io::Error),
    /// The file is not a status file this version understands.
    #[error("{0} is not a status file this hostbeat understands: {1}")]
    Invalid(PathBuf, String),
}

/// The status file of `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(STATUS_FILE)
}

/// Reads and parses the status file of `state_dir`.
pub fn read(state_dir: &Path) -> Result<Snapshot, ReadError> {
    let path = path(state_dir);
    let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ReadError::Missing(path.clone()),
        _ => ReadError::Unreadable(path.clone(), e),
    })?;
    let snapshot: Snapshot = serde_json::from_slice(&bytes)
        .map_err(|e| ReadError::Invalid(path.clone(), e.to_string()))?;
    if snapshot.format > STATUS_FORMAT {
        return Err(ReadError::Invalid(
            path,
            format!(
                "format {} is newer than this hostbeat's {STATUS_FORMAT}",
                snapshot.format
            ),
        ));
    }
    Ok(snapshot)
}

/// Whether the daemon that wrote a snapshot is there to keep it current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    /// Running, and the file is current.
    Running,
    /// Stopped cleanly (the file says so).
    Stopped,
    /// Gone without saying so (killed, crashed, host rebooted).
    NotRunning,
    /// Running, but the file is older than it should be.
    Stale,
}

impl Daemon {
    /// The name in `hostbeat status --json`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::NotRunning => "not_running",
            Self::Stale => "stale",
        }
    }
}

/// Judges a snapshot at `now`; `alive(pid, started)` says whether the process that
/// wrote it still runs ([`super::liveness::runs`]).
pub fn daemon(
    snapshot: &Snapshot,
    now: SystemTime,
    alive: impl Fn(u32, Option<super::liveness::ProcessStart>) -> bool,
) -> Daemon {
    if snapshot.state == super::AgentState::Stopped {
        return Daemon::Stopped;
    }
    if !alive(snapshot.pid, snapshot.started) {
        return Daemon::NotRunning;
    }
    let due = snapshot.next_attempt_at.unwrap_or(snapshot.written_at);
    if now.duration_since(due).unwrap_or_default() > STALE_AFTER {
        Daemon::Stale
    } else {
        Daemon::Running
    }
}

/// The status for a person.
pub fn render(snapshot: &Snapshot, daemon: Daemon, file: &Path, now: SystemTime) -> String {
    let mut out = String::new();
    let headline = match daemon {
        Daemon::Running => format!("{} (pid {})", snapshot.state.describe(), snapshot.pid),
        Daemon::Stopped => format!("stopped {}", ago(now, snapshot.written_at)),
        Daemon::NotRunning => format!(
            "not running: pid {} is gone and did not stop cleanly (killed, crashed or rebooted); as it last wrote: {}",
            snapshot.pid,
            snapshot.state.describe()
        ),
        Daemon::Stale => format!(
            "stale: pid {} runs but has not updated this file since {} (stuck? journalctl -u hostbeat); as it last wrote: {}",
            snapshot.pid,
            ago(now, snapshot.written_at),
            snapshot.state.describe()
        ),
    };
    let _ = writeln!(out, "hostbeat: {headline}");
    let mut row = |label: &str, value: String| {
        let _ = writeln!(out, "  {label:<13}{value}");
    };
    row("status", snapshot.status_line.clone());
    row(
        "agent",
        format!(
            "{} (logical id {})",
            snapshot.agent_id.as_deref().unwrap_or("not registered yet"),
            snapshot.logical_agent_id
        ),
    );
    row("server", snapshot.server.clone());
    row(
        "last success",
        snapshot.last_success.as_ref().map_or_else(
            || "none since the start".to_owned(),
            |s| format!("{} (seq {}, {})", ago(now, s.at), s.seq, rfc3339(s.at)),
        ),
    );
    row(
        "failures",
        match &snapshot.last_failure {
            None => format!(
                "{} in a row; none since the start",
                snapshot.consecutive_failures
            ),
            Some(f) => format!(
                "{} in a row; last {}: {} ({})",
                snapshot.consecutive_failures,
                ago(now, f.at),
                f.reason,
                f.description
            ),
        },
    );
    if let Some(at) = snapshot.token_expires_at {
        let verb = if at > now { "expires" } else { "expired" };
        row("token", format!("access token {verb} {}", ago(now, at)));
    }
    if daemon == Daemon::Running
        && let Some(at) = snapshot.next_attempt_at
    {
        let when = ago(now, at);
        row(
            "next attempt",
            if when.ends_with(" ago") {
                format!("was due {when}")
            } else {
                when
            },
        );
    }
    for (label, value) in cloud_rows(snapshot, now) {
        row(label, value);
    }
    let counters = &snapshot.counters;
    row(
        "since start",
        format!(
            "{} accepted, {} failed",
            counters.heartbeats_accepted, counters.heartbeats_failed
        ),
    );
    row(
        "file",
        format!(
            "{}, written {} by hostbeat {}",
            file.display(),
            ago(now, snapshot.written_at),
            snapshot.version
        ),
    );
    out
}

/// The snapshot as JSON for scripts, with the verdict on the daemon and the file.
pub fn to_json(snapshot: &Snapshot, daemon: Daemon, file: &Path) -> serde_json::Value {
    let mut value = serde_json::to_value(snapshot).expect("a snapshot serializes");
    if let Some(object) = value.as_object_mut() {
        object.insert("daemon".into(), daemon.name().into());
        object.insert("status_file".into(), file.display().to_string().into());
    }
    value
}

/// "12s ago", "in 3m 10s", "now".
pub fn ago(now: SystemTime, then: SystemTime) -> String {
    let (span, past) = match now.duration_since(then) {
        Ok(span) => (span, true),
        Err(e) => (e.duration(), false),
    };
    let span = Duration::from_secs(span.as_secs());
    if span.is_zero() {
        return "now".to_owned();
    }
    let text = crate::duration::show(span);
    if past {
        format!("{text} ago")
    } else {
        format!("in {text}")
    }
}

/// The instance and its notices, when the metadata service told of them.
fn cloud_rows(snapshot: &Snapshot, now: SystemTime) -> Vec<(&'static str, String)> {
    let mut rows = Vec::new();
    if let Some(instance) = &snapshot.instance {
        let facts: Vec<&str> = [
            &instance.instance_type,
            &instance.lifecycle,
            &instance.availability_zone,
        ]
        .into_iter()
        .filter_map(|f| f.as_deref())
        .collect();
        rows.push((
            "instance",
            format!(
                "{} on {} ({})",
                instance.id,
                instance.cloud.title(),
                facts.join(", ")
            ),
        ));
    }
    for notice in [&snapshot.interruption, &snapshot.advisory]
        .into_iter()
        .flatten()
    {
        let delivered = if notice.delivered {
            "the control plane has it"
        } else {
            "not delivered to the control plane yet"
        };
        let label = match notice.kind {
            crate::cloud::NoticeKind::Interruption => "interruption",
            crate::cloud::NoticeKind::Rebalance => "rebalance",
            crate::cloud::NoticeKind::Maintenance => "maintenance",
        };
        // The deadline as a person needs it at 3 a.m.: how long is left.
        let left = humantime::parse_rfc3339_weak(&notice.time)
            .map_or_else(|_| "unreadable".to_owned(), |at| ago(now, at));
        rows.push((
            label,
            format!(
                "{} {} at {} ({left}; noticed {}; {delivered})",
                notice.source.title(),
                notice.action,
                notice.time,
                ago(now, notice.noticed_at)
            ),
        ));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{AgentState, Counters};

    fn snapshot(state: AgentState, written_at: SystemTime) -> Snapshot {
        Snapshot {
            format: STATUS_FORMAT,
            pid: 4242,
            started: None,
            version: "0.1.0".into(),
            written_at,
            state,
            status_line: "online".into(),
            server: "https://cp.example.com/".into(),
            agent_id: Some("agt-1".into()),
            logical_agent_id: "abc".into(),
            last_success: None,
            consecutive_failures: 0,
            last_failure: None,
            token_expires_at: None,
            next_attempt_at: Some(written_at + Duration::from_secs(30)),
            instance: None,
            interruption: None,
            advisory: None,
            counters: Counters::default(),
        }
    }

    #[test]
    fn a_daemon_is_running_stopped_gone_or_stale() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let online = snapshot(AgentState::Online, t0);
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(daemon(&online, at(10), |_, _| true), Daemon::Running);
        assert_eq!(daemon(&online, at(30 + 120), |_, _| true), Daemon::Running);
        assert_eq!(daemon(&online, at(30 + 121), |_, _| true), Daemon::Stale);
        assert_eq!(daemon(&online, at(10), |_, _| false), Daemon::NotRunning);
        let stopped = snapshot(AgentState::Stopped, t0);
        assert_eq!(daemon(&stopped, at(10), |_, _| false), Daemon::Stopped);
    }

    #[test]
    fn a_time_in_the_past_reads_as_past() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut online = snapshot(AgentState::Online, t0);
        online.token_expires_at = Some(t0 - Duration::from_secs(12));
        online.next_attempt_at = Some(t0 - Duration::from_secs(5));
        let text = render(&online, Daemon::Running, Path::new("/s"), t0);
        assert!(text.contains("access token expired 12s ago"), "{text}");
        assert!(text.contains("next attempt was due 5s ago"), "{text}");
        online.token_expires_at = Some(t0 + Duration::from_secs(60));
        let text = render(&online, Daemon::Running, Path::new("/s"), t0);
        assert!(text.contains("access token expires in 1m"), "{text}");
    }

    #[test]
    fn times_read_like_a_person_says_them() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let s = Duration::from_secs;
        assert_eq!(ago(t0 + s(12), t0), "12s ago");
        assert_eq!(ago(t0, t0 + s(18)), "in 18s");
        assert_eq!(ago(t0 + s(190), t0), "3m 10s ago");
        assert_eq!(ago(t0 + s(7 * 3600 + 190), t0), "7h 3m ago");
        assert_eq!(ago(t0, t0), "now");
    }

    #[test]
    fn a_newer_format_or_garbage_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(read(dir.path()), Err(ReadError::Missing(_))));
        std::fs::write(path(dir.path()), b"{\"format\": 1").unwrap();
        let error = read(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("status.json is not a status file"),
            "{error}"
        );
        let mut newer =
            serde_json::to_value(snapshot(AgentState::Online, SystemTime::now())).unwrap();
        newer["format"] = 99.into();
        std::fs::write(path(dir.path()), newer.to_string()).unwrap();
        let error = read(dir.path()).unwrap_err().to_string();
        assert!(error.contains("format 99 is newer"), "{error}");
    }
}
