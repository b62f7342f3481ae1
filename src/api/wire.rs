//! The JSON bodies of protocol.md section 2, as sent and as expected back.

use serde::{Deserialize, Serialize};

/// `POST register`.
#[derive(Debug, Clone, Serialize)]
pub struct RegisterRequest {
    /// Stable across restarts and reinstalls.
    pub logical_agent_id: String,
    /// The host name.
    pub hostname: String,
    /// hostbeat's version.
    pub agent_version: &'static str,
    /// Cloud instance facts, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<Instance>,
}

impl RegisterRequest {
    /// This host's registration, as this version of hostbeat.
    pub fn new(logical_agent_id: String, hostname: String) -> Self {
        Self {
            logical_agent_id,
            hostname,
            agent_version: env!("CARGO_PKG_VERSION"),
            instance: None,
        }
    }
}

/// Cloud instance facts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Which cloud (`ec2`, `gcp`, `azure`); a status file written before other
    /// clouds were known says nothing, and meant EC2.
    #[serde(default)]
    pub cloud: crate::cloud::Cloud,
    /// The instance id.
    pub id: String,
    /// The instance's name, where the cloud gives one (Google Cloud, Azure).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    /// The instance type.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// The availability zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// `spot` or `on-demand`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<String>,
}

impl Instance {
    /// For a person: "4520031799277581759 (spot-7; e2-standard-4, europe-west4-a,
    /// spot)".
    pub fn described(&self) -> String {
        let facts: Vec<&str> = [
            &self.instance_type,
            &self.availability_zone,
            &self.lifecycle,
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
        let name = self
            .name
            .as_ref()
            .map(|n| format!("{n}; "))
            .unwrap_or_default();
        format!("{} ({name}{})", self.id, facts.join(", "))
    }
}

/// The answer to `register`.
#[derive(Debug, Clone, Deserialize)]
pub struct RegisterAnswer {
    /// The id to use in heartbeat paths.
    pub agent_id: String,
}

/// What a heartbeat says about the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Running.
    Online,
    /// About to be reclaimed.
    Terminating,
    /// Stopping for good.
    Offline,
}

/// A notice from the cloud (protocol.md section 2): which cloud, what it will do
/// (`terminate`, `preempt`, ..., or `rebalance` for EC2's recommendation), and
/// when (RFC 3339: the deadline, or when the recommendation was made).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterruptionNotice {
    /// `ec2`, `gcp` or `azure`.
    pub source: crate::cloud::Cloud,
    /// What the cloud will do.
    pub action: String,
    /// When.
    pub time: String,
}

/// `POST heartbeat`.
#[derive(Debug, Clone, Serialize)]
pub struct HeartbeatRequest {
    /// The host's state.
    pub status: Status,
    /// Increases with every heartbeat of this process.
    pub seq: u64,
    /// RFC 3339, wall clock.
    pub sent_at: String,
    /// Seconds since the agent started.
    pub uptime_s: u64,
    /// The first time, RFC 3339, that a heartbeat failed in the stretch just ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreachable_since: Option<String>,
    /// How many heartbeats that stretch missed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missed: Option<u64>,
    /// A notice from the instance metadata service, until a heartbeat carrying it
    /// is accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interruption: Option<InterruptionNotice>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Deserialize)]
pub struct HeartbeatAnswer {
    /// `false` is a protocol error.
    #[serde(default)]
    pub success: Option<bool>,
    /// The server's wish for the next interval, in seconds.
    #[serde(default)]
    pub next_heartbeat_in: Option<f64>,
}

/// The answer to `validate`.
#[derive(Debug, Clone, Deserialize)]
pub struct ValidateAnswer {
    /// Whether the credential is valid.
    pub valid: bool,
    /// The client's id.
    #[serde(default)]
    pub client_id: Option<String>,
    /// The client's name.
    #[serde(default)]
    pub name: Option<String>,
}

/// RFC 6749 section 5.1. The access token moves into a `Token` at once.
#[derive(Deserialize)]
pub struct TokenAnswer {
    /// The access token.
    pub access_token: String,
    /// `Bearer` (case-insensitive), if given.
    #[serde(default)]
    pub token_type: Option<String>,
    /// Lifetime in seconds.
    #[serde(default)]
    pub expires_in: Option<f64>,
}
