//! Google Cloud's metadata server: the instance's identity, and its preemption and
//! maintenance notices, followed with hanging requests rather than polled.
//!
//! Every request carries `Metadata-Flavor: Google`, and every answer must carry it
//! back: an answer without it is not Google's metadata server (something else at
//! that address, or a proxy that should not be there) and is not believed.
//!
//! A key is followed as Google documents: one plain `GET` for its value and `ETag`,
//! then `?wait_for_change=true&last_etag=ETAG&timeout_sec=N`, which answers when the
//! value differs from the one that `ETag` names, or after N seconds. Carrying the
//! last `ETag` means a change between two requests is never missed.
//!
//! Invariants: two requests for a key are at least [`HANG_FLOOR`] apart, whatever
//! the server does; a single 503 (the server answers it for a moment during
//! maintenance) is retried after [`BLIP_RETRY`] without a log line; a value is
//! handed over once, and again only after it changed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use tokio::time::Instant;
use url::Url;

use super::metadata::{self, MetadataError, REQUEST_TIMEOUT, body, unreachable};
use super::watch::{Handover, TROUBLE_BACKOFF_CAP, Trouble};
use super::{Cloud, Notice, NoticeKind, clip, deadline_in, fact};
use crate::api::wire::Instance;
use crate::retry::RetryPolicy;
use crate::wheel::Grid;

const FLAVOR: &str = "metadata-flavor";
/// Where every key lives.
pub const ROOT: &str = "/computeMetadata/v1/";
/// `TRUE` once the instance is preempted.
pub const PREEMPTED: &str = "instance/preempted";
/// `NONE`, or the host maintenance about to happen.
pub const MAINTENANCE_EVENT: &str = "instance/maintenance-event";

/// How long the server holds a hanging request before answering "no change".
pub const HANG_SECONDS: u64 = 60;
/// The least time between two requests for one key.
pub const HANG_FLOOR: Duration = Duration::from_secs(1);
/// A hanging request's own timeout beyond [`HANG_SECONDS`]: the server's answer
/// at the end of its wait must not race the client's timeout.
const HANG_SLACK: Duration = Duration::from_secs(10);
/// The retry after a single 503.
pub const BLIP_RETRY: Duration = Duration::from_secs(1);
/// The notice Google gives before host maintenance.
pub const MAINTENANCE_NOTICE: Duration = Duration::from_secs(60);

/// The client. Cheap to share (`Arc`); calls may overlap.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
}

impl Client {
    /// A client for the server at `base` (`http://metadata.google.internal`).
    pub fn new(base: Url) -> Self {
        Self {
            http: metadata::client(REQUEST_TIMEOUT),
            base,
        }
    }

    /// `GET key`: its value, or `None` for 404 (a key this instance does not have).
    /// A 503 (a moment of maintenance) is tried once more after [`BLIP_RETRY`].
    pub async fn get(&self, key: &str) -> Result<Option<String>, MetadataError> {
        let mut retried = false;
        loop {
            let answer = self.send(self.url(key), REQUEST_TIMEOUT).await;
            if matches!(answer, Err(MetadataError::Status(503))) && !retried {
                retried = true;
                tokio::time::sleep(BLIP_RETRY).await;
                continue;
            }
            let response = answer?;
            return match response.status() {
                StatusCode::OK => metadata::text(body(response).await?, key).map(Some),
                StatusCode::NOT_FOUND => Ok(None),
                other => Err(MetadataError::Status(other.as_u16())),
            };
        }
    }

    /// `key`'s value and `ETag`: at once without `last_etag`, else when the value
    /// differs from the one `last_etag` names, or after [`HANG_SECONDS`].
    pub async fn follow(
        &self,
        key: &str,
        last_etag: Option<&str>,
    ) -> Result<(String, String), MetadataError> {
        let mut url = self.url(key);
        let mut timeout = REQUEST_TIMEOUT;
        if let Some(etag) = last_etag {
            url.query_pairs_mut()
                .append_pair("wait_for_change", "true")
                .append_pair("last_etag", etag)
                .append_pair("timeout_sec", &HANG_SECONDS.to_string());
            timeout += Duration::from_secs(HANG_SECONDS) + HANG_SLACK;
        }
        let response = self.send(url, timeout).await?;
        let status = response.status();
        let etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = body(response).await?;
        if status != StatusCode::OK {
            return Err(MetadataError::Status(status.as_u16()));
        }
        // The tag goes back into a URL: a short token, nothing else.
        let etag = etag
            .filter(|t| {
                !t.is_empty()
                    && t.len() <= 64
                    && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
            .ok_or_else(|| MetadataError::Garbage(format!("{key}: no usable ETag")))?;
        Ok((metadata::text(body, key)?.trim().to_owned(), etag))
    }

    /// One request with the header, answered with the header.
    async fn send(&self, url: Url, timeout: Duration) -> Result<reqwest::Response, MetadataError> {
        let response = self
            .http
            .get(url)
            .header(FLAVOR, "Google")
            .timeout(timeout)
            .send()
            .await
            .map_err(unreachable)?;
        // A 503 says nothing to believe or not: a blip, whoever sent it.
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            return Err(MetadataError::Status(503));
        }
        let flavored = response
            .headers()
            .get(FLAVOR)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"Google"));
        if !flavored {
            return Err(MetadataError::Impostor("Metadata-Flavor: Google"));
        }
        Ok(response)
    }

    fn url(&self, key: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("{ROOT}{key}"));
        url
    }
}

/// The instance's facts: `instance/id` (the logical agent id), its name, zone and
/// machine type (the last part of each path), and whether it is Spot (`spot`),
/// preemptible (`preemptible`) or neither (`on-demand`).
pub async fn identity(client: &Client) -> Result<Instance, MetadataError> {
    let id = client
        .get("instance/id")
        .await?
        .map(|id| id.trim().to_owned())
        .filter(|id| crate::identity::is_valid_agent_id(id))
        .ok_or_else(|| MetadataError::Garbage("no usable instance id".to_owned()))?;
    // The id is the identity; a fact that cannot be read is left out.
    let optional = async |key| client.get(key).await.ok().flatten();
    let last_part = |path: Option<String>| fact(path.as_deref()?.rsplit('/').next());
    let model = optional("instance/scheduling/provisioning-model").await;
    let lifecycle = if model.as_deref().map(str::trim) == Some("SPOT") {
        Some("spot")
    } else if let Some(preemptible) = optional("instance/scheduling/preemptible").await {
        Some(if preemptible.trim() == "TRUE" {
            "preemptible"
        } else {
            "on-demand"
        })
    } else {
        None
    };
    Ok(Instance {
        cloud: Cloud::Gcp,
        id,
        name: fact(optional("instance/name").await.as_deref()),
        instance_type: last_part(optional("instance/machine-type").await),
        availability_zone: last_part(optional("instance/zone").await),
        lifecycle: lifecycle.map(str::to_owned),
    })
}

/// What `instance/preempted` means: `TRUE` is a notice, the deadline `notice` from
/// when it was seen.
pub fn read_preempted(value: &str, notice: Duration) -> Result<Option<Notice>, MetadataError> {
    match value {
        "FALSE" => Ok(None),
        "TRUE" => Ok(Some(Notice {
            source: Cloud::Gcp,
            kind: NoticeKind::Interruption,
            action: "preempt".to_owned(),
            time: deadline_in(notice),
        })),
        other => Err(MetadataError::Garbage(format!(
            "{PREEMPTED}: {:?} is neither TRUE nor FALSE",
            clip(other)
        ))),
    }
}

/// What `instance/maintenance-event` means: a termination is a notice that the
/// host goes; a live migration is maintenance it survives.
pub fn read_maintenance(value: &str) -> Result<Option<Notice>, MetadataError> {
    let (kind, action) = match value {
        "NONE" => return Ok(None),
        "TERMINATE_ON_HOST_MAINTENANCE" => (NoticeKind::Interruption, "maintenance_terminate"),
        "MIGRATE_ON_HOST_MAINTENANCE" => (NoticeKind::Maintenance, "maintenance_migrate"),
        other => {
            return Err(MetadataError::Garbage(format!(
                "{MAINTENANCE_EVENT}: unknown event {:?}",
                clip(other)
            )));
        }
    };
    Ok(Some(Notice {
        source: Cloud::Gcp,
        kind,
        action: action.to_owned(),
        time: deadline_in(MAINTENANCE_NOTICE),
    }))
}

/// Follows both keys until the loop is gone, handing over each notice once.
pub async fn watch(
    client: Arc<Client>,
    notice: Duration,
    every: Duration,
    grid: Grid,
    out: Handover,
) {
    let trouble = Mutex::new(KeysTrouble {
        trouble: Trouble::new(
            Cloud::Gcp,
            "Google Cloud's preemption and maintenance notices",
        ),
        failing: [false; 2],
    });
    let key = |index, key, read| Key {
        client: &client,
        index,
        key,
        read,
        trouble: &trouble,
        every,
        grid,
        out: &out,
    };
    let preempted = move |value: &str| read_preempted(value, notice);
    tokio::join!(
        key(0, PREEMPTED, &preempted).follow(),
        key(1, MAINTENANCE_EVENT, &read_maintenance).follow(),
    );
}

/// The trouble of both keys, said once: it starts (or changes kind) when a key
/// fails, and ends when both answer again, so that one key answering while the
/// other fails does not flap between the two lines.
struct KeysTrouble {
    trouble: Trouble,
    failing: [bool; 2],
}

impl KeysTrouble {
    fn answered(&mut self, index: usize) {
        self.failing[index] = false;
        if self.failing == [false; 2] {
            self.trouble.answered();
        }
    }

    fn failed(&mut self, index: usize, error: &MetadataError, next_try: Duration) {
        self.failing[index] = true;
        self.trouble.failed(error, next_try);
    }
}

type Reader<'a> = &'a (dyn Fn(&str) -> Result<Option<Notice>, MetadataError> + Sync);

/// One key followed.
struct Key<'a> {
    client: &'a Client,
    /// Which of the two, in `trouble`.
    index: usize,
    key: &'static str,
    read: Reader<'a>,
    trouble: &'a Mutex<KeysTrouble>,
    every: Duration,
    grid: Grid,
    out: &'a Handover,
}

impl Key<'_> {
    async fn follow(self) {
        let mut backoff = RetryPolicy::new(self.every, TROUBLE_BACKOFF_CAP).backoff();
        let mut etag: Option<String> = None;
        // The value last acted on, and how many requests in a row failed.
        let mut acted_on: Option<String> = None;
        let mut failures = 0u32;
        loop {
            let asked = Instant::now();
            let wait = match self.client.follow(self.key, etag.as_deref()).await {
                Ok((value, tag)) => {
                    failures = 0;
                    backoff.reset();
                    // A server that answers at once without a change does not hang:
                    // asked at the poll interval, not in a tight loop.
                    let unchanged = etag.as_ref() == Some(&tag);
                    let hangs =
                        !unchanged || asked.elapsed() >= Duration::from_secs(HANG_SECONDS / 2);
                    etag = Some(tag);
                    // An unknown value is said once (as trouble, until a known
                    // one comes); the key is followed on.
                    let read = (self.read)(&value);
                    {
                        let mut trouble = self.trouble.lock().expect("not poisoned");
                        match &read {
                            Ok(_) => trouble.answered(self.index),
                            Err(error) => trouble.failed(self.index, error, self.every),
                        }
                    }
                    if acted_on.as_ref() != Some(&value) {
                        if let Ok(Some(notice)) = read
                            && !self.out.send(notice).await
                        {
                            return;
                        }
                        acted_on = Some(value);
                    }
                    if hangs {
                        HANG_FLOOR.saturating_sub(asked.elapsed())
                    } else {
                        self.every
                    }
                }
                Err(error) => {
                    failures += 1;
                    if failures == 1 && error == MetadataError::Status(503) {
                        BLIP_RETRY
                    } else {
                        let wait = self.every + backoff.next_delay();
                        self.trouble
                            .lock()
                            .expect("not poisoned")
                            .failed(self.index, &error, wait);
                        wait
                    }
                }
            };
            if !wait.is_zero() {
                tokio::time::sleep_until(self.grid.late(wait)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preempted_and_maintenance_values_are_read_and_checked() {
        let notice = read_preempted("TRUE", Duration::from_secs(30))
            .unwrap()
            .unwrap();
        assert_eq!(
            (notice.kind, notice.action.as_str()),
            (NoticeKind::Interruption, "preempt")
        );
        assert_eq!(notice.source, Cloud::Gcp);
        assert!(
            humantime::parse_rfc3339(&notice.time).is_ok(),
            "{}",
            notice.time
        );
        assert_eq!(read_preempted("FALSE", Duration::ZERO), Ok(None));
        assert!(read_preempted("maybe", Duration::ZERO).is_err());

        assert_eq!(read_maintenance("NONE"), Ok(None));
        let terminate = read_maintenance("TERMINATE_ON_HOST_MAINTENANCE")
            .unwrap()
            .unwrap();
        assert!(terminate.kind.terminating());
        let migrate = read_maintenance("MIGRATE_ON_HOST_MAINTENANCE")
            .unwrap()
            .unwrap();
        assert_eq!(migrate.kind, NoticeKind::Maintenance);
        assert!(!migrate.kind.terminating());
        let said = read_maintenance(&"\u{1}X".repeat(100))
            .unwrap_err()
            .to_string();
        assert!(said.len() < 200 && !said.contains('\u{1}'), "{said}");
    }
}
