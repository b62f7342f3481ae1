//! The reference control plane: protocol.md implemented a second time, from the
//! server's side, for the tests and the demo.
//!
//! It issues signed JWT access tokens (OAuth 2.0 client credentials), registers
//! agents idempotently, takes heartbeats, validates credentials, and answers every
//! failure the way real backends do (the strings of protocol.md section 3). Clients
//! can be deactivated, reactivated and rotated; faults can be switched on (outage,
//! status codes with `Retry-After`, slow answers, garbage and oversized bodies,
//! redirects); agents can be forgotten and tokens expired early. Every request that
//! reaches it is recorded with its headers, so that tests can assert on them.
//!
//! Time is `tokio::time`: under a paused test clock, tokens expire in virtual time.
//! Control is both a Rust API ([`ControlPlane`]) and, for other processes, HTTP
//! endpoints under `/admin/` (never faulted, never recorded).

mod auth;
pub mod azure;
mod faults;
pub mod gcp;
pub mod imds;
mod routes;
mod serve;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::time::Instant;

pub use faults::{Capacity, Fault, Overload, Scope};

/// How the plane behaves; fixed at start, except what the API changes.
#[derive(Debug, Clone)]
pub struct PlaneConfig {
    /// Lifetime of issued access tokens.
    pub token_lifetime: Duration,
    /// Whether token answers carry `expires_in` (else the agent reads the JWT `exp`).
    pub send_expires_in: bool,
    /// Whether access tokens are JWTs (else opaque strings with no lifetime in them).
    pub jwt: bool,
    /// `next_heartbeat_in` in heartbeat answers, if any.
    pub next_heartbeat_in: Option<f64>,
    /// The paths, as configured on the agent side.
    pub paths: PlanePaths,
    /// Seconds added to the `Date` header of every answer (a server whose clock is
    /// off, or a host's).
    pub date_offset: i64,
}

/// Paths the plane serves.
#[derive(Debug, Clone)]
pub struct PlanePaths {
    /// OAuth token endpoint.
    pub token: String,
    /// Registration.
    pub register: String,
    /// Heartbeat (axum template with `{agent_id}`).
    pub heartbeat: String,
    /// Validation.
    pub validate: String,
}

impl Default for PlaneConfig {
    fn default() -> Self {
        Self {
            token_lifetime: Duration::from_secs(900),
            send_expires_in: true,
            jwt: true,
            next_heartbeat_in: None,
            date_offset: 0,
            paths: PlanePaths {
                token: "/oauth/token".into(),
                register: "/api/v1/agents/register".into(),
                heartbeat: "/api/v1/agents/{agent_id}/heartbeat".into(),
                validate: "/api/v1/client/validate".into(),
            },
        }
    }
}

/// A request as received.
#[derive(Debug, Clone, Serialize)]
pub struct RecordedRequest {
    /// Milliseconds since the plane started (virtual under a paused clock).
    pub at_ms: u64,
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Every header, lower-case names.
    pub headers: Vec<(String, String)>,
    /// The body, lossily as text.
    pub body: String,
    /// The fault applied, if any.
    pub fault: Option<String>,
}

impl RecordedRequest {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The bearer token sent, if any.
    pub fn bearer(&self) -> Option<&str> {
        self.header("authorization")?.strip_prefix("Bearer ")
    }
}

/// A heartbeat the plane accepted.
#[derive(Debug, Clone, Serialize)]
pub struct HeartbeatRecord {
    /// Milliseconds since the plane started.
    pub at_ms: u64,
    /// The agent.
    pub agent_id: String,
    /// The client it authenticated as.
    pub client_id: String,
    /// The bearer token used.
    pub bearer: String,
    /// The whole body.
    pub body: serde_json::Value,
}

impl HeartbeatRecord {
    /// `seq` from the body.
    pub fn seq(&self) -> u64 {
        self.body["seq"].as_u64().unwrap_or(0)
    }

    /// `status` from the body.
    pub fn status(&self) -> &str {
        self.body["status"].as_str().unwrap_or("")
    }
}

/// Something that happened, for the demo's timeline.
#[derive(Debug, Clone)]
pub enum PlaneEvent {
    /// An access token was issued.
    TokenIssued {
        /// To whom.
        client_id: String,
        /// For how long.
        lifetime: Duration,
    },
    /// An agent registered.
    Registered {
        /// Its id.
        agent_id: String,
        /// Whether it was new.
        new: bool,
    },
    /// A heartbeat was accepted.
    Heartbeat(HeartbeatRecord),
    /// A call was refused.
    Refused {
        /// Which path.
        path: String,
        /// The status.
        status: u16,
        /// The error.
        error: String,
    },
    /// A fault was applied to a request.
    Faulted {
        /// Which path.
        path: String,
        /// The fault.
        fault: String,
    },
}

#[derive(Debug)]
struct Client {
    secret: String,
    name: String,
    active: bool,
}

#[derive(Debug)]
struct Issued {
    client_id: String,
    expires_at: Instant,
}

#[derive(Debug)]
struct State {
    clients: BTreeMap<String, Client>,
    tokens: BTreeMap<String, Issued>,
    /// logical agent id -> agent id
    agents: BTreeMap<String, String>,
    next_agent: u64,
    requests: Vec<RecordedRequest>,
    heartbeats: Vec<HeartbeatRecord>,
    fault: Option<faults::FaultRule>,
    capacity: Option<faults::Load>,
}

struct Shared {
    config: PlaneConfig,
    state: Mutex<State>,
    signing_key: [u8; 32],
    started: Instant,
    events: broadcast::Sender<PlaneEvent>,
}

/// A handle on one control plane (cheap to clone).
#[derive(Clone)]
pub struct ControlPlane {
    shared: Arc<Shared>,
}

impl ControlPlane {
    /// A plane with `config` and no clients yet.
    pub fn new(config: PlaneConfig) -> Self {
        let mut signing_key = [0u8; 32];
        for chunk in signing_key.chunks_mut(8) {
            chunk.copy_from_slice(&fastrand_u64().to_le_bytes());
        }
        Self {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(State {
                    clients: BTreeMap::new(),
                    tokens: BTreeMap::new(),
                    agents: BTreeMap::new(),
                    next_agent: 1,
                    requests: Vec::new(),
                    heartbeats: Vec::new(),
                    fault: None,
                    capacity: None,
                }),
                signing_key,
                started: Instant::now(),
                events: broadcast::channel(1024).0,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().expect("not poisoned")
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.shared.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Adds (or replaces) an active client.
    pub fn add_client(&self, client_id: &str, secret: &str) {
        self.state().clients.insert(
            client_id.to_owned(),
            Client {
                secret: secret.to_owned(),
                name: format!("{client_id} (reference)"),
                active: true,
            },
        );
    }

    /// Deactivates a client (`is_active = 0`): its calls answer "not active".
    pub fn deactivate(&self, client_id: &str) {
        self.set_active(client_id, false);
    }

    /// Activates a client again.
    pub fn activate(&self, client_id: &str) {
        self.set_active(client_id, true);
    }

    fn set_active(&self, client_id: &str, active: bool) {
        if let Some(client) = self.state().clients.get_mut(client_id) {
            client.active = active;
        }
    }

    /// Gives a client a new secret; the old one stops working at once (access tokens
    /// already issued stay valid until they expire, as with real OAuth servers).
    pub fn rotate(&self, client_id: &str, new_secret: &str) {
        if let Some(client) = self.state().clients.get_mut(client_id) {
            new_secret.clone_into(&mut client.secret);
        }
    }

    /// Applies `fault` to requests in `scope` until cleared (or `times` requests).
    pub fn set_fault(&self, fault: Fault, scope: Scope, times: Option<u32>) {
        self.state().fault = Some(faults::FaultRule {
            fault,
            scope,
            remaining: times,
        });
    }

    /// Back to normal service.
    pub fn clear_fault(&self) {
        self.state().fault = None;
    }

    /// Serves at most `capacity.per_second` requests a second (of the plane's
    /// clock) and overloads beyond it as `capacity.overload` says; `None` serves
    /// everything. A new capacity keeps the load the plane holds (its queue). A
    /// fault in force answers first.
    pub fn set_capacity(&self, capacity: Option<Capacity>) {
        let mut state = self.state();
        match (&mut state.capacity, capacity) {
            (Some(load), Some(capacity)) => load.retarget(capacity),
            (slot, capacity) => *slot = capacity.map(faults::Load::new),
        }
    }

    /// Forgets every agent (a database reset): heartbeats answer `unknown_agent`.
    pub fn forget_agents(&self) {
        self.state().agents.clear();
    }

    /// Expires every access token issued so far.
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for issued in self.state().tokens.values_mut() {
            issued.expires_at = now;
        }
    }

    /// Forgets every access token issued so far (a restart that loses the token
    /// store, or a new signing key): they are refused as invalid, not as expired.
    pub fn revoke_tokens(&self) {
        self.state().tokens.clear();
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    /// Every heartbeat accepted so far.
    pub fn heartbeats(&self) -> Vec<HeartbeatRecord> {
        self.state().heartbeats.clone()
    }

    /// Takes every request and accepted heartbeat recorded so far, leaving none: a
    /// long run (the fleet herd benchmark, the soak) drains them as it goes, so that
    /// the records do not grow without bound.
    pub fn drain_records(&self) -> (Vec<RecordedRequest>, Vec<HeartbeatRecord>) {
        let mut state = self.state();
        (
            std::mem::take(&mut state.requests),
            std::mem::take(&mut state.heartbeats),
        )
    }

    /// How many of `requests` asked this plane for a token and were answered by it
    /// (no fault stood in the way): its token exchanges.
    pub fn token_exchanges(&self, requests: &[RecordedRequest]) -> u64 {
        let path = &self.shared.config.paths.token;
        let answered = requests
            .iter()
            .filter(|r| r.fault.is_none() && r.path.split('?').next() == Some(path.as_str()))
            .count();
        u64::try_from(answered).unwrap_or(u64::MAX)
    }

    /// How many agents are registered.
    pub fn agent_count(&self) -> usize {
        self.state().agents.len()
    }

    /// Events as they happen (for the demo's timeline).
    pub fn subscribe(&self) -> broadcast::Receiver<PlaneEvent> {
        self.shared.events.subscribe()
    }

    fn emit(&self, event: PlaneEvent) {
        let _ = self.shared.events.send(event);
    }

    /// Binds `127.0.0.1:0`, serves in a background task, returns the address.
    pub async fn start(&self) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(self.clone().serve(listener, None));
        Ok(addr)
    }

    /// Like [`start`](Self::start), over TLS with `identity`'s certificate.
    pub async fn start_tls(&self, identity: &tls::ServerIdentity) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config());
        tokio::spawn(self.clone().serve(listener, Some(acceptor)));
        Ok(addr)
    }

    /// Serves connections from `listener` (through `tls` when given) until the
    /// task is dropped. A failed handshake closes that connection only: the agent
    /// under test has refused the certificate, which is what a TLS test looks for.
    pub async fn serve(self, listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) {
        let router = routes::router(self.clone());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let plane = self.clone();
            let router = router.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    faults::handle(plane.clone(), router.clone(), request)
                });
                let http = hyper::server::conn::http1::Builder::new();
                let _ = match tls {
                    None => {
                        http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await
                    }
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => {
                            http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await
                        }
                        Err(_) => return,
                    },
                };
            });
        }
    }
}

/// A random `u64` without another dependency: std's randomly seeded hasher.
fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}
