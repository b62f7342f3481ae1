//! An IMDSv2 client: a session token from `PUT /latest/api/token`, renewed before
//! its TTL runs out and again after a 401, sent with every `GET`; short timeouts,
//! because the service answers in milliseconds or not at all; no proxy, ever (the
//! service is link-local; a proxy from the environment must not see these calls).
//!
//! Invariants: the session token is never logged nor put in an error; every answer
//! is read with a size limit; an answer that is not what the service sends is an
//! error, never a guess.

use std::sync::Mutex;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::time::Instant;
use url::Url;

use crate::api::classify::error_chain;
use crate::api::{BodyError, read_limited};

/// Every request's limit, connection included: the service is on the host.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// The session token's lifetime asked for: six hours, the service's maximum.
pub const SESSION_TTL: Duration = Duration::from_secs(21_600);
/// A session token is renewed this long before it expires (or at half its
/// lifetime, when the service grants less than twice this).
const RENEW_BEFORE: Duration = Duration::from_secs(60);

const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";

/// Why a metadata call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImdsError {
    /// No answer: nothing listens, the request timed out, or the connection broke.
    #[error("no answer from the instance metadata service: {0}")]
    Unreachable(String),
    /// The service refused, even with a fresh session token.
    #[error("the instance metadata service answered HTTP {0}")]
    Status(u16),
    /// An answer that is not what the service sends.
    #[error("the instance metadata service answered something unexpected: {0}")]
    Garbage(String),
}

impl ImdsError {
    /// A short, stable name for logs and state changes.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => "unreachable",
            Self::Status(401) => "unauthorized",
            Self::Status(_) => "refused",
            Self::Garbage(_) => "garbage",
        }
    }
}

struct Session {
    token: String,
    renew_at: Instant,
}

/// The client. Cheap to share (`Arc`); calls may overlap.
pub struct ImdsClient {
    http: reqwest::Client,
    base: Url,
    session: Mutex<Option<Session>>,
}

impl std::fmt::Debug for ImdsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImdsClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl ImdsClient {
    /// A client for the service at `base` (`http://169.254.169.254`).
    pub fn new(base: Url) -> Self {
        // The service is plain http on a link-local address: no roots to read.
        let http = crate::http::client_builder(rustls::RootCertStore::empty())
            .no_proxy()
            .connect_timeout(REQUEST_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            // No idle timer waking the agent every 90 s; see `ApiClient`.
            .pool_idle_timeout(None)
            .pool_max_idle_per_host(1)
            .build()
            .expect("a client without TLS settings always builds");
        Self {
            http,
            base,
            session: Mutex::new(None),
        }
    }

    /// A new session token (kept, and returned): the probe that tells an EC2 host
    /// from any other.
    pub async fn open_session(&self) -> Result<String, ImdsError> {
        let url = self.url("/latest/api/token");
        let response = self
            .http
            .put(url)
            .header(TTL_HEADER, SESSION_TTL.as_secs().to_string())
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
            return Err(ImdsError::Status(status.as_u16()));
        }
        let token = String::from_utf8(body)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty() && t.len() <= 512 && t.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| ImdsError::Garbage("a session token that is not a token".to_owned()))?;
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
    pub async fn get(&self, path: &str) -> Result<Option<String>, ImdsError> {
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
                StatusCode::OK => {
                    return String::from_utf8(body).map(Some).map_err(|_| {
                        ImdsError::Garbage(format!("{path}: an answer that is not UTF-8"))
                    });
                }
                StatusCode::NOT_FOUND => return Ok(None),
                StatusCode::UNAUTHORIZED if !retried => {
                    *self.session.lock().expect("not poisoned") = None;
                    retried = true;
                }
                other => return Err(ImdsError::Status(other.as_u16())),
            }
        }
    }

    /// The current session token, opening a session when there is none or it is
    /// due for renewal.
    async fn session_token(&self) -> Result<String, ImdsError> {
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

fn unreachable(error: reqwest::Error) -> ImdsError {
    ImdsError::Unreachable(error_chain(&error.without_url()))
}

async fn body(response: reqwest::Response) -> Result<Vec<u8>, ImdsError> {
    read_limited(response).await.map_err(|e| match e {
        BodyError::TooLarge => ImdsError::Garbage("an answer larger than 64 KiB".to_owned()),
        BodyError::Transport(e) => unreachable(e),
    })
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
