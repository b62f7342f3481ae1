//! What the agent tells the host about itself, besides the journal: the status file
//! that `hostbeat status` reads (`state_dir/status.json`) and, when configured, a
//! Prometheus textfile for node_exporter.
//!
//! The heartbeat loop builds a [`Snapshot`] at every state change and every attempt
//! and hands it to the [`Reporter`], which replaces both files whole (never half of
//! one for a reader). Neither holds a secret. A file that cannot be written is
//! warned about once per stretch, never fatal: the heartbeats matter more.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::atomic_file::{self, Directory, Durability};

pub mod liveness;
pub mod metrics;
pub mod status_file;

/// The status file's name in the state directory.
pub const STATUS_FILE: &str = "status.json";

/// The format of the status file; a reader refuses a newer one.
pub const STATUS_FORMAT: u32 = 1;

/// The agent's state, as the status file and the metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Started, no heartbeat answered yet.
    Starting,
    /// The last heartbeat was accepted.
    Online,
    /// The last attempt failed for a transient reason; retrying on the backoff.
    BackingOff,
    /// The credential or the client was refused; retrying on the auth schedule.
    AuthFailure,
    /// The daemon stopped (after its goodbye).
    Stopped,
}

impl AgentState {
    /// Every state, for the metrics' one-per-state series.
    pub const ALL: [Self; 5] = [
        Self::Starting,
        Self::Online,
        Self::BackingOff,
        Self::AuthFailure,
        Self::Stopped,
    ];

    /// The name in the status file and the metrics' `state` label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Online => "online",
            Self::BackingOff => "backing_off",
            Self::AuthFailure => "auth_failure",
            Self::Stopped => "stopped",
        }
    }

    /// For a person: "backing off".
    pub fn describe(self) -> &'static str {
        match self {
            Self::BackingOff => "backing off",
            Self::AuthFailure => "auth failure",
            other => other.name(),
        }
    }
}

/// The last accepted heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Success {
    /// When it was accepted.
    #[serde(with = "timestamp")]
    pub at: SystemTime,
    /// Its sequence number.
    pub seq: u64,
}

/// The last failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// When it failed.
    #[serde(with = "timestamp")]
    pub at: SystemTime,
    /// Its class, as `HOSTBEAT_REASON` names it (`client_inactive`, `connect`, ...).
    pub reason: String,
    /// What the class means, for a person.
    pub description: String,
}

/// A notice from the cloud, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeReport {
    /// Which cloud said it (a status file written before other clouds were known
    /// says nothing, and meant EC2).
    #[serde(default)]
    pub source: crate::cloud::Cloud,
    /// Whether the host goes (a status file written before this was kept says
    /// nothing; only the metrics, which the daemon writes itself, read it).
    #[serde(default)]
    pub kind: crate::cloud::NoticeKind,
    /// What the cloud will do (`terminate`, `preempt`, `rebalance`, ...).
    pub action: String,
    /// When, as the service wrote it (RFC 3339).
    pub time: String,
    /// When hostbeat saw it.
    #[serde(with = "timestamp")]
    pub noticed_at: SystemTime,
    /// Whether a heartbeat carrying it was accepted by the control plane.
    pub delivered: bool,
}

/// What happened since the daemon started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Heartbeats accepted.
    pub heartbeats_accepted: u64,
    /// Heartbeat attempts that failed.
    pub heartbeats_failed: u64,
    /// Failed attempts whose credential or client was refused, by reason.
    pub auth_failures: BTreeMap<String, u64>,
}

/// The agent at one moment: the status file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`STATUS_FORMAT`].
    pub format: u32,
    /// The daemon's process id, to tell a running daemon from a stale file.
    pub pid: u32,
    /// When that process started, in clock ticks since boot (field 22 of
    /// `/proc/PID/stat`), so that the pid is not mistaken for another process's
    /// (absent in files of older versions).
    #[serde(default, rename = "started_ticks")]
    pub started: Option<liveness::ProcessStart>,
    /// The daemon's version.
    pub version: String,
    /// When this snapshot was written.
    #[serde(with = "timestamp")]
    pub written_at: SystemTime,
    /// The state.
    pub state: AgentState,
    /// The line `systemctl status` shows.
    pub status_line: String,
    /// The control plane in use.
    pub server: String,
    /// The agent id the control plane assigned, once registered.
    pub agent_id: Option<String>,
    /// The logical agent id this host registers with.
    pub logical_agent_id: String,
    /// The last accepted heartbeat.
    pub last_success: Option<Success>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u64,
    /// The last failed attempt (also after a recovery).
    pub last_failure: Option<Failure>,
    /// When the access token in use expires (exchange mode).
    #[serde(with = "timestamp::optional")]
    pub token_expires_at: Option<SystemTime>,
    /// When the next attempt is due.
    #[serde(with = "timestamp::optional")]
    pub next_attempt_at: Option<SystemTime>,
    /// The cloud instance, when its metadata service told (`cloud`).
    #[serde(default)]
    pub instance: Option<crate::api::wire::Instance>,
    /// The notice that this spot instance is about to be reclaimed, if any.
    #[serde(default)]
    pub interruption: Option<NoticeReport>,
    /// The last notice of something the instance survives (EC2's recommendation
    /// to move work off it, a live migration, a reboot), if any.
    #[serde(default)]
    #[serde(alias = "rebalance")]
    pub advisory: Option<NoticeReport>,
    /// Totals since the daemon started.
    pub counters: Counters,
}

/// Writes the status file and the metrics file.
#[derive(Debug)]
pub struct Reporter {
    status_path: PathBuf,
    metrics_path: Option<PathBuf>,
    /// Whether a write already failed (warned once until one succeeds).
    status_unwritable: bool,
    metrics_unwritable: bool,
    /// This process's start, read once.
    started: Option<liveness::ProcessStart>,
}

impl Reporter {
    /// A reporter writing `state_dir/status.json` and, if given, the metrics file.
    pub fn new(state_dir: &Path, metrics_path: Option<PathBuf>) -> Self {
        Self {
            status_path: state_dir.join(STATUS_FILE),
            metrics_path,
            status_unwritable: false,
            metrics_unwritable: false,
            started: liveness::ProcessStart::of_self(),
        }
    }

    /// When this process started, for [`Snapshot::started`].
    pub fn process_start(&self) -> Option<liveness::ProcessStart> {
        self.started
    }

    /// Follows a reload: the metrics file may have moved (the state directory
    /// changes only at a restart).
    pub fn set_metrics_path(&mut self, path: Option<PathBuf>) {
        if path != self.metrics_path {
            self.metrics_path = path;
            self.metrics_unwritable = false;
        }
    }

    /// Replaces both files with `snapshot`.
    pub fn publish(&mut self, snapshot: &Snapshot) {
        let json = serde_json::to_string_pretty(snapshot).expect("a snapshot serializes");
        // The last line of defence: no secret reaches the file, whatever a field
        // picked up on the way.
        let json = format!("{}\n", crate::redact::redact(&json)).into_bytes();
        // Group-readable: `hostbeat status` works for the hostbeat group.
        let written = atomic_file::replace(
            &self.status_path,
            &json,
            0o640,
            Durability::Replaceable,
            Directory::Create,
        );
        warn_once(
            &mut self.status_unwritable,
            written,
            "status_unwritable",
            &self.status_path,
        );
        if let Some(path) = &self.metrics_path {
            // World-readable: node_exporter runs as its own user; nothing here is secret.
            let text = crate::redact::redact(&metrics::render(snapshot)).into_owned();
            let written = atomic_file::replace(
                path,
                text.as_bytes(),
                0o644,
                Durability::Replaceable,
                Directory::MustExist,
            );
            warn_once(
                &mut self.metrics_unwritable,
                written,
                "metrics_unwritable",
                path,
            );
        }
    }
}

fn warn_once(warned: &mut bool, written: std::io::Result<()>, event: &'static str, path: &Path) {
    match written {
        Ok(()) => *warned = false,
        Err(e) if !*warned => {
            *warned = true;
            tracing::warn!(
                event,
                "cannot write {} ({e}); heartbeats carry on, and this is said again only after it worked once",
                path.display()
            );
        }
        Err(_) => {}
    }
}

/// RFC 3339 timestamps in UTC (`2026-11-24T12:00:01Z`), as the journal and the
/// control plane write them.
pub mod timestamp {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    /// `2026-11-24T12:00:01Z`: the one way this crate writes a time.
    pub fn rfc3339(time: SystemTime) -> String {
        humantime::format_rfc3339_seconds(time).to_string()
    }

    /// Serializes a time as RFC 3339.
    pub fn serialize<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&rfc3339(*time))
    }

    /// Parses an RFC 3339 time.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom)
    }

    /// The same for an optional time (`null` when absent).
    pub mod optional {
        use std::time::SystemTime;

        use serde::{Deserialize, Deserializer, Serializer};

        /// Serializes an optional time.
        #[allow(clippy::ref_option)] // serde's `with` passes a reference
        pub fn serialize<S: Serializer>(
            time: &Option<SystemTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match time {
                Some(time) => super::serialize(time, s),
                None => s.serialize_none(),
            }
        }

        /// Parses an optional time.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<SystemTime>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|text| humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_file_creates_its_directory_like_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("not-yet");
        let mut reporter = Reporter::new(&state_dir, None);
        let snapshot = Snapshot {
            format: STATUS_FORMAT,
            pid: 1,
            started: None,
            version: "0".into(),
            written_at: SystemTime::now(),
            state: AgentState::Starting,
            status_line: "starting".into(),
            server: "https://cp.example.com/".into(),
            agent_id: None,
            logical_agent_id: "l".into(),
            last_success: None,
            consecutive_failures: 0,
            last_failure: None,
            token_expires_at: None,
            next_attempt_at: None,
            instance: None,
            interruption: None,
            advisory: None,
            counters: Counters::default(),
        };
        reporter.publish(&snapshot);
        assert_eq!(
            status_file::read(&state_dir).unwrap(),
            snapshot_rounded(&snapshot)
        );
        assert!(!reporter.status_unwritable);
    }

    /// The file keeps whole seconds.
    fn snapshot_rounded(snapshot: &Snapshot) -> Snapshot {
        let secs = snapshot
            .written_at
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        Snapshot {
            written_at: std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
            ..snapshot.clone()
        }
    }
}
