//! A mock Azure Instance Metadata Service on loopback: `Metadata: true` and an
//! `api-version` required on every request (400 without them, as Azure answers);
//! the instance document; Scheduled Events with a `DocumentIncarnation` that
//! changes with the events, a scale set's neighbours' events among them; and
//! misbehaviour on demand (down, garbage, a slow first Scheduled Events answer, as
//! when the service is switched on). Time is tokio's.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use tokio::time::Instant;

use crate::serve::response;

/// The VM the mock describes.
pub const VM_ID: &str = "02aab8a4-74ef-476e-8182-f6d2ba4166a6";
/// Its name, as its events name it.
pub const VM_NAME: &str = "vmss_3";

/// How the mock misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// As Azure does.
    Normal,
    /// Closes every connection without an answer.
    Down,
    /// Answers every request with 200 and bytes that mean nothing.
    Garbage,
}

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct AzureRequest {
    /// Milliseconds since the mock started.
    pub at_ms: u64,
    /// The path.
    pub path: String,
    /// Whether it carried `Metadata: true`.
    pub metadata_header: bool,
    /// Its `api-version`, if any.
    pub api_version: Option<String>,
}

struct State {
    incarnation: u64,
    events: Vec<serde_json::Value>,
    behaviour: Behaviour,
    /// The delay of the first Scheduled Events answer (the service switching on).
    first_events_delay: Duration,
    events_answered: bool,
    requests: Vec<AzureRequest>,
}

/// The mock. Clones share one state.
#[derive(Clone)]
pub struct MockAzure {
    state: Arc<Mutex<State>>,
    started: Instant,
}

impl Default for MockAzure {
    fn default() -> Self {
        Self::new()
    }
}

impl MockAzure {
    /// A Spot `Standard_D2s_v3` in `westeurope`, with no event.
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                incarnation: 1,
                events: Vec::new(),
                behaviour: Behaviour::Normal,
                first_events_delay: Duration::ZERO,
                events_answered: false,
                requests: Vec::new(),
            })),
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

    /// Schedules an event (`Preempt`, `Terminate`, `Reboot`, ...) for `resources`
    /// at `not_before` (an HTTP date, or empty once started): a new incarnation.
    pub fn schedule(&self, id: &str, kind: &str, resources: &[&str], not_before: &str) {
        let mut state = self.state();
        state.events.push(serde_json::json!({
            "EventId": id,
            "EventType": kind,
            "ResourceType": "VirtualMachine",
            "Resources": resources,
            "EventStatus": if not_before.is_empty() { "Started" } else { "Scheduled" },
            "NotBefore": not_before,
            "Description": "",
            "EventSource": "Platform",
            "DurationInSeconds": -1,
        }));
        state.incarnation += 1;
    }

    /// Removes every event: a new incarnation.
    pub fn clear(&self) {
        let mut state = self.state();
        state.events.clear();
        state.incarnation += 1;
    }

    /// Delays the first Scheduled Events answer by `delay`.
    pub fn slow_first_events(&self, delay: Duration) {
        self.state().first_events_delay = delay;
    }

    /// Sets how the mock behaves from now on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.state().behaviour = behaviour;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<AzureRequest> {
        self.state().requests.clone()
    }

    /// How many requests asked for `path` so far.
    pub fn requests_for(&self, path: &str) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    async fn answer(self, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_owned();
        let api_version = request
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|pair| pair.strip_prefix("api-version="))
            .map(str::to_owned);
        let metadata_header = request
            .headers()
            .get("metadata")
            .is_some_and(|v| v == "true");
        let (behaviour, delay) = {
            let mut state = self.state();
            let at_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            state.requests.push(AzureRequest {
                at_ms,
                path: path.clone(),
                metadata_header,
                api_version: api_version.clone(),
            });
            let delay = if path == "/metadata/scheduledevents" && !state.events_answered {
                state.events_answered = true;
                state.first_events_delay
            } else {
                Duration::ZERO
            };
            (state.behaviour, delay)
        };
        if !metadata_header || api_version.is_none() {
            return response(StatusCode::BAD_REQUEST, &[], "Bad request");
        }
        if behaviour == Behaviour::Garbage {
            return response(StatusCode::OK, &[], "\u{1}<html>");
        }
        tokio::time::sleep(delay).await;
        let body = match path.as_str() {
            "/metadata/instance" => serde_json::json!({
                "compute": {
                    "vmId": VM_ID,
                    "name": VM_NAME,
                    "location": "westeurope",
                    "vmSize": "Standard_D2s_v3",
                    "priority": "Spot",
                    "zone": "",
                }
            }),
            "/metadata/scheduledevents" => {
                let state = self.state();
                serde_json::json!({
                    "DocumentIncarnation": state.incarnation,
                    "Events": state.events,
                })
            }
            _ => return response(StatusCode::NOT_FOUND, &[], ""),
        };
        response(
            StatusCode::OK,
            &[("content-type", "application/json".to_owned())],
            body.to_string(),
        )
    }
}
