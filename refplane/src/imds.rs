//! A mock EC2 instance metadata service (IMDSv2) on loopback: the session-token
//! dance (`PUT /latest/api/token` with a TTL, `GET`s with the token, 401 for a
//! missing, unknown or expired one), the instance's identity, spot interruption
//! notices and rebalance recommendations on demand, and misbehaviour on demand
//! (down, slow, always 401, garbage). Time is tokio's, so paused tests control
//! token expiry.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use tokio::time::Instant;

/// How the mock misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// As EC2 does.
    Normal,
    /// Closes every connection without an answer.
    Down,
    /// Answers after this delay.
    Slow(Duration),
    /// Answers every `GET` with 401, whatever the token.
    Unauthorized,
    /// Answers every `GET` with 200 and bytes that mean nothing.
    Garbage,
}

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct ImdsRequest {
    /// Milliseconds since the mock started.
    pub at_ms: u64,
    /// `PUT` or `GET`.
    pub method: String,
    /// The path.
    pub path: String,
    /// Whether a `GET` carried a session token the mock had issued and not expired.
    pub valid_token: bool,
}

struct State {
    tokens: HashMap<String, Instant>,
    issued: u64,
    /// The most TTL granted, whatever was asked.
    max_ttl: Option<u64>,
    /// A TTL said in the answer whatever was asked, as a hostile service would.
    said_ttl: Option<u64>,
    metadata: HashMap<&'static str, String>,
    behaviour: Behaviour,
    requests: Vec<ImdsRequest>,
}

/// The mock. Clones share one state.
#[derive(Clone)]
pub struct MockImds {
    state: Arc<Mutex<State>>,
    started: Instant,
}

/// The instance the mock describes.
pub const INSTANCE_ID: &str = "i-0123456789abcdef0";

impl Default for MockImds {
    fn default() -> Self {
        Self::new()
    }
}

impl MockImds {
    /// A spot `m5.large` in `eu-west-1a`, with no notice.
    pub fn new() -> Self {
        let metadata = HashMap::from([
            ("/latest/meta-data/instance-id", INSTANCE_ID.to_owned()),
            ("/latest/meta-data/instance-type", "m5.large".to_owned()),
            (
                "/latest/meta-data/placement/availability-zone",
                "eu-west-1a".to_owned(),
            ),
            ("/latest/meta-data/instance-life-cycle", "spot".to_owned()),
        ]);
        Self {
            state: Arc::new(Mutex::new(State {
                tokens: HashMap::new(),
                issued: 0,
                max_ttl: None,
                said_ttl: None,
                metadata,
                behaviour: Behaviour::Normal,
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

    /// Gives a spot interruption notice: `{"action": ACTION, "time": TIME}`.
    pub fn give_interruption(&self, action: &str, time: &str) {
        self.state().metadata.insert(
            "/latest/meta-data/spot/instance-action",
            format!(r#"{{"action": "{action}", "time": "{time}"}}"#),
        );
    }

    /// Gives a rebalance recommendation: `{"noticeTime": TIME}`.
    pub fn give_rebalance(&self, time: &str) {
        self.state().metadata.insert(
            "/latest/meta-data/events/recommendations/rebalance",
            format!(r#"{{"noticeTime": "{time}"}}"#),
        );
    }

    /// Sets how the mock behaves from now on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.state().behaviour = behaviour;
    }

    /// Grants session tokens of at most `seconds`, whatever is asked.
    pub fn cap_ttl(&self, seconds: u64) {
        self.state().max_ttl = Some(seconds);
    }

    /// Answers every session `PUT` with this TTL, whatever was asked (up to
    /// `u64::MAX`: what a hostile metadata service could say).
    pub fn say_ttl(&self, seconds: u64) {
        self.state().said_ttl = Some(seconds);
    }

    /// Forgets every session token issued (as after the instance's restart).
    pub fn revoke_tokens(&self) {
        self.state().tokens.clear();
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<ImdsRequest> {
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
        let behaviour = self.state().behaviour;
        if let Behaviour::Slow(delay) = behaviour {
            tokio::time::sleep(delay).await;
        }
        let path = request.uri().path().to_owned();
        let now = Instant::now();
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let mut state = self.state();
        let at_ms = u64::try_from(now.duration_since(self.started).as_millis()).unwrap_or(u64::MAX);
        let (status, body, ttl) = if request.method() == Method::PUT && path == "/latest/api/token"
        {
            state.requests.push(ImdsRequest {
                at_ms,
                method: "PUT".to_owned(),
                path,
                valid_token: false,
            });
            match header("x-aws-ec2-metadata-token-ttl-seconds").and_then(|v| v.parse::<u64>().ok())
            {
                Some(asked @ 1..=21_600) => {
                    let ttl = state
                        .said_ttl
                        .unwrap_or_else(|| state.max_ttl.map_or(asked, |max| asked.min(max)));
                    state.issued += 1;
                    let token = format!("imds-session-{}", state.issued);
                    let expiry = now
                        .checked_add(Duration::from_secs(ttl))
                        .unwrap_or(now + Duration::from_secs(86_400 * 365));
                    state.tokens.insert(token.clone(), expiry);
                    (StatusCode::OK, token, Some(ttl))
                }
                _ => (StatusCode::BAD_REQUEST, String::new(), None),
            }
        } else if request.method() == Method::GET {
            let valid_token = header("x-aws-ec2-metadata-token")
                .and_then(|t| state.tokens.get(&t).copied())
                .is_some_and(|expires| now < expires);
            state.requests.push(ImdsRequest {
                at_ms,
                method: "GET".to_owned(),
                path: path.clone(),
                valid_token,
            });
            match behaviour {
                Behaviour::Unauthorized => (StatusCode::UNAUTHORIZED, String::new(), None),
                Behaviour::Garbage => (StatusCode::OK, "<html>\u{1}\u{2}".to_owned(), None),
                _ if !valid_token => (StatusCode::UNAUTHORIZED, String::new(), None),
                _ => match state.metadata.get(path.as_str()) {
                    Some(value) => (StatusCode::OK, value.clone(), None),
                    None => (StatusCode::NOT_FOUND, String::new(), None),
                },
            }
        } else {
            (StatusCode::METHOD_NOT_ALLOWED, String::new(), None)
        };
        drop(state);
        let headers: Vec<(&str, String)> = ttl
            .map(|ttl| ("x-aws-ec2-metadata-token-ttl-seconds", ttl.to_string()))
            .into_iter()
            .collect();
        crate::serve::response(status, &headers, body)
    }
}
