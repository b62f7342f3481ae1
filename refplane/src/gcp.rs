//! A mock Google Cloud metadata server on loopback: `Metadata-Flavor: Google`
//! required on every request (403 without it, as Google answers) and sent back on
//! every answer; the instance's identity; `instance/preempted` and
//! `instance/maintenance-event` with an `ETag` per value and hanging requests
//! (`wait_for_change=true&last_etag=..&timeout_sec=..`); and misbehaviour on demand
//! (down, 503 blips, answers without the header, garbage). Time is tokio's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::serve::response;

/// The instance the mock describes.
pub const INSTANCE_ID: &str = "4520031799277581759";
/// Its name.
pub const INSTANCE_NAME: &str = "spot-7";
/// Where every key lives.
const ROOT: &str = "/computeMetadata/v1/";

/// How the mock misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// As Google's server does.
    Normal,
    /// Closes every connection without an answer.
    Down,
    /// Answers as usual but without `Metadata-Flavor: Google`: not Google's server.
    NoFlavor,
    /// Answers every request with 200 and bytes that mean nothing.
    Garbage,
}

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct GcpRequest {
    /// Milliseconds since the mock started.
    pub at_ms: u64,
    /// The key, like `instance/preempted`.
    pub key: String,
    /// Whether it carried `Metadata-Flavor: Google`.
    pub flavored: bool,
    /// Whether it asked to wait for a change.
    pub hanging: bool,
    /// The `last_etag` it carried.
    pub last_etag: Option<String>,
}

struct State {
    /// Each key's value and version (its `ETag` is the version in hex).
    values: HashMap<String, (String, u64)>,
    behaviour: Behaviour,
    /// How many of the next requests get 503.
    blips: u32,
    requests: Vec<GcpRequest>,
}

/// The mock. Clones share one state.
#[derive(Clone)]
pub struct MockGcp {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    started: Instant,
}

impl Default for MockGcp {
    fn default() -> Self {
        Self::new()
    }
}

impl MockGcp {
    /// A Spot `e2-standard-4` in `europe-west4-a`, neither preempted nor under
    /// maintenance.
    pub fn new() -> Self {
        let values = [
            ("instance/id", INSTANCE_ID),
            ("instance/name", INSTANCE_NAME),
            ("instance/zone", "projects/123456/zones/europe-west4-a"),
            (
                "instance/machine-type",
                "projects/123456/machineTypes/e2-standard-4",
            ),
            ("instance/scheduling/provisioning-model", "SPOT"),
            ("instance/scheduling/preemptible", "TRUE"),
            ("instance/preempted", "FALSE"),
            ("instance/maintenance-event", "NONE"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), (v.to_owned(), 1)))
        .collect();
        Self {
            state: Arc::new(Mutex::new(State {
                values,
                behaviour: Behaviour::Normal,
                blips: 0,
                requests: Vec::new(),
            })),
            changed: Arc::new(Notify::new()),
            started: Instant::now(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("not poisoned")
    }

    /// Serves on `127.0.0.1:0`; returns the address.
    pub async fn start(&self) -> std::io::Result<SocketAddr> {
        let (down, mock) = (self.clone(), self.clone());
        crate::serve::serve(
            move || down.state().behaviour == Behaviour::Down,
            move |request| mock.clone().answer(request),
        )
        .await
    }

    /// Sets `key` to `value` (a new `ETag`), waking the requests waiting on it.
    pub fn set(&self, key: &str, value: &str) {
        {
            let mut state = self.state();
            let entry = state
                .values
                .entry(key.to_owned())
                .or_insert_with(|| (String::new(), 0));
            *entry = (value.to_owned(), entry.1 + 1);
        }
        self.changed.notify_waiters();
    }

    /// Preempts the instance: `instance/preempted` becomes `TRUE`.
    pub fn preempt(&self) {
        self.set("instance/preempted", "TRUE");
    }

    /// Sets `instance/maintenance-event` (`NONE`, `MIGRATE_ON_HOST_MAINTENANCE`,
    /// `TERMINATE_ON_HOST_MAINTENANCE`).
    pub fn maintenance(&self, event: &str) {
        self.set("instance/maintenance-event", event);
    }

    /// Sets how the mock behaves from now on; a hanging request answers at once.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.state().behaviour = behaviour;
        self.changed.notify_waiters();
    }

    /// Answers the next `count` requests with 503, as the server does for a
    /// moment during maintenance.
    /// Requests waiting for a change end with one of them.
    pub fn blip(&self, count: u32) {
        self.state().blips = count;
        self.changed.notify_waiters();
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<GcpRequest> {
        self.state().requests.clone()
    }

    /// How many requests asked for `key` so far.
    pub fn requests_for(&self, key: &str) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|r| r.key == key)
            .count()
    }

    async fn answer(self, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let key = request
            .uri()
            .path()
            .strip_prefix(ROOT)
            .unwrap_or("")
            .to_owned();
        let query: HashMap<String, String> = request
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let flavored = request
            .headers()
            .get("metadata-flavor")
            .is_some_and(|v| v == "Google");
        let hanging = query.get("wait_for_change").is_some_and(|v| v == "true");
        let last_etag = query.get("last_etag").cloned();
        let timeout = query
            .get("timeout_sec")
            .and_then(|t| t.parse::<u64>().ok())
            .map_or(Duration::from_secs(3600), Duration::from_secs);
        let behaviour = {
            let mut state = self.state();
            let at_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            state.requests.push(GcpRequest {
                at_ms,
                key: key.clone(),
                flavored,
                hanging,
                last_etag: last_etag.clone(),
            });
            state.behaviour
        };
        if self.take_blip() {
            return self.reply(StatusCode::SERVICE_UNAVAILABLE, None, String::new());
        }
        if !flavored {
            return self.reply(StatusCode::FORBIDDEN, None, String::new());
        }
        if behaviour == Behaviour::Garbage {
            return self.reply(StatusCode::OK, Some(7), "\u{1}<html>".to_owned());
        }
        let deadline = Instant::now() + timeout;
        loop {
            // Registered before the value is read, so that no change is missed.
            let changed = self.changed.notified();
            let Some((value, version)) = self.state().values.get(&key).cloned() else {
                return self.reply(StatusCode::NOT_FOUND, None, String::new());
            };
            let unchanged = last_etag.as_deref() == Some(etag(version).as_str());
            // A change of behaviour ends the wait, as a server going down would.
            let normal = self.state().behaviour == Behaviour::Normal;
            if !hanging || !unchanged || !normal || Instant::now() >= deadline {
                return self.reply(StatusCode::OK, Some(version), value);
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
            if self.take_blip() {
                return self.reply(StatusCode::SERVICE_UNAVAILABLE, None, String::new());
            }
        }
    }

    /// Whether this answer is one of the 503 blips asked for.
    fn take_blip(&self) -> bool {
        let mut state = self.state();
        let blip = state.blips > 0;
        state.blips = state.blips.saturating_sub(1);
        blip
    }

    fn reply(
        &self,
        status: StatusCode,
        version: Option<u64>,
        body: String,
    ) -> Response<Full<Bytes>> {
        let mut headers = Vec::new();
        if self.state().behaviour != Behaviour::NoFlavor {
            headers.push(("metadata-flavor", "Google".to_owned()));
        }
        if let Some(version) = version {
            headers.push(("etag", etag(version)));
        }
        response(status, &headers, body)
    }
}

fn etag(version: u64) -> String {
    format!("{version:016x}")
}
