//! Spot awareness in the loop: at start, which cloud this is (per `cloud`) and
//! who this instance is, and then what a notice does: logged once as a warning
//! with its own event, sent to the control plane at once (an interruption with
//! `"status": "terminating"` from then on; a recommendation or maintenance the
//! instance survives with the status unchanged), and shown in STATUS=, the status
//! file and the metrics.
//!
//! Invariants: a notice is carried by heartbeats until one is accepted, then never
//! again (the control plane gets it once); a metadata service never delays a
//! heartbeat beyond the identity read at start (a few requests of a second or two
//! each; none at all where DMI names no cloud).

use std::time::SystemTime;

use tokio::time::Instant;

use tokio_util::sync::CancellationToken;

use super::Agent;
use crate::api::wire::{Instance, InterruptionNotice, Status};
use crate::cloud::{self, Choice, Notice, NoticeKind, Provider, Watcher};
use crate::report::NoticeReport;

/// What the loop knows of the instance and its notices.
#[derive(Debug, Default)]
pub(super) struct Spot {
    /// The instance's facts, for registration.
    pub(super) instance: Option<Instance>,
    /// The notice that the instance goes.
    interruption: Option<Received>,
    /// The last notice of something the instance survives.
    advisory: Option<Received>,
    /// The notice the heartbeat in flight carries.
    in_flight: Option<NoticeKind>,
    /// When a notice last brought a heartbeat forward: [interruption, advisory],
    /// each on its own, so that an advisory never holds back an interruption.
    hurried_at: [Option<Instant>; 2],
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
            source: self.notice.source,
            kind: self.notice.kind,
            action: self.notice.action.clone(),
            time: self.notice.time.clone(),
            noticed_at: self.noticed_at,
            delivered: self.delivered,
        }
    }
}

impl Spot {
    fn slot(&mut self, kind: NoticeKind) -> &mut Option<Received> {
        if kind.terminating() {
            &mut self.interruption
        } else {
            &mut self.advisory
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
    /// interruption before the advisory.
    pub(super) fn carry(&mut self) -> Option<InterruptionNotice> {
        let received = [&self.interruption, &self.advisory]
            .into_iter()
            .flatten()
            .find(|r| !r.delivered)?;
        self.in_flight = Some(received.notice.kind);
        Some(InterruptionNotice {
            source: received.notice.source,
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

    /// For the status file and the metrics: (interruption, advisory).
    pub(super) fn reports(&self) -> (Option<NoticeReport>, Option<NoticeReport>) {
        (
            self.interruption.as_ref().map(Received::report),
            self.advisory.as_ref().map(Received::report),
        )
    }

    /// The head of the status line while a notice stands, like
    /// "interruption (ec2): terminate at 2026-11-24T08:22:00Z; " (not "spot": a
    /// host maintenance that terminates an on-demand VM is one too).
    pub(super) fn status_prefix(&self) -> String {
        match (&self.interruption, &self.advisory) {
            (Some(r), _) => format!(
                "interruption ({}): {} at {}; ",
                r.notice.source.name(),
                r.notice.action,
                r.notice.time
            ),
            (None, Some(r)) if r.notice.kind == NoticeKind::Rebalance => {
                format!("rebalance recommended at {}; ", r.notice.time)
            }
            (None, Some(r)) => format!(
                "maintenance ({}): {} at {}; ",
                r.notice.source.name(),
                r.notice.action,
                r.notice.time
            ),
            (None, None) => String::new(),
        }
    }
}

impl Agent {
    /// Per `cloud`: which cloud (for `auto`, from DMI), the instance's identity (its
    /// id becomes the logical agent id), and the watcher. `None` when off, when no
    /// cloud is found, or at shutdown.
    pub(super) async fn start_cloud(&mut self, shutdown: &CancellationToken) -> Option<Watcher> {
        let settings = self.settings.cloud.clone();
        let (cloud, reason) = match cloud::choose(&settings) {
            Choice::Off => return None,
            Choice::NoCloud(fields) => {
                tracing::info!(
                    event = "imds_absent",
                    "DMI names no cloud hostbeat knows ({fields}): no metadata request, spot awareness is off (cloud = auto)"
                );
                return None;
            }
            Choice::Ask(cloud, reason) => (cloud, reason),
        };
        let how = reason.describe(cloud);
        let provider = Provider::new(cloud, &settings);
        let url = settings.url(cloud);
        let identity = tokio::select! {
            identity = provider.identity() => identity,
            () = shutdown.cancelled() => return None,
        };
        match identity {
            Ok(instance) => {
                tracing::info!(
                    event = "cloud_detected",
                    source = cloud.name(),
                    "on {}: instance {} ({how}); watching for its notices",
                    cloud.title(),
                    instance.described(),
                );
                self.adopt_instance(instance);
            }
            Err(error) if reason.guessed() => {
                tracing::info!(
                    event = "imds_absent",
                    source = cloud.name(),
                    reason = error.kind(),
                    "no {} metadata service at {url} ({error}): spot awareness is off until the next start ({how})",
                    cloud.title(),
                );
                return None;
            }
            Err(error) => tracing::warn!(
                event = "imds_unavailable",
                source = cloud.name(),
                reason = error.kind(),
                "cannot read this instance's identity from the {} metadata service at {url} ({error}); registering without it, and watching for notices when it answers",
                cloud.title(),
            ),
        }
        Some(provider.watch(&settings, shutdown.child_token(), self.timer_grid))
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

    /// A notice from the watcher: logged, kept, and carried from the next
    /// heartbeat on; what the loop does about it (see [`Heed`]). A notice that the
    /// host goes brings that heartbeat forward at once; one it survives, within the
    /// budget and a pending `Retry-After`. Either at most once a cadence for its
    /// kind, so that a cloud whose notices come and go (a value flapping,
    /// incarnations alternating) never sets how often the control plane is asked.
    /// The same action from the same cloud as the notice standing, before that
    /// notice's deadline, is not news: the first, and its deadline, stand.
    pub(super) fn on_notice(&mut self, notice: Notice) -> Heed {
        let standing = self.spot.slot(notice.kind).as_ref().map(|r| &r.notice);
        let repeated = standing.is_some_and(|n| {
            (n.source, n.kind, &n.action) == (notice.source, notice.kind, &notice.action)
                && humantime::parse_rfc3339_weak(&n.time).is_ok_and(|at| at > SystemTime::now())
        });
        if repeated {
            return Heed::Ignore;
        }
        let cadence = self
            .health
            .cadence()
            .unwrap_or(self.settings.heartbeat_interval);
        let now = Instant::now();
        let hurried_at = &mut self.spot.hurried_at[usize::from(!notice.kind.terminating())];
        let hurry = hurried_at.is_none_or(|at| now.saturating_duration_since(at) >= cadence);
        if hurry {
            *hurried_at = Some(now);
        }
        let heed = match (hurry, notice.kind.terminating()) {
            (false, _) => Heed::Carry,
            (true, true) => Heed::Now,
            (true, false) => Heed::Soon,
        };
        let when = if hurry {
            "now"
        } else {
            "with the next heartbeat"
        };
        let (source, title) = (notice.source.name(), notice.source.title());
        let left = time_left(&notice.time);
        match notice.kind {
            NoticeKind::Interruption => tracing::warn!(
                event = "interruption",
                source,
                action = %notice.action,
                time = %notice.time,
                "{title} will {} this instance at {} ({left}): telling the control plane {when} (status terminating) and beating until the instance goes",
                notice.action,
                notice.time
            ),
            NoticeKind::Rebalance => tracing::warn!(
                event = "rebalance_recommendation",
                source,
                time = %notice.time,
                "EC2 recommends moving work off this instance (noticed at {}): telling the control plane {when}",
                notice.time
            ),
            NoticeKind::Maintenance => tracing::warn!(
                event = "maintenance",
                source,
                action = %notice.action,
                time = %notice.time,
                "{title} schedules maintenance of this instance ({}) at {} ({left}); it stays up: telling the control plane {when} (status unchanged)",
                notice.action,
                notice.time
            ),
        }
        let kind = notice.kind;
        *self.spot.slot(kind) = Some(Received {
            notice,
            noticed_at: SystemTime::now(),
            delivered: false,
        });
        heed
    }
}

/// What the loop does about a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Heed {
    /// Not news: nothing changes.
    Ignore,
    /// News, carried by the next heartbeat at its time (one was brought forward
    /// for this kind within the cadence).
    Carry,
    /// The host goes: the next heartbeat now.
    Now,
    /// News the host survives: the next heartbeat as soon as the budget and a
    /// pending `Retry-After` allow.
    Soon,
}

/// "in 28s", "2s ago", for a person reading a notice's deadline.
fn time_left(time: &str) -> String {
    let Ok(at) = humantime::parse_rfc3339_weak(time) else {
        return "at an unreadable time".to_owned();
    };
    match at.duration_since(SystemTime::now()) {
        Ok(left) => format!("in {}", crate::duration::show(left)),
        Err(past) => format!("{} ago", crate::duration::show(past.duration())),
    }
}
