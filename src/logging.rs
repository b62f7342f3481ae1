//! Where log lines go: stderr, readable, through `tracing`.
//!
//! Under systemd, stderr is the journal (`JOURNAL_STREAM`), which stamps every line
//! itself, so the timestamp is left out there. Colour only on a terminal, never into
//! a pipe or a file.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber with `filter` (a validated `log_level`).
pub fn init(filter: &str) {
    let filter = EnvFilter::builder().parse_lossy(filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
}
