//! The heartbeat loop: register, beat at the interval, react to every failure class
//! of protocol.md section 3, and say goodbye at shutdown.
//!
//! Invariants:
//! - the first contact waits the start-up splay; then one heartbeat per interval with
//!   +-10% jitter, or the server's `next_heartbeat_in` (clamped to
//!   [`HEARTBEAT_FLOOR`], [`SERVER_INTERVAL_MAX`]);
//! - `seq` increases with every heartbeat of the process; a heartbeat retried after
//!   an expired token or a re-registration keeps its `seq` (it is the same beat);
//! - failures back off, no sooner than the next beat would have gone and then with
//!   full jitter (protocol.md section 3), on the auth schedule for rejected
//!   credentials and inactive clients, and never stop; a success resets both;
//! - every wait, and every call, gives way to shutdown at once; the goodbye is
//!   bounded by `shutdown_timeout`;
//! - one log line per state change: failures (repeats summarised every
//!   [`SUMMARY_EVERY`]), recovery, registration; a successful heartbeat is logged at
//!   debug only.
//!
//! Child modules: `registration` (the agent's ids and the state file), `health`
//! (the failure stretch, the schedules, the counters), `failure` (what the loop
//! does about a failed heartbeat), `status` (the line systemd shows), `reload`
//! (SIGHUP), `spot` (interruption notices), `watchdog` (when to ping systemd).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod failure;
mod health;
mod registration;
mod reload;
mod spot;
mod status;
mod watchdog;

pub use health::{CLOCK_SKEW_LIMIT, SUMMARY_EVERY};

use self::health::{Health, Recovery};
use self::registration::Registration;
use self::spot::Heed;
use self::watchdog::Watchdog;
use crate::Controls;
use crate::connection::Connection;

use crate::api::wire::{
    HeartbeatAnswer, HeartbeatRequest, InterruptionNotice, RegisterRequest, Status,
};
use crate::api::{ApiClient, ApiError};
use crate::config::HEARTBEAT_FLOOR;
use crate::config::{CloudMode, Settings};
use crate::credentials::{Bearer, Credentials};
use crate::duration::show;
use crate::identity;
use crate::reaction::{Failed, Mode, Retry, react};
use crate::report::timestamp::rfc3339;
use crate::report::{AgentState, Reporter, STATUS_FORMAT, Snapshot, Success};
use crate::systemd::Notifier;
use crate::wheel::Grid;

/// The longest interval a server may ask for: a host never goes silent for longer.
pub const SERVER_INTERVAL_MAX: Duration = Duration::from_secs(3600);

/// The cadence after an accepted heartbeat: the server's `next_heartbeat_in` (any
/// number: a non-finite or non-positive one is ignored) or else `configured`,
/// within [`HEARTBEAT_FLOOR`]..[`SERVER_INTERVAL_MAX`]. Retries are paced by it
/// too (protocol.md section 3).
pub fn cadence(server_says: Option<f64>, configured: Duration) -> Duration {
    server_says
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(configured, |s| {
            Duration::from_secs_f64(s.min(SERVER_INTERVAL_MAX.as_secs_f64())).max(HEARTBEAT_FLOOR)
        })
}

/// The wait before the next heartbeat after one was accepted: the [`cadence`] with
/// +-10% jitter so that a fleet started at once does not beat in step. The bounds
/// are applied again after the jitter, so that they hold for the wait itself.
pub fn wait_after_success(server_says: Option<f64>, configured: Duration) -> Duration {
    jittered(cadence(server_says, configured), 0.9, 0.2)
}

/// The wait before the first heartbeat after a failing stretch: anywhere from half
/// to one and a half [`cadence`]s, uniformly. Agents come back from a stretch when
/// their retries happen to land after the plane's return, so a fleet's phases
/// bunch near the return, and the +-10% of [`wait_after_success`] would take many
/// intervals to spread them: after a 60-second outage, 10,000 agents beat in step
/// for minutes, 1.23 times the steady rate (the herd, docs/reliability.md). A draw
/// over a whole cadence makes each phase uniform again at once.
pub fn wait_after_recovery(server_says: Option<f64>, configured: Duration) -> Duration {
    jittered(cadence(server_says, configured), 0.5, 1.0)
}

/// `cadence` times a factor drawn from `from..from + width`, within the bounds
/// (applied again after the jitter, so that they hold for the wait itself).
fn jittered(cadence: Duration, from: f64, width: f64) -> Duration {
    cadence
        .mul_f64(from + width * fastrand::f64())
        .clamp(HEARTBEAT_FLOOR, SERVER_INTERVAL_MAX)
}

/// The agent's loop and what it remembers, in parts that keep their own
/// invariants: the `Registration` (who the agent is, in the state file), the
/// `Health` (how heartbeats have fared), the spot notices (`spot::Spot`), and
/// the client and credentials, which a reload replaces together (with the
/// refresher) when a setting they depend on changes.
pub struct Agent {
    settings: Arc<Settings>,
    api: Arc<ApiClient>,
    credentials: Arc<Credentials>,
    /// The exchange-mode token refresher, restarted when a reload replaces the
    /// credentials.
    refresher: Option<reload::Refresher>,
    /// Who this agent is to the control plane, kept in the state file.
    registration: Registration,
    seq: u64,
    started: Instant,
    /// How heartbeats have fared: the failure stretch, the schedules, the counters.
    health: Health,
    reporter: Reporter,
    /// The instance and its notices (`cloud`).
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
    watcher: Option<crate::cloud::Watcher>,
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
    /// A notice that the host goes: the next heartbeat goes at once.
    Notice,
}

impl Agent {
    /// An agent ready to run: state loaded (a corrupt file set aside), ids resolved.
    pub(crate) fn new(settings: Arc<Settings>, connection: Connection) -> Self {
        let Connection { api, credentials } = connection;
        let registration = Registration::load(&settings);
        let reporter = Reporter::new(&settings.state_dir, settings.metrics_textfile.clone());
        Self {
            health: Health::new(&settings),
            settings,
            api,
            credentials,
            refresher: None,
            registration,
            seq: 0,
            started: Instant::now(),
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
        self.share_cadence();
        self.start_refresher(&outside.shutdown);
        // Ready once configured and running; never waiting for the control plane,
        // nor for the metadata service (whose answer decides the logical id, and so
        // the splay).
        let asks_cloud = self.settings.cloud.mode != CloudMode::Off;
        if asks_cloud {
            outside
                .notifier
                .ready("starting, asking the cloud's metadata service who this instance is");
            outside.watcher = self.start_cloud(&outside.shutdown).await;
        }
        let splay = identity::splay(
            self.registration.logical_id(),
            self.settings.heartbeat_interval,
        );
        tracing::info!(
            event = "started",
            logical_agent_id = %self.registration.logical_id(),
            agent_id = self.registration.agent_id(),
            server = %self.api.server(),
            token_fp = %self.credentials.client_token().fingerprint(),
            "hostbeat {} started ({} mode{}); first heartbeat in {}",
            env!("CARGO_PKG_VERSION"),
            if self.credentials.is_exchange() { "token exchange" } else { "static token" },
            self.spot.instance.as_ref().map(|i| format!(", instance {}", i.id)).unwrap_or_default(),
            show(splay)
        );
        let line = self.status_line(splay);
        if asks_cloud {
            outside.notifier.status(&line);
        } else {
            outside.notifier.ready(&line);
        }
        self.publish(Some((splay, &line)));
        let mut next = splay;
        loop {
            match self.wait(next, &mut outside).await {
                Wake::Shutdown => break,
                Wake::Notice | Wake::Elapsed => {}
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
            if let Some(offset) = self.api.clock_offset() {
                self.health.check_clock(offset);
            }
            next = match outcome {
                Ok(answer) => self.on_success(&answer),
                Err(error) => self.on_failure(&error),
            };
            // The next attempt's first request waits for the budget (every request
            // does, src/plane_view.rs): say when it will really go.
            next = next.max(
                self.api
                    .plane_room_at()
                    .saturating_duration_since(Instant::now()),
            );
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
    /// anything brings the end of the wait within one interval, at random, so that
    /// the new settings are tried soon; shutdown ends it.
    async fn wait(&mut self, duration: Duration, outside: &mut Outside) -> Wake {
        // A little late, so that the wait ends on a boundary of the runtime's timer
        // wheel: two wake-ups rather than three (src/wheel.rs).
        let mut deadline = self.timer_grid.late(duration);
        loop {
            tokio::select! {
                () = outside.shutdown.cancelled() => return Wake::Shutdown,
                () = tokio::time::sleep_until(deadline) => return Wake::Elapsed,
                () = ping_due(outside.watchdog.as_ref()) => outside.ping(),
                Some(notice) = next_notice(&mut outside.watcher) => {
                    match self.on_notice(notice) {
                        Heed::Ignore => continue,
                        Heed::Now => return Wake::Notice,
                        Heed::Soon => {
                            let now = Instant::now();
                            let at = now
                                .max(self.api.plane_room_at())
                                .max(self.health.asked_until().unwrap_or(now));
                            deadline = deadline.min(at);
                        }
                        Heed::Carry => {}
                    }
                    // Shown from the notice on, whenever the heartbeat goes.
                    let left = deadline.saturating_duration_since(Instant::now());
                    let line = self.status_line(left);
                    outside.notifier.status(&line);
                    self.publish(Some((left, &line)));
                }
                () = outside.reload.notified() => {
                    outside.notifier.reloading();
                    if self.reload(outside.reloader.as_ref(), &outside.shutdown) {
                        // The new settings are tried at a random point of one
                        // cadence (and within the budget, and not before a
                        // Retry-After has passed), not at once: a fleet reloaded
                        // together (a configuration push, in an outage or not) does
                        // not beat together (protocol.md section 3).
                        let cadence = self.health.cadence().unwrap_or(self.settings.heartbeat_interval);
                        let now = Instant::now();
                        let at = (now + cadence.mul_f64(fastrand::f64()))
                            .max(self.api.plane_room_at())
                            .max(self.health.asked_until().unwrap_or(now));
                        deadline = deadline.min(at);
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    let line = self.status_line(left);
                    // systemd waits for READY=1 to end the reload, whatever it did.
                    outside.notifier.ready(&line);
                    self.publish(Some((left, &line)));
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
            let result = match self.registration.agent_id().map(str::to_owned) {
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
                if self.health.outage().is_none() {
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
                    agent_id = self.registration.agent_id(),
                    "the control plane does not know this agent ({}); registering again",
                    error.detail
                );
                self.registration.forget();
                reregistered = true;
            } else {
                return Err(error);
            }
        }
    }

    async fn register(&mut self, bearer: &Bearer) -> Result<String, ApiError> {
        let mut request = RegisterRequest::new(
            self.registration.logical_id().to_owned(),
            self.registration.hostname().to_owned(),
        );
        request.instance.clone_from(&self.spot.instance);
        let answer = self.api.register(&bearer.token, &request).await?;
        tracing::info!(
            event = "registered",
            agent_id = %answer.agent_id,
            logical_agent_id = %self.registration.logical_id(),
            "registered with {} as agent {}",
            self.api.server(),
            answer.agent_id
        );
        self.registration.registered(&answer.agent_id);
        Ok(answer.agent_id)
    }

    fn heartbeat_body(
        &self,
        status: Status,
        interruption: Option<InterruptionNotice>,
    ) -> HeartbeatRequest {
        let outage = self.health.outage();
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
        let cadence = cadence(answer.next_heartbeat_in, self.settings.heartbeat_interval);
        let recovery = self.health.succeeded(self.seq, cadence);
        let recovered = matches!(recovery, Recovery::Ended(_));
        self.share_cadence();
        match recovery {
            Recovery::Ended(outage) => tracing::info!(
                event = "recovered",
                agent_id = self.registration.agent_id(),
                consecutive_failures = outage.missed,
                down_s = outage.started.elapsed().as_secs(),
                "heartbeats are accepted again after {} failed attempts over {}",
                outage.missed,
                show(outage.started.elapsed())
            ),
            Recovery::FirstOnline => tracing::info!(
                event = "online",
                agent_id = self.registration.agent_id(),
                "first heartbeat accepted by {}",
                self.api.server()
            ),
            Recovery::Steady => {}
        }
        self.registration.save_if_unsaved();
        let next = if recovered {
            wait_after_recovery(answer.next_heartbeat_in, self.settings.heartbeat_interval)
        } else {
            wait_after_success(answer.next_heartbeat_in, self.settings.heartbeat_interval)
        };
        tracing::debug!(seq = self.seq, "heartbeat accepted; next in {}", show(next));
        next
    }

    /// The loop's cadence (`Health::cadence`) paces the token refresher's retries
    /// and the request budget too: handed to both here, at start, after every
    /// accepted heartbeat and after a reload. An unpaced schedule (the naive
    /// policies a benchmark compares) keeps no budget.
    fn share_cadence(&self) {
        let cadence = self.health.cadence();
        if let Some(cadence) = cadence {
            self.credentials.pace(cadence);
        }
        self.api.pace(cadence);
    }

    /// The inputs of the failure table besides the failure.
    fn mode(&self) -> Mode {
        Mode::of(&self.settings)
    }

    /// Writes the status file (and the metrics): the next attempt due in `next`,
    /// with the status line systemd was just given; `None`: stopped.
    fn publish(&mut self, next: Option<(Duration, &str)>) {
        let now = SystemTime::now();
        let to_wall = |at: Instant| now + at.saturating_duration_since(Instant::now());
        let (interruption, advisory) = self.spot.reports();
        let snapshot = Snapshot {
            format: STATUS_FORMAT,
            pid: std::process::id(),
            started: self.reporter.process_start(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            written_at: now,
            state: next.map_or(AgentState::Stopped, |_| self.health.state()),
            status_line: next.map_or("stopped", |(_, line)| line).to_owned(),
            server: self.api.server().to_string(),
            agent_id: self.registration.agent_id().map(str::to_owned),
            logical_agent_id: self.registration.logical_id().to_owned(),
            last_success: self
                .health
                .last_success()
                .map(|(at, seq)| Success { at, seq }),
            consecutive_failures: self.health.outage().map_or(0, |o| o.missed),
            last_failure: self.health.last_failure().cloned(),
            token_expires_at: self.credentials.current_expiry().map(to_wall),
            next_attempt_at: next.map(|(next, _)| now + next),
            instance: self.spot.instance.clone(),
            interruption,
            advisory,
            counters: self.health.counters().clone(),
        };
        self.reporter.publish(&snapshot);
    }

    /// The `offline` heartbeat (protocol.md section 4) within `shutdown_timeout`:
    /// the same heartbeat as any other, with the token still held (a goodbye built
    /// after the token is dropped goes out without one, and is refused) and the one
    /// retry an expired token allows.
    async fn goodbye(&mut self) {
        let Some(agent_id) = self.registration.agent_id().map(str::to_owned) else {
            tracing::info!(
                event = "shutdown",
                "stopping; not registered, so no goodbye to send"
            );
            return;
        };
        let deadline = self.settings.shutdown_timeout;
        let room_in = self
            .api
            .plane_room_at()
            .saturating_duration_since(Instant::now());
        if room_in >= deadline {
            // The goodbye is a request like any other (src/plane_view.rs): a plane
            // failing for a while gets no more of them than of heartbeats.
            tracing::warn!(
                event = "shutdown",
                agent_id = %agent_id,
                "stopping; no offline heartbeat: the control plane has been failing, and the next request is due in {}, after shutdown_timeout ({})",
                show(room_in),
                show(deadline)
            );
            return;
        }
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
async fn next_notice(watcher: &mut Option<crate::cloud::Watcher>) -> Option<crate::cloud::Notice> {
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
