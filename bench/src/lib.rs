//! What the benchmarks share: the wall clock, JSON output, the open-files check,
//! the plot, /proc readings, and the footprint benchmark's Zabbix server and page.
//! The benchmarks themselves are the binaries in `src/bin`: `herd` (the fleet herd
//! simulation) and `soak` (the long run of the real daemon), which
//! `scripts/reliability` runs to render docs/reliability.md; and `footprint`
//! (hostbeat beside peer agents), which `scripts/footprint` runs to render
//! docs/performance.md.

use std::path::Path;

pub mod figures;
pub mod footprint;
pub mod plot;
pub mod procfs;
pub mod zabbix;

/// Real time, for reporting how long a run took and for sampling a process: the
/// one place the benchmarks read the wall clock (the daemon's code reads tokio's,
/// which tests pause).
pub mod wall_clock {
    #[allow(clippy::disallowed_types, reason = "benchmarks measure real time")]
    /// `std::time::Instant`, allowed here only.
    pub type Instant = std::time::Instant;

    /// The wall clock now.
    pub fn now() -> Instant {
        Instant::now()
    }

    /// Real seconds since `start`.
    pub fn seconds_since(start: Instant) -> f64 {
        start.elapsed().as_secs_f64()
    }
}

/// Writes `value` as pretty JSON to `path`, creating its directory.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
}

/// Fails, saying how to fix it, when this process may not open `needed` files
/// (every agent of the herd holds sockets at both ends of its connection).
pub fn check_open_files_limit(needed: usize) -> Result<(), String> {
    let limits = std::fs::read_to_string("/proc/self/limits")
        .map_err(|e| format!("cannot read /proc/self/limits: {e}"))?;
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    match soft {
        Some(soft) if soft < needed => Err(format!(
            "the open files limit is {soft}, this run needs {needed}: raise it first \
             (`ulimit -n {needed}`; scripts/reliability does)"
        )),
        _ => Ok(()),
    }
}
