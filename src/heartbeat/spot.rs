//! Spot awareness in the loop: at start, what the metadata service says about this
//! instance (per `imds`), and then what a notice does: logged once as a warning
//! with its own event, sent to the control plane at once (a spot interruption with
//! `"status": "terminating"` from then on; a rebalance recommendation with the
//! status unchanged), and shown in STATUS=, the status file and the metrics.
//!
//! Invariants: a notice is carried by heartbeats until one is accepted, then never
//! again (the control plane gets it once); the metadata service never delays a
//! heartbeat beyond the start-up probe (one request timeout in `auto` on a host
//! that is not on EC2).

use std::sync::Arc;
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use super::Agent;
use crate::api::wire::{Instance, InterruptionNotice, Status};
use crate::config::ImdsMode;
use crate::imds::{self, ImdsClient, Notice, NoticeKind, Watcher};
use crate::report::NoticeReport;

/// What the loop knows of the instance and its notices.
#[derive(Debug, Default)]
pub(super) struct Spot {
    /// The instance's facts, for registration.
    pub(super) instance: Option<Instance>,
    interruption: Option<Received>,
    rebalance: Option<Received>,
    /// The notice the heartbeat in flight carries.
    in_flight: Option<NoticeKind>,
}

#[derive(Debug)]
struct Received {
    notice: Notice,
    noticed_at: SystemTime,
    delivered: bool,
}

impl Received {
    fn report(&self) -> NoticeReport {
        NoticeReport {
            action: self.notice.action.clone(),
            time: self.notice.time.clone(),
            noticed_at: self.noticed_at,
            delivered: self.delivered,
        }
    }
}

impl Spot {
    fn slot(&mut self, kind: NoticeKind) -> &mut Option<Received> {
        match kind {
            NoticeKind::Interruption => &mut self.interruption,
            NoticeKind::Rebalance => &mut self.rebalance,
        }
    }

    /// `terminating` once a spot interruption was noticed, else `online`.
    pub(super) fn status(&self) -> Status {
        if self.interruption.is_some() {
            Status::Terminating
        } else {
            Status::Online
        }
    }

    /// The notice the next heartbeat carries: the first not yet delivered, the
    /// interruption before the recommendation.
    pub(super) fn carry(&mut self) -> Option<InterruptionNotice> {
        let received = [&self.interruption, &self.rebalance]
            .into_iter()
            .flatten()
            .find(|r| !r.delivered)?;
        self.in_flight = Some(received.notice.kind);
        Some(InterruptionNotice {
            action: received.notice.action.clone(),
            time: received.notice.time.clone(),
        })
    }

    /// The heartbeat in flight was accepted: its notice is delivered.
    pub(super) fn delivered(&mut self) {
        if let Some(kind) = self.in_flight.take()
            && let Some(received) = self.slot(kind)
        {
            received.delivered = true;
        }
    }

    /// For the status file and the metrics: (interruption, rebalance).
    pub(super) fn reports(&self) -> (Option<NoticeReport>, Option<NoticeReport>) {
        (
            self.interruption.as_ref().map(Received::report),
            self.rebalance.as_ref().map(Received::report),
        )
    }

    /// The head of the status line while a notice stands, like
    /// "spot interruption: terminate at 2026-11-24T08:22:00Z; ".
    pub(super) fn status_prefix(&self) -> String {
        match (&self.interruption, &self.rebalance) {
            (Some(r), _) => format!(
                "spot interruption: {} at {}; ",
                r.notice.action, r.notice.time
            ),
            (None, Some(r)) => format!("rebalance recommended at {}; ", r.notice.time),
            (None, None) => String::new(),
        }
    }
}

impl Agent {
    /// Per `imds`: probe (auto), read the instance's identity (its id becomes the
    /// logical agent id), and start the interruption watcher. `None` when the
    /// service is off or absent.
    pub(super) async fn start_imds(&mut self, shutdown: &CancellationToken) -> Option<Watcher> {
        let settings = self.settings.imds.clone();
        if settings.mode == ImdsMode::Off {
            return None;
        }
        let client = Arc::new(ImdsClient::new(settings.url.clone()));
        let probed = tokio::select! {
            probed = client.open_session() => probed,
            () = shutdown.cancelled() => return None,
        };
        if let Err(error) = probed {
            if settings.mode == ImdsMode::Auto {
                tracing::info!(
                    event = "imds_absent",
                    "no instance metadata service at {} ({error}): not an EC2 instance; spot awareness is off until the next start (imds = auto)",
                    settings.url
                );
                return None;
            }
            tracing::warn!(
                event = "imds_unavailable",
                reason = error.kind(),
                "cannot reach the instance metadata service at {} ({error}); registering without the instance's identity, and watching for notices when it answers",
                settings.url
            );
        } else {
            let identity = tokio::select! {
                identity = imds::identity(&client) => identity,
                () = shutdown.cancelled() => return None,
            };
            match identity {
                Ok(instance) => self.adopt_instance(instance),
                Err(error) => tracing::warn!(
                    event = "imds_unavailable",
                    reason = error.kind(),
                    "cannot read this instance's identity ({error}); registering without it"
                ),
            }
        }
        Some(Watcher::spawn(
            client,
            settings.poll_interval,
            shutdown.child_token(),
            self.timer_grid,
        ))
    }

    /// The instance id becomes the logical agent id; an agent id registered under
    /// another logical id is registered again.
    fn adopt_instance(&mut self, instance: Instance) {
        let fixed = self.settings.agent_id.is_some();
        if let Some(forgotten) = self.registration.adopt_logical_id(&instance.id, fixed) {
            // Not an event of its own: the `registered` line that follows is.
            tracing::info!(
                agent_id = %forgotten,
                "the logical agent id is now the instance id {}; registering again under it",
                instance.id
            );
        }
        self.spot.instance = Some(instance);
    }

    /// A new notice from the watcher: logged, kept, and carried from the next
    /// heartbeat on (which the caller sends at once).
    pub(super) fn on_notice(&mut self, notice: Notice) {
        match notice.kind {
            NoticeKind::Interruption => tracing::warn!(
                event = "interruption",
                action = %notice.action,
                time = %notice.time,
                "EC2 will {} this spot instance at {}: telling the control plane now (status terminating) and beating until the instance goes",
                notice.action,
                notice.time
            ),
            NoticeKind::Rebalance => tracing::warn!(
                event = "rebalance_recommendation",
                time = %notice.time,
                "EC2 recommends moving work off this instance (noticed at {}): telling the control plane now",
                notice.time
            ),
        }
        let kind = notice.kind;
        *self.spot.slot(kind) = Some(Received {
            notice,
            noticed_at: SystemTime::now(),
            delivered: false,
        });
    }
}
