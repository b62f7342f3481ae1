//! Validated settings: every value typed, checked, and given its default.
//!
//! Invariants of a [`Settings`]: at least one server URL; every URL is http(s), and
//! plain http only to a loopback host unless `allow_insecure_http`; durations are
//! within their floors; the heartbeat path has `{agent_id}`; a token was found and
//! cleaned.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::cloud::CloudSettings;
use super::token::{self, CREDENTIAL_NAME, RawToken, TokenOrigin, TokenSource};
use super::{ConfigError, Layers, Origin};
use crate::duration::exact;
use crate::retry::RetryPolicy;
use crate::secret::Token;

/// The lowest heartbeat interval accepted, from the config and from the server.
#[cfg(not(feature = "soak"))]
pub const HEARTBEAT_FLOOR: Duration = Duration::from_secs(1);

/// The soak build's floor (feature `soak`, built by scripts/reliability only; never
/// in a package): 100,000 heartbeats of the real daemon in minutes, not days
/// (bench/src/bin/soak.rs).
#[cfg(feature = "soak")]
pub const HEARTBEAT_FLOOR: Duration = Duration::from_millis(1);

/// Every setting, with its default (`None`: no default). docs/configuration.md
/// documents each; a test checks that it names them all.
pub const KEYS: &[(&str, Option<&str>)] = &[
    ("server_url", None),
    ("client_token", None),
    ("client_token_file", None),
    ("token_url", None),
    ("client_id", Some("hostbeat")),
    ("client_auth", Some("basic")),
    ("scope", None),
    ("agent_id", None),
    ("register_path", Some("/api/v1/agents/register")),
    (
        "heartbeat_path",
        Some("/api/v1/agents/{agent_id}/heartbeat"),
    ),
    ("validate_path", Some("/api/v1/client/validate")),
    ("heartbeat_interval", Some("30s")),
    ("refresh_margin", Some("60s")),
    ("backoff_base", Some("1s")),
    ("backoff_cap", Some("5m")),
    ("auth_backoff_cap", Some("15m")),
    ("retry_after_max", Some("1h")),
    ("connect_timeout", Some("5s")),
    ("request_timeout", Some("10s")),
    ("shutdown_timeout", Some("5s")),
    ("state_dir", None),
    ("env_file", Some(super::DEFAULT_ENV_FILE)),
    ("ca_file", None),
    ("allow_insecure_http", Some("false")),
    ("log_level", Some("info")),
    ("metrics_textfile", None),
    ("cloud", Some("off")),
    ("ec2_metadata_url", Some("http://169.254.169.254")),
    ("gcp_metadata_url", Some("http://metadata.google.internal")),
    ("azure_metadata_url", Some("http://169.254.169.254")),
    ("dmi_dir", Some(super::cloud::DEFAULT_DMI_DIR)),
    ("interruption_poll_interval", Some("5s")),
    ("gcp_preemption_notice", Some("30s")),
    // Deprecated aliases of `cloud` and `ec2_metadata_url` (config/cloud.rs).
    ("imds", None),
    ("imds_url", None),
];

/// The ceiling of every duration setting, documented in docs/configuration.md.
/// `shutdown_timeout` stays within the unit's `TimeoutStopSec=20s`, so that systemd
/// does not kill the agent in the middle of its goodbye.
pub const CEILINGS: &[(&str, Duration)] = &[
    ("heartbeat_interval", Duration::from_secs(3600)),
    ("refresh_margin", Duration::from_secs(3600)),
    ("backoff_base", Duration::from_secs(3600)),
    ("backoff_cap", Duration::from_secs(86_400)),
    ("auth_backoff_cap", Duration::from_secs(86_400)),
    ("retry_after_max", Duration::from_secs(86_400)),
    ("connect_timeout", Duration::from_secs(300)),
    ("request_timeout", Duration::from_secs(600)),
    ("shutdown_timeout", Duration::from_secs(15)),
    ("interruption_poll_interval", Duration::from_secs(3600)),
    ("gcp_preemption_notice", Duration::from_secs(600)),
];

/// The ceiling of duration setting `key`.
fn ceiling(key: &str) -> Duration {
    CEILINGS
        .iter()
        .find(|(k, _)| *k == key)
        .map_or(Duration::from_secs(86_400), |(_, c)| *c)
}

/// The static name of a known setting.
pub(super) fn known_key(key: &str) -> Option<&'static str> {
    KEYS.iter().map(|(k, _)| *k).find(|k| *k == key)
}

/// The known setting closest to a misspelt one, if any is close.
pub(super) fn suggest(key: &str) -> Option<&'static str> {
    KEYS.iter()
        .map(|(k, _)| (*k, edit_distance(key, k)))
        .filter(|(_, d)| *d <= 3)
        .min_by_key(|(_, d)| *d)
        .map(|(k, _)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

/// Everything the agent needs to run, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Control-plane base URLs, in order of preference (protocol.md section 5).
    pub servers: Vec<Url>,
    /// The client token as loaded; the agent keeps its own copy after rotations.
    pub client_token: Arc<Token>,
    /// Where to read the token again.
    pub token_source: TokenSource,
    /// Static bearer, or OAuth client-credentials exchange.
    pub auth: AuthMode,
    /// A configured agent id: registration is skipped.
    pub agent_id: Option<String>,
    /// The control plane's paths.
    pub paths: Paths,
    /// Time between heartbeats (before jitter and the server's own wish).
    pub heartbeat_interval: Duration,
    /// Refresh an access token at least this long before it expires.
    pub refresh_margin: Duration,
    /// Backoff after transient failures.
    pub backoff: RetryPolicy,
    /// Backoff after a rejected credential or an inactive client.
    pub auth_backoff: RetryPolicy,
    /// The longest `Retry-After` honoured.
    pub retry_after_max: Duration,
    /// TCP (and TLS) connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// How long the goodbye heartbeat may take at shutdown.
    pub shutdown_timeout: Duration,
    /// Where the agent keeps its state file.
    pub state_dir: PathBuf,
    /// Extra CA certificates (PEM), added to the system roots.
    pub ca_file: Option<PathBuf>,
    /// A `tracing` filter directive (`info`, `hostbeat=debug`, ...).
    pub log_level: String,
    /// Where the machine id is read, for the logical agent id.
    pub machine_id_file: PathBuf,
    /// Where to write Prometheus metrics for node_exporter's textfile collector.
    pub metrics_textfile: Option<PathBuf>,
    /// The cloud's metadata service: identity and interruption notices.
    pub cloud: CloudSettings,
}

/// How the agent authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMode {
    /// The client token is the bearer token of every call.
    Static,
    /// The client token is an OAuth client secret exchanged for access tokens.
    Exchange(Exchange),
}

/// The OAuth 2.0 client-credentials grant's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// The token endpoint.
    pub token_url: Url,
    /// The OAuth client id.
    pub client_id: String,
    /// How the client authenticates to the token endpoint.
    pub client_auth: ClientAuth,
    /// The scope asked for, if any.
    pub scope: Option<String>,
}

/// OAuth client authentication (RFC 6749 section 2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic `client_id:client_secret` (`client_secret_basic`).
    Basic,
    /// `client_id` and `client_secret` form fields (`client_secret_post`).
    Post,
}

/// Paths on the control plane (protocol.md section 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Registration.
    pub register: String,
    /// Heartbeat, a template with `{agent_id}`.
    pub heartbeat: String,
    /// Credential validation (used by `check`).
    pub validate: String,
}

pub(super) struct TokenCandidates {
    pub environment: Option<RawToken>,
    pub env_file: Option<(RawToken, PathBuf)>,
    pub config_file: Option<(RawToken, PathBuf)>,
    pub credentials_directory: Option<PathBuf>,
}

pub(super) struct HostPaths {
    pub env_file: PathBuf,
    /// Whether this runs as a systemd service, where a setting goes in a drop-in.
    pub service: bool,
    pub state_directory: Option<String>,
    pub machine_id_file: PathBuf,
}

/// One setting being validated: its value (or default) and where it came from.
pub(super) struct Field<'a> {
    pub(super) key: &'static str,
    pub(super) value: Option<&'a str>,
    pub(super) origin: Origin,
}

impl Field<'_> {
    pub(super) fn error(&self, problem: String, fix: impl Into<String>) -> ConfigError {
        ConfigError::new(self.key, Some(self.origin.describe(self.key)), problem, fix)
    }

    fn duration(&self) -> Result<Duration, ConfigError> {
        let text = self.value.expect("every duration has a default").trim();
        // A bare number is seconds: TOML invites `heartbeat_interval = 30`.
        let parsed = match text.parse::<u64>() {
            Ok(seconds) => Ok(Duration::from_secs(seconds)),
            Err(_) => humantime::parse_duration(text),
        };
        // The parser's own words ("expected number at 0") help nobody: say what is
        // accepted instead.
        parsed.map_err(|_| {
            let example = match self.origin {
                Origin::ConfigFile(_) => "\"30s\"",
                _ => "30s",
            };
            self.error(
                format!("{text:?} is not a duration"),
                format!(
                    "write it like 30s, 5m or 1h 30m: a number and a unit (ms, s, m, h, d), a bare number being seconds; for example {}",
                    self.origin.assignment(self.key, example)
                ),
            )
        })
    }

    /// A duration between `floor` and the setting's ceiling ([`CEILINGS`]): every
    /// duration the agent adds to a clock is bounded, so that no setting can make
    /// a deadline overflow or a wait outlast a human's patience.
    pub(super) fn duration_at_least(&self, floor: Duration) -> Result<Duration, ConfigError> {
        let value = self.duration()?;
        let ceiling = ceiling(self.key);
        if value > ceiling {
            return Err(self.error(
                format!(
                    "{} is above the ceiling of {}",
                    exact(value),
                    exact(ceiling)
                ),
                format!("set it to {} or less", exact(ceiling)),
            ));
        }
        if value < floor {
            return Err(self.error(
                format!("{} is below the floor of {}", exact(value), exact(floor)),
                format!("set it to {} or more", exact(floor)),
            ));
        }
        Ok(value)
    }

    /// A path from the root, or none: systemd starts hostbeat in `/`, a shell
    /// elsewhere, so a relative path would name different files for `run` and
    /// `check`.
    pub(super) fn absolute_path(&self) -> Result<Option<PathBuf>, ConfigError> {
        match self.value.map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(text) if text.starts_with('/') => Ok(Some(PathBuf::from(text))),
            Some(text) => {
                // The service may write only its own state directory.
                let example = match self.key {
                    "state_dir" => super::DEFAULT_STATE_DIR.to_owned(),
                    "dmi_dir" => super::cloud::DEFAULT_DMI_DIR.to_owned(),
                    _ => format!("/etc/hostbeat/{text}"),
                };
                Err(self.error(
                    format!("{text:?} is a relative path"),
                    format!(
                        "name it from the root (systemd starts hostbeat in /), for example {}",
                        self.origin.assignment(self.key, &example)
                    ),
                ))
            }
        }
    }

    fn boolean(&self) -> Result<bool, ConfigError> {
        match self
            .value
            .unwrap_or("false")
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "true" | "yes" | "1" | "on" => Ok(true),
            "false" | "no" | "0" | "off" => Ok(false),
            other => Err(self.error(format!("{other:?} is not a boolean"), "write true or false")),
        }
    }

    fn path(&self) -> Result<String, ConfigError> {
        let text = self.value.expect("every path has a default").trim();
        if !text.starts_with('/') {
            return Err(self.error(
                format!("{text:?} does not start with /"),
                "write the path from the server's root, like /api/v1/agents/register",
            ));
        }
        Ok(text.to_owned())
    }

    /// `text` as a control-plane URL; `allow` is `allow_insecure_http`'s value and
    /// where it came from, where the fix for plain http goes when it was set.
    fn url(&self, text: &str, allow: &(bool, Origin)) -> Result<Url, ConfigError> {
        let allow_insecure_http = allow.0;
        let url = Url::parse(text.trim()).map_err(|e| {
            self.error(
                format!("{text:?} is not a URL ({e})"),
                "write a full URL like https://cp.example.com",
            )
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(self.error(
                "the URL carries a user name or password".to_owned(),
                "remove them: credentials belong in the client token, not in a URL that lands in logs",
            ));
        }
        match url.scheme() {
            "https" => Ok(url),
            "http" if allow_insecure_http || is_loopback(&url) => Ok(url),
            "http" => Err(self.error(
                format!(
                    "plain http to {} would send the token in clear text",
                    url.host_str().unwrap_or("?")
                ),
                format!(
                    "use https://, or, if this network is trusted, set {}",
                    match &allow.1 {
                        Origin::Default => &self.origin,
                        set => set,
                    }
                    .assignment("allow_insecure_http", "true")
                ),
            )),
            other => Err(self.error(format!("unsupported scheme {other:?}"), "use https://")),
        }
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// The value of `key` (or its default) and where it came from.
pub(super) fn field<'a>(layers: &'a Layers, key: &'static str) -> Field<'a> {
    let default = KEYS.iter().find(|(k, _)| *k == key).and_then(|(_, d)| *d);
    match layers.get(key) {
        Some((value, origin)) => Field {
            key,
            value: Some(value),
            origin: origin.clone(),
        },
        None => Field {
            key,
            value: default,
            origin: Origin::Default,
        },
    }
}

/// The transient and the auth schedules, paced by the heartbeat's cadence
/// (protocol.md section 3): at least one interval after a failure, at most the cap
/// (or the interval, if the cap is shorter).
fn retry_policies(
    layers: &Layers,
    heartbeat_interval: Duration,
) -> Result<(RetryPolicy, RetryPolicy), ConfigError> {
    // Retired (a warning says so, config::Merge::retired), still checked so that a
    // broken value is not a surprise when it is removed.
    field(layers, "backoff_base").duration_at_least(Duration::from_millis(10))?;
    let cap = |key| field(layers, key).duration_at_least(Duration::from_millis(10));
    Ok((
        RetryPolicy::paced(heartbeat_interval, cap("backoff_cap")?),
        RetryPolicy::paced(heartbeat_interval, cap("auth_backoff_cap")?),
    ))
}

pub(super) fn validate(
    layers: &Layers,
    tokens: TokenCandidates,
    host: &HostPaths,
) -> Result<Settings, ConfigError> {
    let field = |key| field(layers, key);
    let allow_field = field("allow_insecure_http");
    let allow = (allow_field.boolean()?, allow_field.origin.clone());
    let server_field = field("server_url");
    let Some(server_list) = server_field.value else {
        let fix = if host.service {
            "systemctl edit hostbeat, then under [Service]: Environment=HOSTBEAT_SERVER_URL=https://your-control-plane; then systemctl restart hostbeat".to_owned()
        } else {
            format!(
                "set HOSTBEAT_SERVER_URL=https://your-control-plane in the environment or in {}",
                host.env_file.display()
            )
        };
        return Err(ConfigError::new(
            "server_url",
            None,
            "no control plane is configured".to_owned(),
            fix,
        ));
    };
    let servers = server_list
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| server_field.url(s, &allow))
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err(server_field.error("the list is empty".to_owned(), "name at least one URL"));
    }

    let agent_id = match field("agent_id").value.map(str::trim) {
        Some(id) if crate::identity::is_valid_agent_id(id) => Some(id.to_owned()),
        Some(id) => {
            return Err(field("agent_id").error(
                format!("{id:?} is not a valid agent id"),
                "use up to 128 letters, digits and . _ : -",
            ));
        }
        None => None,
    };

    let heartbeat_interval = field("heartbeat_interval").duration_at_least(HEARTBEAT_FLOOR)?;
    let (backoff, auth_backoff) = retry_policies(layers, heartbeat_interval)?;

    // Always set (its default is in KEYS); an empty text would be refused below.
    let log_level = field("log_level")
        .value
        .unwrap_or_default()
        .trim()
        .to_owned();
    if let Err(problem) = crate::logging::parse_filter(&log_level) {
        return Err(field("log_level").error(
            format!("{log_level:?} is not a log filter: {problem}"),
            "write error, warn, info, debug or trace, or target=level pairs like hostbeat=debug,warn",
        ));
    }

    let state_dir = match (field("state_dir").absolute_path()?, &host.state_directory) {
        (Some(dir), _) => dir,
        // systemd may pass several directories separated by ':'; ours is the first.
        (None, Some(dirs)) => PathBuf::from(dirs.split(':').next().unwrap_or(dirs)),
        (None, None) => PathBuf::from(super::DEFAULT_STATE_DIR),
    };

    let metrics_field = field("metrics_textfile");
    let metrics_textfile = match metrics_field.value.map(str::trim) {
        None | Some("") => None,
        // node_exporter reads `*.prom` only, case and all.
        Some(path)
            if path.starts_with('/')
                && std::path::Path::new(path).extension() == Some("prom".as_ref()) =>
        {
            Some(PathBuf::from(path))
        }
        Some(path) => {
            return Err(metrics_field.error(
                format!("{path:?} is not an absolute path ending in .prom"),
                "name a file in node_exporter's --collector.textfile.directory, like /var/lib/prometheus/node-exporter/hostbeat.prom (the collector reads only *.prom)",
            ));
        }
    };

    let (client_token, origin) = resolve_token(tokens, &field("client_token_file"), host)?;

    Ok(Settings {
        servers,
        client_token: Arc::new(client_token),
        token_source: TokenSource {
            origin,
            env_file: host.env_file.clone(),
        },
        auth: auth_mode(layers, &allow)?,
        agent_id,
        paths: paths(layers)?,
        heartbeat_interval,
        refresh_margin: field("refresh_margin").duration_at_least(Duration::ZERO)?,
        backoff,
        auth_backoff,
        retry_after_max: field("retry_after_max").duration_at_least(Duration::ZERO)?,
        connect_timeout: field("connect_timeout").duration_at_least(Duration::from_millis(1))?,
        request_timeout: field("request_timeout").duration_at_least(Duration::from_millis(1))?,
        shutdown_timeout: field("shutdown_timeout").duration_at_least(Duration::ZERO)?,
        state_dir,
        ca_file: field("ca_file").absolute_path()?,
        log_level,
        machine_id_file: host.machine_id_file.clone(),
        metrics_textfile,
        cloud: super::cloud::settings(layers)?,
    })
}

/// Static mode, or exchange mode when `token_url` is set.
fn auth_mode(layers: &Layers, allow: &(bool, Origin)) -> Result<AuthMode, ConfigError> {
    let token_url = field(layers, "token_url");
    let Some(text) = token_url.value else {
        return Ok(AuthMode::Static);
    };
    let client_auth = field(layers, "client_auth");
    Ok(AuthMode::Exchange(Exchange {
        token_url: token_url.url(text, allow)?,
        client_id: nonempty(&field(layers, "client_id"))?,
        client_auth: match client_auth.value.map(str::trim) {
            Some("basic" | "client_secret_basic") => ClientAuth::Basic,
            Some("post" | "client_secret_post") => ClientAuth::Post,
            other => {
                return Err(client_auth.error(
                    format!(
                        "{:?} is not a client authentication method",
                        other.unwrap_or("")
                    ),
                    "write basic or post",
                ));
            }
        },
        scope: field(layers, "scope").value.map(|s| s.trim().to_owned()),
    }))
}

fn paths(layers: &Layers) -> Result<Paths, ConfigError> {
    let paths = Paths {
        register: field(layers, "register_path").path()?,
        heartbeat: field(layers, "heartbeat_path").path()?,
        validate: field(layers, "validate_path").path()?,
    };
    if !paths.heartbeat.contains("{agent_id}") {
        return Err(field(layers, "heartbeat_path").error(
            format!("{:?} has no {{agent_id}}", paths.heartbeat),
            "put {agent_id} where the agent id goes, like /api/v1/agents/{agent_id}/heartbeat",
        ));
    }
    Ok(paths)
}

fn nonempty(field: &Field<'_>) -> Result<String, ConfigError> {
    match field.value.map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v.to_owned()),
        _ => Err(field.error(
            "it is empty".to_owned(),
            "set it, or remove it for the default",
        )),
    }
}

fn resolve_token(
    tokens: TokenCandidates,
    token_file: &Field<'_>,
    host: &HostPaths,
) -> Result<(Token, TokenOrigin), ConfigError> {
    let candidate = tokens
        .environment
        .map(|t| (t, TokenOrigin::Environment))
        .or_else(|| tokens.env_file.map(|(t, p)| (t, TokenOrigin::EnvFile(p))))
        .or_else(|| {
            tokens
                .config_file
                .map(|(t, p)| (t, TokenOrigin::ConfigFile(p)))
        });
    if let Some((raw, origin)) = candidate {
        return Ok((token::clean(&raw, &origin)?, origin));
    }
    if let Some(path) = token_file.absolute_path()? {
        let origin = TokenOrigin::TokenFile(path);
        let TokenOrigin::TokenFile(path) = &origin else {
            unreachable!()
        };
        return Ok((token::read_token_file(path, &origin)?, origin));
    }
    if let Some(dir) = tokens.credentials_directory {
        let path = dir.join(CREDENTIAL_NAME);
        if path.exists() {
            let origin = TokenOrigin::Credential(path.clone());
            return Ok((token::read_token_file(&path, &origin)?, origin));
        }
    }
    Err(ConfigError::new(
        "client_token",
        None,
        "no client token is configured".to_owned(),
        format!(
            "put HOSTBEAT_CLIENT_TOKEN=<token> in {} (mode 0640, owner root, group hostbeat), \
             or LoadCredential=client-token:<path> in a drop-in (systemctl edit hostbeat)",
            host.env_file.display()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys_only() {
        assert_eq!(suggest("heartbeat_intreval"), Some("heartbeat_interval"));
        assert_eq!(suggest("server"), None);
        assert_eq!(suggest("sever_url"), Some("server_url"));
    }

    #[test]
    fn loopback_hosts() {
        for ok in [
            "http://127.0.0.1:1",
            "http://127.5.0.1",
            "http://[::1]:8",
            "http://localhost",
        ] {
            assert!(is_loopback(&Url::parse(ok).unwrap()), "{ok}");
        }
        for not in [
            "http://10.0.0.1",
            "http://example.com",
            "http://localhost.example.com",
        ] {
            assert!(!is_loopback(&Url::parse(not).unwrap()), "{not}");
        }
    }
}
