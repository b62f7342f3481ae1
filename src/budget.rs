//! How often the agent may ask a host that keeps failing (protocol.md section 3,
//! "One budget"): a token bucket per host.
//!
//! Every request to a host takes a unit first, and waits for one if there is none.
//! Units come back at one per cadence (the heartbeat interval in effect), up to
//! [`DEPTH`]. While the host serves the agent's work, an answer gives its unit back,
//! so that a healthy agent never waits, however many requests its work takes. Once
//! a request fails (no answer, an error status), every request spends its unit,
//! answered or not, until the agent's work succeeds again (a heartbeat or a
//! registration accepted; for a token endpoint on a host of its own, a token). So
//! a failing agent sends the host at most one request per cadence, which is what
//! it sends when healthy, after a first burst of [`DEPTH`] (a failure and the one
//! follow-up the failure table allows: a new access token, a new registration, a
//! rotated token). The backoff ([`crate::retry`]) already keeps a failing agent's
//! heartbeats a cadence apart; the budget holds everything else to the same rate:
//! the follow-ups and the token exchanges they need, the token refresher, a
//! reload's attempt, the goodbye.
//!
//! Each budget also knows whether its host is down (its last request got no answer,
//! a 5xx or a 429), so that the token refresher stands aside while the heartbeat
//! path finds the plane back ([`Budget::until_answering`]).

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// How many units a budget holds when full.
pub const DEPTH: f64 = 2.0;

/// One host's budget.
#[derive(Debug)]
pub struct Budget {
    state: Mutex<State>,
    /// Whether the host is down; also wakes a request waiting for a unit when one
    /// comes back early.
    down: watch::Sender<bool>,
}

/// What an answer does to the budget: its unit comes back while the host serves
/// the agent's work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// The agent's work succeeded (a heartbeat, a registration; a token from a
    /// token endpoint of its own): the failing stretch, if any, is over.
    Work,
    /// A step on the way (a token from the plane's own token endpoint): it gives
    /// the unit back only if no request has failed since the work last succeeded.
    Step,
}

#[derive(Debug)]
struct State {
    units: f64,
    /// When `units` was counted.
    at: Instant,
    /// One unit comes back per cadence.
    cadence: Duration,
    /// A request failed since the agent's work last succeeded: answers spend too.
    failing: bool,
}

impl State {
    /// The units now, with what came back since they were counted.
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at);
        self.units = (self.units + elapsed.as_secs_f64() / self.cadence.as_secs_f64()).min(DEPTH);
        self.at = now;
    }

    /// How long until a whole unit is there.
    fn wait_for_unit(&self) -> Duration {
        self.cadence.mul_f64((1.0 - self.units).max(0.0))
    }
}

impl Budget {
    /// A full budget, refilled at one unit per `cadence` (at least 1 ms).
    pub fn new(cadence: Duration) -> Self {
        Self {
            state: Mutex::new(State {
                units: DEPTH,
                at: Instant::now(),
                cadence: cadence.max(Duration::from_millis(1)),
                failing: false,
            }),
            down: watch::Sender::new(false),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("not poisoned")
    }

    /// The refill rate follows the cadence in effect.
    pub fn set_cadence(&self, cadence: Duration) {
        let mut state = self.state();
        state.refill(Instant::now());
        state.cadence = cadence.max(Duration::from_millis(1));
    }

    /// Takes a unit, waiting until there is one.
    pub async fn take(&self) -> Permit<'_> {
        let mut changes = self.down.subscribe();
        loop {
            let wait = {
                let mut state = self.state();
                state.refill(Instant::now());
                if state.units >= 1.0 {
                    state.units -= 1.0;
                    return Permit { budget: self };
                }
                state.wait_for_unit()
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                // A unit given back (an answer) may end the wait early.
                _ = changes.changed() => {}
            }
        }
    }

    /// Whether a unit is there now (without taking it).
    pub fn try_peek(&self) -> bool {
        let mut state = self.state();
        state.refill(Instant::now());
        state.units >= 1.0
    }

    /// Whether the host's last request got no answer, a 5xx or a 429.
    #[cfg(test)]
    pub fn is_down(&self) -> bool {
        *self.down.borrow()
    }

    /// Returns at once if the host is not down, else when it answers again.
    pub async fn until_answering(&self) {
        let mut down = self.down.subscribe();
        // Err: the sender is gone with the client; nothing left to wait for.
        let _ = down.wait_for(|down| !down).await;
    }
}

/// A unit taken: settle it with [`Permit::answered`] or [`Permit::failed`]
/// (dropping it spends it: a request abandoned at shutdown).
#[derive(Debug)]
#[must_use = "say how the request went"]
pub struct Permit<'a> {
    budget: &'a Budget,
}

impl Permit<'_> {
    /// The host gave an answer the agent could use: the unit comes back, unless a
    /// failing stretch goes on (see [`Answered`]).
    pub fn answered(self, what: Answered) {
        let mut state = self.budget.state();
        if what == Answered::Work {
            state.failing = false;
        }
        if !state.failing {
            state.refill(Instant::now());
            state.units = (state.units + 1.0).min(DEPTH);
        }
        drop(state);
        self.budget.down.send_replace(false);
        // Wake whoever waits for a unit even if the host was not down.
        self.budget.down.send_modify(|_| {});
    }

    /// The request failed: the unit is spent; `host_down` when the host gave no
    /// answer, a 5xx or a 429.
    pub fn failed(self, host_down: bool) {
        self.budget.state().failing = true;
        self.budget.down.send_if_modified(|down| {
            let changed = *down != host_down;
            *down = host_down;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CADENCE: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn answered_requests_never_wait() {
        let budget = Budget::new(CADENCE);
        let start = Instant::now();
        for _ in 0..100 {
            budget.take().await.answered(Answered::Work);
        }
        assert_eq!(Instant::now(), start);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_come_one_per_cadence_after_a_burst_of_the_depth() {
        let budget = Budget::new(CADENCE);
        let start = Instant::now();
        let mut sent = Vec::new();
        for _ in 0..6 {
            budget.take().await.failed(true);
            sent.push(Instant::now() - start);
        }
        let secs: Vec<u64> = sent.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [0, 0, 30, 60, 90, 120]);
        assert!(budget.is_down());
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_gives_the_unit_back_to_a_waiting_request() {
        let budget = std::sync::Arc::new(Budget::new(CADENCE));
        budget.take().await.failed(true);
        let held = budget.take().await;
        let waiting = {
            let budget = budget.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                budget.take().await.answered(Answered::Work);
                Instant::now() - start
            })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        held.answered(Answered::Work);
        assert_eq!(waiting.await.unwrap(), Duration::from_secs(5));
        assert!(!budget.is_down());
    }

    #[tokio::test(start_paused = true)]
    async fn until_answering_waits_for_the_host_to_answer() {
        let budget = std::sync::Arc::new(Budget::new(CADENCE));
        budget.until_answering().await;
        budget.take().await.failed(true);
        let waiting = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.until_answering().await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished());
        // An auth failure is an answer from a host that is up.
        budget.take().await.failed(false);
        waiting.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn in_a_failing_stretch_answers_spend_too_until_the_work_succeeds() {
        let budget = Budget::new(CADENCE);
        let start = Instant::now();
        budget.take().await.failed(false);
        // A token on the way, then the same call refused again: both spend.
        budget.take().await.answered(Answered::Step);
        budget.take().await.failed(false);
        assert_eq!(Instant::now() - start, CADENCE);
        // The work succeeds: the stretch is over, and answers give units back.
        budget.take().await.answered(Answered::Work);
        assert_eq!(Instant::now() - start, CADENCE * 2);
        for _ in 0..10 {
            budget.take().await.answered(Answered::Step);
        }
        assert_eq!(Instant::now() - start, CADENCE * 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_refill_follows_the_cadence() {
        let budget = Budget::new(CADENCE);
        for _ in 0..2 {
            budget.take().await.failed(true);
        }
        budget.set_cadence(Duration::from_secs(120));
        let start = Instant::now();
        budget.take().await.failed(true);
        assert_eq!(Instant::now() - start, Duration::from_secs(120));
        assert!(!budget.try_peek());
    }
}
