//! Deadlines moved onto the boundaries of the runtime's timer wheel, so that their
//! timers skip the wake-ups of the finer levels.
//!
//! tokio keeps its timers in a hierarchical wheel of 1 ms ticks, counted from the
//! moment the runtime was built: level 0 holds the next 64 ms in 1 ms slots, level 1
//! 64 ms slots, level 2 4.096 s slots, level 3 262.144 s slots, and so on. A timer
//! 5 s or a minute away sits at level 2. The runtime sleeps until the start of its
//! slot, wakes, moves it down to level 1, sleeps until the start of its 64 ms slot,
//! wakes, moves it to level 0, and wakes a third time when it is due: three
//! wake-ups for one event. A deadline on a slot boundary is due when that slot
//! starts, and skips the levels below.
//!
//! [`Grid`] moves a deadline that may move a little onto the coarsest boundary in
//! its reach. Where it pays, counted on the tokio in Cargo.lock by the tests below
//! (111 start offsets each):
//! - a heartbeat's wait and a metadata poll, a little late ([`Grid::late`]): a
//!   sixteenth of the wait and 64 ms at most, which reaches a 64 ms boundary: two
//!   wake-ups rather than three at nearly every offset. At the packaged settings
//!   (a 30 s heartbeat, a 5 s poll) the agent wakes 44 times a minute where a
//!   build without the grid wakes 64 (docs/performance.md, "At the packaged
//!   settings": `scripts/footprint` runs a build with the feature
//!   `timer-grid-off` beside the packaged one; CPU time, 0.29 against 0.32 s an
//!   hour).
//! - the watchdog's ping, early within the second half of its period
//!   ([`Grid::at_or_before`]), which reaches a 4.096 s boundary: one wake-up rather
//!   than three. It fires only when nothing else pinged for a period (a heartbeat
//!   interval longer than half `WatchdogSec=`: the idle agent on the same page).
//!
//! A token refresh stays exact: refreshes come minutes apart, so a boundary would
//! save one wake-up in minutes. A fleet's hosts start at different moments, so
//! their grids differ; and a heartbeat moves by far less than its jitter, so hosts
//! do not fall into step.
//!
//! The grid is tokio's private arithmetic, so a new tokio could move it. Nothing
//! breaks then: an aligned deadline costs what any deadline costs. The tests below
//! count the wake-ups of the tokio in Cargo.lock, so that such a change is noticed.

use std::time::Duration;

use tokio::time::Instant;

/// The wheel's slot widths above level 0, coarsest first (64^3, 64^2 and 64 ticks of
/// 1 ms).
const STEPS: [Duration; 3] = [
    Duration::from_millis(262_144),
    Duration::from_millis(4_096),
    Duration::from_millis(64),
];

/// How far a deadline `wait` away may move for a boundary when many hosts must not
/// fall into step (a heartbeat, an IMDS poll): a sixteenth of the wait, at most the
/// finest slot (64 ms). Far below a heartbeat's jitter (10% of its interval); and a
/// wait too short to have a boundary in reach (a soak's 10 ms heartbeat) stays
/// exact.
fn reach(wait: Duration) -> Duration {
    (wait / 16).min(STEPS[STEPS.len() - 1])
}

/// The slot boundaries of one runtime's timer wheel, or none (deadlines stay where
/// they are).
#[derive(Debug, Clone, Copy, Default)]
pub struct Grid {
    /// When the runtime's clock started, or a moment less than 1 ms before it.
    origin: Option<Instant>,
}

impl Grid {
    /// No grid: every deadline stays exactly where it is (tests that look at exact
    /// times, embedding in another runtime).
    pub const fn none() -> Self {
        Self { origin: None }
    }

    /// The grid of the runtime about to be built: call it just before
    /// `tokio::runtime::Builder::build`. The wheel counts from a moment during the
    /// build; a deadline a whole number of milliseconds from now lands on the same
    /// tick as long as the build's first part takes under 1 ms (tokio rounds a
    /// deadline up to the next tick).
    pub fn for_runtime_built_next() -> Self {
        Self {
            origin: Some(Instant::now()),
        }
    }

    /// The deadline `wait` from now, a little late (a sixteenth of the wait, 64 ms
    /// at most) on a boundary: for what many hosts do (a heartbeat, an IMDS poll).
    pub fn late(&self, wait: Duration) -> Instant {
        self.at_or_after(Instant::now() + wait, reach(wait))
    }

    /// The latest slot boundary, on the coarsest level that has one, between
    /// `deadline - reach` and `deadline`: for what may happen early (a watchdog
    /// ping). `deadline` itself when there is no boundary in reach, or no grid.
    pub fn at_or_before(&self, deadline: Instant, reach: Duration) -> Instant {
        let Some((origin, since)) = self.place(deadline) else {
            return deadline;
        };
        let earliest = deadline.checked_sub(reach).unwrap_or(origin);
        STEPS
            .iter()
            .map(|&step| origin + step * whole_steps(since, step))
            .find(|&boundary| boundary >= earliest)
            .unwrap_or(deadline)
    }

    /// The earliest slot boundary, on the coarsest level that has one, between
    /// `deadline` and `deadline + reach`: for what may happen a little late (a
    /// heartbeat, a poll). `deadline` itself when there is none, or no grid.
    fn at_or_after(&self, deadline: Instant, reach: Duration) -> Instant {
        let Some((origin, since)) = self.place(deadline) else {
            return deadline;
        };
        let latest = deadline + reach;
        STEPS
            .iter()
            .map(|&step| {
                let below = step * whole_steps(since, step);
                origin + if below == since { below } else { below + step }
            })
            .find(|&boundary| boundary <= latest)
            .unwrap_or(deadline)
    }

    /// The grid's origin and how far after it `deadline` is; none without a grid,
    /// or for a deadline before it.
    fn place(&self, deadline: Instant) -> Option<(Instant, Duration)> {
        let origin = self.origin?;
        Some((origin, deadline.checked_duration_since(origin)?))
    }
}

/// How many whole `step`s fit in `span`.
fn whole_steps(span: Duration, step: Duration) -> u32 {
    // Spans of a process's lifetime: u32 steps of 64 ms cover 8 years.
    u32::try_from(span.as_nanos() / step.as_nanos()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::Mutex;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn without_a_grid_deadlines_stay() {
        let at = Instant::now() + Duration::from_secs(60);
        let grid = Grid::none();
        assert_eq!(grid.at_or_before(at, Duration::from_secs(30)), at);
        assert_eq!(grid.at_or_after(at, Duration::from_secs(30)), at);
    }

    #[test]
    fn the_coarsest_boundary_in_reach_is_chosen() {
        let origin = Instant::now();
        let grid = Grid {
            origin: Some(origin),
        };
        // 60.5 s: 4.096 s boundaries at 57.344 and 61.44 s, none of 262 s in reach.
        let at = origin + Duration::from_millis(60_500);
        assert_eq!(
            grid.at_or_before(at, Duration::from_secs(30)),
            origin + 57_344 * MS
        );
        assert_eq!(
            grid.at_or_after(at, Duration::from_secs(30)),
            origin + 61_440 * MS
        );
        // With 64 ms of reach only the finest level has one.
        assert_eq!(grid.at_or_before(at, 64 * MS), origin + 60_480 * MS);
        assert_eq!(grid.at_or_after(at, 64 * MS), origin + 60_544 * MS);
        // With 10 ms, none: the deadline stays.
        assert_eq!(grid.at_or_before(at, 10 * MS), at);
        assert_eq!(grid.at_or_after(at, 10 * MS), at);
        // 270 s, a minute of reach: the 262.144 s boundary.
        let at = origin + Duration::from_secs(270);
        assert_eq!(
            grid.at_or_before(at, Duration::from_secs(60)),
            origin + 262_144 * MS
        );
        // A deadline on a boundary is its own.
        let on = origin + 4_096 * MS;
        assert_eq!(grid.at_or_after(on, 64 * MS), on);
        assert_eq!(grid.at_or_before(on, 64 * MS), on);
    }

    #[test]
    fn the_reach_is_a_sixteenth_of_the_wait_and_at_most_the_finest_slot() {
        assert_eq!(reach(Duration::from_secs(30)), 64 * MS);
        assert_eq!(reach(Duration::from_millis(800)), 50 * MS);
        assert_eq!(reach(Duration::from_millis(10)), Duration::from_micros(625));
    }

    #[test]
    fn a_deadline_before_the_origin_stays() {
        let origin = Instant::now() + Duration::from_secs(10);
        let grid = Grid {
            origin: Some(origin),
        };
        let at = origin - Duration::from_secs(1);
        assert_eq!(grid.at_or_before(at, Duration::from_secs(5)), at);
        assert_eq!(grid.at_or_after(at, Duration::from_secs(5)), at);
    }

    /// The wake-ups of one sleep until the deadline `pick` chooses, `offset` into a
    /// runtime built as the daemon builds its own: the distinct moments the runtime
    /// woke while the sleep was pending. The clock is paused, so time jumps to each
    /// wake-up, and the wheel wakes exactly as it would in real time.
    fn wakeups_of(offset: Duration, pick: impl FnOnce(Grid, Instant) -> Instant) -> usize {
        let woke = Arc::new(Mutex::new(Vec::new()));
        let record = woke.clone();
        let grid = Grid::for_runtime_built_next();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .on_thread_unpark(move || record.lock().unwrap().push(Instant::now()))
            .build()
            .unwrap();
        runtime.block_on(async {
            // Somewhere inside the wheel's slots, as a daemon's "now" is.
            tokio::time::sleep(offset).await;
            let start = Instant::now();
            let deadline = pick(grid, start);
            tokio::time::sleep_until(deadline).await;
            let mut moments: Vec<Instant> = woke
                .lock()
                .unwrap()
                .iter()
                .copied()
                .filter(|&at| at > start)
                .collect();
            moments.dedup();
            moments.len()
        })
    }

    /// How many of 111 start offsets spread over a 4.096 s slot (and a little into
    /// the next level's) cost each number of wake-ups, for a wait picked by `pick`.
    fn histogram(pick: impl Fn(Grid, Instant) -> Instant) -> Vec<(usize, usize)> {
        let mut counts = std::collections::BTreeMap::new();
        for i in 1..=111u64 {
            let offset = Duration::from_millis(1_000 + i * 37);
            *counts.entry(wakeups_of(offset, &pick)).or_insert(0) += 1;
        }
        counts.into_iter().collect()
    }

    #[test]
    fn a_heartbeat_or_a_poll_costs_two_wake_ups_on_the_grid_and_three_off_it() {
        // The packaged heartbeat interval and metadata poll, as the loop and the
        // watcher ask for them (Grid::late), and exactly (no grid): (wake-ups,
        // offsets that cost that many). One fewer, at nearly every offset.
        for (wait, on, off) in [
            (30, vec![(1, 1), (2, 110)], vec![(2, 4), (3, 107)]),
            (5, vec![(1, 2), (2, 109)], vec![(2, 3), (3, 108)]),
        ] {
            let wait = Duration::from_secs(wait);
            let on_grid = histogram(|grid, _| grid.late(wait));
            let off_grid = histogram(|_, start| start + wait);
            assert_eq!(
                (on_grid, off_grid),
                (on, off),
                "wake-ups per wait of {wait:?} at 111 start offsets, on the grid and off \
                 it (if tokio's wheel changed, see src/wheel.rs)"
            );
        }
    }

    #[test]
    fn a_watchdog_ping_costs_one_wake_up_on_the_grid_and_three_off_it() {
        // The packaged unit's WatchdogSec=2min: a ping within 60 s, early by up to
        // half of it, as the watchdog asks for it.
        let period = Duration::from_secs(60);
        let on_grid = histogram(|grid, start| grid.at_or_before(start + period, period / 2));
        let off_grid = histogram(|_, start| start + period);
        assert_eq!(
            (on_grid, off_grid),
            (vec![(1, 111)], vec![(2, 4), (3, 107)])
        );
    }

    #[test]
    fn a_minute_away_costs_three_wake_ups_and_one_on_a_boundary_in_reach() {
        // With 30 s of reach either way, a 4.096 s boundary: one wake-up.
        let offset = Duration::from_millis(1_234);
        let minute = Duration::from_secs(60);
        let reach = Duration::from_secs(30);
        let unaligned = wakeups_of(offset, |_, start| start + minute);
        let early = wakeups_of(offset, |grid, start| {
            grid.at_or_before(start + minute, reach)
        });
        let late = wakeups_of(offset, |grid, start| {
            grid.at_or_after(start + minute, reach)
        });
        assert_eq!(
            (unaligned, early, late),
            (3, 1, 1),
            "wake-ups for one sleep of a minute: unaligned, aligned early, aligned late \
             (if tokio's wheel changed, see src/wheel.rs)"
        );
    }

    #[test]
    fn a_second_away_costs_two_wake_ups_and_one_a_tick_later() {
        // What a 1 s heartbeat pays: a 64 ms level-1 slot, then the tick.
        let offset = Duration::from_millis(1_234);
        let second = Duration::from_secs(1);
        let unaligned = wakeups_of(offset, |_, start| start + second);
        let late = wakeups_of(offset, |grid, start| {
            grid.at_or_after(start + second, reach(second))
        });
        // What the heartbeat loop asks for: the same.
        let asked = wakeups_of(offset, |grid, _| grid.late(second));
        assert_eq!((unaligned, late, asked), (2, 1, 1));
    }
}
