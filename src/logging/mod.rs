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

use tracing_subscriber::filter::{LevelFilter, Targets};
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
pub struct LevelControl(tracing_subscriber::reload::Handle<Targets, tracing_subscriber::Registry>);

impl LevelControl {
    /// Applies `filter` (a validated `log_level`).
    pub fn set(&self, filter: &str) {
        let _ = self.0.modify(|current| *current = filter_or_info(filter));
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
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter_or_info(filter));
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
        .with_writer(|| Redacting(std::io::stderr()))
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

/// A writer that passes what it is given through the last line of defence against
/// secrets ([`crate::redact`]) before writing it. The fmt layer writes each event
/// in one call, so a secret is never split across two.
struct Redacting<W>(W);

impl<W: std::io::Write> std::io::Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(crate::redact::redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Parses `log_level`: comma-separated levels (`error` .. `trace`, `off`) and
/// `target=level` pairs, e.g. `hostbeat=debug,warn`. A bare word that is not a
/// level is refused: as a target alone it would silence everything else, which is
/// never what the one who wrote `verbose` meant.
///
/// A `Targets` filter, not an `EnvFilter`: the same target and level syntax
/// without span and field matching, which the agent's one-line events have no use
/// for, and without the regex engine that costs the program about 0.2 MiB.
pub fn parse_filter(directives: &str) -> Result<Targets, String> {
    let mut filter = Targets::new();
    for directive in directives.split(',').map(str::trim) {
        // LevelFilter would read "" as error, and "0" to "5" as levels too.
        let level = |word: &str| match word.parse::<LevelFilter>() {
            Ok(level) if word.chars().all(char::is_alphabetic) && !word.is_empty() => Ok(level),
            _ => Err(format!("{word:?} is not a level")),
        };
        filter = match directive.split_once('=') {
            Some((target, word)) if !target.trim().is_empty() => {
                filter.with_target(target.trim().to_owned(), level(word.trim())?)
            }
            Some(_) => return Err(format!("{directive:?} names no target")),
            None => filter.with_default(level(directive)?),
        };
    }
    Ok(filter)
}

/// `log_level` as validated at load; `info` should it somehow not parse.
fn filter_or_info(directives: &str) -> Targets {
    parse_filter(directives).unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO))
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

#[cfg(test)]
mod tests {
    use tracing::Level;
    use tracing_subscriber::filter::LevelFilter;

    #[test]
    fn stderr_lines_pass_the_last_line_of_defence() {
        use std::io::Write as _;
        crate::redact::remember("se-Hq4Wn7Ck2Jd9Rf5Bx", crate::redact::Kind::Client);
        let mut out = super::Redacting(Vec::new());
        out.write_all(b"WARN refused se-Hq4Wn7Ck2Jd9Rf5Bx (HTTP 401)\n")
            .unwrap();
        assert_eq!(
            String::from_utf8(out.0).unwrap(),
            "WARN refused [redacted] (HTTP 401)\n"
        );
    }

    use super::parse_filter;

    fn allows(directives: &str, target: &str, level: Level) -> bool {
        let filter = parse_filter(directives).expect("valid");
        filter.would_enable(target, &level)
    }

    #[test]
    fn a_level_alone_is_the_default_for_every_target() {
        assert!(allows("info", "hostbeat::heartbeat", Level::INFO));
        assert!(!allows("info", "hostbeat::heartbeat", Level::DEBUG));
        assert!(allows(" WARN ", "reqwest", Level::WARN));
        assert!(!allows("off", "hostbeat", Level::ERROR));
    }

    #[test]
    fn target_pairs_set_a_module_and_its_children_apart() {
        let directives = "hostbeat=debug, warn";
        assert!(allows(directives, "hostbeat::credentials", Level::DEBUG));
        assert!(!allows(directives, "hostbeat::credentials", Level::TRACE));
        assert!(!allows(directives, "hyper_util", Level::INFO));
        assert!(allows(directives, "hyper_util", Level::WARN));
    }

    #[test]
    fn a_word_that_is_no_level_is_refused_with_the_reason() {
        let problem = |directives: &str| parse_filter(directives).expect_err(directives);
        assert_eq!(problem("verbose"), "\"verbose\" is not a level");
        assert_eq!(problem("hostbeat=loud"), "\"loud\" is not a level");
        assert_eq!(problem("=debug"), "\"=debug\" names no target");
        assert_eq!(problem(""), "\"\" is not a level");
        assert_eq!(problem("info,"), "\"\" is not a level");
        assert_eq!(problem("3"), "\"3\" is not a level");
        assert_eq!(
            parse_filter("debug").map(|f| f.default_level()),
            Ok(Some(LevelFilter::DEBUG))
        );
    }
}
