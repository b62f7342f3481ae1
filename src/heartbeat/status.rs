//! The one line `systemctl status` shows (sd_notify `STATUS=`).

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::Agent;
use crate::api::FailureClass;
use crate::duration::show;
use crate::report::timestamp::rfc3339;

impl Agent {
    /// The one-line state for `systemctl status`, given the time to the next attempt.
    pub(super) fn status_line(&self, next: Duration) -> String {
        let next = show(next);
        let line = match (self.health.outage(), self.health.last_success()) {
            (None, Some((at, seq))) => {
                let token = self
                    .credentials
                    .current_expiry()
                    .map(|at| {
                        format!(
                            ", token valid {}",
                            show(at.saturating_duration_since(Instant::now()))
                        )
                    })
                    .unwrap_or_default();
                format!("online, last heartbeat {} (seq {seq}){token}", clock(at))
            }
            (None, None) => format!("starting, first heartbeat in {next}"),
            (Some(outage), _) => {
                let class = outage.last_class.map_or("failing", FailureClass::describe);
                let kind = self.health.state().describe();
                format!(
                    "{kind}: {class} since {} ({} failed), next try in {next}",
                    clock(outage.since),
                    outage.missed
                )
            }
        };
        self.spot.status_prefix() + &line
    }
}

/// `12:00:01Z`: the time of day, UTC, for status lines.
fn clock(time: SystemTime) -> String {
    let stamp = rfc3339(time);
    stamp
        .split_once('T')
        .map_or(stamp.clone(), |(_, t)| t.to_owned())
}
