//! What the loop does about a failed heartbeat: what the failure table
//! ([`crate::reaction`]) answers, carried out (a re-read of the client token, a move
//! to the next server), counted into the [`Health`](super::health::Health), and
//! said in the journal as [`Health::count`](super::health::Health::count) decides.

use std::time::Duration;

use super::Agent;
use super::health::Said;
use crate::api::ApiError;
use crate::credentials::Reread;
use crate::duration::{seconds, show};
use crate::reaction::{Failed, Retry, Wait, react};

/// What re-reading the client token found.
enum TokenReread {
    /// A different token, now in use (logged as `token_reloaded`).
    Changed,
    /// The same token: where it was read, its fingerprint, and where a new one goes.
    Unchanged(String),
    /// The token could not be read again, and why.
    Failed(String),
}

impl Agent {
    /// The wait after a failed heartbeat (protocol.md section 3), after what the
    /// failure table asks first, and its log line.
    pub(super) fn on_failure(&mut self, error: &ApiError) -> Duration {
        let reaction = react(Failed::from(error), self.mode());
        let class = error.class;
        let auth = reaction.is_auth();
        // What a re-read of the client token found goes on the failure's own line
        // (once, then in summaries).
        let mut note = None;
        if reaction.reread_token {
            // The token may have been rotated in the env file: try it at once,
            // before the failure costs a step of a schedule or a log line.
            match self.reread_token_quietly("the rejection") {
                TokenReread::Changed => {
                    self.health.count_quietly(error, &reaction);
                    return Duration::ZERO;
                }
                TokenReread::Unchanged(found) | TokenReread::Failed(found) => note = Some(found),
            }
        } else if auth && reaction.retry == Some(Retry::NewAccessToken) {
            // The token endpoint accepted the client token and issued a fresh
            // access token, which the control plane refused too.
            note = Some(
                "the token endpoint accepts the client token, but the control plane refuses the access tokens it issues (a fresh one was refused too): the two disagree about this client (its audience, issuer or signing key)".to_owned(),
            );
        }
        let said = self.health.count(error, &reaction);
        let (delay, consecutive) = self.health.wait(reaction.wait, &self.settings);
        // The next attempt's first request waits for the budget too
        // (src/plane_view.rs): the line says when it will really go.
        let room = self
            .api
            .plane_room_at()
            .saturating_duration_since(tokio::time::Instant::now());
        let delay = delay.max(room);
        let failover = match reaction.wait {
            Wait::Transient { failover: true } => self.api.fail_over().map(|s| format!(" at {s}")),
            _ => None,
        };
        let next = show(delay);
        let still = match &said {
            Said::Summary(so_far) => format!("still failing after {so_far}: "),
            Said::First | Said::Quiet => String::new(),
        };
        if matches!(said, Said::Quiet) {
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
                agent_id = self.registration.agent_id(),
                consecutive_failures = consecutive,
                next_attempt_s = seconds(delay),
                "{still}authentication failed: {error}; {}next attempt in {next}",
                note.map(|note| format!("{note}; ")).unwrap_or_default()
            );
        } else {
            tracing::warn!(
                event = "heartbeat_failed",
                reason = class.reason(),
                endpoint = error.endpoint.name(),
                http_status = error.status,
                agent_id = self.registration.agent_id(),
                consecutive_failures = consecutive,
                next_attempt_s = seconds(delay),
                "{still}{error}; next attempt in {next}{}",
                failover.unwrap_or_default()
            );
        }
        delay
    }

    /// Re-reads the client token; true when it changed (and is now in use). A
    /// token that did not change is said only at debug; a re-read that failed, as a
    /// warning (SIGHUP: the operator asked for it).
    pub(super) fn reread_token(&self, why: &str) -> bool {
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
}
