//! What the agent knows of a host from its own requests (protocol.md section 3,
//! "One budget" and "One view of the plane"): whether the last one found it down
//! (no answer, a 5xx, a 429), and the budget its requests to it draw from.
//!
//! **One view of the plane.** The heartbeat loop's attempts are the probes; the
//! token refresher waits for the view of the control plane before it asks, and
//! stands aside while the plane is down, so that a plane in trouble gets one
//! agent's probes, not two schedules.
//!
//! **One budget.** A healthy agent sends a host about one request a cadence (a
//! heartbeat, now and then an exchange). While the last request of any kind
//! (heartbeat, registration, token exchange) to a host failed (a *failing
//! stretch*: from a failure until each kind that failed has since been answered),
//! every request to it is charged one cadence, the cadence in
//! effect when it went, and goes only while the charges so far run no more than
//! [`AHEAD`] cadences ahead of now. This is the generic cell rate algorithm with a
//! tolerance of [`AHEAD`] cadences: within a stretch a host gets at most
//! [`AHEAD`] requests more than the number of cadences in any window, whoever asks
//! (the loop, the refresher, a reload, a spot notice, the goodbye) and whatever
//! the host answers. The tolerance lets the protocol's one-off recoveries go at
//! once, as a first contact's requests do (a refused access token: a new one and
//! the heartbeat again; an unknown agent: a registration and the heartbeat again);
//! a stretch of failures without them is paced by the backoff, which waits at least
//! a cadence (src/retry.rs). Outside a stretch nothing is charged, so a healthy
//! agent never waits for the budget; the charges a stretch leaves unpaid carry into
//! the next one, so that a host which fails each attempt's first request and then
//! answers the rest (a plane that forgets its agents) is paced as one that answers
//! nothing. At most [`AHEAD`] and one cadences (at the cadence now in effect) are
//! ever unpaid: charges made at a longer cadence that the plane has since
//! shortened are forgotten beyond that. Every request goes
//! through [`HostView::admit`], the one place the rule is applied.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::api::Endpoint;

/// How many cadences a failing stretch's charges may run ahead of now.
pub const AHEAD: u32 = 2;

/// One host as the agent's requests found it.
#[derive(Debug)]
pub struct HostView {
    down: watch::Sender<bool>,
    account: Mutex<Account>,
    /// Requests sent in all.
    total: AtomicU64,
}

/// The budget's books.
#[derive(Debug)]
struct Account {
    /// The charge per request; none for a client that keeps no budget (`check`,
    /// and the naive policies the herd benchmark compares).
    cadence: Option<Duration>,
    /// The kinds of request whose last one failed, one bit each
    /// ([`Account::bit`]): the host is in a failing stretch while any is set.
    failing: u8,
    /// When the charges of the stretch so far are paid: the next request goes no
    /// sooner than [`AHEAD`] cadences before.
    paid_at: Instant,
}

/// A request let through, and whether it was charged when it went.
#[derive(Debug, Clone, Copy)]
#[must_use = "say what the request found with `found`"]
pub struct Admitted {
    charged: bool,
}

/// What a request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A usable answer.
    Answered,
    /// A failure; `down` when it says the host cannot or will not serve.
    Failed { down: bool },
}

impl Account {
    /// Forgets charges beyond [`AHEAD`] and one cadences from now at the cadence
    /// in effect: charges made at a longer cadence the plane has since shortened
    /// (or a reload has) never hold a request longer than the cadence now allows.
    fn settle(&mut self, now: Instant) {
        if let Some(cadence) = self.cadence {
            let most = now + cadence.saturating_mul(AHEAD + 1);
            self.paid_at = self.paid_at.min(most);
        }
    }

    /// The bit of `endpoint` in [`Account::failing`].
    fn bit(endpoint: Endpoint) -> u8 {
        match endpoint {
            Endpoint::Token => 1,
            Endpoint::Register => 2,
            Endpoint::Heartbeat => 4,
            Endpoint::Validate => 8,
        }
    }

    fn in_stretch(&self) -> bool {
        self.failing != 0
    }
}

impl Default for HostView {
    fn default() -> Self {
        Self {
            down: watch::Sender::new(false),
            account: Mutex::new(Account {
                cadence: None,
                failing: 0,
                paid_at: Instant::now(),
            }),
            total: AtomicU64::new(0),
        }
    }
}

impl HostView {
    /// Charges requests at `cadence` from now on (none: no budget at all). A
    /// request already charged keeps its charge.
    pub fn pace(&self, cadence: Option<Duration>) {
        self.account.lock().expect("not poisoned").cadence = cadence;
    }

    /// Forgets that the last token exchange failed (a reload turned exchanges off:
    /// none will be sent to settle it).
    pub fn forget_exchanges(&self) {
        self.account.lock().expect("not poisoned").failing &= !Account::bit(Endpoint::Token);
    }

    /// Takes over `old`'s stretch and what its last request found: a client rebuilt
    /// by a reload talks to the same host, which is no less in trouble for it.
    pub fn carry_from(&self, old: &Self) {
        let (failing, paid_at) = {
            let old = old.account.lock().expect("not poisoned");
            (old.failing, old.paid_at)
        };
        {
            let mut account = self.account.lock().expect("not poisoned");
            account.failing = failing;
            account.paid_at = paid_at;
        }
        let down = *old.down.borrow();
        self.down.send_replace(down);
    }

    /// When the next request may go, from now on: now outside a failing stretch.
    pub fn room_at(&self) -> Instant {
        let mut account = self.account.lock().expect("not poisoned");
        let now = Instant::now();
        account.settle(now);
        match account.cadence {
            Some(cadence) if account.in_stretch() => {
                let ahead = cadence.saturating_mul(AHEAD);
                account
                    .paid_at
                    .checked_sub(ahead)
                    .map_or(now, |at| at.max(now))
            }
            _ => now,
        }
    }

    /// Waits until the budget lets a request go, and counts it as sent: the one
    /// gate every request to the host passes.
    pub async fn admit(&self) -> Admitted {
        loop {
            let at = {
                let mut account = self.account.lock().expect("not poisoned");
                let now = Instant::now();
                account.settle(now);
                match account.cadence {
                    Some(cadence) if account.in_stretch() => {
                        let ahead = cadence.saturating_mul(AHEAD);
                        if account.paid_at <= now + ahead {
                            account.paid_at = account.paid_at.max(now) + cadence;
                            break self.sent(true);
                        }
                        account.paid_at - ahead
                    }
                    _ => break self.sent(false),
                }
            };
            // Another asker may take the moment first: look again when it comes.
            tokio::time::sleep_until(at).await;
        }
    }

    fn sent(&self, charged: bool) -> Admitted {
        self.total.fetch_add(1, Ordering::Relaxed);
        Admitted { charged }
    }

    /// Requests sent to the host in all.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// What an admitted request to `endpoint` found. A failure starts a stretch
    /// (or goes on with it), and is charged if it went uncharged: the stretch's
    /// first request, and any other that was already under way.
    pub fn found(&self, admitted: Admitted, endpoint: Endpoint, found: Found) {
        {
            let mut account = self.account.lock().expect("not poisoned");
            // An accepted heartbeat also settles a registration that failed: the
            // plane knows the agent.
            let bit = match (endpoint, found) {
                (Endpoint::Heartbeat, Found::Answered) => {
                    Account::bit(endpoint) | Account::bit(Endpoint::Register)
                }
                _ => Account::bit(endpoint),
            };
            match found {
                Found::Answered => account.failing &= !bit,
                Found::Failed { .. } => {
                    let now = Instant::now();
                    account.failing |= bit;
                    if let (Some(cadence), false) = (account.cadence, admitted.charged) {
                        account.paid_at = account.paid_at.max(now) + cadence;
                    }
                }
            }
        }
        let down = matches!(found, Found::Failed { down: true });
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
    const DOWN: Found = Found::Failed { down: true };
    const BEAT: Endpoint = Endpoint::Heartbeat;
    const TOKEN: Endpoint = Endpoint::Token;

    fn paced() -> Arc<HostView> {
        let view = Arc::new(HostView::default());
        view.pace(Some(CADENCE));
        view
    }

    /// Sends one request at once if the budget lets it, and says what it found.
    async fn send_now(view: &HostView, endpoint: Endpoint, found: Found) -> bool {
        let now = Instant::now();
        tokio::select! {
            biased;
            admitted = view.admit() => {
                let went = Instant::now() == now;
                view.found(admitted, endpoint, found);
                went
            }
            () = tokio::task::yield_now() => false,
        }
    }

    /// Three heartbeats that fail at once: the free first, and the two a stretch
    /// may run ahead.
    async fn fail_thrice_at_once(view: &HostView) {
        for _ in 0..3 {
            assert!(send_now(view, BEAT, DOWN).await);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_host_is_never_charged() {
        let view = paced();
        for _ in 0..100 {
            assert!(send_now(&view, BEAT, Found::Answered).await);
            assert!(send_now(&view, BEAT, Found::Answered).await);
        }
        assert_eq!(view.room_at(), Instant::now());
        assert_eq!(view.total(), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_stretch_gets_one_request_a_cadence_whoever_asks() {
        let view = paced();
        let start = Instant::now();
        // Three askers, each asking as fast as it is let, and every answer a 503.
        let askers: Vec<_> = (0..3)
            .map(|_| {
                let view = view.clone();
                tokio::spawn(async move {
                    let mut sent = Vec::new();
                    while Instant::now() < start + CADENCE * 100 {
                        let admitted = view.admit().await;
                        sent.push(Instant::now());
                        view.found(admitted, BEAT, DOWN);
                    }
                    sent
                })
            })
            .collect();
        let mut sent = Vec::new();
        for asker in askers {
            sent.extend(asker.await.unwrap());
        }
        sent.sort();
        // The first request was free and started the stretch, the next two ran
        // ahead, and then one a cadence.
        assert_eq!(sent[..3], [start; 3]);
        assert!((102..=105).contains(&sent.len()), "{}", sent.len());
        for pair in sent[3..].windows(2) {
            assert!(pair[1] - pair[0] >= CADENCE, "{pair:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stretch_lasts_until_each_kind_that_failed_is_answered() {
        let view = paced();
        assert!(send_now(&view, BEAT, DOWN).await);
        // A new access token, then the heartbeat refused again: both at once,
        // charged; nothing more until the charges are back within reach.
        assert!(send_now(&view, TOKEN, Found::Answered).await);
        assert!(send_now(&view, BEAT, DOWN).await);
        assert!(!send_now(&view, BEAT, DOWN).await);
        assert_eq!(view.room_at(), Instant::now() + CADENCE);
        // Another token: the heartbeat's last one still failed, so the stretch
        // goes on.
        tokio::time::advance(CADENCE).await;
        assert!(send_now(&view, TOKEN, Found::Answered).await);
        assert!(!send_now(&view, TOKEN, Found::Answered).await);
        // The heartbeat is accepted: the stretch ends, and nothing waits.
        tokio::time::advance(CADENCE).await;
        assert!(send_now(&view, BEAT, Found::Answered).await);
        assert!(send_now(&view, BEAT, Found::Answered).await);
        assert!(send_now(&view, BEAT, Found::Answered).await);
        assert_eq!(view.room_at(), Instant::now());
        // A new failure: the charges left unpaid carry into the new stretch, up to
        // three cadences in all.
        assert!(send_now(&view, BEAT, DOWN).await);
        assert_eq!(view.room_at(), Instant::now() + CADENCE);
    }

    #[tokio::test(start_paused = true)]
    async fn each_request_is_charged_the_cadence_it_went_at() {
        let view = paced();
        fail_thrice_at_once(&view).await;
        // Three charges of 30 s: the next goes in 30 s.
        assert_eq!(view.room_at(), Instant::now() + CADENCE);
        view.pace(Some(Duration::from_secs(3600)));
        // At an hour's cadence, the charges so far are within reach at once; the
        // next is charged an hour.
        assert!(send_now(&view, BEAT, DOWN).await);
        assert!(send_now(&view, BEAT, DOWN).await);
        assert!(!send_now(&view, BEAT, DOWN).await);
        // A client without a budget is never held.
        view.pace(None);
        assert!(send_now(&view, BEAT, DOWN).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_cadence_forgets_what_a_longer_one_charged_beyond_its_reach() {
        let view = paced();
        view.pace(Some(Duration::from_secs(3600)));
        fail_thrice_at_once(&view).await;
        // Three hours charged; the plane asks for 30 s again.
        view.pace(Some(CADENCE));
        assert!(view.room_at() <= Instant::now() + CADENCE);
        tokio::time::advance(CADENCE).await;
        assert!(send_now(&view, BEAT, DOWN).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_under_way_when_the_stretch_starts_is_charged_when_it_fails() {
        let view = paced();
        let under_way: Vec<Admitted> = vec![view.admit().await, view.admit().await];
        for admitted in under_way {
            view.found(admitted, BEAT, DOWN);
        }
        // Both went uncharged, and both failed: charged two cadences, and one more
        // may go.
        assert!(send_now(&view, BEAT, DOWN).await);
        assert_eq!(view.room_at(), Instant::now() + CADENCE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rebuilt_client_keeps_the_stretch() {
        let old = paced();
        fail_thrice_at_once(&old).await;
        let new = paced();
        new.carry_from(&old);
        assert!(new.is_down());
        assert_eq!(new.room_at(), Instant::now() + CADENCE);
    }

    #[tokio::test(start_paused = true)]
    async fn until_answering_waits_for_a_request_that_finds_the_host_answering() {
        let view = paced();
        view.until_answering().await;
        assert!(send_now(&view, BEAT, DOWN).await);
        assert!(view.is_down());
        let waiting = {
            let view = view.clone();
            tokio::spawn(async move { view.until_answering().await })
        };
        tokio::time::advance(CADENCE).await;
        view.found(view.admit().await, BEAT, DOWN);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished());
        // A 401 is an answer from a host that is up.
        tokio::time::advance(CADENCE).await;
        view.found(view.admit().await, BEAT, Found::Failed { down: false });
        waiting.await.unwrap();
        assert!(!view.is_down());
    }
}
