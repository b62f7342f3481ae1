//! When the loop tells systemd it is alive (`WATCHDOG=1`).
//!
//! systemd restarts the unit when no ping arrives within `WatchdogSec=`; the loop
//! pings within half of it (the period), as sd_watchdog_enabled(3) advises. Pings
//! ride on the loop's own work: a beat pings when the loop's next wake-up would come
//! after the ping's deadline, so the timer fires only when the loop had nothing else
//! to do for nearly a period. With the packaged unit (`WatchdogSec=2min`, a ping
//! within 60 s) and the default 30 s heartbeat, the timer never fires at all. When
//! it does, its deadline sits on the runtime's timer grid ([`crate::wheel`]), in the
//! second half of the period, where it costs one wake-up.

use std::time::Duration;

use tokio::time::Instant;

use crate::wheel::Grid;

/// The schedule of watchdog pings.
#[derive(Debug)]
pub(super) struct Watchdog {
    /// Half `WATCHDOG_USEC`: the longest wait between two pings.
    period: Duration,
    grid: Grid,
    /// The last ping (or the start).
    last: Instant,
    /// When the timer pings, if nothing else did first.
    due: Instant,
}

impl Watchdog {
    /// The schedule from now, for pings at most `period` apart.
    pub(super) fn new(period: Duration, grid: Grid) -> Self {
        let now = Instant::now();
        Self {
            period,
            grid,
            last: now,
            due: Self::due_after(grid, now, period),
        }
    }

    /// Resolves when the timer must ping: nothing else did for nearly a period.
    pub(super) async fn due(&self) {
        tokio::time::sleep_until(self.due).await;
    }

    /// Whether the loop, at work at `now` and waking next at `next_wake`, should
    /// ping: its next wake-up would come too late to, and a quarter period has
    /// passed since the last ping (more often tells systemd nothing new).
    pub(super) fn rides(&self, now: Instant, next_wake: Instant) -> bool {
        next_wake > self.due && now >= self.last + self.period / 4
    }

    /// A ping went at `now`: the next is due within a period of it.
    pub(super) fn pinged(&mut self, now: Instant) {
        self.last = now;
        self.due = Self::due_after(self.grid, now, self.period);
    }

    /// The timer's deadline after a ping at `at`: the grid's boundary in the second
    /// half of the period, or the period's end.
    fn due_after(grid: Grid, at: Instant, period: Duration) -> Instant {
        grid.at_or_before(at + period, period / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_timer_fires_within_the_period_and_a_ping_resets_it() {
        let period = Duration::from_secs(60);
        let start = Instant::now();
        let mut watchdog = Watchdog::new(period, Grid::none());
        watchdog.due().await;
        assert_eq!(Instant::now(), start + period);

        // A ping on the way (a beat) puts the timer off a whole period.
        tokio::time::advance(Duration::from_secs(40)).await;
        watchdog.pinged(Instant::now());
        let pinged = Instant::now();
        watchdog.due().await;
        assert_eq!(Instant::now(), pinged + period);
    }

    #[test]
    fn a_beat_pings_when_the_next_wake_up_comes_too_late() {
        let period = Duration::from_secs(60);
        let watchdog = Watchdog::new(period, Grid::none());
        let at = |s: u64| watchdog.last + Duration::from_secs(s);
        // 30 s heartbeats: the next beat comes in time; the one after would not.
        assert!(!watchdog.rides(at(30), at(59)));
        assert!(watchdog.rides(at(30), at(61)));
        // A beat within a quarter period of the last ping does not ping again,
        // however far the next wake-up is: the timer does, when due.
        assert!(!watchdog.rides(at(14), at(3600)));
        assert!(watchdog.rides(at(15), at(3600)));
    }

    #[tokio::test(start_paused = true)]
    async fn on_a_grid_the_timer_fires_early_on_a_boundary() {
        let period = Duration::from_secs(60);
        let start = Instant::now();
        // A grid whose origin is the start: its 4.096 s boundary before 60 s.
        let grid = Grid::for_runtime_built_next();
        let watchdog = Watchdog::new(period, grid);
        watchdog.due().await;
        let waited = Instant::now() - start;
        assert!(
            waited >= period / 2 && waited <= period,
            "the timer fired after {waited:?}, not in the second half of {period:?}"
        );
        assert_eq!(waited.as_millis() % 4_096, 0, "{waited:?}");
    }
}
