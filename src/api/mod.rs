//! The control-plane client: one HTTP client, one request builder, bounded answers,
//! classified failures.
//!
//! Invariants:
//! - every call to the control plane goes through `ApiClient::authorized`, which
//!   always sets `Authorization: Bearer` (a call built without it is a 401 that
//!   looks like a rejected token); the token endpoint is the one exception,
//!   authenticated as an OAuth client;
//! - redirects are never followed, so a token cannot follow one to another origin;
//! - every call has a connect timeout and a total timeout;
//! - every call waits for its host's budget, and is noted in its host's view with
//!   what it found (src/plane_view.rs): one budget for every asker;
//! - bodies are read up to [`BODY_LIMIT`], never further, and never logged whole;
//! - an error's text never holds the token, even if a server echoes it back: every
//!   error is made by `ApiError::new`, which passes its detail through
//!   [`crate::redact`].

pub mod classify;
pub mod wire;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, HeaderMap, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;
use zeroize::Zeroizing;

use self::classify::{
    Answer, classify_answer, classify_transport, clean_for_log, error_chain, transport_detail,
};
pub use self::classify::{Endpoint, FailureClass, io_words};
use self::wire::{
    HeartbeatAnswer, HeartbeatRequest, RegisterAnswer, RegisterRequest, TokenAnswer, ValidateAnswer,
};
use crate::config::{AuthMode, ClientAuth, ConfigError, Exchange, Paths, Settings};
use crate::plane_view::{Found, HostView};
use crate::secret::Token;

/// The largest answer body read (64 KiB).
pub const BODY_LIMIT: usize = 64 * 1024;

/// `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("hostbeat/", env!("CARGO_PKG_VERSION"));

/// A failed call, classified, with what the operator needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// What the agent does about it.
    pub class: FailureClass,
    /// Which call.
    pub endpoint: Endpoint,
    /// The HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// The server's own words, or the transport error; never a token.
    pub detail: String,
    /// The server's `Retry-After`, when given.
    pub retry_after: Option<Duration>,
    /// The server (scheme, host and port) that failed.
    pub server: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.endpoint.name(), self.class.describe())?;
        match self.status {
            Some(status) => write!(f, " (HTTP {status} from {})", self.server)?,
            None => write!(f, " ({})", self.server)?,
        }
        write!(f, ": {}", self.detail)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// Every error of a call is made here, so that its detail (a server's words,
    /// a library's) passes the redactor at its cause, whatever the call.
    fn new(class: FailureClass, endpoint: Endpoint, server: &Url, detail: String) -> Self {
        let detail = match crate::redact::redact(&detail) {
            std::borrow::Cow::Owned(clean) => clean,
            std::borrow::Cow::Borrowed(_) => detail,
        };
        Self {
            class,
            endpoint,
            status: None,
            detail,
            retry_after: None,
            server: server.origin().ascii_serialization(),
        }
    }
}

/// The client of one control plane (one or several base URLs).
#[derive(Debug)]
pub struct ApiClient {
    http: reqwest::Client,
    servers: Vec<Url>,
    current: AtomicUsize,
    paths: Paths,
    /// The server's clock minus ours at the last answer with a `Date`, in seconds.
    clock_offset: std::sync::Mutex<Option<i64>>,
    /// The server's certificate (DER) at the last answer over TLS; kept only by a
    /// client built with [`ApiClient::inspecting`].
    peer_certificate: std::sync::Mutex<Option<Vec<u8>>>,
    /// The timeouts the client was built with, which a timeout's words name.
    connect_timeout: Duration,
    request_timeout: Duration,
    /// The control plane's servers, as the last request found them.
    plane: HostView,
    /// Whether access tokens are exchanged for (exchange mode).
    exchanges: bool,
    /// A token endpoint on a host no control-plane server shares (an outside
    /// identity provider): its origin, and its own view.
    token_host: Option<(String, HostView)>,
}

/// The token endpoint's origin, when it is in exchange mode and no control-plane
/// server shares it.
fn separate_token_host(settings: &Settings) -> Option<String> {
    let AuthMode::Exchange(exchange) = &settings.auth else {
        return None;
    };
    let origin = exchange.token_url.origin().ascii_serialization();
    let shared = settings
        .servers
        .iter()
        .any(|server| server.origin().ascii_serialization() == origin);
    (!shared).then_some(origin)
}

impl ApiClient {
    /// Builds the HTTP client: system roots plus `ca_file`, timeouts, no redirects.
    pub fn new(settings: &Settings) -> Result<Self, ConfigError> {
        Self::build(settings, false)
    }

    /// Like [`new`](Self::new), and also keeps the certificate the server presented
    /// (for `hostbeat check`; the daemon has no use for it on every heartbeat).
    pub fn inspecting(settings: &Settings) -> Result<Self, ConfigError> {
        Self::build(settings, true)
    }

    fn build(settings: &Settings, keep_peer_certificate: bool) -> Result<Self, ConfigError> {
        let trusted = crate::trust::roots(settings.ca_file.as_deref()).map_err(|e| match e {
            crate::trust::TrustError::CaFile(problem) => ConfigError::new(
                "ca_file",
                settings.ca_file.as_ref().map(|p| p.display().to_string()),
                problem,
                "point ca_file at a PEM file holding the CA certificate(s)",
            ),
            nothing @ crate::trust::TrustError::Nothing(_) => ConfigError::new(
                "ca_file",
                None,
                nothing.to_string(),
                "install the ca-certificates package, or set ca_file to the control plane's CA",
            ),
        })?;
        let http = crate::http::client_builder(trusted)
            .tls_info(keep_peer_certificate)
            .user_agent(USER_AGENT)
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            // One connection, kept for as long as the server keeps it: hyper's idle
            // timer would wake the agent every 90 s to look for expired connections
            // (three wake-ups each: src/wheel.rs says why). One the server closes is dropped
            // when its FIN arrives; one that died silently (a NAT's table) is found
            // by TCP keepalive within a minute, and a request stuck on it ends with
            // the user timeout.
            .pool_idle_timeout(None)
            .pool_max_idle_per_host(1)
            .tcp_keepalive(Duration::from_secs(15))
            .tcp_keepalive_interval(Duration::from_secs(15))
            .tcp_keepalive_retries(3)
            .tcp_user_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| {
                ConfigError::new(
                    "ca_file",
                    None,
                    format!("the HTTP client cannot start: {}", error_chain(&e)),
                    "check ca_file and that the ca-certificates package is installed",
                )
            })?;
        Ok(Self {
            http,
            servers: settings.servers.clone(),
            current: AtomicUsize::new(0),
            paths: settings.paths.clone(),
            clock_offset: std::sync::Mutex::new(None),
            peer_certificate: std::sync::Mutex::new(None),
            connect_timeout: settings.connect_timeout,
            request_timeout: settings.request_timeout,
            plane: HostView::default(),
            exchanges: matches!(settings.auth, AuthMode::Exchange(_)),
            token_host: separate_token_host(settings).map(|origin| (origin, HostView::default())),
        })
    }

    /// The view of `url`'s host, and whether it is the control plane's.
    fn view(&self, url: &Url) -> (&HostView, bool) {
        match &self.token_host {
            Some((origin, view)) if url.origin().ascii_serialization() == *origin => (view, false),
            _ => (&self.plane, true),
        }
    }

    /// Charges each request to a failing host one `cadence` from now on
    /// (src/plane_view.rs); none keeps no budget (the default: `check` sends
    /// a few requests once, and waits for nothing).
    pub fn pace(&self, cadence: Option<Duration>) {
        self.plane.pace(cadence);
        if let Some((_, view)) = &self.token_host {
            view.pace(cadence);
        }
    }

    /// Takes over `old`'s views (a reload rebuilt the client): the control plane's
    /// if its servers are the same, and an identity provider's if it is the same
    /// one. A client that no longer exchanges tokens forgets failed exchanges.
    pub fn carry_views_from(&self, old: &Self) {
        if self.servers == old.servers {
            self.plane.carry_from(&old.plane);
            // No exchange will go to the plane to settle one that failed.
            if !self.exchanges || self.token_host.is_some() {
                self.plane.forget_exchanges();
            }
        }
        if let (Some((origin, view)), Some((old_origin, old_view))) =
            (&self.token_host, &old.token_host)
            && origin == old_origin
        {
            view.carry_from(old_view);
        }
    }

    /// When the budget lets the next request go to the control plane's servers.
    pub fn plane_room_at(&self) -> tokio::time::Instant {
        self.plane.room_at()
    }

    /// Requests sent to the control plane's servers in all.
    pub fn plane_requests(&self) -> u64 {
        self.plane.total()
    }

    /// When `url` is on a control-plane server that is down, returns once a
    /// request finds the plane answering again; at once otherwise (a token
    /// endpoint on a host of its own has no other prober than its own caller). The
    /// token refresher waits here rather than keep a schedule of its own against a
    /// plane the heartbeat path is already probing.
    pub async fn until_plane_answers(&self, url: &Url) {
        if let (view, true) = self.view(url) {
            view.until_answering().await;
        }
    }

    /// The certificate (DER) the server presented at the last answer over TLS, when
    /// this client was built with [`inspecting`](Self::inspecting).
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        self.peer_certificate.lock().expect("not poisoned").clone()
    }

    /// How far the control plane's clock (its `Date` header) was ahead of ours at
    /// the last answer, in whole seconds (negative: behind). `Date` has a resolution
    /// of one second, which is plenty to see a clock that is off by minutes.
    pub fn clock_offset(&self) -> Option<i64> {
        *self.clock_offset.lock().expect("not poisoned")
    }

    fn note_date(&self, headers: &HeaderMap) {
        let Some(date) = headers
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
        else {
            return;
        };
        let now = SystemTime::now();
        let offset = match date.duration_since(now) {
            Ok(ahead) => i64::try_from(ahead.as_secs()).unwrap_or(i64::MAX),
            Err(behind) => -i64::try_from(behind.duration().as_secs()).unwrap_or(i64::MAX),
        };
        *self.clock_offset.lock().expect("not poisoned") = Some(offset);
    }

    /// The base URL in use.
    pub fn server(&self) -> &Url {
        &self.servers[self.current.load(Ordering::Relaxed) % self.servers.len()]
    }

    /// Moves the next attempt to the next base URL (protocol.md section 5); returns
    /// it when there is more than one.
    pub fn fail_over(&self) -> Option<&Url> {
        if self.servers.len() < 2 {
            return None;
        }
        self.current.fetch_add(1, Ordering::Relaxed);
        Some(self.server())
    }

    fn url(&self, path: &str) -> Url {
        let base = self.server().as_str().trim_end_matches('/');
        Url::parse(&format!("{base}{path}")).expect("a valid base URL joined with a path is valid")
    }

    /// THE request builder for control-plane calls: every one carries the bearer token.
    fn authorized(&self, method: Method, url: Url, bearer: &Token) -> RequestBuilder {
        self.http
            .request(method, url)
            .header(AUTHORIZATION, bearer.bearer_header())
    }

    /// `POST register`.
    pub async fn register(
        &self,
        bearer: &Token,
        body: &RegisterRequest,
    ) -> Result<RegisterAnswer, ApiError> {
        let url = self.url(&self.paths.register);
        let request = self
            .authorized(Method::POST, url.clone(), bearer)
            .json(body);
        self.call(Endpoint::Register, &url, request, |answer: &RegisterAnswer| {
            if crate::identity::is_valid_agent_id(&answer.agent_id) {
                Ok(())
            } else {
                Err("the agent_id in the answer is empty, too long or has characters outside A-Z a-z 0-9 . _ : -")
            }
        })
        .await
    }

    /// `POST heartbeat`.
    pub async fn heartbeat(
        &self,
        bearer: &Token,
        agent_id: &str,
        body: &HeartbeatRequest,
    ) -> Result<HeartbeatAnswer, ApiError> {
        let url = self.url(&self.paths.heartbeat.replace("{agent_id}", agent_id));
        let request = self
            .authorized(Method::POST, url.clone(), bearer)
            .json(body);
        self.call(
            Endpoint::Heartbeat,
            &url,
            request,
            |answer: &HeartbeatAnswer| {
                if answer.success == Some(false) {
                    Err("the server answered success: false")
                } else {
                    Ok(())
                }
            },
        )
        .await
    }

    /// `GET validate`.
    pub async fn validate(&self, bearer: &Token) -> Result<ValidateAnswer, ApiError> {
        let url = self.url(&self.paths.validate);
        let request = self.authorized(Method::GET, url.clone(), bearer);
        self.call(Endpoint::Validate, &url, request, |_: &ValidateAnswer| {
            Ok(())
        })
        .await
    }

    /// The OAuth 2.0 client-credentials grant (RFC 6749 section 4.4). The answer's
    /// access token is checked to be usable as a header value.
    pub async fn exchange(
        &self,
        exchange: &Exchange,
        client_secret: &Token,
    ) -> Result<TokenAnswer, ApiError> {
        let url = exchange.token_url.clone();
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &exchange.scope {
            form.push(("scope", scope));
        }
        let request = match exchange.client_auth {
            // RFC 6749 2.3.1: both parts are form-encoded before Basic encoding.
            ClientAuth::Basic => {
                let (id, secret) = (
                    form_encode(&exchange.client_id),
                    Zeroizing::new(form_encode(client_secret.expose())),
                );
                // The header's value, in case a server echoes it (its base64 holds
                // the secret's, which the redactor knows at any alignment too).
                let basic = Zeroizing::new(
                    base64::engine::general_purpose::STANDARD.encode(format!("{id}:{}", *secret)),
                );
                crate::redact::remember_encoded(&basic, crate::redact::Kind::Client);
                self.http.post(url.clone()).basic_auth(id, Some(&*secret))
            }
            ClientAuth::Post => {
                form.push(("client_id", &exchange.client_id));
                form.push(("client_secret", client_secret.expose()));
                self.http.post(url.clone())
            }
        }
        .form(&form);
        self.call(Endpoint::Token, &url, request, |answer: &TokenAnswer| {
            if answer
                .token_type
                .as_deref()
                .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
            {
                return Err("the token_type is not Bearer");
            }
            if answer.access_token.is_empty()
                || !answer.access_token.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err("the access_token is empty or not visible ASCII");
            }
            Ok(())
        })
        .await
    }

    /// Sends once the host's budget lets it, checks the answer is `usable`, and
    /// notes in the host's view what it found (src/plane_view.rs).
    async fn call<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        url: &Url,
        request: RequestBuilder,
        usable: impl FnOnce(&T) -> Result<(), &'static str>,
    ) -> Result<T, ApiError> {
        let (view, _) = self.view(url);
        let admitted = view.admit().await;
        let result = self.send(endpoint, url, request).await.and_then(|answer| {
            usable(&answer).map_err(|detail| {
                ApiError::new(FailureClass::Protocol, endpoint, url, detail.to_owned())
            })?;
            Ok(answer)
        });
        let found = match &result {
            Ok(_) => Found::Answered,
            Err(error) => Found::Failed {
                down: crate::reaction::host_down(error.class),
            },
        };
        view.found(admitted, endpoint, found);
        result
    }

    /// Sends, reads the body within the limit, and turns anything but a usable 2xx
    /// into a classified error.
    async fn send<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        url: &Url,
        request: RequestBuilder,
    ) -> Result<T, ApiError> {
        // The URL is left out of the text: the error names the server already.
        let transport = |e: reqwest::Error| {
            let e = e.without_url();
            let class = classify_transport(&e);
            tracing::debug!("{} failed: {}", endpoint.name(), error_chain(&e));
            let detail = transport_detail(&e, class, self.connect_timeout, self.request_timeout);
            ApiError::new(class, endpoint, url, detail)
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        self.note_date(response.headers());
        if let Some(certificate) = response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(reqwest::tls::TlsInfo::peer_certificate)
        {
            *self.peer_certificate.lock().expect("not poisoned") = Some(certificate.to_vec());
        }
        // Reading the body consumes the response; a failure still needs its headers
        // (Retry-After, WWW-Authenticate, Location) to be classified.
        let headers = (!status.is_success()).then(|| response.headers().clone());
        let with_status = |mut e: ApiError| {
            e.status = Some(status.as_u16());
            e
        };
        let body = read_limited(response).await.map_err(|e| {
            with_status(match e {
                BodyError::TooLarge => ApiError::new(
                    FailureClass::Protocol,
                    endpoint,
                    url,
                    format!(
                        "the answer is larger than the {} KiB limit",
                        BODY_LIMIT / 1024
                    ),
                ),
                BodyError::Transport(e) => transport(e),
            })
        })?;
        if status.is_success() {
            return decode_answer(&body).map_err(|why| {
                with_status(ApiError::new(FailureClass::Protocol, endpoint, url, why))
            });
        }
        Err(with_status(classify_error_answer(
            endpoint,
            url,
            status,
            headers.as_ref().expect("kept for failures"),
            &body,
        )))
    }
}

fn classify_error_answer(
    endpoint: Endpoint,
    url: &Url,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiError {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
    };
    let retry_after =
        header(RETRY_AFTER).and_then(|v| classify::parse_retry_after(v, SystemTime::now()));
    let (class, mut detail) = classify_answer(
        endpoint,
        &Answer {
            status: status.as_u16(),
            www_authenticate: header(WWW_AUTHENTICATE),
            body,
            retry_after,
        },
    );
    if status.is_redirection() {
        detail = format!(
            "redirect to {} not followed; point the setting at the final URL",
            clean_for_log(header(reqwest::header::LOCATION).unwrap_or("?"), 200)
        );
    }
    let mut error = ApiError::new(class, endpoint, url, detail);
    error.retry_after = retry_after;
    error
}

pub(crate) enum BodyError {
    TooLarge,
    Transport(reqwest::Error),
}

pub(crate) async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|n| n > BODY_LIMIT as u64)
    {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > BODY_LIMIT {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn form_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Decodes a success answer; the error says what was wrong in words fit for the
/// log, quoting nothing of the answer (see `json_fault`).
pub fn decode_answer<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| {
        format!(
            "the {}-byte answer is not the expected JSON ({})",
            body.len(),
            json_fault(&e)
        )
    })
}

/// What was wrong with a JSON answer, without quoting the answer: serde's message
/// for a value of the wrong type quotes the value (`invalid type: string "..."`),
/// and an answer may echo anything, a token included. A missing field's message
/// names only the field, which is ours.
pub(crate) fn json_fault(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Data => {
            let message = e.to_string();
            if message.starts_with("missing field") {
                clean_for_log(&message, 120)
            } else {
                "a value of the wrong type".to_owned()
            }
        }
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            "not JSON".to_owned()
        }
        serde_json::error::Category::Io => "unreadable".to_owned(),
    };
    format!("{what}, at line {} column {}", e.line(), e.column())
}
