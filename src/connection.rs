//! The control-plane client and the credentials it uses, built as one from the
//! settings: by the daemon at start and again when a reload changes either, and by
//! `check`.

use std::sync::Arc;

use crate::api::ApiClient;
use crate::config::{ConfigError, Settings};
use crate::credentials::Credentials;

/// The control-plane client and the credentials it uses: built from settings, and
/// rebuilt as one when a reload changes either.
#[derive(Debug)]
pub struct Connection {
    pub(crate) api: Arc<ApiClient>,
    pub(crate) credentials: Arc<Credentials>,
}

impl Connection {
    /// Builds the HTTP client (system roots, `ca_file`) and the credentials.
    pub fn new(settings: &Settings) -> Result<Self, ConfigError> {
        Ok(Self::with_client(settings, ApiClient::new(settings)?))
    }

    /// Like [`new`](Self::new), with a client that keeps the server's certificate
    /// ([`ApiClient::inspecting`]), for `check`.
    pub fn inspecting(settings: &Settings) -> Result<Self, ConfigError> {
        Ok(Self::with_client(
            settings,
            ApiClient::inspecting(settings)?,
        ))
    }

    fn with_client(settings: &Settings, api: ApiClient) -> Self {
        let api = Arc::new(api);
        let credentials = Arc::new(Credentials::new(
            api.clone(),
            &settings.auth,
            settings.client_token.clone(),
            settings.token_source.clone(),
            settings.refresh_margin,
            settings.retry_after_max,
            settings.backoff,
        ));
        Self { api, credentials }
    }

    /// The client and the credentials, for a caller outside the loop (`check`).
    pub fn into_parts(self) -> (Arc<ApiClient>, Arc<Credentials>) {
        (self.api, self.credentials)
    }
}
