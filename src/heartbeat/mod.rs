//! The heartbeat loop: register, beat at the interval, react to every failure class
//! of protocol.md section 3, and say goodbye at shutdown.
//!
//! Invariants:
//! - the first contact waits the start-up splay; then one heartbeat per interval with
//!   +-10% jitter, or the server's `next_heartbeat_in` (clamped to
//!   [`HEARTBEAT_FLOOR`], [`SERVER_INTERVAL_MAX`]);
//! - `seq` increases with every heartbeat of the process; a heartbeat retried after
//!   an expired token or a re-registration keeps its `seq` (it is the same beat);
//! - failures back off with full jitter, on the auth schedule for rejected
//!   credentials and inactive clients, and never stop; a success resets both;
//! - every wait, and every call, gives way to shutdown at once; the goodbye is
//!   bounded by `shutdown_timeout`;
//! - one log line per state change: failures (repeats summarised every
//!   [`SUMMARY_EVERY`]), recovery, registration; a successful heartbeat is logged at
//!   debug only.
//!
//! Child modules: `failures` (what a failure does to the wait and the log),
//! `status` (the line systemd shows), `reload` (SIGHUP), `spot` (interruption
//! notices), `watchdog` (when to ping systemd).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod failures;
mod reload;
mod spot;
mod status;
mod watchdog;

pub use failures::{CLOCK_SKEW_LIMIT, SUMMARY_EVERY};

use self::failures::Outage;
use self::watchdog::Watchdog;
use crate::Controls;
use crate::connection::Connection;

use crate::api::wire::{
    HeartbeatAnswer, HeartbeatRequest, InterruptionNotice, RegisterRequest, Status,
};
use crate::api::{ApiClient, ApiError};
use crate::config::HEARTBEAT_FLOOR;
use crate::config::{ImdsMode, Settings};
use crate::credentials::{Bearer, Credentials, Reread};
use crate::duration::show;
use crate::identity;
use crate::reaction::{Failed, Mode, Retry, react};
use crate::report::timestamp::rfc3339;
use crate::report::{AgentState, Counters, Failure, Reporter, STATUS_FORMAT, Snapshot, Success};
use crate::retry::Backoff;
use crate::state::{LoadNote, PersistedState, StateStore};
use crate::systemd::Notifier;
use crate::wheel::Grid;

/// What re-reading the client token found.
pub(super) enum TokenReread {
    /// A different token, now in use (logged as `token_reloaded`).
    Changed,
    /// The same token: where it was read, its fingerprint, and where a new one goes.
    Unchanged(String),
    /// The token could not be read again, and why.
    Failed(String),
}

/// The longest interval a server may ask for: a host never goes silent for longer.
pub const SERVER_INTERVAL_MAX: Duration = Duration::from_secs(3600);

/// The wait before the next heartbeat after one was accepted: the server's
/// `next_heartbeat_in` (any number: a non-finite or non-positive one is ignored)
/// or else `configured`, within [`HEARTBEAT_FLOOR`]..[`SERVER_INTERVAL_MAX`], with
/// +-10% jitter so that a fleet started at once does not beat in step. The bounds
/// are applied again after the jitter, so that they hold for the wait itself.
pub fn wait_after_success(server_says: Option<f64>, configured: Duration) -> Duration {
    let interval = server_says
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(configured, |s| {
            Duration::from_secs_f64(s.min(SERVER_INTERVAL_MAX.as_secs_f64())).max(HEARTBEAT_FLOOR)
        });
    interval
        .mul_f64(0.9 + 0.2 * fastrand::f64())
        .clamp(HEARTBEAT_FLOOR, SERVER_INTERVAL_MAX)
}

/// The agent's loop and everything it remembers.
pub struct Agent {
    settings: Arc<Settings>,
    api: Arc<ApiClient>,
    credentials: Arc<Credentials>,
    /// The exchange-mode token refresher, restarted when a reload replaces the
    /// credentials.
    refresher: Option<reload::Refresher>,
    store: StateStore,
    state: PersistedState,
    /// Whether saving the state already failed (warned once, not at every beat).
    state_unwritable: bool,
    logical_id: String,
    hostname: String,
    agent_id: Option<String>,
    seq: u64,
    started: Instant,
    /// The current stretch of failed attempts, if any.
    outage: Option<Outage>,
    /// When the last heartbeat was accepted, and its `seq`.
    last_success: Option<(SystemTime, u64)>,
    backoff: Backoff,
    auth_backoff: Backoff,
    ever_online: bool,
    /// Whether a clock skew beyond [`CLOCK_SKEW_LIMIT`] has been reported (and not
    /// since corrected).
    skew_reported: bool,
    /// The last failed attempt, kept after a recovery (for the status file).
    last_failure: Option<Failure>,
    counters: Counters,
    reporter: Reporter,
    /// The instance and its notices (`imds`).
    spot: spot::Spot,
    /// Where the runtime's timers wake anyway (from [`Controls`]).
    timer_grid: Grid,
}

/// What the loop hears from outside: signals, the service manager, the watchdog.
struct Outside {
    shutdown: CancellationToken,
    reload: Arc<Notify>,
    notifier: Arc<Notifier>,
    reloader: Option<crate::Reloader>,
    /// Watchdog pings within half `WATCHDOG_USEC`, when the unit arms a watchdog.
    watchdog: Option<Watchdog>,
    /// Notices from the metadata service, when it is watched.
    watcher: Option<crate::imds::Watcher>,
}

impl Outside {
    fn new(controls: Controls) -> Self {
        let watchdog = controls
            .notifier
            .watchdog_interval()
            .map(|period| Watchdog::new(period, controls.timer_grid));
        Self {
            shutdown: controls.shutdown,
            reload: controls.reload,
            notifier: controls.notifier,
            reloader: controls.reloader,
            watchdog,
            watcher: None,
        }
    }

    /// `WATCHDOG=1`, when the watchdog is armed.
    fn ping(&mut self) {
        if let Some(watchdog) = &mut self.watchdog {
            self.notifier.watchdog();
            watchdog.pinged(Instant::now());
        }
    }

    /// `WATCHDOG=1` now, while the loop is at work, if its next wake-up (after
    /// `next`) would come too late for the watchdog: the timer is then put off, and
    /// the loop does not wake for it alone.
    fn ping_before_waiting(&mut self, next: Duration) {
        let now = Instant::now();
        if self
            .watchdog
            .as_ref()
            .is_some_and(|watchdog| watchdog.rides(now, now + next))
        {
            self.ping();
        }
    }
}

/// Why a wait ended.
enum Wake {
    Elapsed,
    Shutdown,
    /// A notice from the metadata service: the next heartbeat goes at once.
    Notice(crate::imds::Notice),
}

impl Agent {
    /// An agent ready to run: state loaded (a corrupt file set aside), ids resolved.
    pub fn new(settings: Arc<Settings>, connection: Connection) -> Self {
        let Connection { api, credentials } = connection;
        let store = StateStore::new(&settings.state_dir);
        let (mut state, note) = store.load();
        match note {
            LoadNote::Fine => {}
            LoadNote::SetAside(aside, why) => tracing::warn!(
                event = "state_corrupt",
                "the state file {} could not be parsed ({why}); it was moved to {} and the agent starts afresh",
                store.path().display(),
                aside.display()
            ),
            LoadNote::Unreadable(why) => tracing::warn!(
                event = "state_unreadable",
                "the state file {} cannot be read ({why}); the agent starts afresh",
                store.path().display()
            ),
        }
        let mut state_unwritable = false;
        let logical_id = identity::known_logical_id(
            &settings.machine_id_file,
            state.generated_logical_id.as_deref(),
        )
        .unwrap_or_else(|| {
            let id =
                identity::generate().unwrap_or_else(|_| format!("{:032x}", fastrand::u128(..)));
            state.generated_logical_id = Some(id.clone());
            if let Err(e) = store.save(&state) {
                state_unwritable = true;
                tracing::warn!(
                    event = "state_unwritable",
                    "cannot save the state file {} ({e}); {}",
                    store.path().display(),
                    "this host's generated id will change at the next start"
                );
            }
            id
        });
        let agent_id = settings.agent_id.clone().or_else(|| state.agent_id.clone());
        let reporter = Reporter::new(&settings.state_dir, settings.metrics_textfile.clone());
        Self {
            backoff: settings.backoff.backoff(),
            auth_backoff: settings.auth_backoff.backoff(),
            settings,
            api,
            credentials,
            refresher: None,
            store,
            state,
            state_unwritable,
            logical_id,
            hostname: identity::hostname(),
            agent_id,
            seq: 0,
            started: Instant::now(),
            outage: None,
            last_success: None,
            ever_online: false,
            skew_reported: false,
            last_failure: None,
            counters: Counters::default(),
            reporter,
            spot: spot::Spot::default(),
            timer_grid: Grid::none(),
        }
    }

    /// Beats until `controls.shutdown`, then says goodbye. `controls.reload`
    /// (SIGHUP) reloads the configuration. systemd hears of every state change, and gets
    /// watchdog pings from this loop, so that a stuck loop is restarted.
    pub async fn run(mut self, controls: Controls) {
        self.timer_grid = controls.timer_grid;
        let mut outside = Outside::new(controls);
        self.start_refresher(&outside.shutdown);
        // Ready once configured and running; never waiting for the control plane,
        // nor for the metadata service (whose answer decides the logical id, and so
        // the splay).
        let asks_imds = self.settings.imds.mode != ImdsMode::Off;
        if asks_imds {
            outside
                .notifier
                .ready("starting, asking the instance metadata service who this instance is");
            outside.watcher = self.start_imds(&outside.shutdown).await;
        }
        let splay = identity::splay(&self.logical_id, self.settings.heartbeat_interval);
        tracing::info!(
            event = "started",
            logical_agent_id = %self.logical_id,
            agent_id = self.agent_id.as_deref(),
            server = %self.api.server(),
            token_fp = %self.credentials.client_token().fingerprint(),
            "hostbeat {} started ({} mode{}); first heartbeat in {}",
            env!("CARGO_PKG_VERSION"),
            if self.credentials.is_exchange() { "token exchange" } else { "static token" },
            self.spot.instance.as_ref().map(|i| format!(", instance {}", i.id)).unwrap_or_default(),
            show(splay)
        );
        let line = self.status_line(splay);
        if asks_imds {
            outside.notifier.status(&line);
        } else {
            outside.notifier.ready(&line);
        }
        self.publish(Some((splay, &line)));
        let mut next = splay;
        loop {
            match self.wait(next, &mut outside).await {
                Wake::Shutdown => break,
                Wake::Notice(notice) => self.on_notice(notice),
                Wake::Elapsed => {}
            }
            let outcome = {
                let beat = self.beat(self.spot.status());
                tokio::pin!(beat);
                loop {
                    // A beat may take several timeouts (token, register, retry): the
                    // loop is alive while it waits on them, so it keeps pinging.
                    tokio::select! {
                        outcome = &mut beat => break Some(outcome),
                        () = outside.shutdown.cancelled() => break None,
                        () = ping_due(outside.watchdog.as_ref()) => outside.ping(),
                    }
                }
            };
            let Some(outcome) = outcome else { break };
            self.check_clock();
            next = match outcome {
                Ok(answer) => self.on_success(&answer),
                Err(error) => self.on_failure(&error),
            };
            outside.ping_before_waiting(next);
            let line = self.status_line(next);
            outside.notifier.status(&line);
            self.publish(Some((next, &line)));
        }
        outside
            .notifier
            .stopping("stopping, telling the control plane this host is offline");
        self.stop_refresher().await;
        self.goodbye().await;
        self.publish(None);
    }

    /// Sleeps `duration`, pinging the watchdog. A reload (SIGHUP) that changes
    /// anything ends the wait, so that the new settings are tried at once; shutdown
    /// ends it.
    async fn wait(&mut self, duration: Duration, outside: &mut Outside) -> Wake {
        // A little late, so that the wait ends on a boundary of the runtime's timer
        // wheel: one wake-up, not two or three.
        let deadline = self.timer_grid.late(duration);
        loop {
            tokio::select! {
                () = outside.shutdown.cancelled() => return Wake::Shutdown,
                () = tokio::time::sleep_until(deadline) => return Wake::Elapsed,
                () = ping_due(outside.watchdog.as_ref()) => outside.ping(),
                Some(notice) = next_notice(&mut outside.watcher) => return Wake::Notice(notice),
                () = outside.reload.notified() => {
                    outside.notifier.reloading();
                    let changed = self.reload(outside.reloader.as_ref(), &outside.shutdown);
                    let left = deadline.saturating_duration_since(Instant::now());
                    let line = self.status_line(left);
                    outside.notifier.ready(&line);
                    self.publish(Some((left, &line)));
                    if changed {
                        return Wake::Elapsed;
                    }
                }
            }
        }
    }

    /// One heartbeat, with what it takes first (a token, a registration) and the
    /// retries the protocol allows, once each: a new access token when the control
    /// plane refuses the current one (exchange mode), and a new registration when it
    /// does not know the agent. The retried heartbeat keeps its `seq`.
    async fn beat(&mut self, status: Status) -> Result<HeartbeatAnswer, ApiError> {
        let mut bearer = self.credentials.bearer().await?;
        self.seq += 1;
        let notice = self.spot.carry();
        let body = self.heartbeat_body(status, notice);
        let (mut refreshed, mut reregistered) = (false, false);
        loop {
            let result = match self.agent_id.clone() {
                Some(agent_id) => self.api.heartbeat(&bearer.token, &agent_id, &body).await,
                None => match self.register(&bearer).await {
                    // Registered: the heartbeat goes next, with the new id.
                    Ok(_) => continue,
                    Err(error) => Err(error),
                },
            };
            let error = match result {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            let retry = react(Failed::from(&error), self.mode()).retry;
            if retry == Some(Retry::NewAccessToken) && !refreshed {
                // The access token is what was refused (expired early, or the server
                // lost it): a new one settles it, or the token endpoint says why not.
                // Said once a stretch of failures, like the failure itself: a
                // control plane that refuses every access token would otherwise get
                // a line (and a token_refreshed) per attempt.
                if self.outage.is_none() {
                    tracing::info!(
                        event = "token_refused",
                        reason = error.class.reason(),
                        access_token_fp = %bearer.token.fingerprint(),
                        "the control plane refused the access token ({}); getting a new one and retrying",
                        error.detail
                    );
                } else {
                    tracing::debug!(
                        event = "token_refused",
                        reason = error.class.reason(),
                        access_token_fp = %bearer.token.fingerprint(),
                        "the access token was refused again ({})",
                        error.detail
                    );
                }
                bearer = self.credentials.refresh(Some(bearer.generation)).await?;
                refreshed = true;
            } else if retry == Some(Retry::Register) && !reregistered {
                tracing::warn!(
                    event = "unknown_agent",
                    agent_id = self.agent_id.as_deref(),
                    "the control plane does not know this agent ({}); registering again",
                    error.detail
                );
                self.agent_id = None;
                reregistered = true;
            } else {
                return Err(error);
            }
        }
    }

    async fn register(&mut self, bearer: &Bearer) -> Result<String, ApiError> {
        let mut request = RegisterRequest::new(self.logical_id.clone(), self.hostname.clone());
        request.instance.clone_from(&self.spot.instance);
        let answer = self.api.register(&bearer.token, &request).await?;
        tracing::info!(
            event = "registered",
            agent_id = %answer.agent_id,
            logical_agent_id = %self.logical_id,
            "registered with {} as agent {}",
            self.api.server(),
            answer.agent_id
        );
        self.agent_id = Some(answer.agent_id.clone());
        self.state.agent_id = Some(answer.agent_id.clone());
        self.state.registered_logical_id = Some(self.logical_id.clone());
        self.save_state();
        Ok(answer.agent_id)
    }

    fn heartbeat_body(
        &self,
        status: Status,
        interruption: Option<InterruptionNotice>,
    ) -> HeartbeatRequest {
        let outage = self.outage.as_ref().filter(|o| o.missed > 0);
        HeartbeatRequest {
            status,
            seq: self.seq,
            sent_at: rfc3339(SystemTime::now()),
            uptime_s: self.started.elapsed().as_secs(),
            unreachable_since: outage.map(|o| rfc3339(o.since)),
            missed: outage.map(|o| o.missed),
            interruption,
        }
    }

    /// Resets the backoff, logs a recovery, and returns the time to the next beat.
    fn on_success(&mut self, answer: &HeartbeatAnswer) -> Duration {
        self.spot.delivered();
        if let Some(outage) = self.outage.take() {
            tracing::info!(
                event = "recovered",
                agent_id = self.agent_id.as_deref(),
                consecutive_failures = outage.missed,
                down_s = outage.started.elapsed().as_secs(),
                "heartbeats are accepted again after {} failed attempts over {}",
                outage.missed,
                show(outage.started.elapsed())
            );
        } else if !self.ever_online {
            tracing::info!(
                event = "online",
                agent_id = self.agent_id.as_deref(),
                "first heartbeat accepted by {}",
                self.api.server()
            );
        }
        self.ever_online = true;
        // A full or read-only disk at registration must not cost the agent id for
        // good: try again while the state is not saved.
        if self.state_unwritable {
            self.save_state();
        }
        self.counters.heartbeats_accepted += 1;
        self.last_success = Some((SystemTime::now(), self.seq));
        self.backoff.reset();
        self.auth_backoff.reset();
        let next = wait_after_success(answer.next_heartbeat_in, self.settings.heartbeat_interval);
        tracing::debug!(seq = self.seq, "heartbeat accepted; next in {}", show(next));
        next
    }

    /// Re-reads the client token; true when it changed (and is now in use). A
    /// token that did not change is said only at debug; a re-read that failed, as a
    /// warning (SIGHUP: the operator asked for it).
    fn reread_token(&self, why: &str) -> bool {
        match self.reread_token_quietly(why) {
            TokenReread::Changed => true,
            TokenReread::Unchanged(note) => {
                tracing::debug!("{note}");
                false
            }
            TokenReread::Failed(note) => {
                tracing::warn!(event = "token_reload_failed", "{note}");
                false
            }
        }
    }

    /// Re-reads the client token; logs only a change (`token_reloaded`), and says
    /// what it found otherwise, for the caller's own line.
    fn reread_token_quietly(&self, why: &str) -> TokenReread {
        match self.credentials.reread_client_token() {
            Ok(Reread::Changed(fingerprint)) => {
                tracing::info!(
                    event = "token_reloaded",
                    token_fp = %fingerprint,
                    "read a new client token after {why}; using it now"
                );
                TokenReread::Changed
            }
            Ok(Reread::Unchanged) => {
                let source = self.credentials.token_source();
                TokenReread::Unchanged(format!(
                    "re-read {} after {why}: the token there is unchanged (token_fp {}); put the new one in {} as HOSTBEAT_CLIENT_TOKEN=<token>, and hostbeat uses it at the next attempt",
                    source.origin,
                    self.credentials.client_token().fingerprint(),
                    source.env_file.display()
                ))
            }
            Err(e) => TokenReread::Failed(format!(
                "could not re-read the client token after {why}: {e}"
            )),
        }
    }

    /// The inputs of the failure table besides the failure.
    fn mode(&self) -> Mode {
        Mode::of(&self.settings)
    }

    /// The state the status file and the metrics report.
    fn agent_state(&self) -> AgentState {
        match (&self.outage, &self.last_success) {
            (Some(outage), _) if outage.last_auth => AgentState::AuthFailure,
            (Some(_), _) => AgentState::BackingOff,
            (None, Some(_)) => AgentState::Online,
            (None, None) => AgentState::Starting,
        }
    }

    /// Writes the status file (and the metrics): the next attempt due in `next`,
    /// with the status line systemd was just given; `None`: stopped.
    fn publish(&mut self, next: Option<(Duration, &str)>) {
        let now = SystemTime::now();
        let to_wall = |at: Instant| now + at.saturating_duration_since(Instant::now());
        let (interruption, rebalance) = self.spot.reports();
        let snapshot = Snapshot {
            format: STATUS_FORMAT,
            pid: std::process::id(),
            started: self.reporter.process_start(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            written_at: now,
            state: next.map_or(AgentState::Stopped, |_| self.agent_state()),
            status_line: next.map_or("stopped", |(_, line)| line).to_owned(),
            server: self.api.server().to_string(),
            agent_id: self.agent_id.clone(),
            logical_agent_id: self.logical_id.clone(),
            last_success: self.last_success.map(|(at, seq)| Success { at, seq }),
            consecutive_failures: self.outage.as_ref().map_or(0, |o| o.missed),
            last_failure: self.last_failure.clone(),
            token_expires_at: self.credentials.current_expiry().map(to_wall),
            next_attempt_at: next.map(|(next, _)| now + next),
            instance: self.spot.instance.clone(),
            interruption,
            rebalance,
            counters: self.counters.clone(),
        };
        self.reporter.publish(&snapshot);
    }

    fn save_state(&mut self) {
        match self.store.save(&self.state) {
            Ok(()) if self.state_unwritable => {
                self.state_unwritable = false;
                tracing::info!(
                    event = "state_saved",
                    agent_id = self.agent_id.as_deref(),
                    "the state file {} is written again; the agent id will survive a restart",
                    self.store.path().display()
                );
            }
            Err(e) if !self.state_unwritable => {
                self.state_unwritable = true;
                tracing::warn!(
                    event = "state_unwritable",
                    "cannot save the state file {} ({e}); the agent id is kept in memory and the save is tried again after each heartbeat",
                    self.store.path().display()
                );
            }
            // Saved as before, or failing as before: said already.
            Ok(()) | Err(_) => {}
        }
    }

    /// The `offline` heartbeat (protocol.md section 4) within `shutdown_timeout`:
    /// the same heartbeat as any other, with the token still held (a goodbye built
    /// after the token is dropped goes out without one, and is refused) and the one
    /// retry an expired token allows.
    async fn goodbye(&mut self) {
        let Some(agent_id) = self.agent_id.clone() else {
            tracing::info!(
                event = "shutdown",
                "stopping; not registered, so no goodbye to send"
            );
            return;
        };
        let deadline = self.settings.shutdown_timeout;
        match tokio::time::timeout(deadline, self.beat(Status::Offline)).await {
            Ok(Ok(_)) => tracing::info!(
                event = "shutdown",
                agent_id = %agent_id,
                "stopping; the control plane was told this host is offline"
            ),
            Ok(Err(e)) => tracing::warn!(
                event = "shutdown",
                agent_id = %agent_id,
                "stopping; the offline heartbeat failed: {e}"
            ),
            Err(_) => tracing::warn!(
                event = "shutdown",
                agent_id = %agent_id,
                "stopping; the offline heartbeat got no answer within shutdown_timeout ({})",
                show(deadline)
            ),
        }
    }
}

/// The next notice from the watcher, or never when there is none.
async fn next_notice(watcher: &mut Option<crate::imds::Watcher>) -> Option<crate::imds::Notice> {
    match watcher {
        Some(watcher) => watcher.notices.recv().await,
        None => std::future::pending().await,
    }
}

/// When the watchdog's timer must ping, or never when the watchdog is off.
async fn ping_due(watchdog: Option<&Watchdog>) {
    match watchdog {
        Some(watchdog) => watchdog.due().await,
        None => std::future::pending().await,
    }
}
