//! The service's environment as systemd hands it to `hostbeat run`: the unit's and
//! its drop-ins' `Environment=` lines. `check` runs from an operator's shell, whose
//! environment is not the service's; loading with the unit's makes it predict what
//! the daemon does (a drop-in's setting, a token set by `Environment=`).
//!
//! Read with `systemctl show`, only where systemd is the init system and the unit is
//! loaded; elsewhere `check` uses its own environment, as `hostbeat run` started
//! from the same shell would.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The unit the packages install.
pub const UNIT: &str = "hostbeat.service";

/// What `hostbeat run` gets from the unit that `check` does not have by itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Service {
    /// `Environment=` assignments of the unit and its drop-ins, in order.
    pub environment: Vec<(String, String)>,
    /// `User=`: whose access to the env file counts.
    pub user: Option<String>,
    /// The running service's credentials (`LoadCredential=`), where systemd put
    /// them: `/run/credentials/UNIT` while it runs.
    pub credentials_directory: Option<PathBuf>,
}

/// The service as systemd knows it, or `None` when systemd does not run here or
/// does not know the unit.
pub fn service(unit: &str) -> Option<Service> {
    if !Path::new("/run/systemd/system").is_dir() {
        return None;
    }
    let output = Command::new("systemctl")
        .args([
            "show",
            "--property=LoadState",
            "--property=Environment",
            "--property=User",
            unit,
        ])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut loaded = false;
    let mut service = Service::default();
    for line in text.lines() {
        if let Some(state) = line.strip_prefix("LoadState=") {
            loaded = state == "loaded";
        } else if let Some(value) = line.strip_prefix("Environment=") {
            service.environment = parse(value);
        } else if let Some(user) = line.strip_prefix("User=") {
            service.user = Some(user.to_owned()).filter(|u| !u.is_empty());
        }
    }
    let credentials = Path::new("/run/credentials").join(unit);
    service.credentials_directory = credentials.is_dir().then_some(credentials);
    loaded.then_some(service)
}

/// `systemctl show`'s rendering of an environment list: assignments separated by
/// spaces, an assignment with a space or a quote in it double-quoted with C escapes.
pub fn parse(value: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('n') => word.push('\n'),
                    Some('t') => word.push('\t'),
                    Some(other) => word.push(other),
                    None => {}
                }
            }
            ' ' if !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            other => {
                word.push(other);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
        .into_iter()
        .filter_map(|w| {
            let (key, value) = w.split_once('=')?;
            Some((key.to_owned(), value.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn reads_plain_and_quoted_assignments() {
        assert_eq!(
            parse(r#"HOSTBEAT_IMDS=off "HOSTBEAT_LOG_LEVEL=hostbeat=debug, warn" A=\"x\""#),
            vec![
                ("HOSTBEAT_IMDS".to_owned(), "off".to_owned()),
                (
                    "HOSTBEAT_LOG_LEVEL".to_owned(),
                    "hostbeat=debug, warn".to_owned()
                ),
                ("A".to_owned(), "\"x\"".to_owned()),
            ]
        );
        assert!(parse("").is_empty());
    }
}
