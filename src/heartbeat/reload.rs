//! Reloading on SIGHUP: the configuration is read and validated again and what
//! changed is applied without losing the agent id, the heartbeat sequence or the
//! failure count; a configuration that does not validate is refused and the running
//! one stays. Also the token refresher, which a new [`Connection`] restarts.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Agent;
use crate::Reloader;
use crate::config::{ConfigError, Settings};
use crate::connection::Connection;

/// A running token refresher and its own stop signal.
#[derive(Debug)]
pub(super) struct Refresher {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn reject(error: &ConfigError) {
    tracing::error!(
        event = "config_rejected",
        setting = error.setting(),
        "the reloaded configuration is refused and the running one stays: {error}"
    );
}

/// What differs between the running configuration and a reloaded one.
struct Changes {
    /// The settings' names, for the log.
    names: Vec<&'static str>,
    /// Whether the client and the credentials must be built anew.
    connection: bool,
}

fn changes(old: &Settings, new: &Settings) -> Changes {
    // Every field by name, so that a new setting does not compile until it is
    // decided here whether a reload applies it and what its change needs.
    let Settings {
        servers,
        client_token,
        token_source,
        auth,
        agent_id,
        paths,
        heartbeat_interval,
        refresh_margin,
        backoff,
        auth_backoff,
        retry_after_max,
        connect_timeout,
        request_timeout,
        shutdown_timeout,
        ca_file,
        log_level,
        metrics_textfile,
        // Taken at the next restart only (`apply` keeps the running values and
        // says so): the state file's place, and the metadata watcher's settings.
        state_dir: _,
        cloud: _,
        // Read once at start, for the logical agent id, which a reload keeps.
        machine_id_file: _,
    } = new;
    // (setting, whether it changed, whether its change needs a new Connection)
    let checks = [
        ("server_url", old.servers != *servers, true),
        ("client_token", *old.client_token != **client_token, true),
        (
            "env_file or the client token's source",
            old.token_source != *token_source,
            true,
        ),
        (
            "token_url, client_id, client_auth or scope",
            old.auth != *auth,
            true,
        ),
        ("agent_id", old.agent_id != *agent_id, false),
        (
            "register_path, heartbeat_path or validate_path",
            old.paths != *paths,
            true,
        ),
        (
            "heartbeat_interval",
            old.heartbeat_interval != *heartbeat_interval,
            false,
        ),
        (
            "refresh_margin",
            old.refresh_margin != *refresh_margin,
            true,
        ),
        ("backoff_cap", old.backoff.cap() != backoff.cap(), true),
        (
            "auth_backoff_cap",
            old.auth_backoff.cap() != auth_backoff.cap(),
            false,
        ),
        (
            "retry_after_max",
            old.retry_after_max != *retry_after_max,
            false,
        ),
        (
            "connect_timeout",
            old.connect_timeout != *connect_timeout,
            true,
        ),
        (
            "request_timeout",
            old.request_timeout != *request_timeout,
            true,
        ),
        (
            "shutdown_timeout",
            old.shutdown_timeout != *shutdown_timeout,
            false,
        ),
        ("ca_file", old.ca_file != *ca_file, true),
        ("log_level", old.log_level != *log_level, false),
        (
            "metrics_textfile",
            old.metrics_textfile != *metrics_textfile,
            false,
        ),
    ];
    Changes {
        names: checks.iter().filter(|c| c.1).map(|c| c.0).collect(),
        connection: checks.iter().any(|c| c.1 && c.2),
    }
}

impl Agent {
    /// Handles SIGHUP; true when something changed (the next beat then goes within
    /// one cadence, at random).
    pub(super) fn reload(
        &mut self,
        reloader: Option<&Reloader>,
        shutdown: &CancellationToken,
    ) -> bool {
        let Some(reloader) = reloader else {
            return self.reread_token("SIGHUP");
        };
        let new = match reloader.load() {
            Ok(new) => new,
            Err(e) => {
                reject(&e);
                return false;
            }
        };
        self.apply(new, reloader, shutdown)
    }

    fn apply(
        &mut self,
        mut new: Settings,
        reloader: &Reloader,
        shutdown: &CancellationToken,
    ) -> bool {
        let old = self.settings.clone();
        if new.state_dir != old.state_dir {
            tracing::warn!(
                event = "config_warning",
                "state_dir changed to {}; it takes effect at the next restart",
                new.state_dir.display()
            );
            new.state_dir.clone_from(&old.state_dir);
        }
        if new.cloud != old.cloud {
            tracing::warn!(
                event = "config_warning",
                "cloud, a metadata URL, dmi_dir, interruption_poll_interval or gcp_preemption_notice changed; they take effect at the next restart"
            );
            new.cloud.clone_from(&old.cloud);
        }
        let Changes {
            names: changed,
            connection,
        } = changes(&old, &new);
        if changed.is_empty() {
            tracing::info!(
                event = "config_reloaded",
                "configuration read again: nothing changed"
            );
            return false;
        }
        if connection {
            let connection = match Connection::new(&new) {
                Ok(connection) => connection,
                Err(e) => {
                    reject(&e);
                    return false;
                }
            };
            connection.api.carry_views_from(&self.api);
            self.api = connection.api;
            self.credentials = connection.credentials;
            self.restart_refresher(shutdown);
        }
        if old.log_level != new.log_level {
            reloader.set_log_level(&new.log_level);
        }
        self.health.follow(&old, &new);
        self.share_cadence();
        self.registration.configured(new.agent_id.as_deref());
        self.reporter.set_metrics_path(new.metrics_textfile.clone());
        self.settings = Arc::new(new);
        tracing::info!(
            event = "config_reloaded",
            changed = %changed.join("; "),
            "configuration reloaded ({}); agent id and heartbeat sequence kept",
            changed.join("; ")
        );
        true
    }

    /// Starts the exchange-mode refresher for the current credentials.
    pub(super) fn start_refresher(&mut self, shutdown: &CancellationToken) {
        if self.credentials.is_exchange() {
            let stop = shutdown.child_token();
            let task = tokio::spawn(self.credentials.clone().run_refresher(stop.clone()));
            self.refresher = Some(Refresher { stop, task });
        }
    }

    fn restart_refresher(&mut self, shutdown: &CancellationToken) {
        if let Some(old) = self.refresher.take() {
            old.stop.cancel();
        }
        self.start_refresher(shutdown);
    }

    /// Stops the refresher and waits for it.
    /// Stops the refresher at once, an exchange in flight included: waiting for
    /// it could take a whole `request_timeout` (or more, with retries), which a
    /// shutdown bounded by `shutdown_timeout` does not have. Dropping an exchange
    /// half-way loses nothing: the token it would have brought is asked for again
    /// when it is needed.
    pub(super) async fn stop_refresher(&mut self) {
        if let Some(refresher) = self.refresher.take() {
            refresher.stop.cancel();
            refresher.task.abort();
            let _ = refresher.task.await;
        }
    }
}
