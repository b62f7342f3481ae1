//! The EC2 instance metadata service (IMDSv2): who this instance is (its id becomes
//! the logical agent id, its facts go into registration) and whether the cloud is
//! about to take it back (spot interruption notices, rebalance recommendations).
//!
//! `client` speaks the protocol (session token, short timeouts, no proxy);
//! `watcher` polls for notices on its own task and backoff, so that the service's
//! trouble never delays a heartbeat. This module reads the answers.
//!
//! Invariant: nothing here runs with `imds = off`, the built-in default; tests point
//! `imds_url` at a mock on loopback, never at the real address.

use serde::Deserialize;

use crate::api::json_fault;
use crate::api::wire::Instance;

pub mod client;
pub mod watcher;

pub use client::{ImdsClient, ImdsError};
pub use watcher::Watcher;

const INSTANCE_ID: &str = "/latest/meta-data/instance-id";
const INSTANCE_TYPE: &str = "/latest/meta-data/instance-type";
const AVAILABILITY_ZONE: &str = "/latest/meta-data/placement/availability-zone";
const LIFECYCLE: &str = "/latest/meta-data/instance-life-cycle";
/// 404 until the instance is to be stopped, hibernated or terminated.
pub const INSTANCE_ACTION: &str = "/latest/meta-data/spot/instance-action";
/// 404 until EC2 recommends moving work off the instance.
pub const REBALANCE: &str = "/latest/meta-data/events/recommendations/rebalance";

/// The instance's facts, for registration (protocol.md section 2, `instance`).
pub async fn identity(client: &ImdsClient) -> Result<Instance, ImdsError> {
    let id = client
        .get(INSTANCE_ID)
        .await?
        .map(|id| id.trim().to_owned())
        .filter(|id| crate::identity::is_valid_agent_id(id))
        .ok_or_else(|| ImdsError::Garbage("no usable instance id".to_owned()))?;
    let fact = |text: Option<String>| {
        text.map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty() && t.len() <= 64 && t.bytes().all(|b| b.is_ascii_graphic()))
    };
    Ok(Instance {
        id,
        instance_type: fact(client.get(INSTANCE_TYPE).await?),
        availability_zone: fact(client.get(AVAILABILITY_ZONE).await?),
        // "spot", "on-demand" or "scheduled", as EC2 says it.
        lifecycle: fact(client.get(LIFECYCLE).await?),
    })
}

/// What kind of notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// The spot instance will be stopped, hibernated or terminated at `time`.
    Interruption,
    /// EC2 recommends moving work off the instance; no action is scheduled yet.
    Rebalance,
}

impl NoticeKind {
    /// The name in logs, the status file and the metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Interruption => "spot_interruption",
            Self::Rebalance => "rebalance_recommendation",
        }
    }
}

/// A notice from the service, as the control plane receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Interruption or rebalance recommendation.
    pub kind: NoticeKind,
    /// `terminate`, `stop` or `hibernate`; `rebalance` for a recommendation.
    pub action: String,
    /// When, RFC 3339 as the service wrote it (the action's time, or when the
    /// recommendation was made).
    pub time: String,
}

#[derive(Deserialize)]
struct InstanceAction {
    action: String,
    time: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rebalance {
    notice_time: String,
}

/// Reads `spot/instance-action`: `{"action": "terminate", "time": "..."}`.
pub fn parse_instance_action(body: &str) -> Result<Notice, ImdsError> {
    let answer: InstanceAction = serde_json::from_str(body)
        .map_err(|e| ImdsError::Garbage(format!("spot/instance-action: {}", json_fault(&e))))?;
    if !matches!(answer.action.as_str(), "terminate" | "stop" | "hibernate") {
        return Err(ImdsError::Garbage(format!(
            "spot/instance-action: unknown action {:?}",
            clip(&answer.action)
        )));
    }
    Ok(Notice {
        kind: NoticeKind::Interruption,
        action: answer.action,
        time: checked_time(&answer.time, "spot/instance-action")?,
    })
}

/// Reads `events/recommendations/rebalance`: `{"noticeTime": "..."}`.
pub fn parse_rebalance(body: &str) -> Result<Notice, ImdsError> {
    let answer: Rebalance = serde_json::from_str(body)
        .map_err(|e| ImdsError::Garbage(format!("rebalance: {}", json_fault(&e))))?;
    Ok(Notice {
        kind: NoticeKind::Rebalance,
        action: "rebalance".to_owned(),
        time: checked_time(&answer.notice_time, "rebalance")?,
    })
}

fn checked_time(time: &str, what: &str) -> Result<String, ImdsError> {
    humantime::parse_rfc3339_weak(time)
        .map(|_| time.to_owned())
        .map_err(|_| ImdsError::Garbage(format!("{what}: {:?} is not a time", clip(time))))
}

/// At most 40 characters of outside text, for an error.
fn clip(text: &str) -> String {
    text.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_of_the_wrong_shape_is_not_quoted_in_the_error() {
        // Found by the fuzzer (imds_answers): serde's message for a string where an
        // object belongs quoted the whole string, so a megabyte answer made a
        // megabyte log line.
        let answer = format!("\"{}\"", "x".repeat(4000));
        for error in [
            parse_instance_action(&answer).unwrap_err(),
            parse_rebalance(&answer).unwrap_err(),
        ] {
            let said = error.to_string();
            assert!(!said.contains("xxxx"), "{said}");
            assert!(said.contains("a value of the wrong type"), "{said}");
        }
    }

    #[test]
    fn instance_action_is_read_and_checked() {
        let notice =
            parse_instance_action(r#"{"action": "terminate", "time": "2026-11-24T08:22:00Z"}"#)
                .unwrap();
        assert_eq!(notice.kind, NoticeKind::Interruption);
        assert_eq!(notice.action, "terminate");
        assert_eq!(notice.time, "2026-11-24T08:22:00Z");
        for bad in [
            "",
            "terminate",
            r#"{"action": "explode", "time": "2026-11-24T08:22:00Z"}"#,
            r#"{"action": "stop", "time": "soon"}"#,
            r#"{"action": "stop"}"#,
        ] {
            assert!(
                matches!(parse_instance_action(bad), Err(ImdsError::Garbage(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rebalance_is_read_and_checked() {
        let notice = parse_rebalance(r#"{"noticeTime": "2026-11-24T08:17:00Z"}"#).unwrap();
        assert_eq!(notice.kind, NoticeKind::Rebalance);
        assert_eq!(notice.action, "rebalance");
        assert!(parse_rebalance(r#"{"noticeTime": 5}"#).is_err());
    }
}
