//! hostbeat keeps a host visibly alive to the control plane that manages it.
//!
//! Crate map (data flows top to bottom):
//! - [`config`]: settings from the config file, the env file and the environment,
//!   validated into [`config::Settings`]; the client token and where to re-read it.
//! - [`secret`]: the token types, which print only a fingerprint; [`redact`]: the
//!   last line of defence every output passes through, which knows every form of
//!   every secret the process has held.
//! - [`api`]: the control-plane client: one request builder that always sends the
//!   bearer token, bounded answers, and the classification of every failure;
//!   [`http`]: how every HTTP client is built (rustls with ring); `reaction`: what
//!   the agent does about each class of failure (protocol.md section 3).
//! - [`credentials`]: static token or OAuth client-credentials exchange, refreshed
//!   ahead of expiry, one exchange at a time, rotation without restart;
//!   `connection`: the client and the credentials, built as one.
//! - [`retry`]: backoff paced by the heartbeat's cadence, exponential with full
//!   jitter, never giving up; `plane_view`: whether the last request found the
//!   control plane down, which the token refresher and the goodbye respect.
//! - [`heartbeat`]: the loop: registration, cadence, reactions to failures, goodbye.
//! - [`identity`], `state`: who this host is, and what it remembers across restarts;
//!   [`cloud`]: EC2, Google Cloud and Azure behind one seam: instance identity,
//!   interruption notices.
//! - [`report`]: the status file (`hostbeat status`) and the Prometheus textfile;
//!   `atomic_file`: files replaced whole, never half-written; `duration`: the
//!   one way a duration is written for a person.
//! - [`logging`]: where log lines go; [`systemd`]: readiness, status and watchdog;
//!   [`wheel`]: deadlines on the timer wheel's boundaries, for fewer wake-ups.
//! - [`cli`]: the command line, also the source of the man pages and completions;
//!   [`check`]: `hostbeat check`, the doctor.
//!
//! [`run`] is the daemon: it takes its [`Controls`] (shutdown, reload, the line to
//! systemd) as an argument, so that tests drive it without touching process state.

pub mod api;
pub(crate) mod atomic_file;
pub mod check;
pub mod cli;
pub mod cloud;
pub mod config;
pub(crate) mod connection;
pub mod credentials;
pub(crate) mod duration;
pub mod heartbeat;
pub mod http;
pub mod identity;
pub mod logging;
pub(crate) mod plane_view;
pub(crate) mod reaction;
pub mod redact;
pub mod report;
pub mod retry;
pub mod secret;
pub(crate) mod state;
pub mod systemd;
pub(crate) mod trust;
pub mod wheel;

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use config::{ConfigError, ConfigInputs, Settings};

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration cannot work (exit status 78).
    #[error("configuration error: {0}")]
    Config(#[from] ConfigError),
}

/// What drives the daemon from outside: signals and the service manager.
#[derive(Debug, Clone)]
pub struct Controls {
    /// Cancelled on SIGTERM or SIGINT: say goodbye and return.
    pub shutdown: CancellationToken,
    /// Notified on SIGHUP: reload (see [`Reloader`]).
    pub reload: Arc<Notify>,
    /// sd_notify (a no-op outside systemd).
    pub notifier: Arc<systemd::Notifier>,
    /// How a reload gets the new configuration; without one, a reload re-reads the
    /// client token only.
    pub reloader: Option<Reloader>,
    /// The timer grid of the runtime the daemon runs on
    /// ([`wheel::Grid::for_runtime_built_next`]); without one, every deadline is
    /// exact and costs what tokio makes it cost.
    pub timer_grid: wheel::Grid,
}

impl Controls {
    /// Fresh signals and a notifier that says nothing: for tests and embedding.
    pub fn new() -> Self {
        Self {
            shutdown: CancellationToken::new(),
            reload: Arc::new(Notify::new()),
            notifier: Arc::new(systemd::Notifier::disabled()),
            reloader: None,
            timer_grid: wheel::Grid::none(),
        }
    }
}

impl Default for Controls {
    fn default() -> Self {
        Self::new()
    }
}

/// Loads the configuration again on a reload, and applies a new log level.
#[derive(Clone)]
pub struct Reloader {
    load: Arc<dyn Fn() -> Result<Settings, ConfigError> + Send + Sync>,
    set_log_level: Arc<dyn Fn(&str) + Send + Sync>,
}

impl Reloader {
    /// `load` reads and validates the configuration as at start; `set_log_level`
    /// changes the running filter.
    pub fn new(
        load: impl Fn() -> Result<Settings, ConfigError> + Send + Sync + 'static,
        set_log_level: impl Fn(&str) + Send + Sync + 'static,
    ) -> Self {
        Self {
            load: Arc::new(load),
            set_log_level: Arc::new(set_log_level),
        }
    }

    pub(crate) fn load(&self) -> Result<Settings, ConfigError> {
        (self.load)()
    }

    pub(crate) fn set_log_level(&self, filter: &str) {
        (self.set_log_level)(filter);
    }
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reloader")
    }
}

/// Runs the agent until `controls.shutdown` is cancelled, then says goodbye and
/// returns. Every notification on `controls.reload` reloads the configuration.
pub async fn run(settings: Settings, controls: Controls) -> Result<(), RunError> {
    let connection = connection::Connection::new(&settings)?;
    heartbeat::Agent::new(Arc::new(settings), connection)
        .run(controls)
        .await;
    Ok(())
}
