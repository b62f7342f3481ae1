//! What a failed heartbeat does: the wait before the next attempt, as the failure
//! table says ([`crate::reaction`]), the stretch of failures it belongs to, and
//! whether it is worth a log line; and the clock check on every answer.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{Agent, TokenReread};
use crate::api::{ApiError, FailureClass};
use crate::duration::{seconds, show};
use crate::reaction::{Failed, Retry, Wait, react};
use crate::report::Failure;

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
    fn so_far(&self) -> String {
        format!(
            "{} attempts over {}",
            self.missed,
            show(self.started.elapsed())
        )
    }
}

impl Agent {
    /// Decides the wait after a failure (protocol.md section 3) and logs it.
    pub(super) fn on_failure(&mut self, error: &ApiError) -> Duration {
        let reaction = react(Failed::from(error), self.mode());
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
        let class = error.class;
        self.last_failure = Some(Failure {
            at: SystemTime::now(),
            reason: class.reason().to_owned(),
            description: class.describe().to_owned(),
        });
        self.counters.heartbeats_failed += 1;
        let log = outage.log_decision(class);
        let still = if log == Some(true) {
            format!("still failing after {}: ", outage.so_far())
        } else {
            String::new()
        };
        let auth = reaction.is_auth();
        outage.last_auth = auth;
        if auth {
            *self
                .counters
                .auth_failures
                .entry(class.reason().to_owned())
                .or_default() += 1;
        }
        // What a re-read of the client token found goes on the failure's own line
        // (once, then in summaries).
        let mut reread = None;
        if reaction.reread_token {
            // The token may have been rotated in the env file: try it at once.
            match self.reread_token_quietly("the rejection") {
                TokenReread::Changed => return Duration::ZERO,
                TokenReread::Unchanged(note) | TokenReread::Failed(note) => reread = Some(note),
            }
        } else if auth && reaction.retry == Some(Retry::NewAccessToken) {
            // The token endpoint accepted the client token and issued a fresh
            // access token, which the control plane refused too.
            reread = Some(
                "the token endpoint accepts the client token, but the control plane refuses the access tokens it issues (a fresh one was refused too): the two disagree about this client (its audience, issuer or signing key)".to_owned(),
            );
        }
        let (delay, failover) = match reaction.wait {
            Wait::Auth => (self.auth_backoff.next_delay(), None),
            Wait::AsAsked(asked) => {
                // Still a failure of the stretch, for the backoff after it.
                self.backoff.next_ceiling();
                let asked = asked
                    .min(self.settings.retry_after_max)
                    .max(self.settings.backoff.base());
                (asked, None)
            }
            Wait::Transient { failover } => (
                self.backoff.next_delay(),
                failover
                    .then(|| self.api.fail_over().map(|s| format!(" at {s}")))
                    .flatten(),
            ),
        };
        let next = show(delay);
        if log.is_none() {
            tracing::debug!(
                reason = class.reason(),
                "failed again: {error}; next attempt in {next}"
            );
        } else if auth {
            tracing::error!(
                event = "auth_failure",
                reason = class.reason(),
                endpoint = error.endpoint.name(),
                http_status = error.status,
                token_fp = %self.credentials.client_token().fingerprint(),
                agent_id = self.agent_id.as_deref(),
                consecutive_failures = self.auth_backoff.failures(),
                next_attempt_s = seconds(delay),
                "{still}authentication failed: {error}; {}next attempt in {next}",
                reread.map(|note| format!("{note}; ")).unwrap_or_default()
            );
        } else {
            tracing::warn!(
                event = "heartbeat_failed",
                reason = class.reason(),
                endpoint = error.endpoint.name(),
                http_status = error.status,
                agent_id = self.agent_id.as_deref(),
                consecutive_failures = self.backoff.failures(),
                next_attempt_s = seconds(delay),
                "{still}{error}; next attempt in {next}{}",
                failover.unwrap_or_default()
            );
        }
        delay
    }

    /// Reports a clock that is off from the control plane's by more than
    /// [`CLOCK_SKEW_LIMIT`], once, and again only after it was corrected. Token
    /// lifetimes are counted on the monotonic clock, so a skew does not break
    /// refreshes; it does make `sent_at` and the server's view of the host wrong.
    pub(super) fn check_clock(&mut self) {
        let Some(offset) = self.api.clock_offset() else {
            return;
        };
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
