//! What every cloud's metadata client shares: the HTTP client (short timeouts, no
//! proxy, no redirect, no idle timer), the error, and reading an answer.
//!
//! Invariants: no metadata request ever goes through a proxy (the services are on
//! the host's link; a proxy from the environment must not see these calls); every
//! answer is read with a size limit; outside text in an error is clipped.

use std::time::Duration;

use crate::api::classify::error_chain;
use crate::api::{BodyError, read_limited};

/// Every ordinary request's limit, connection included: the services are on the
/// host's link and answer in milliseconds or not at all.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a metadata call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// No answer: nothing listens, the request timed out, or the connection broke.
    #[error("no answer from the metadata service: {0}")]
    Unreachable(String),
    /// The service refused (for EC2, even with a fresh session token).
    #[error("the metadata service answered HTTP {0}")]
    Status(u16),
    /// An answer that is not what the service sends.
    #[error("the metadata service answered something unexpected: {0}")]
    Garbage(String),
    /// An answer without the header the real service always sends back (Google's
    /// `Metadata-Flavor: Google`): something else answers at that address.
    #[error("the answer lacks {0}: it is not the cloud's metadata server, and is not believed")]
    Impostor(&'static str),
}

impl MetadataError {
    /// A short, stable name for logs (`HOSTBEAT_REASON`) and state changes.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => "unreachable",
            Self::Status(401) => "unauthorized",
            Self::Status(503) => "unavailable",
            Self::Status(_) => "refused",
            Self::Garbage(_) => "garbage",
            Self::Impostor(_) => "impostor",
        }
    }
}

/// The HTTP client for one metadata service: plain http, no proxy, `timeout` for
/// every request unless a request sets its own (a hanging or a slow first one).
pub fn client(timeout: Duration) -> reqwest::Client {
    // The services are plain http on a link-local address: no roots to read.
    crate::http::client_builder(rustls::RootCertStore::empty())
        .no_proxy()
        .connect_timeout(REQUEST_TIMEOUT)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        // No idle timer waking the agent every 90 s; see `ApiClient`.
        .pool_idle_timeout(None)
        .pool_max_idle_per_host(2)
        .build()
        .expect("a client without TLS settings always builds")
}

/// A transport error, without the URL (which is in the settings anyway).
pub fn unreachable(error: reqwest::Error) -> MetadataError {
    MetadataError::Unreachable(error_chain(&error.without_url()))
}

/// The whole answer, at most 64 KiB.
pub async fn body(response: reqwest::Response) -> Result<Vec<u8>, MetadataError> {
    read_limited(response).await.map_err(|e| match e {
        BodyError::TooLarge => MetadataError::Garbage("an answer larger than 64 KiB".to_owned()),
        BodyError::Transport(e) => unreachable(e),
    })
}

/// The answer as text, or garbage naming `what`.
pub fn text(body: Vec<u8>, what: &str) -> Result<String, MetadataError> {
    String::from_utf8(body)
        .map_err(|_| MetadataError::Garbage(format!("{what}: an answer that is not UTF-8")))
}
