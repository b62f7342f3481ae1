//! The layers merged into one view: each setting's value and origin, every place a
//! setting was overridden (so that `check` can name it), the warnings of the load
//! (unknown variables, files with the token that every user can read, a token in
//! the unit's environment), and the misspelt names that a missing required
//! setting's fix points at.
//!
//! Invariant: the client token never enters this view as a string; only the places
//! it was found are recorded.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::token::CLIENT_TOKEN_VAR;
use super::{ConfigError, Origin, env_var, envfile, settings};

/// Something that works but is probably not what the operator meant: `run` logs it
/// once at start, `check` shows it as a warning with its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Stable, for scripts (`check --json`'s code): `area.what`.
    pub code: &'static str,
    /// The file it is about, if it is about one.
    pub file: Option<PathBuf>,
    /// What is wrong, in one line.
    pub problem: String,
    /// What to do about it, standing alone.
    pub fix: Option<String>,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problem)?;
        match &self.fix {
            Some(fix) => write!(f, "; fix: {fix}"),
            None => Ok(()),
        }
    }
}

/// A setting set in more than one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadowed {
    /// The setting.
    pub key: &'static str,
    /// Every place that sets it, described, lowest first: the last is in use.
    pub places: Vec<String>,
    /// Whether the values differ: the same value twice is untidy, not wrong.
    pub differ: bool,
}

impl Shadowed {
    /// One line: every place that sets it, and the one in use.
    pub fn describe(&self) -> String {
        format!(
            "{} is set in {} places ({}); in use: {}{}",
            self.key,
            self.places.len(),
            self.places.join(", "),
            self.places.last().map_or("", String::as_str),
            if self.differ { "" } else { " (the same value)" },
        )
    }
}

/// The merge of the layers, lowest first.
#[derive(Default)]
pub(super) struct Merge {
    /// Every setting someone set, with its value as written and where it came from.
    pub values: BTreeMap<&'static str, (String, Origin)>,
    /// For each setting set in more than one place, the places overridden and
    /// their values, lowest first.
    overridden: BTreeMap<&'static str, Vec<(String, Origin)>>,
    /// The client token's places, lowest first, each described with the
    /// fingerprint of what it holds (never the value).
    token_places: Vec<(String, crate::secret::Fingerprint)>,
    /// The warnings so far.
    pub warnings: Vec<Warning>,
    /// Unknown `HOSTBEAT_*` variables close to a known setting: (name, setting,
    /// where).
    misspelt: Vec<(String, &'static str, Origin)>,
    /// Settings an empty variable cleared: (setting, where it was set, where it was
    /// cleared).
    cleared: Vec<(&'static str, Origin, Origin)>,
    /// The first setting whose value holds a client token's assignment, and where.
    carries_token: Option<(&'static str, Origin)>,
}

impl Merge {
    /// Sets `key` from `origin`, over any lower layer's value.
    pub fn set(&mut self, key: &'static str, value: String, origin: Origin) {
        if super::assigns_client_token(&value) {
            // Known to the redactor too, in case anything shows the value anyway.
            super::remember_carried_tokens(&value);
            self.carries_token.get_or_insert((key, origin.clone()));
        }
        if let Some(below) = self.values.insert(key, (value, origin)) {
            self.overridden.entry(key).or_default().push(below);
        }
    }

    /// An error for a setting whose value holds a client token's assignment (a
    /// quote or a trailing backslash left open above the token's line, or two
    /// settings on one line, carried the token into it): the value is logged and
    /// shown as the setting's, so it is refused, and not quoted.
    pub fn token_carried(&self) -> Option<ConfigError> {
        let (key, origin) = self.carries_token.as_ref()?;
        let fix = match origin {
            Origin::ConfigFile(path) => format!(
                "close the quotes of {key} on its own line in {}",
                path.display()
            ),
            Origin::EnvFile(path) => format!(
                "put {} on a line of its own in {}, with no backslash at the end of the line above",
                env_var(key),
                path.display()
            ),
            Origin::Environment | Origin::Default => format!(
                "set {} to its value alone (systemctl edit hostbeat), and the token in the env file",
                env_var(key)
            ),
        };
        Some(ConfigError::new(
            *key,
            Some(origin.describe(key)),
            "its value holds a client token setting, which would be logged as part of it (the value is not shown)".to_owned(),
            fix,
        ))
    }

    /// Adds the `HOSTBEAT_*` variables of one environment layer (the env file, the
    /// process environment) over the layers below. An empty value clears the
    /// setting, so that a drop-in can return it to its default. Unknown names are
    /// warned about, not refused: the environment is shared with other programs
    /// and versions.
    pub fn add_env(&mut self, env: &BTreeMap<String, String>, origin: &Origin) {
        for (name, value) in env {
            let Some(key) = name.strip_prefix("HOSTBEAT_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            if key == "config" {
                continue; // HOSTBEAT_CONFIG is the --config flag, read by the CLI.
            }
            match settings::known_key(&key) {
                Some(known) if value.trim().is_empty() => {
                    if let Some((_, below)) = self.values.remove(known) {
                        self.cleared.push((known, below, origin.clone()));
                    }
                    self.overridden.remove(known);
                }
                Some(known) => self.set(known, value.clone(), origin.clone()),
                None => {
                    let suggestion = settings::suggest(&key);
                    if let Some(setting) = suggestion {
                        self.misspelt.push((name.clone(), setting, origin.clone()));
                    }
                    self.warnings.push(Warning {
                        code: "config.unknown_variable",
                        file: match origin {
                            Origin::EnvFile(path) => Some(path.clone()),
                            _ => None,
                        },
                        problem: format!(
                            "{name} (from {}) is not a hostbeat setting and is ignored",
                            origin.describe(&key),
                        ),
                        fix: Some(suggestion.map_or_else(
                            || format!("remove {name}; docs/configuration.md lists every setting"),
                            |s| format!("did you mean {}? rename it", env_var(s)),
                        )),
                    });
                }
            }
        }
    }

    /// Records one place that holds a client token (lowest layer first; the last
    /// recorded is the one in use), by a description and the fingerprint of what it
    /// holds.
    pub fn token_place(&mut self, place: String, fingerprint: crate::secret::Fingerprint) {
        self.token_places.push((place, fingerprint));
    }

    /// Records the token's lowest places, where they hold one: the systemd
    /// credential in `credentials_directory`, then `client_token_file`.
    pub fn token_files(&mut self, credentials_directory: Option<&Path>) {
        let credential = credentials_directory.map(|dir| dir.join(super::token::CREDENTIAL_NAME));
        let token_file = self
            .values
            .get("client_token_file")
            .map(|(path, _)| PathBuf::from(path.trim()));
        for (place, path) in [
            ("systemd credential", credential),
            ("client_token_file", token_file),
        ] {
            if let Some(path) = path
                && let Ok(bytes) = std::fs::read(&path)
            {
                let place = format!("{place} {}", path.display());
                self.token_place(place, crate::secret::Fingerprint::of(&bytes));
            }
        }
    }

    /// Warns about a setting that no longer does anything, where it is set.
    pub fn retired(&mut self) {
        if let Some((_, origin)) = self.values.get("backoff_base") {
            self.warnings.push(Warning {
                code: "config.retired",
                file: None,
                problem: format!(
                    "backoff_base ({}) no longer sets anything: a retry waits at least one heartbeat_interval and grows from there (docs/protocol.md section 3)",
                    origin.describe("backoff_base")
                ),
                fix: Some(format!("remove {}", origin.describe("backoff_base"))),
            });
        }
    }

    /// Every setting set in more than one place. Those whose values differ are
    /// also warnings: `run` logs them, as `check` shows them.
    pub fn shadowed(&mut self) -> Vec<Shadowed> {
        let mut all: Vec<Shadowed> = self
            .overridden
            .iter()
            .filter_map(|(key, losers)| {
                let (value, origin) = self.values.get(key)?;
                Some(Shadowed {
                    key,
                    places: losers
                        .iter()
                        .map(|(_, o)| o.describe(key))
                        .chain([origin.describe(key)])
                        .collect(),
                    differ: losers.iter().any(|(v, _)| v.trim() != value.trim()),
                })
            })
            .collect();
        if let Some((_, in_use)) = self.token_places.last()
            && self.token_places.len() > 1
        {
            all.push(Shadowed {
                key: "client_token",
                places: self.token_places.iter().map(|(p, _)| p.clone()).collect(),
                differ: self.token_places.iter().any(|(_, fp)| fp != in_use),
            });
        }
        for shadowed in all.iter().filter(|s| s.differ) {
            self.warnings.push(Warning {
                code: "config.shadowed",
                file: None,
                problem: shadowed.describe(),
                fix: Some(format!(
                    "keep {} in one place: a drop-in (systemctl edit hostbeat) beats the env file, which beats the config file",
                    shadowed.key
                )),
            });
        }
        all
    }

    /// A required setting that nobody set, when a variable with a name close to it
    /// was: the fix is to rename that one.
    pub fn explain_missing(&self, error: ConfigError) -> ConfigError {
        if error.origin.is_some() {
            return error;
        }
        if let Some((key, set, cleared)) = self.cleared.iter().find(|(k, _, _)| *k == error.setting)
        {
            let fix = format!(
                "{} is empty, which clears the value of {}; remove the empty one",
                cleared.describe(key),
                set.describe(key)
            );
            return error.with_fix(fix);
        }
        match self
            .misspelt
            .iter()
            .find(|(_, key, _)| *key == error.setting)
        {
            Some((name, key, origin)) => {
                let place = match origin {
                    Origin::EnvFile(path) => format!("in {}", path.display()),
                    _ => "in the environment (a drop-in's Environment= under systemd)".to_owned(),
                };
                let fix = format!(
                    "{name} is set {place}: did you mean {}? rename it",
                    env_var(key)
                );
                error.with_fix(fix)
            }
            None => error,
        }
    }

    /// Warns when `path` holds the client token and every user on this host can
    /// read it; `code` names the place (`env_file.token_world_readable`, ...).
    pub fn check_token_file(&mut self, path: &Path, code: &'static str) {
        if let Some(mode) = envfile::world_readable(path) {
            let shown = path.display();
            self.warnings.push(Warning {
                code,
                file: Some(path.to_owned()),
                problem: format!(
                    "{shown} holds the client token and every user on this host can read it (mode {mode:04o})"
                ),
                fix: Some(format!("chown root:hostbeat {shown} && chmod 0640 {shown}")),
            });
        }
    }

    /// Warns that the env file named by `named_by` does not exist.
    pub fn missing_env_file(&mut self, path: &Path, named_by: &Origin) {
        self.warnings.push(Warning {
            code: "env_file.missing",
            file: Some(path.to_owned()),
            problem: format!(
                "{} does not exist, so no setting and no token is read from it (named by {})",
                path.display(),
                named_by.describe("env_file"),
            ),
            fix: Some(format!(
                "create it (install -m 0640 -o root -g hostbeat /dev/null {}), or correct {}",
                path.display(),
                named_by.describe("env_file"),
            )),
        });
    }

    /// Warns about variables of the env file that hostbeat does not apply: since
    /// the unit stopped handing the file to systemd, `HTTPS_PROXY=` there (which
    /// an older package's unit applied) does nothing.
    pub fn ignored_in_env_file(&mut self, path: &Path, names: &[String]) {
        for name in names {
            if name.to_ascii_uppercase().starts_with("HOSTBEAT_") {
                let upper = name.to_ascii_uppercase();
                self.warnings.push(Warning {
                    code: "env_file.lower_case",
                    file: Some(path.to_owned()),
                    problem: format!(
                        "{name} in {} is ignored: hostbeat's settings are upper case",
                        path.display()
                    ),
                    fix: Some(format!("rename it to {upper} in {}", path.display())),
                });
                continue;
            }
            self.warnings.push(Warning {
                code: "env_file.ignored_variable",
                file: Some(path.to_owned()),
                problem: format!(
                    "{name} in {} is not applied: hostbeat reads only HOSTBEAT_* settings from its env file",
                    path.display()
                ),
                fix: Some(format!(
                    "move it to a drop-in: systemctl edit hostbeat, then under [Service]: Environment={name}=<value>; then systemctl restart hostbeat"
                )),
            });
        }
    }

    /// Warns that the env file names another env file, which is not read.
    pub fn env_file_in_env_file(&mut self, path: &Path) {
        self.warnings.push(Warning {
            code: "env_file.names_env_file",
            file: Some(path.to_owned()),
            problem: format!(
                "HOSTBEAT_ENV_FILE in {} is ignored: an env file cannot name another",
                path.display()
            ),
            fix: Some(format!(
                "remove the HOSTBEAT_ENV_FILE line from {}; name the env file in a drop-in (Environment=HOSTBEAT_ENV_FILE=...) or as env_file in the config file",
                path.display()
            )),
        });
    }

    /// Warns about a client token whose shape suggests the wrong token: a JWT (an
    /// access token, which expires within the hour), or one so short that it was
    /// probably cut when pasted. `from` says where it came from.
    pub fn check_token_shape(&mut self, token: &crate::secret::Token, from: &str) {
        /// Shorter than this, a client token was probably cut when it was pasted.
        const SHORT: usize = 16;
        if token.looks_like_jwt() {
            self.warnings.push(Warning {
                code: "token.jwt",
                file: None,
                problem: format!("the client token ({from}) looks like a JWT (eyJ...), which is usually a short-lived access token"),
                fix: Some("ask the control plane for this fleet's long-lived client token and put it in its place".to_owned()),
            });
        }
        if token.len() < SHORT {
            self.warnings.push(Warning {
                code: "token.short",
                file: None,
                problem: format!("the client token ({from}) is only {} bytes long; it may have been cut when pasted", token.len()),
                fix: Some(format!(
                    "compare its fingerprint {} with the control plane's copy (printf %s \"$TOKEN\" | sha256sum | cut -c1-12)",
                    token.fingerprint()
                )),
            });
        }
    }

    /// Warns that a service's token came from its `Environment=` lines.
    pub fn token_in_unit_environment(&mut self, env_file: &Path) {
        self.warnings.push(Warning {
            code: "config.token_in_unit_environment",
            file: None,
            problem: format!(
                "{CLIENT_TOKEN_VAR} is set by an Environment= line of the unit or a drop-in, which every local user can read with `systemctl show hostbeat -p Environment`"
            ),
            fix: Some(format!(
                "remove the line (systemctl edit hostbeat) and put {CLIENT_TOKEN_VAR}=<token> in {} (mode 0640), or use LoadCredential=client-token:<path> in the drop-in; then systemctl restart hostbeat",
                env_file.display()
            )),
        });
    }
}

/// Where the env file is: `HOSTBEAT_ENV_FILE`, else the config file's `env_file`,
/// else the default; with what named it, when something did. A relative path is
/// refused: systemd starts the service in `/`, a shell elsewhere, so the two would
/// read different files.
pub(super) fn env_file_in_use(
    variable: Option<PathBuf>,
    merge: &Merge,
) -> Result<(PathBuf, Option<Origin>), ConfigError> {
    let named = match variable {
        Some(path) => Some((path, Origin::Environment)),
        None => merge
            .values
            .get("env_file")
            .map(|(value, origin)| (PathBuf::from(value.trim()), origin.clone())),
    };
    match named {
        Some((path, origin)) if path.is_relative() => Err(ConfigError::new(
            "env_file",
            Some(origin.describe("env_file")),
            format!("{:?} is a relative path", path.display().to_string()),
            format!(
                "name it from the root (systemd starts hostbeat in /), for example {}",
                origin.assignment("env_file", super::DEFAULT_ENV_FILE)
            ),
        )),
        Some((path, origin)) => Ok((path, Some(origin))),
        None => Ok((PathBuf::from(super::DEFAULT_ENV_FILE), None)),
    }
}
