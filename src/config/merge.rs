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
    /// Stable, for scripts (`check --json`).
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

/// A setting set in more than one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadowed {
    /// The setting.
    pub key: &'static str,
    /// Where the value in use came from.
    pub winner: Origin,
    /// Where the values that were overridden came from, lowest layer first.
    pub losers: Vec<Origin>,
}

impl Shadowed {
    /// One line: every place that sets it, and the one in use.
    pub fn describe(&self) -> String {
        let places: Vec<String> = self
            .losers
            .iter()
            .chain([&self.winner])
            .map(|o| o.describe(self.key))
            .collect();
        format!(
            "{} is set in {} places ({}); in use: {}",
            self.key,
            places.len(),
            places.join(", "),
            self.winner.describe(self.key),
        )
    }
}

/// The merge of the layers, lowest first.
#[derive(Default)]
pub(super) struct Merge {
    /// Every setting someone set, with its value as written and where it came from.
    pub values: BTreeMap<&'static str, (String, Origin)>,
    /// For each setting set in more than one place, the places overridden.
    overridden: BTreeMap<&'static str, Vec<Origin>>,
    /// The warnings so far.
    pub warnings: Vec<Warning>,
    /// Unknown `HOSTBEAT_*` variables close to a known setting: (name, setting,
    /// where).
    misspelt: Vec<(String, &'static str, Origin)>,
}

impl Merge {
    /// Sets `key` from `origin`, over any lower layer's value.
    pub fn set(&mut self, key: &'static str, value: String, origin: Origin) {
        if let Some((_, below)) = self.values.insert(key, (value, origin)) {
            self.overridden.entry(key).or_default().push(below);
        }
    }

    /// Adds the `HOSTBEAT_*` variables of one environment layer (the env file, the
    /// process environment) over the layers below. Unknown ones are warned about,
    /// not refused: the environment is shared with other programs and versions.
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
                // An empty variable means unset, so that an override can clear a value.
                Some(_) if value.trim().is_empty() => {}
                Some(known) => self.set(known, value.clone(), origin.clone()),
                None => {
                    let suggestion = settings::suggest(&key);
                    if let Some(setting) = suggestion {
                        self.misspelt.push((name.clone(), setting, origin.clone()));
                    }
                    self.warnings.push(Warning {
                        code: "unknown_variable",
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

    /// Records where the client token was found, lowest layer first: the last place
    /// is the one in use.
    pub fn token_places(&mut self, places: &[Origin]) {
        if let Some((_, losers)) = places.split_last()
            && !losers.is_empty()
        {
            self.overridden.insert("client_token", losers.to_vec());
        }
    }

    /// Every setting set in more than one place; `token_in_use` is where the token
    /// in use came from, if it came from a layer.
    pub fn shadowed(&self, token_in_use: Option<&Origin>) -> Vec<Shadowed> {
        self.overridden
            .iter()
            .filter_map(|(key, losers)| {
                let winner = match self.values.get(key) {
                    Some((_, origin)) => origin.clone(),
                    None => token_in_use?.clone(),
                };
                Some(Shadowed {
                    key,
                    winner,
                    losers: losers.clone(),
                })
            })
            .collect()
    }

    /// A required setting that nobody set, when a variable with a name close to it
    /// was: the fix is to rename that one.
    pub fn explain_missing(&self, error: ConfigError) -> ConfigError {
        if error.origin.is_some() {
            return error;
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

    /// Warns when `path` holds the client token (as `setting`) and every user on
    /// this host can read it.
    pub fn check_token_file(&mut self, path: &Path, setting: &str) {
        if let Some(mode) = envfile::world_readable(path) {
            let shown = path.display();
            self.warnings.push(Warning {
                code: "token_file_world_readable",
                file: Some(path.to_owned()),
                problem: format!(
                    "{setting}: {shown} holds the client token and every user on this host can read it (mode {mode:04o})"
                ),
                fix: Some(format!("chown root:hostbeat {shown} && chmod 0640 {shown}")),
            });
        }
    }

    /// Warns that the env file named by `named_by` does not exist.
    pub fn missing_env_file(&mut self, path: &Path, named_by: &Origin) {
        self.warnings.push(Warning {
            code: "env_file_missing",
            file: Some(path.to_owned()),
            problem: format!(
                "env_file: {} does not exist, so no setting and no token is read from it (named by {})",
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

    /// Warns that a service's token came from its `Environment=` lines.
    pub fn token_in_unit_environment(&mut self, env_file: &Path) {
        self.warnings.push(Warning {
            code: "token_in_unit_environment",
            file: None,
            problem: format!(
                "client_token: {CLIENT_TOKEN_VAR} is set by an Environment= line of the unit or a drop-in, which every local user can read with `systemctl show hostbeat -p Environment`"
            ),
            fix: Some(format!(
                "remove the line (systemctl edit hostbeat) and put {CLIENT_TOKEN_VAR}=<token> in {} (mode 0640), or use LoadCredential=client-token:<path> in the drop-in; then systemctl restart hostbeat",
                env_file.display()
            )),
        });
    }
}

/// Where the env file is: `HOSTBEAT_ENV_FILE`, else the config file's `env_file`,
/// else the default; with what named it, when something did.
pub(super) fn env_file_in_use(
    variable: Option<PathBuf>,
    merge: &Merge,
) -> (PathBuf, Option<Origin>) {
    match variable {
        Some(path) => (path, Some(Origin::Environment)),
        None => match merge.values.get("env_file") {
            Some((value, origin)) => (PathBuf::from(value.trim()), Some(origin.clone())),
            None => (PathBuf::from(super::DEFAULT_ENV_FILE), None),
        },
    }
}
