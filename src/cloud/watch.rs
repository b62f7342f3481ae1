//! A cloud's watcher on its own task: it hands each new notice to the heartbeat
//! loop once, and says once per change of state that the metadata service is in
//! trouble and when it answers again.
//!
//! Invariants: the heartbeat loop never waits on a metadata service; every loop
//! here waits at least its floor between two requests, and backs off on its own
//! schedule while the service misbehaves, from the poll interval up to
//! [`TROUBLE_BACKOFF_CAP`] more.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Cloud, MetadataError, Notice};
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
    /// Runs `watch` on its own task until `shutdown` (or until the watcher is
    /// dropped): the one place a watcher stops, so that its loops need not.
    pub fn spawn<F, W>(shutdown: CancellationToken, watch: W) -> Self
    where
        W: FnOnce(Handover) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        let (sender, notices) = mpsc::channel(4);
        let watch = watch(Handover { sender });
        let task = tokio::spawn(async move {
            tokio::select! {
                () = watch => {}
                () = shutdown.cancelled() => {}
            }
        });
        Self { notices, task }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where a watcher hands its notices.
#[derive(Debug, Clone)]
pub struct Handover {
    sender: mpsc::Sender<Notice>,
}

impl Handover {
    /// Hands `notice` to the loop; `false` when the loop is gone (stop watching).
    pub async fn send(&self, notice: Notice) -> bool {
        self.sender.send(notice).await.is_ok()
    }
}

/// The metadata service's state as last logged: one line when trouble starts or
/// changes kind, one when the service answers again.
#[derive(Debug)]
pub struct Trouble {
    cloud: Cloud,
    what: &'static str,
    current: Option<&'static str>,
}

impl Trouble {
    /// No trouble yet, reading `what` (like "Azure's scheduled events").
    pub fn new(cloud: Cloud, what: &'static str) -> Self {
        Self {
            cloud,
            what,
            current: None,
        }
    }

    /// The service answered.
    pub fn answered(&mut self) {
        if let Some(was) = self.current.take() {
            tracing::info!(
                event = "imds_recovered",
                source = self.cloud.name(),
                "the {} metadata service answers again (it was {was}); watching {}",
                self.cloud.title(),
                self.what
            );
        }
    }

    /// The service failed; the next try is in `next_try`.
    pub fn failed(&mut self, error: &MetadataError, next_try: Duration) {
        if self.current != Some(error.kind()) {
            tracing::warn!(
                event = "imds_unavailable",
                source = self.cloud.name(),
                reason = error.kind(),
                "cannot read {}: {error}; heartbeats go on, the next try is in {}",
                self.what,
                crate::duration::show(next_try)
            );
            self.current = Some(error.kind());
        }
    }
}

/// A service asked in turns (EC2, Azure): each turn returns the notices not handed
/// over before.
pub trait Poll: Send + 'static {
    /// What is read, for the journal ("EC2's interruption notices").
    const WHAT: &'static str;
    /// Whose service.
    fn cloud(&self) -> Cloud;
    /// One turn: the new notices.
    fn poll(&mut self) -> impl Future<Output = Result<Vec<Notice>, MetadataError>> + Send;
}

/// Asks `source` every `every` (on `grid`), handing over what it finds.
pub async fn poll<P: Poll>(mut source: P, every: Duration, grid: Grid, out: Handover) {
    let mut backoff = RetryPolicy::new(every, TROUBLE_BACKOFF_CAP).backoff();
    let mut trouble = Trouble::new(source.cloud(), P::WHAT);
    loop {
        let wait = match source.poll().await {
            Ok(notices) => {
                trouble.answered();
                backoff.reset();
                for notice in notices {
                    if !out.send(notice).await {
                        return;
                    }
                }
                every
            }
            Err(error) => {
                let wait = every + backoff.next_delay();
                trouble.failed(&error, wait);
                wait
            }
        };
        // A little late, on a boundary of the runtime's timer wheel: two wake-ups
        // rather than three (src/wheel.rs).
        tokio::time::sleep_until(grid.late(wait)).await;
    }
}
