//! The interruption watcher: its own task, polling `spot/instance-action` and the
//! rebalance recommendation every `interruption_poll_interval`, handing each new
//! notice to the heartbeat loop once.
//!
//! Invariants: the heartbeat loop never waits on the metadata service; the service's
//! trouble (down, slow, 401, garbage) is logged once per change of state, and
//! polling backs off on its own schedule, from the poll interval up to
//! [`TROUBLE_BACKOFF_CAP`] more; a notice is handed over once, and again only if the
//! service changes it (a new action or time).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ImdsClient, ImdsError, Notice, parse_instance_action, parse_rebalance};
use crate::retry::RetryPolicy;
use crate::wheel::Grid;

/// The most a poll is put off, beyond the interval, while the service misbehaves:
/// a minute, or one interval when the interval is longer (the backoff starts at
/// the interval, and its cap is never below its start).
pub const TROUBLE_BACKOFF_CAP: Duration = Duration::from_secs(60);

/// The running watcher: the notices it hands over, and its task.
#[derive(Debug)]
pub struct Watcher {
    /// New notices, in the order the service gave them.
    pub notices: mpsc::Receiver<Notice>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    /// Starts polling `client` every `poll` until `shutdown`, its waits on `grid`.
    pub fn spawn(
        client: Arc<ImdsClient>,
        poll: Duration,
        shutdown: CancellationToken,
        grid: Grid,
    ) -> Self {
        let (sender, notices) = mpsc::channel(4);
        let task = tokio::spawn(watch(client, poll, sender, shutdown, grid));
        Self { notices, task }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn watch(
    client: Arc<ImdsClient>,
    poll: Duration,
    sender: mpsc::Sender<Notice>,
    shutdown: CancellationToken,
    grid: Grid,
) {
    let mut backoff = RetryPolicy::new(poll, TROUBLE_BACKOFF_CAP).backoff();
    // The last notice of each kind handed over, and the trouble last logged.
    let mut handed: [Option<Notice>; 2] = [None, None];
    let mut trouble: Option<&'static str> = None;
    loop {
        let wait = match poll_once(&client).await {
            Ok(notices) => {
                if let Some(was) = trouble.take() {
                    tracing::info!(
                        event = "imds_recovered",
                        "the instance metadata service answers again (it was {was}); watching for interruption notices"
                    );
                }
                backoff.reset();
                for (slot, notice) in handed.iter_mut().zip(notices) {
                    if let Some(new) = notice.clone().filter(|n| slot.as_ref() != Some(n)) {
                        tokio::select! {
                            sent = sender.send(new) => if sent.is_err() { return },
                            () = shutdown.cancelled() => return,
                        }
                    }
                    *slot = notice;
                }
                poll
            }
            Err(error) => {
                let wait = poll + backoff.next_delay();
                if trouble != Some(error.kind()) {
                    tracing::warn!(
                        event = "imds_unavailable",
                        reason = error.kind(),
                        "cannot read interruption notices: {error}; heartbeats go on, the next try is in {}",
                        crate::duration::show(wait)
                    );
                    trouble = Some(error.kind());
                }
                wait
            }
        };
        // A little late, on a boundary of the runtime's timer wheel: two wake-ups
        // rather than three (src/wheel.rs).
        let next_poll = grid.late(wait);
        tokio::select! {
            () = tokio::time::sleep_until(next_poll) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// One look at both endpoints: `[interruption, rebalance]`, each `None` when the
/// service has no such notice.
async fn poll_once(client: &ImdsClient) -> Result<[Option<Notice>; 2], ImdsError> {
    let interruption = match client.get(super::INSTANCE_ACTION).await? {
        Some(body) => Some(parse_instance_action(&body)?),
        None => None,
    };
    let rebalance = match client.get(super::REBALANCE).await? {
        Some(body) => Some(parse_rebalance(&body)?),
        None => None,
    };
    Ok([interruption, rebalance])
}
