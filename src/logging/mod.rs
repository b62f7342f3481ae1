//! Where log lines go: the journal, natively, when running under systemd (or when
//! asked); readable lines on stderr otherwise.
//!
//! `auto` picks the journal when stderr is already connected to it
//! (`JOURNAL_STREAM` names stderr's device and inode, as systemd sets it). When the
//! journal socket cannot be reached, the agent logs to stderr and says so once.
//! Colour only on a terminal; no timestamps on stderr under systemd, which stamps
//! every line itself.

pub mod events;
pub mod journald;

use std::io::IsTerminal;
use std::path::Path;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Where to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogTarget {
    /// The journal when stderr is connected to it, else stderr.
    Auto,
    /// Readable lines on stderr.
    Stderr,
    /// The journal's native protocol (falls back to stderr if it is unreachable).
    Journald,
}

/// Changes the log filter of the running process (a reload's `log_level`).
#[derive(Clone)]
pub struct LevelControl(
    tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>,
);

impl LevelControl {
    /// Applies `filter` (a validated `log_level`).
    pub fn set(&self, filter: &str) {
        let _ = self
            .0
            .modify(|current| *current = EnvFilter::builder().parse_lossy(filter));
    }
}

impl std::fmt::Debug for LevelControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LevelControl")
    }
}

/// Installs the global subscriber with `filter` (a validated `log_level`).
/// Returns the handle that changes the level later, and a note to log once logging
/// is up (why the journal was not used).
pub fn init(filter: &str, target: LogTarget) -> (LevelControl, Option<String>) {
    let (filter, handle) =
        tracing_subscriber::reload::Layer::new(EnvFilter::builder().parse_lossy(filter));
    let level = LevelControl(handle);
    let journal = match target {
        LogTarget::Stderr => None,
        LogTarget::Auto if !stderr_is_journal() => None,
        LogTarget::Auto | LogTarget::Journald => Some(journald::JournaldLayer::connect(Path::new(
            journald::JOURNAL_SOCKET,
        ))),
    };
    let note = match journal {
        Some(Ok(layer)) => {
            tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .init();
            return (level, None);
        }
        Some(Err(e)) => Some(format!(
            "cannot reach the journal at {} ({e}); logging to stderr",
            journald::JOURNAL_SOCKET
        )),
        None => None,
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        registry.with(stderr.without_time()).init();
    } else {
        registry.with(stderr).init();
    }
    (level, note)
}

/// Whether stderr is the journal stream systemd connected (`JOURNAL_STREAM=dev:ino`).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(meta) => dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino()),
        Err(_) => false,
    }
}
