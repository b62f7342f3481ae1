//! What the agent knows of a host from its own requests (protocol.md section 3):
//! whether the last one found it down (no answer, a 5xx, a 429), and when it sent
//! its recent ones.
//!
//! **One view of the plane.** The heartbeat loop's attempts are the probes; the
//! token refresher reads the view of the control plane before it asks, and stands
//! aside while the plane is down, so that a plane in trouble gets one agent's
//! probes, not two schedules.
//!
//! **One budget.** Over any [`WINDOW`] cadences a healthy agent sends a host about
//! [`WINDOW`] requests: a heartbeat a cadence (jittered by a tenth either way), and
//! now and then a token exchange. Before each attempt the loop counts it as many
//! requests as the smaller of its last two took (so a one-off refusal costs
//! nothing). An attempt of one request starts while the last [`WINDOW`] cadences
//! hold no more than [`WINDOW`] and one (the jitter's extra beat; an exchange
//! makes two more); one of several starts only while they and it stay within
//! [`WINDOW`], so a plane that makes every attempt take three gets fewer than one
//! request a cadence. The refresher asks while the window holds no more than
//! [`WINDOW`]. So whatever the host answers and whoever asks, a failing agent
//! sends it no more than about one request a cadence over any stretch of a window
//! or more, and a healthy one does not wait for this.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The window, in cadences.
pub const WINDOW: u32 = 10;

/// Who asks, and so how many requests a window may hold when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asker {
    /// The heartbeat loop.
    Loop,
    /// The token refresher.
    Refresher,
}

impl Asker {
    /// The most requests the window may hold when this asker starts `asking`.
    fn holding_at_most(self, asking: usize) -> usize {
        let window = WINDOW as usize;
        match self {
            Self::Loop if asking <= 1 => window + 1,
            Self::Loop => window.saturating_sub(asking),
            Self::Refresher => window,
        }
    }
}

/// One host as the agent's requests found it.
#[derive(Debug)]
pub struct HostView {
    down: watch::Sender<bool>,
    /// When the recent requests went, oldest first (no more than any asker's
    /// limit needs).
    sent: Mutex<VecDeque<Instant>>,
    /// Requests sent in all.
    total: AtomicU64,
}

impl Default for HostView {
    fn default() -> Self {
        Self {
            down: watch::Sender::new(false),
            sent: Mutex::new(VecDeque::new()),
            total: AtomicU64::new(0),
        }
    }
}

impl HostView {
    /// A request goes to the host now.
    pub fn sending(&self) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut sent = self.sent.lock().expect("not poisoned");
        sent.push_back(Instant::now());
        // Enough to judge any asker; older ones say nothing more.
        let keep = WINDOW as usize + 2;
        while sent.len() > keep {
            sent.pop_front();
        }
    }

    /// Requests sent to the host in all.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The earliest moment, from now on, at which the last [`WINDOW`] cadences
    /// hold few enough requests for `asker` to start `asking` more.
    pub fn room_at(&self, cadence: Duration, asker: Asker, asking: usize) -> Instant {
        let now = Instant::now();
        let window = cadence.saturating_mul(WINDOW);
        let allowed = asker.holding_at_most(asking);
        let sent = self.sent.lock().expect("not poisoned");
        let recent: Vec<Instant> = sent
            .iter()
            .copied()
            .filter(|&at| at + window > now)
            .collect();
        if recent.len() <= allowed {
            return now;
        }
        // The request that must leave the window first, and when it does.
        recent[recent.len() - allowed - 1] + window
    }

    /// What a request just found: the host down, or answering (an error status
    /// other than 5xx and 429 is an answer).
    pub fn found(&self, down: bool) {
        self.down.send_if_modified(|was| {
            let changed = *was != down;
            *was = down;
            changed
        });
    }

    /// Whether the last request found the host down.
    #[cfg(test)]
    pub fn is_down(&self) -> bool {
        *self.down.borrow()
    }

    /// Returns at once if the host is not down, else when a request finds it
    /// answering.
    pub async fn until_answering(&self) {
        let mut down = self.down.subscribe();
        // Err: the sender is gone with the client; nothing left to wait for.
        let _ = down.wait_for(|down| !down).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const CADENCE: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn a_healthy_agent_never_waits_to_beat() {
        let view = HostView::default();
        let mut refresher_waited = Duration::ZERO;
        // Beats jittered by a tenth either way; an exchange every 24 beats (a
        // 15-minute token at a 30 s cadence), which may wait for room.
        for beat in 0..2000 {
            assert_eq!(
                view.room_at(CADENCE, Asker::Loop, 1),
                Instant::now(),
                "beat {beat}"
            );
            view.sending();
            if beat % 24 == 0 {
                let room = view.room_at(CADENCE, Asker::Refresher, 1);
                refresher_waited = refresher_waited.max(room - Instant::now());
                tokio::time::sleep_until(room).await;
                view.sending();
            }
            tokio::time::sleep(CADENCE.mul_f64(0.9 + 0.2 * fastrand::f64())).await;
        }
        assert!(refresher_waited <= CADENCE * 3, "{refresher_waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_of_three_requests_are_held_to_one_request_a_cadence() {
        let view = HostView::default();
        let start = Instant::now();
        let mut sent = 0u32;
        while Instant::now() < start + CADENCE * 100 {
            // Every attempt took three: it is counted as three.
            tokio::time::sleep_until(view.room_at(CADENCE, Asker::Loop, 3)).await;
            for _ in 0..3 {
                view.sending();
                sent += 1;
            }
            tokio::time::sleep(CADENCE).await;
        }
        // 100 cadences: no more than 100 requests.
        assert!(
            (60..=100).contains(&sent),
            "{sent} requests in 100 cadences"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_refresher_finds_room_only_below_the_loops_headroom() {
        let view = HostView::default();
        for _ in 0..10 {
            view.sending();
            tokio::time::sleep(CADENCE.mul_f64(0.95)).await;
        }
        // Ten heartbeats in the window: room for the refresher's one.
        assert_eq!(view.room_at(CADENCE, Asker::Refresher, 1), Instant::now());
        view.sending();
        // Its failed exchange fills the window: the next waits for the oldest to
        // leave, and the loop still has room for a beat.
        assert!(view.room_at(CADENCE, Asker::Refresher, 1) > Instant::now());
        assert_eq!(view.room_at(CADENCE, Asker::Loop, 1), Instant::now());
    }

    #[tokio::test(start_paused = true)]
    async fn until_answering_waits_for_a_request_that_finds_the_host_answering() {
        let view = Arc::new(HostView::default());
        view.until_answering().await;
        view.found(true);
        assert!(view.is_down());
        let waiting = {
            let view = view.clone();
            tokio::spawn(async move { view.until_answering().await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        view.found(true);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished());
        // A 401 is an answer from a host that is up.
        view.found(false);
        waiting.await.unwrap();
        assert!(!view.is_down());
    }
}
