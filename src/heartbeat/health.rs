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
    /// stretch (`Some(false)`), or a summary once the last line about it is
    /// [`SUMMARY_EVERY`] old (`Some(true)`). `None`: a repeat, logged at debug only.
    fn log_decision(&mut self, class: FailureClass) -> Option<bool> {
        let now = Instant::now();
        let decision = match self.logged {
            Some((logged, at)) if logged == class => {
                (now.duration_since(at) >= SUMMARY_EVERY).then_some(true)
            }
            _ => Some(false),
        };
        if decision.is_some() {
            self.logged = Some((class, now));
        }
        decision
    }

    /// "3 attempts over 4m 10s"
    pub(super) fn so_far(&self) -> String {
        format!(
            "{} attempts over {}",
            self.missed,
            show(self.started.elapsed())
        )
    }
}

/// How heartbeats have fared. Invariant: a stretch of failures ([`Outage`]) exists
/// exactly while the last attempt failed; a success ends it and resets both
/// schedules.
pub(super) struct Health {
    /// The current stretch of failed attempts, if any.
    outage: Option<Outage>,
    /// When the last heartbeat was accepted, and its `seq`.
    last_success: Option<(SystemTime, u64)>,
    /// The transient schedule (`backoff_base`, `backoff_cap`).
    backoff: Backoff,
    /// The authentication schedule (`auth_backoff_cap`).
    auth_backoff: Backoff,
    ever_online: bool,
    /// Whether a clock skew beyond [`CLOCK_SKEW_LIMIT`] has been reported (and not
    /// since corrected).
    skew_reported: bool,
    /// The last failed attempt, kept after a recovery (for the status file).
    last_failure: Option<Failure>,
    counters: Counters,
}

/// A failure counted into the stretch.
pub(super) struct Counted {
    /// `Some(false)`: the first of its class in the stretch, logged; `Some(true)`:
    /// a summary is due; `None`: a repeat, logged at debug only.
    pub(super) log: Option<bool>,
    /// "3 attempts over 4m 10s", for a summary.
    pub(super) so_far: String,
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
            last_failure: None,
            counters: Counters::default(),
        }
    }

    /// New schedules after a reload changed them (the stretch goes on).
    pub(super) fn follow(&mut self, old: &Settings, new: &Settings) {
        if old.backoff != new.backoff {
            self.backoff = new.backoff.backoff();
        }
        if old.auth_backoff != new.auth_backoff {
            self.auth_backoff = new.auth_backoff.backoff();
        }
    }

    /// The stretch of failures under way, once an attempt of it failed.
    pub(super) fn outage(&self) -> Option<&Outage> {
        self.outage.as_ref().filter(|o| o.missed > 0)
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
    /// `reaction`, into the stretch.
    pub(super) fn count(&mut self, error: &ApiError, reaction: &Reaction) -> Counted {
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
        Counted {
            log: outage.log_decision(error.class),
            so_far: outage.so_far(),
        }
    }

    /// The wait before the next attempt, on the schedule `wait` names, and the
    /// failures counted on that schedule so far.
    pub(super) fn wait(&mut self, wait: Wait, settings: &Settings) -> (Duration, u32) {
        match wait {
            Wait::Auth => (self.auth_backoff.next_delay(), self.auth_backoff.failures()),
            Wait::AsAsked(asked) => {
                // Still a failure of the stretch, for the backoff after it.
                self.backoff.next_ceiling();
                let asked = asked
                    .min(settings.retry_after_max)
                    .max(settings.backoff.base());
                (asked, self.backoff.failures())
            }
            Wait::Transient { .. } => (self.backoff.next_delay(), self.backoff.failures()),
        }
    }

    /// Counts an accepted heartbeat of sequence `seq`: the stretch ends and both
    /// schedules start again.
    pub(super) fn succeeded(&mut self, seq: u64) -> Recovery {
        self.counters.heartbeats_accepted += 1;
        self.last_success = Some((SystemTime::now(), seq));
        self.backoff.reset();
        self.auth_backoff.reset();
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
