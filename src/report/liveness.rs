//! Whether the process that wrote a status file still runs: by its pid and the time
//! it started (field 22 of `/proc/PID/stat`, in clock ticks since boot), not by its
//! name, so that a renamed or wrapped binary is still seen running and a pid reused
//! by another program is not mistaken for it.
//!
//! The daemon cannot read the boot id under the packaged unit (`ProcSubset=pid`
//! hides `/proc/sys`), so a pid reused after a reboot is told apart by its start
//! time alone; the staleness check in `status_file` catches what that misses.

use serde::{Deserialize, Serialize};

/// When a process started, as the kernel counts it (a plain number in the status
/// file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProcessStart {
    /// Clock ticks from boot to the process's start.
    pub ticks: u64,
}

impl ProcessStart {
    /// This process's start, if `/proc` tells it.
    pub fn of_self() -> Option<Self> {
        Self::read("self")
    }

    /// The start of process `pid`, if it exists and `/proc` tells it.
    pub fn of(pid: u32) -> Option<Self> {
        Self::read(&pid.to_string())
    }

    fn read(pid: &str) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Self::parse(&stat)
    }

    /// Reads field 22 of a `/proc/PID/stat` line. The command name (field 2) is in
    /// parentheses and may hold spaces and parentheses itself: the fields after it
    /// start after its last `)`.
    fn parse(stat: &str) -> Option<Self> {
        let after_name = &stat[stat.rfind(')')? + 1..];
        // Field 3 (state) is the first after the name, so field 22 is the 20th.
        let ticks = after_name.split_whitespace().nth(19)?.parse().ok()?;
        Some(Self { ticks })
    }
}

/// Whether the process `pid` that recorded `start` still runs. Without a recorded
/// start (a status file from an older hostbeat), a process of that pid named
/// `hostbeat` counts.
pub fn runs(pid: u32, start: Option<ProcessStart>) -> bool {
    match start {
        Some(start) => ProcessStart::of(pid) == Some(start),
        None => std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm.trim() == "hostbeat"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_start_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (my (odd) agent) S 1 4242 4242 0 -1 4194560 120 0 0 0 3 1 0 0 20 0 1 0 987654 12345678 900 18446744073709551615";
        assert_eq!(
            ProcessStart::parse(stat),
            Some(ProcessStart { ticks: 987_654 })
        );
        assert_eq!(ProcessStart::parse("4242 (cut"), None);
    }

    #[test]
    fn this_process_is_running_and_a_different_start_is_not() {
        let own = ProcessStart::of_self().expect("/proc/self/stat");
        let pid = std::process::id();
        assert!(runs(pid, Some(own)));
        assert!(!runs(
            pid,
            Some(ProcessStart {
                ticks: own.ticks + 1
            })
        ));
    }
}
