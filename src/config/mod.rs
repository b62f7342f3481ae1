//! Configuration: where settings come from, and how they become [`Settings`].
//!
//! Layers, later ones win: built-in defaults, the TOML config file
//! (`/etc/hostbeat/hostbeat.toml` or `--config PATH`), the env file
//! (`/etc/hostbeat/hostbeat.env`, which hostbeat reads itself), and the process
//! environment (`HOSTBEAT_<KEY>`: under systemd, the unit's and its drop-ins'
//! `Environment=` lines). So `systemctl edit hostbeat` beats the env file for every
//! key, at a start and at a reload alike; the unit has no `EnvironmentFile=`, which
//! would turn that order round and put the token in the process environment. Every
//! value remembers its [`Origin`], so that an error names the file or variable to fix.
//!
//! Invariants: the raw layers hold strings only; [`Settings`] holds validated types;
//! the client token never enters the string layers (see [`token`]). Loading reads the
//! process environment only through [`ConfigInputs::from_process`], so tests pass
//! their own environment and nothing mutates the real one. A start and a reload
//! resolve settings by the same rule.

mod cloud;
pub mod envfile;
mod merge;
mod settings;
pub mod token;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use cloud::{CloudMode, CloudSettings, INTERRUPTION_POLL_FLOOR};
pub use settings::{
    AuthMode, CEILINGS, ClientAuth, Exchange, HEARTBEAT_FLOOR, KEYS, Paths, Settings,
};

use self::envfile::EnvFile;
use self::merge::Merge;
pub use self::merge::{Shadowed, Warning};
use self::token::{CLIENT_TOKEN_VAR, RawToken};

/// The config file read when `--config` is not given (it may be absent).
pub const DEFAULT_CONFIG_FILE: &str = "/etc/hostbeat/hostbeat.toml";
/// The env file read when `env_file` is not set (it may be absent).
pub const DEFAULT_ENV_FILE: &str = "/etc/hostbeat/hostbeat.env";
/// The state directory outside systemd (which passes `$STATE_DIRECTORY`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/hostbeat";

/// A configuration that cannot work, said so that an operator can fix it: which
/// setting, where its value came from, what is wrong, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    setting: String,
    origin: Option<String>,
    problem: String,
    fix: String,
}

impl ConfigError {
    /// A new error about `setting`, whose value came from `origin` when it has one.
    pub fn new(
        setting: impl Into<String>,
        origin: Option<String>,
        problem: String,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            setting: setting.into(),
            origin,
            problem,
            fix: fix.into(),
        }
    }

    /// The setting at fault.
    pub fn setting(&self) -> &str {
        &self.setting
    }

    /// What fixes it, standing alone.
    pub fn fix(&self) -> &str {
        &self.fix
    }

    /// The same error with another fix.
    #[must_use]
    fn with_fix(mut self, fix: String) -> Self {
        self.fix = fix;
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.setting)?;
        if let Some(origin) = &self.origin {
            write!(f, " (from {origin})")?;
        }
        write!(f, ": {}; fix: {}", self.problem, self.fix)
    }
}

impl std::error::Error for ConfigError {}

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Nobody set it.
    Default,
    /// The TOML config file.
    ConfigFile(PathBuf),
    /// The env file.
    EnvFile(PathBuf),
    /// The process environment (under systemd: the unit's and drop-ins'
    /// `Environment=` lines).
    Environment,
}

impl Origin {
    /// How to set `key` to `value` in this place, in its own syntax: TOML in the
    /// config file, `HOSTBEAT_KEY=value` in the env file, an `Environment=` line
    /// (or a plain variable outside systemd) for the environment.
    pub fn assignment(&self, key: &str, value: &str) -> String {
        match self {
            Self::ConfigFile(path) => {
                // TOML: text in quotes; a boolean or a number as it is.
                let bare = value.starts_with('"')
                    || matches!(value, "true" | "false")
                    || value.parse::<f64>().is_ok();
                if bare {
                    format!("{key} = {value} in {}", path.display())
                } else {
                    format!("{key} = {value:?} in {}", path.display())
                }
            }
            Self::EnvFile(path) => format!("{}={value} in {}", env_var(key), path.display()),
            Self::Environment | Self::Default => format!(
                "Environment={}={value} in the drop-in (systemctl edit hostbeat), or {}={value} in the environment outside systemd",
                env_var(key),
                env_var(key)
            ),
        }
    }

    /// "environment variable HOSTBEAT_X", "heartbeat_interval in /etc/...", ...
    pub fn describe(&self, key: &str) -> String {
        match self {
            Self::Default => "the built-in default".to_owned(),
            Self::ConfigFile(path) => format!("{key} in {}", path.display()),
            Self::EnvFile(path) => format!("{} in {}", env_var(key), path.display()),
            Self::Environment => format!("environment variable {}", env_var(key)),
        }
    }
}

/// `server_url` -> `HOSTBEAT_SERVER_URL`.
pub fn env_var(key: &str) -> String {
    format!("HOSTBEAT_{}", key.to_ascii_uppercase())
}

/// What configuration is loaded from: the config file's path and a copy of the
/// environment variables that matter.
#[derive(Debug, Default)]
pub struct ConfigInputs {
    config_file: Option<PathBuf>,
    env: BTreeMap<String, String>,
    client_token: Option<RawToken>,
    machine_id_file: Option<PathBuf>,
    /// Whether these are a systemd service's (`INVOCATION_ID` set), where every
    /// local user can read `Environment=` lines.
    service: bool,
}

impl ConfigInputs {
    /// Inputs with no environment at all (tests add what they need with [`Self::var`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// The real process environment: `HOSTBEAT_*`, `STATE_DIRECTORY` and
    /// `CREDENTIALS_DIRECTORY`. The token goes straight into its secret slot.
    pub fn from_process(config_file: Option<PathBuf>) -> Self {
        if let Some(path) = &config_file {
            remember_carried_tokens(&path.to_string_lossy());
        }
        // A systemd service: started by systemd (PID 1, its parent) with an
        // invocation id. The id alone is also in desktop terminals' shells.
        let mut inputs = Self {
            config_file,
            service: std::env::var_os("INVOCATION_ID").is_some()
                && std::os::unix::process::parent_id() == 1,
            ..Self::default()
        };
        for (key, value) in std::env::vars_os() {
            let Some(key) = key.to_str() else { continue };
            if key.starts_with("HOSTBEAT_") || SYSTEMD_VARS.contains(&key) {
                // A non-UTF-8 value is replaced and then refused by validation,
                // which names the variable.
                let value = value
                    .into_string()
                    .unwrap_or_else(|v| v.to_string_lossy().into_owned());
                remember_carried_tokens(&value);
                inputs = inputs.var(key, value);
            }
        }
        inputs
    }

    /// The env file these inputs point at even when the configuration does not
    /// load (`HOSTBEAT_ENV_FILE`, else the config file's `env_file` if the file
    /// reads, else the default): where `hostbeat check` looks then.
    pub fn env_file_hint(&self) -> PathBuf {
        self.env_file_var()
            .or_else(|| self.config_file_value("env_file").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ENV_FILE))
    }

    /// The state directory these inputs point at even when the configuration does
    /// not load (`HOSTBEAT_STATE_DIR`, else the config file's `state_dir` if the
    /// file reads, else systemd's `STATE_DIRECTORY`, else the default): where
    /// `hostbeat status` looks then.
    pub fn state_dir_hint(&self) -> PathBuf {
        self.env
            .get("HOSTBEAT_STATE_DIR")
            .map(|dir| dir.trim().to_owned())
            .filter(|dir| !dir.is_empty())
            .or_else(|| self.config_file_value("state_dir"))
            .map(PathBuf::from)
            .or_else(|| {
                self.env
                    .get("STATE_DIRECTORY")
                    .and_then(|dirs| dirs.split(':').next())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
    }

    /// `key`'s value in the config file, if the file reads and sets it.
    fn config_file_value(&self, key: &str) -> Option<String> {
        let (path, required) = match &self.config_file {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        };
        read_config_file(&path, required)
            .ok()?
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| v.starts_with('/'))
    }

    /// `HOSTBEAT_ENV_FILE`, which wins over the config file's `env_file` (empty:
    /// unset, like every variable).
    fn env_file_var(&self) -> Option<PathBuf> {
        self.env
            .get("HOSTBEAT_ENV_FILE")
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    }

    /// An explicit config file (`--config`): unlike the default one, it must exist.
    #[must_use]
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_file = Some(path.into());
        self
    }

    /// Removes a variable set before (the token included).
    #[must_use]
    pub fn without_var(mut self, key: &str) -> Self {
        if key == CLIENT_TOKEN_VAR {
            self.client_token = None;
        } else {
            self.env.remove(key);
        }
        self
    }

    /// One environment variable, as if set in the process environment (an empty
    /// token counts as unset, as every empty variable does).
    #[must_use]
    pub fn var(mut self, key: &str, value: impl Into<String>) -> Self {
        if key == CLIENT_TOKEN_VAR {
            self.client_token = Some(RawToken::new(value.into())).filter(|t| !t.is_blank());
        } else {
            self.env.insert(key.to_owned(), value.into());
        }
        self
    }

    /// The inputs of the service: the unit's environment (its and its drop-ins'
    /// `Environment=` assignments) in place of this process's `HOSTBEAT_*`
    /// variables, as `hostbeat run` under systemd gets them (`hostbeat check` beside
    /// the service). Returns the names of this process's variables that the unit
    /// does not set, which the service does not see.
    #[must_use]
    pub fn as_service(mut self, unit: Vec<(String, String)>) -> (Self, Vec<String>) {
        let mut unseen: Vec<String> = self
            .env
            .keys()
            .filter(|k| k.starts_with("HOSTBEAT_") && !unit.iter().any(|(u, _)| u == *k))
            .cloned()
            .collect();
        if self.client_token.is_some() && !unit.iter().any(|(u, _)| u == CLIENT_TOKEN_VAR) {
            unseen.push(CLIENT_TOKEN_VAR.to_owned());
        }
        unseen.retain(|k| k != "HOSTBEAT_CONFIG");
        self.env.retain(|k, _| !k.starts_with("HOSTBEAT_"));
        self.client_token = None;
        for (key, value) in unit {
            self = self.var(&key, value);
        }
        self.service = true;
        (self, unseen)
    }

    /// Where the host's machine id is read (default `/etc/machine-id`); for tests of
    /// the identity fallbacks. Not a user setting.
    #[must_use]
    pub fn machine_id_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.machine_id_file = Some(path.into());
        self
    }
}

/// Variables set by systemd that the configuration uses.
const SYSTEMD_VARS: [&str; 2] = ["STATE_DIRECTORY", "CREDENTIALS_DIRECTORY"];

/// The result of loading: valid settings, and warnings to log once logging is up.
#[derive(Debug)]
pub struct Loaded {
    /// The validated settings.
    pub settings: Settings,
    /// Things that work but are probably not what the operator meant.
    pub warnings: Vec<Warning>,
    /// Every setting someone set (the client token apart), its value as written and
    /// where it came from; the others have their defaults (`hostbeat check`).
    pub sources: Vec<(&'static str, String, Origin)>,
    /// Every setting set in more than one place (the client token included): which
    /// place wins, and which lose (`hostbeat check` names them).
    pub shadowed: Vec<Shadowed>,
}

/// One layer's values, and the merged view with origins.
pub(crate) struct Layers {
    values: BTreeMap<&'static str, (String, Origin)>,
}

impl Layers {
    /// The value of `key` and where it came from, if anyone set it.
    pub(crate) fn get(&self, key: &'static str) -> Option<(&str, &Origin)> {
        self.values.get(key).map(|(v, o)| (v.as_str(), o))
    }
}

/// Loads and validates the configuration (see module doc for the layers).
pub fn load(inputs: ConfigInputs) -> Result<Loaded, ConfigError> {
    let mut merge = Merge::default();

    let (config_path, required) = match &inputs.config_file {
        Some(path) if path.is_relative() => {
            return Err(ConfigError::new(
                "config file",
                Some(path.display().to_string()),
                format!("{:?} is a relative path", path.display().to_string()),
                "name it from the root with --config or HOSTBEAT_CONFIG, like /etc/hostbeat/hostbeat.toml (systemd starts hostbeat in /)",
            ));
        }
        Some(path) => (path.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
    };
    let file_token = config_file_layer(&config_path, required, &mut merge)?;
    if file_token.is_some() {
        merge.check_token_file(&config_path, "config.token_world_readable");
    }

    let (env_file_path, named_by) = merge::env_file_in_use(inputs.env_file_var(), &merge)?;
    let mut env_file = EnvFile::read(&env_file_path)?;
    if let (false, Some(named_by)) = (env_file.found, &named_by) {
        merge.missing_env_file(&env_file_path, named_by);
    }
    if env_file.client_token.is_some() {
        merge.check_token_file(&env_file_path, "env_file.token_world_readable");
    }
    merge.ignored_in_env_file(&env_file_path, &env_file.others);
    if env_file.vars.remove("HOSTBEAT_ENV_FILE").is_some() {
        merge.env_file_in_env_file(&env_file_path);
    }
    let env_file_origin = Origin::EnvFile(env_file_path.clone());
    merge.add_env(&env_file.vars, &env_file_origin);
    merge.add_env(&inputs.env, &Origin::Environment);
    if inputs.service && inputs.client_token.is_some() {
        merge.token_in_unit_environment(&env_file_path);
    }

    // Every place that holds a token, lowest first (settings::resolve_token takes
    // the last).
    let credentials_directory = inputs.env.get("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    merge.token_files(credentials_directory.as_deref());
    for (place, raw) in [
        (Origin::ConfigFile(config_path.clone()), &file_token),
        (env_file_origin.clone(), &env_file.client_token),
        (Origin::Environment, &inputs.client_token),
    ] {
        if let Some(raw) = raw {
            merge.token_place(place.describe("client_token"), raw.fingerprint());
        }
    }

    let token_candidates = settings::TokenCandidates {
        environment: inputs.client_token,
        env_file: env_file.client_token.map(|t| (t, env_file_path.clone())),
        config_file: file_token.map(|t| (t, config_path.clone())),
        credentials_directory,
    };
    let host = settings::HostPaths {
        env_file: env_file_path,
        service: inputs.service,
        state_directory: inputs.env.get("STATE_DIRECTORY").cloned(),
        machine_id_file: inputs
            .machine_id_file
            .unwrap_or_else(|| PathBuf::from("/etc/machine-id")),
    };
    if let Some(carried) = merge.token_carried() {
        return Err(carried);
    }
    merge.retired();
    let shadowed = merge.shadowed();
    let layers = Layers {
        values: merge.values.clone(),
    };
    merge.warnings.extend(cloud::deprecations(&layers));
    let settings = settings::validate(&layers, token_candidates, &host)
        .map_err(|e| merge.explain_missing(e))?;
    if let token::TokenOrigin::TokenFile(path) = &settings.token_source.origin {
        merge.check_token_file(path, "token.file_world_readable");
    }
    merge.check_token_shape(
        &settings.client_token,
        &settings.token_source.origin.to_string(),
    );
    Ok(Loaded {
        sources: layers
            .values
            .iter()
            .map(|(key, (value, origin))| (*key, value.clone(), origin.clone()))
            .collect(),
        shadowed,
        warnings: merge.warnings,
        settings,
    })
}

/// Adds the config file's settings to `merge`; returns its client token, if it
/// holds one. An unknown key is an error (a typo in a file is not shared with
/// other programs, unlike the environment).
fn config_file_layer(
    path: &Path,
    required: bool,
    merge: &mut Merge,
) -> Result<Option<RawToken>, ConfigError> {
    let mut token = None;
    for (key, value) in read_config_file(path, required)? {
        if key == "client_token" {
            token = Some(RawToken::new(value)).filter(|t| !t.is_blank());
            continue;
        }
        let Some(known) = settings::known_key(&key) else {
            return Err(ConfigError::new(
                key.clone(),
                Some(path.display().to_string()),
                "unknown setting".to_owned(),
                settings::suggest(&key).map_or_else(
                    || "remove it; docs/configuration.md lists every setting".to_owned(),
                    |s| format!("did you mean `{s}`?"),
                ),
            ));
        };
        merge.set(known, value, Origin::ConfigFile(path.to_owned()));
    }
    Ok(token)
}

/// `(line, column)` of a TOML parser's "... at line L, column C ..." message.
fn toml_position(message: &str) -> Option<(u32, u32)> {
    let after = &message[message.find("line ")? + 5..];
    let line: String = after.chars().take_while(char::is_ascii_digit).collect();
    let after = &after[after.find("column ")? + 7..];
    let column: String = after.chars().take_while(char::is_ascii_digit).collect();
    Some((line.parse().ok()?, column.parse().ok()?))
}

/// Whether `value` holds an assignment of the client token in any of the ways a
/// file or a variable spells one (`client_token =`, `"client_token" =`,
/// `HOSTBEAT_CLIENT_TOKEN=`, any case): what a quote or a line continuation left
/// open, or two settings written on one line, carries into another setting's value.
pub(crate) fn assigns_client_token(value: &str) -> bool {
    token_assignments(value).next().is_some()
}

/// What each client token assignment in `value` assigns, as far as the next white
/// space or quote (empty for `client_token =` with nothing after it).
fn token_assignments(value: &str) -> impl Iterator<Item = &str> {
    let lower = value.to_ascii_lowercase();
    let starts: Vec<usize> = lower
        .match_indices("client_token")
        .map(|(at, name)| at + name.len())
        .collect();
    starts.into_iter().filter_map(move |after| {
        let rest = value[after..].trim_start_matches(['"', '\'']).trim_start();
        let rest = rest.strip_prefix('=')?.trim_start();
        let rest = rest.trim_start_matches(['"', '\'']);
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(rest.len());
        Some(&rest[..end])
    })
}

/// Tells the redactor every client token `value` assigns: a value from outside
/// (a variable, a path, a setting) that carries one is refused where it is a
/// setting, but may still be shown where it is only a path (`--config`,
/// `HOSTBEAT_STATE_DIR` for `hostbeat status`).
pub(crate) fn remember_carried_tokens(value: &str) {
    for token in token_assignments(value) {
        crate::redact::remember(token, crate::redact::Kind::Client);
    }
}

/// The most a config file may hold: hostbeat's whole file is a few hundred bytes.
const CONFIG_FILE_LIMIT: u64 = 1 << 20;

/// The TOML file's top-level keys as strings (see [`parse_config_file`]).
fn read_config_file(path: &Path, required: bool) -> Result<Vec<(String, String)>, ConfigError> {
    use std::io::Read;
    let refused = |problem: String, fix: &str| {
        ConfigError::new(
            "config file",
            Some(path.display().to_string()),
            problem,
            fix,
        )
    };
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(Vec::new());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refused(
                "the file does not exist".to_owned(),
                "check the path given with --config or HOSTBEAT_CONFIG",
            ));
        }
        Err(e) => {
            return Err(refused(
                format!("cannot read it: {e}"),
                "let the hostbeat user read it: chown root:hostbeat FILE && chmod 0640 FILE",
            ));
        }
    };
    // Not a regular file (a FIFO would block the read for good, /dev/zero never
    // end it): refused.
    if !metadata.is_file() {
        return Err(refused(
            "it is not a regular file".to_owned(),
            "name the TOML file itself with --config or HOSTBEAT_CONFIG",
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(CONFIG_FILE_LIMIT + 1).read_to_end(&mut bytes))
        .map_err(|e| {
            refused(
                format!("cannot read it: {e}"),
                "let the hostbeat user read it: chown root:hostbeat FILE && chmod 0640 FILE",
            )
        })?;
    if bytes.len() as u64 > CONFIG_FILE_LIMIT {
        return Err(refused(
            format!("it is larger than {} KiB", CONFIG_FILE_LIMIT / 1024),
            "name hostbeat's own TOML file with --config or HOSTBEAT_CONFIG",
        ));
    }
    parse_config_file(path, &String::from_utf8_lossy(&bytes))
}

/// The top-level keys of a TOML config file read from `path`, as strings (a list
/// becomes a comma-separated value). No error quotes the file: it may hold the
/// token.
pub fn parse_config_file(path: &Path, text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let problem = |what: String| {
        ConfigError::new(
            "config file",
            Some(path.display().to_string()),
            what,
            "write one key = value per line, every text in quotes (client_token = \"...\", heartbeat_interval = \"30s\"); docs/configuration.md has an example",
        )
    };
    // The parser's own words quote the offending line, which may hold the token:
    // only the position is passed on.
    let syntax = |e: config::ConfigError| {
        let text = e.to_string();
        problem(toml_position(&text).map_or_else(
            || "the file is not valid TOML (the parser's words are not shown: they quote the file, which may hold the token)".to_owned(),
            |(line, column)| format!("the file is not valid TOML at line {line}, column {column} (the parser's words are not shown: they quote the line, which may hold the token)"),
        ))
    };
    let table = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .and_then(config::Config::try_deserialize::<BTreeMap<String, config::Value>>)
        .map_err(syntax)?;
    let mut out = Vec::new();
    for (key, value) in table {
        let text = match value.kind {
            config::ValueKind::Array(items) => items
                .into_iter()
                .map(config::Value::into_string)
                .collect::<Result<Vec<_>, _>>()
                .map(|v| v.join(",")),
            _ => value.into_string(),
        }
        .map_err(|_| {
            problem(format!(
                "{key}: the value is not a text, a number or a list of them"
            ))
        })?;
        // A multi-line string left open above the token's line takes that line
        // into its value, which is then logged as the setting's: refused, and not
        // quoted.
        if key != "client_token" && assigns_client_token(&text) {
            return Err(problem(format!(
                "{key}: its value runs over the client_token line (a multi-line string is left open above it)"
            ))
            .with_fix(format!("close the quotes of {key} on its own line")));
        }
        out.push((key, text));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_assignment_is_found_in_any_spelling_and_a_path_is_not_one() {
        for (value, carried) in [
            (
                "read HOSTBEAT_CLIENT_TOKEN=ct-carried-1",
                vec!["ct-carried-1"],
            ),
            (
                "\"client_token\" = \"ct-carried-2\"\n",
                vec!["ct-carried-2"],
            ),
            ("x CLIENT_TOKEN = 'ct-carried-3' y", vec!["ct-carried-3"]),
            ("/etc/hostbeat/client_token", vec![]),
            ("/srv/client_token_file", vec![]),
        ] {
            let found: Vec<&str> = token_assignments(value).collect();
            assert_eq!(found, carried, "{value}");
            assert_eq!(assigns_client_token(value), !carried.is_empty(), "{value}");
        }
        remember_carried_tokens("/etc/hostbeat.toml HOSTBEAT_CLIENT_TOKEN=ct-PathCarried-77");
        assert_eq!(
            crate::redact::redact(
                "reading /etc/hostbeat.toml HOSTBEAT_CLIENT_TOKEN=ct-PathCarried-77"
            ),
            "reading /etc/hostbeat.toml HOSTBEAT_CLIENT_TOKEN=[redacted]"
        );
    }
}
