//! Configuration: where settings come from, and how they become [`Settings`].
//!
//! Layers, later ones win: built-in defaults, the TOML config file
//! (`/etc/hostbeat/hostbeat.toml` or `--config PATH`), the env file
//! (`/etc/hostbeat/hostbeat.env`, the same file systemd's `EnvironmentFile=` reads),
//! and the process environment (`HOSTBEAT_<KEY>`, which is how systemd hands over the
//! env file and `Environment=` lines of an override). Every value remembers its
//! [`Origin`], so that an error names the file or variable to fix.
//!
//! Invariants: the raw layers hold strings only; [`Settings`] holds validated types;
//! the client token never enters the string layers (see [`token`]). Loading reads the
//! process environment only through [`ConfigInputs::from_process`], so tests pass
//! their own environment and nothing mutates the real one.

pub mod envfile;
mod settings;
pub mod token;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use settings::{
    AuthMode, ClientAuth, Exchange, HEARTBEAT_FLOOR, INTERRUPTION_POLL_FLOOR, ImdsMode,
    ImdsSettings, KEYS, Paths, Settings,
};

use self::envfile::EnvFile;
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
    /// The process environment (under systemd: `EnvironmentFile=` or `Environment=`).
    Environment,
}

impl Origin {
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
    /// Whether the env file overrides the environment (a reload; see
    /// [`Self::preferring_env_file`]).
    env_file_wins: bool,
}

impl ConfigInputs {
    /// Inputs with no environment at all (tests add what they need with [`Self::var`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// The real process environment: `HOSTBEAT_*`, `STATE_DIRECTORY` and
    /// `CREDENTIALS_DIRECTORY`. The token goes straight into its secret slot.
    pub fn from_process(config_file: Option<PathBuf>) -> Self {
        let mut inputs = Self {
            config_file,
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
                inputs = inputs.var(key, value);
            }
        }
        inputs
    }

    /// The env file these inputs point at before the config file is read
    /// (`HOSTBEAT_ENV_FILE`, else the default): where `hostbeat check` looks when the
    /// configuration does not load.
    pub fn env_file_hint(&self) -> PathBuf {
        self.env_file_var()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ENV_FILE))
    }

    /// `HOSTBEAT_ENV_FILE`, which wins over the config file's `env_file`.
    fn env_file_var(&self) -> Option<PathBuf> {
        self.env.get("HOSTBEAT_ENV_FILE").map(PathBuf::from)
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

    /// One environment variable, as if set in the process environment.
    #[must_use]
    pub fn var(mut self, key: &str, value: impl Into<String>) -> Self {
        if key == CLIENT_TOKEN_VAR {
            self.client_token = Some(RawToken::new(value.into()));
        } else {
            self.env.insert(key.to_owned(), value.into());
        }
        self
    }

    /// For a reload: resolve settings as a restart of the service would. systemd
    /// lets an `EnvironmentFile=` override the unit's `Environment=` lines, so the env
    /// file as it is now wins over the environment the service was started with. A
    /// variable equal to the file's value at start came from the file and is dropped
    /// (a key since removed from the file does not linger); the others, set by the
    /// unit or a drop-in, stand where the file does not set them.
    #[must_use]
    pub fn preferring_env_file(mut self, at_start: &EnvFileSnapshot) -> Self {
        self.env_file_wins = true;
        self.env
            .retain(|key, value| at_start.vars.get(key) != Some(value));
        if self
            .client_token
            .as_ref()
            .is_some_and(|t| Some(t.fingerprint()) == at_start.token)
        {
            self.client_token = None;
        }
        self
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
    pub warnings: Vec<String>,
    /// What the env file held, to tell on a reload which environment variables
    /// came from it (see [`ConfigInputs::preferring_env_file`]).
    pub env_file: EnvFileSnapshot,
    /// Every setting someone set (the client token apart), its value as written and
    /// where it came from; the others have their defaults (`hostbeat check`).
    pub sources: Vec<(&'static str, String, Origin)>,
}

/// The env file as it was read: its settings, and its token's fingerprint.
#[derive(Debug, Clone, Default)]
pub struct EnvFileSnapshot {
    vars: BTreeMap<String, String>,
    token: Option<crate::secret::Fingerprint>,
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
    let mut warnings = Vec::new();
    let mut values: BTreeMap<&'static str, (String, Origin)> = BTreeMap::new();

    let (config_path, required) = match &inputs.config_file {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
    };
    let file = read_config_file(&config_path, required)?;
    let mut file_token = None;
    for (key, value) in file {
        if key == "client_token" {
            file_token = Some(RawToken::new(value));
            continue;
        }
        let Some(known) = settings::known_key(&key) else {
            return Err(ConfigError::new(
                key.clone(),
                Some(config_path.display().to_string()),
                "unknown setting".to_owned(),
                settings::suggest(&key).map_or_else(
                    || "remove it; docs/configuration.md lists every setting".to_owned(),
                    |s| format!("did you mean `{s}`?"),
                ),
            ));
        };
        values.insert(known, (value, Origin::ConfigFile(config_path.clone())));
    }

    let env_file_path = inputs
        .env_file_var()
        .or_else(|| values.get("env_file").map(|(v, _)| PathBuf::from(v)))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ENV_FILE));
    let env_file = EnvFile::read(&env_file_path)?;
    if env_file.client_token.is_some()
        && let Some(mode) = envfile::world_readable(&env_file_path)
    {
        let shown = env_file_path.display();
        warnings.push(format!(
            "env_file: {shown} holds the client token and every user on this host can read it (mode {mode:04o}); fix: chown root:hostbeat {shown} && chmod 0640 {shown}"
        ));
    }
    let snapshot = EnvFileSnapshot {
        vars: env_file.vars.clone(),
        token: env_file.client_token.as_ref().map(RawToken::fingerprint),
    };
    // Later layers win: normally the environment over the env file; on a reload the
    // env file over the environment, as systemd would order them at a restart.
    let env_file_layer = (&env_file.vars, Origin::EnvFile(env_file_path.clone()));
    let environment_layer = (&inputs.env, Origin::Environment);
    let layers = if inputs.env_file_wins {
        [environment_layer, env_file_layer]
    } else {
        [env_file_layer, environment_layer]
    };
    for (vars, origin) in &layers {
        merge_env(&mut values, vars, origin, &mut warnings);
    }
    let environment_token = if inputs.env_file_wins && env_file.client_token.is_some() {
        None
    } else {
        inputs.client_token
    };

    let token_candidates = settings::TokenCandidates {
        environment: environment_token,
        env_file: env_file.client_token.map(|t| (t, env_file_path.clone())),
        config_file: file_token.map(|t| (t, config_path.clone())),
        credentials_directory: inputs.env.get("CREDENTIALS_DIRECTORY").map(PathBuf::from),
    };
    let sources = values
        .iter()
        .map(|(key, (value, origin))| (*key, value.clone(), origin.clone()))
        .collect();
    let settings = settings::validate(
        &Layers { values },
        token_candidates,
        &settings::HostPaths {
            env_file: env_file_path,
            state_directory: inputs.env.get("STATE_DIRECTORY").cloned(),
            machine_id_file: inputs
                .machine_id_file
                .unwrap_or_else(|| PathBuf::from("/etc/machine-id")),
        },
    )?;
    Ok(Loaded {
        settings,
        warnings,
        env_file: snapshot,
        sources,
    })
}

/// Adds the `HOSTBEAT_*` variables of one environment layer; unknown ones are warned
/// about, not refused: the environment is shared with other programs and versions.
fn merge_env(
    values: &mut BTreeMap<&'static str, (String, Origin)>,
    env: &BTreeMap<String, String>,
    origin: &Origin,
    warnings: &mut Vec<String>,
) {
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
            Some(known) => {
                values.insert(known, (value.clone(), origin.clone()));
            }
            None => warnings.push(format!(
                "{name} (from {}) is not a hostbeat setting and is ignored{}",
                origin.describe(&key),
                settings::suggest(&key)
                    .map(|s| format!("; did you mean {}?", env_var(s)))
                    .unwrap_or_default()
            )),
        }
    }
}

/// The TOML file's top-level keys as strings (a list becomes a comma-separated value).
fn read_config_file(path: &Path, required: bool) -> Result<Vec<(String, String)>, ConfigError> {
    if !path.exists() {
        if required {
            return Err(ConfigError::new(
                "config file",
                Some(path.display().to_string()),
                "the file does not exist".to_owned(),
                "check the path given with --config or HOSTBEAT_CONFIG",
            ));
        }
        return Ok(Vec::new());
    }
    let problem = |what: String| {
        ConfigError::new(
            "config file",
            Some(path.display().to_string()),
            what,
            "fix the TOML syntax; docs/configuration.md has an example",
        )
    };
    let table = config::Config::builder()
        .add_source(
            config::File::from(path)
                .format(config::FileFormat::Toml)
                .required(required),
        )
        .build()
        .and_then(config::Config::try_deserialize::<BTreeMap<String, config::Value>>)
        .map_err(|e| problem(e.to_string()))?;
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
        .map_err(|e| problem(format!("{key}: {e}")))?;
        out.push((key, text));
    }
    Ok(out)
}
