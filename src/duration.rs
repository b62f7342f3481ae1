//! The one way a duration is written for a person, in the journal, `check`,
//! `status` and errors alike: humantime's units ("250ms", "1m 30s", "2h 5m"), to
//! the millisecond under 10 s, to the second under an hour, to the minute above
//! ([`show`]); exactly, where an error quotes a setting ([`exact`]). Fields for
//! machines carry the value itself (`next_attempt_s` with its milliseconds),
//! never this text.

use std::time::Duration;

/// `d` for a person.
pub fn show(d: Duration) -> String {
    let rounded = if d < Duration::from_secs(10) {
        Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    } else if d < Duration::from_secs(3600) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_secs(d.as_secs() / 60 * 60)
    };
    humantime::format_duration(rounded).to_string()
}

/// `d` exactly as humantime writes it, for an error that quotes a setting's value
/// or its bounds (rounded, 300.5 s would read as "5m is above the ceiling of 5m").
pub fn exact(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// `d` in seconds to the millisecond, for a journal field: a wait of 631 ms is
/// 0.631, not 0.
pub fn seconds(d: Duration) -> f64 {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_follows_the_size() {
        for (d, shown) in [
            (Duration::ZERO, "0s"),
            (Duration::from_micros(631_400), "631ms"),
            (Duration::from_millis(9_999), "9s 999ms"),
            (Duration::from_millis(10_400), "10s"),
            (Duration::from_secs(3_599), "59m 59s"),
            (Duration::from_secs(3_600 + 5 * 60 + 59), "1h 5m"),
            (Duration::from_secs(86_400), "1day"),
        ] {
            assert_eq!(show(d), shown, "{d:?}");
        }
        assert!((seconds(Duration::from_micros(631_400)) - 0.631).abs() < 1e-9);
    }
}
