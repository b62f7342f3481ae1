//! EC2's instance metadata service (IMDSv2): a session token from
//! `PUT /latest/api/token`, renewed before its TTL runs out and again after a 401,
//! sent with every `GET`; the instance's identity; spot interruption notices and
//! rebalance recommendations, polled every `interruption_poll_interval`.
//!
//! Invariants: the session token is never logged nor put in an error; an answer
//! that is not what the service sends is an error, never a guess.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use tokio::time::Instant;
use url::Url;

use super::metadata::{self, REQUEST_TIMEOUT, body, unreachable};
use super::{Cloud, MetadataError, Notice, NoticeKind, clip, fact};
use crate::api::json_fault;
use crate::api::wire::Instance;

/// How long the session token's `PUT` may take: a `PUT` that times out while the
/// service accepts connections is the hop-limit symptom (`hostbeat check`).
pub const PUT_TIMEOUT: Duration = REQUEST_TIMEOUT;
/// The session token's lifetime asked for: six hours, the service's maximum.
pub const SESSION_TTL: Duration = Duration::from_secs(21_600);
/// A session token is renewed this long before it expires (or at half its
/// lifetime, when the service grants less than twice this).
const RENEW_BEFORE: Duration = Duration::from_secs(60);

const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";

const INSTANCE_ID: &str = "/latest/meta-data/instance-id";
const INSTANCE_TYPE: &str = "/latest/meta-data/instance-type";
const AVAILABILITY_ZONE: &str = "/latest/meta-data/placement/availability-zone";
const LIFECYCLE: &str = "/latest/meta-data/instance-life-cycle";
/// 404 until the instance is to be stopped, hibernated or terminated.
pub const INSTANCE_ACTION: &str = "/latest/meta-data/spot/instance-action";
/// 404 until EC2 recommends moving work off the instance.
pub const REBALANCE: &str = "/latest/meta-data/events/recommendations/rebalance";

struct Session {
    token: String,
    renew_at: Instant,
}

/// The client. Cheap to share (`Arc`); calls may overlap.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    session: Mutex<Option<Session>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ec2::Client")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for the service at `base` (`http://169.254.169.254`).
    pub fn new(base: Url) -> Self {
        let http = metadata::client(REQUEST_TIMEOUT);
        Self {
            http,
            base,
            session: Mutex::new(None),
        }
    }

    /// A new session token (kept, and returned): the probe that tells an EC2 host
    /// from any other.
    pub async fn open_session(&self) -> Result<String, MetadataError> {
        let url = self.url("/latest/api/token");
        let response = self
            .http
            .put(url)
            .header(TTL_HEADER, SESSION_TTL.as_secs().to_string())
            .timeout(PUT_TIMEOUT)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        // The service may grant less than asked; it says so in the same header.
        let granted = granted_ttl(
            response
                .headers()
                .get(TTL_HEADER)
                .and_then(|v| v.to_str().ok()),
        );
        let body = body(response).await?;
        if status != StatusCode::OK {
            return Err(MetadataError::Status(status.as_u16()));
        }
        let token = String::from_utf8(body)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty() && t.len() <= 512 && t.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                MetadataError::Garbage("a session token that is not a token".to_owned())
            })?;
        let renew_in = granted
            .checked_sub(RENEW_BEFORE)
            .filter(|d| *d >= granted / 2)
            .unwrap_or(granted / 2);
        *self.session.lock().expect("not poisoned") = Some(Session {
            token: token.clone(),
            renew_at: Instant::now() + renew_in,
        });
        Ok(token)
    }

    /// `GET path`: the body, or `None` for 404 (how the service says "no such
    /// thing", as for a notice that has not been given). A 401 (the session token
    /// expired or was revoked) gets a new session token and one more try.
    pub async fn get(&self, path: &str) -> Result<Option<String>, MetadataError> {
        let mut retried = false;
        loop {
            let token = self.session_token().await?;
            let response = self
                .http
                .get(self.url(path))
                .header(TOKEN_HEADER, token)
                .send()
                .await
                .map_err(unreachable)?;
            let status = response.status();
            let body = body(response).await?;
            match status {
                StatusCode::OK => return metadata::text(body, path).map(Some),
                StatusCode::NOT_FOUND => return Ok(None),
                StatusCode::UNAUTHORIZED if !retried => {
                    *self.session.lock().expect("not poisoned") = None;
                    retried = true;
                }
                other => return Err(MetadataError::Status(other.as_u16())),
            }
        }
    }

    /// The current session token, opening a session when there is none or it is
    /// due for renewal.
    async fn session_token(&self) -> Result<String, MetadataError> {
        {
            let session = self.session.lock().expect("not poisoned");
            if let Some(session) = session.as_ref().filter(|s| Instant::now() < s.renew_at) {
                return Ok(session.token.clone());
            }
        }
        self.open_session().await
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(path);
        url
    }
}

/// The session lifetime the service granted, from its TTL header: what was asked
/// ([`SESSION_TTL`]) when it says nothing readable, and never more than that (a TTL
/// of 2^64-1 s overflowed the clock) nor less than a second.
pub fn granted_ttl(header: Option<&str>) -> Duration {
    header
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(SESSION_TTL, Duration::from_secs)
        .clamp(Duration::from_secs(1), SESSION_TTL)
}

/// The instance's facts, for registration (protocol.md section 2, `instance`).
/// The session token's `PUT` comes first: it tells an EC2 host from any other.
pub async fn identity(client: &Client) -> Result<Instance, MetadataError> {
    let id = client
        .get(INSTANCE_ID)
        .await?
        .map(|id| id.trim().to_owned())
        .filter(|id| crate::identity::is_valid_agent_id(id))
        .ok_or_else(|| MetadataError::Garbage("no usable instance id".to_owned()))?;
    // The id is the identity; a fact that cannot be read is left out.
    let optional = async |path| client.get(path).await.ok().flatten();
    Ok(Instance {
        cloud: Cloud::Ec2,
        id,
        name: None,
        instance_type: fact(optional(INSTANCE_TYPE).await.as_deref()),
        availability_zone: fact(optional(AVAILABILITY_ZONE).await.as_deref()),
        // "spot", "on-demand" or "scheduled", as EC2 says it.
        lifecycle: fact(optional(LIFECYCLE).await.as_deref()),
    })
}

/// The notices EC2 gives, polled: each handed over once, and again only if the
/// service changes it (a new action or time).
pub struct Notices {
    client: Arc<Client>,
    /// The last interruption and recommendation seen.
    seen: [Option<Notice>; 2],
}

impl Notices {
    /// Nothing seen yet.
    pub fn new(client: Arc<Client>) -> Self {
        Self {
            client,
            seen: [None, None],
        }
    }
}

impl super::watch::Poll for Notices {
    const WHAT: &'static str = "EC2's interruption notices";

    fn cloud(&self) -> Cloud {
        Cloud::Ec2
    }

    async fn poll(&mut self) -> Result<Vec<Notice>, MetadataError> {
        let interruption = match self.client.get(INSTANCE_ACTION).await? {
            Some(body) => Some(parse_instance_action(&body)?),
            None => None,
        };
        let rebalance = match self.client.get(REBALANCE).await? {
            Some(body) => Some(parse_rebalance(&body)?),
            None => None,
        };
        let mut new = Vec::new();
        for (seen, now) in self.seen.iter_mut().zip([interruption, rebalance]) {
            if let Some(notice) = now.as_ref().filter(|n| seen.as_ref() != Some(*n)) {
                new.push(notice.clone());
            }
            *seen = now;
        }
        Ok(new)
    }
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
pub fn parse_instance_action(body: &str) -> Result<Notice, MetadataError> {
    let answer: InstanceAction = serde_json::from_str(body)
        .map_err(|e| MetadataError::Garbage(format!("spot/instance-action: {}", json_fault(&e))))?;
    if !matches!(answer.action.as_str(), "terminate" | "stop" | "hibernate") {
        return Err(MetadataError::Garbage(format!(
            "spot/instance-action: unknown action {:?}",
            clip(&answer.action)
        )));
    }
    Ok(Notice {
        source: Cloud::Ec2,
        kind: NoticeKind::Interruption,
        action: answer.action,
        time: checked_time(&answer.time, "spot/instance-action")?,
    })
}

/// Reads `events/recommendations/rebalance`: `{"noticeTime": "..."}`.
pub fn parse_rebalance(body: &str) -> Result<Notice, MetadataError> {
    let answer: Rebalance = serde_json::from_str(body)
        .map_err(|e| MetadataError::Garbage(format!("rebalance: {}", json_fault(&e))))?;
    Ok(Notice {
        source: Cloud::Ec2,
        kind: NoticeKind::Rebalance,
        action: "rebalance".to_owned(),
        time: checked_time(&answer.notice_time, "rebalance")?,
    })
}

fn checked_time(time: &str, what: &str) -> Result<String, MetadataError> {
    humantime::parse_rfc3339_weak(time)
        .map(|_| time.to_owned())
        .map_err(|_| MetadataError::Garbage(format!("{what}: {:?} is not a time", clip(time))))
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
        assert_eq!(notice.source, Cloud::Ec2);
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
                matches!(parse_instance_action(bad), Err(MetadataError::Garbage(_))),
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
