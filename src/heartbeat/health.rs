//! How heartbeats have fared ([`Health`]): the stretch of failures under way, the
//! two backoff schedules, the last success and failure, the counters; what a failure
//! does to them (the wait the failure table asks for, and whether it is worth a log
//! line); and the clock check on every answer.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::api::{ApiError, FailureClass};
use crate::config::Settings;
use crate::duration::show;
use crate::reaction::{Reaction, Wait};
use crate::report::{AgentState, Counters, Failure};
use crate::retry::Backoff;

/// A clock further than this from the control plane's is reported (once).
pub const CLOCK_SKEW_LIMIT: Duration = Duration::from_secs(30);

/// How often a failure that keeps repeating is summarised in the log: an hour-long
/// outage is a handful of lines, not one per attempt.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(600);

/// A stretch of consecutive failed heartbeats.
pub(super) struct Outage {
    pub(super) since: SystemTime,
    pub(super) started: Instant,
    pub(super) missed: u64,
    pub(super) last_class: Option<FailureClass>,
    /// Whether the last failure was an authentication failure.
    pub(super) last_auth: bool,
    /// The class last logged, and when.
    logged: Option<(FailureClass, Instant)>,
}

impl Outage {
    /// Whether a failure of `class` gets a log line: the first of its class in this
    /// stretch, or a summary once the last line about it is [`SUMMARY_EVERY`] old;
    /// otherwise a repeat, logged at debug only.
    fn log_decision(&mut self, class: FailureClass) -> Said {
        let now = Instant::now();
        let said = match self.logged {
            Some((logged, at)) if logged == class => {
                if now.duration_since(at) >= SUMMARY_EVERY {
                    Said::Summary(self.so_far())
                } else {
                    Said::Quiet
                }
            }
            _ => Said::First,
        };
        if !matches!(said, Said::Quiet) {
            self.logged = Some((class, now));
        }
        said
    }

    /// "3 attempts over 4m 10s"
    fn so_far(&self) -> String {
        format!(
            "{} attempts over {}",
            self.missed,
            show(self.started.elapsed())
        )
    }
}

/// How heartbeats have fared. Invariant: a stretch of failures ([`Outage`]) exists
/// exactly while the loop's last heartbeat failed (the goodbye is not counted); a
/// success ends it and resets both schedules.
pub(super) struct Health {
    /// The current stretch of failed attempts, if any.
    outage: Option<Outage>,
    /// When the last heartbeat was accepted, and its `seq`.
    last_success: Option<(SystemTime, u64)>,
    /// The transient schedule (paced by the cadence, up to `backoff_cap`).
    backoff: Backoff,
    /// The authentication schedule (`auth_backoff_cap`).
    auth_backoff: Backoff,
    ever_online: bool,
    /// Whether a clock skew beyond [`CLOCK_SKEW_LIMIT`] has been reported (and not
    /// since corrected).
    skew_reported: bool,
    /// Until when the plane asked this agent to wait (`Retry-After`), while it does.
    asked_until: Option<Instant>,
    /// The last failed attempt, kept after a recovery (for the status file).
    last_failure: Option<Failure>,
    counters: Counters,
}

/// How a failure is said in the journal.
pub(super) enum Said {
    /// The first of its class in the stretch: a line of its own.
    First,
    /// A repeat, and the last line about it is [`SUMMARY_EVERY`] old: a summary,
    /// with the stretch so far ("3 attempts over 4m 10s").
    Summary(String),
    /// A repeat: debug only.
    Quiet,
}

/// How a success ended things.
pub(super) enum Recovery {
    /// The first heartbeat accepted since the start.
    FirstOnline,
    /// A stretch of failures ended.
    Ended(Outage),
    /// Nothing to say: it was online already.
    Steady,
}

impl Health {
    pub(super) fn new(settings: &Settings) -> Self {
        Self {
            outage: None,
            last_success: None,
            backoff: settings.backoff.backoff(),
            auth_backoff: settings.auth_backoff.backoff(),
            ever_online: false,
            skew_reported: false,
            asked_until: None,
            last_failure: None,
            counters: Counters::default(),
        }
    }

    /// New schedules after a reload changed them (the stretch goes on).
    /// The cadence the plane asked for (`next_heartbeat_in`) stays until it answers
    /// otherwise; one that follows the configured interval follows the new one.
    pub(super) fn follow(&mut self, old: &Settings, new: &Settings) {
        let cadence = match self.cadence() {
            Some(asked) if asked != old.heartbeat_interval => asked,
            _ => new.heartbeat_interval,
        };
        if old.backoff != new.backoff {
            self.backoff.adopt(new.backoff.at_cadence(cadence));
        }
        if old.auth_backoff != new.auth_backoff {
            self.auth_backoff
                .adopt(new.auth_backoff.at_cadence(cadence));
        }
    }

    /// The stretch of failures under way.
    pub(super) fn outage(&self) -> Option<&Outage> {
        self.outage.as_ref()
    }

    pub(super) fn last_success(&self) -> Option<(SystemTime, u64)> {
        self.last_success
    }

    pub(super) fn last_failure(&self) -> Option<&Failure> {
        self.last_failure.as_ref()
    }

    pub(super) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The state the status file and the metrics report.
    pub(super) fn state(&self) -> AgentState {
        match (&self.outage, &self.last_success) {
            (Some(outage), _) if outage.last_auth => AgentState::AuthFailure,
            (Some(_), _) => AgentState::BackingOff,
            (None, Some(_)) => AgentState::Online,
            (None, None) => AgentState::Starting,
        }
    }

    /// Counts a failure of `error`, which the failure table answered with
    /// `reaction`, into the stretch, and decides how it is said.
    pub(super) fn count(&mut self, error: &ApiError, reaction: &Reaction) -> Said {
        self.count_quietly(error, reaction)
            .log_decision(error.class)
    }

    /// Counts a failure into the stretch without a word about it: one the agent
    /// settled at once (a rotated token, read again and tried at once).
    pub(super) fn count_quietly(&mut self, error: &ApiError, reaction: &Reaction) -> &mut Outage {
        self.last_failure = Some(Failure {
            at: SystemTime::now(),
            reason: error.class.reason().to_owned(),
            description: error.class.describe().to_owned(),
        });
        self.counters.heartbeats_failed += 1;
        if reaction.is_auth() {
            *self
                .counters
                .auth_failures
                .entry(error.class.reason().to_owned())
                .or_default() += 1;
        }
        let outage = self.outage.get_or_insert_with(|| Outage {
            since: SystemTime::now(),
            started: Instant::now(),
            missed: 0,
            last_class: None,
            last_auth: false,
            logged: None,
        });
        outage.missed += 1;
        outage.last_class = Some(error.class);
        outage.last_auth = reaction.is_auth();
        outage
    }

    /// The wait before the next attempt, on the schedule `wait` names, and the
    /// failures counted on that schedule so far.
    pub(super) fn wait(&mut self, wait: Wait, settings: &Settings) -> (Duration, u32) {
        self.asked_until = None;
        match wait {
            Wait::Auth => (self.auth_backoff.next_delay(), self.auth_backoff.failures()),
            Wait::AsAsked(asked) => {
                // Still a failure of the stretch, for the backoff after it.
                self.backoff.next_ceiling();
                // Never sooner than the next beat would have gone (the floor).
                let asked = asked
                    .min(settings.retry_after_max)
                    .max(self.backoff.policy().floor());
                self.asked_until = Some(Instant::now() + asked);
                (asked, self.backoff.failures())
            }
            Wait::Transient { .. } => (self.backoff.next_delay(), self.backoff.failures()),
        }
    }

    /// Until when the plane asked this agent to wait (`Retry-After`), if it did for
    /// the wait under way: a reload does not cut it short.
    pub(super) fn asked_until(&self) -> Option<Instant> {
        self.asked_until
    }

    /// The cadence in effect, for a schedule paced by one (none for the naive
    /// policies a benchmark compares).
    pub(super) fn cadence(&self) -> Option<Duration> {
        let policy = self.backoff.policy();
        policy.is_paced().then(|| policy.floor())
    }

    /// Counts an accepted heartbeat of sequence `seq`, after which the next is due
    /// at `cadence` (before jitter): the stretch ends, and both schedules start
    /// again, paced by that cadence.
    pub(super) fn succeeded(&mut self, seq: u64, cadence: Duration) -> Recovery {
        self.counters.heartbeats_accepted += 1;
        self.asked_until = None;
        self.last_success = Some((SystemTime::now(), seq));
        self.backoff.reset();
        self.auth_backoff.reset();
        self.backoff.pace(cadence);
        self.auth_backoff.pace(cadence);
        let first = !std::mem::replace(&mut self.ever_online, true);
        match self.outage.take() {
            Some(outage) => Recovery::Ended(outage),
            None if first => Recovery::FirstOnline,
            None => Recovery::Steady,
        }
    }

    /// Reports a clock that is off from the control plane's (`offset` seconds,
    /// from its `Date` header) by more than [`CLOCK_SKEW_LIMIT`], once, and again
    /// only after it was corrected. Token lifetimes are counted on the monotonic
    /// clock, so a skew does not break refreshes; it does make `sent_at` and the
    /// server's view of the host wrong.
    pub(super) fn check_clock(&mut self, offset: i64) {
        let skewed = offset.unsigned_abs() > CLOCK_SKEW_LIMIT.as_secs();
        if skewed && !self.skew_reported {
            tracing::warn!(
                event = "clock_skew",
                offset_s = offset,
                "the local clock is {} {} the control plane's (from its Date header); check NTP: `timedatectl status`",
                show(Duration::from_secs(offset.unsigned_abs())),
                if offset > 0 { "behind" } else { "ahead of" }
            );
        }
        self.skew_reported = skewed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Endpoint;
    use crate::reaction::{Failed, Mode, react};
    use crate::retry::RetryPolicy;

    fn failed(class: FailureClass) -> ApiError {
        ApiError {
            class,
            endpoint: Endpoint::Heartbeat,
            status: Some(401),
            detail: String::new(),
            retry_after: None,
            server: "https://cp.example.com".to_owned(),
        }
    }

    fn health() -> Health {
        let policy = RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(60));
        Health {
            outage: None,
            last_success: None,
            backoff: policy.backoff(),
            auth_backoff: policy.backoff(),
            ever_online: false,
            skew_reported: false,
            asked_until: None,
            last_failure: None,
            counters: Counters::default(),
        }
    }

    /// What the table counts as an authentication failure is what the state says:
    /// a static token the server calls expired was logged and counted as one, but
    /// the state said `backing_off`.
    #[test]
    fn the_state_follows_the_table() {
        let static_mode = Mode {
            exchange: false,
            fixed_agent_id: false,
        };
        for (class, mode, state) in [
            (
                FailureClass::TokenExpired,
                static_mode,
                AgentState::AuthFailure,
            ),
            (
                FailureClass::ClientInactive,
                static_mode,
                AgentState::AuthFailure,
            ),
            (
                FailureClass::ServerError,
                static_mode,
                AgentState::BackingOff,
            ),
            (
                FailureClass::TokenExpired,
                Mode {
                    exchange: true,
                    ..static_mode
                },
                AgentState::BackingOff,
            ),
        ] {
            let mut health = health();
            let error = failed(class);
            let reaction = react(Failed::from(&error), mode);
            health.count(&error, &reaction);
            assert_eq!(health.state(), state, "{class:?} in {mode:?}");
            let counted = health.counters().auth_failures.get(class.reason()).copied();
            assert_eq!(
                counted.is_some(),
                state == AgentState::AuthFailure,
                "{class:?}"
            );
        }
    }

    /// A failure settled at once (a rotated token) is counted but costs no log
    /// line: the first failure after it is still said.
    #[test]
    fn a_failure_settled_at_once_leaves_the_next_one_its_line() {
        let mut health = health();
        let error = failed(FailureClass::CredentialRejected);
        let reaction = react(
            Failed::from(&error),
            Mode {
                exchange: false,
                fixed_agent_id: false,
            },
        );
        health.count_quietly(&error, &reaction);
        assert!(matches!(health.count(&error, &reaction), Said::First));
        assert!(matches!(health.count(&error, &reaction), Said::Quiet));
        assert_eq!(health.outage().map(|o| o.missed), Some(3));
    }
}
