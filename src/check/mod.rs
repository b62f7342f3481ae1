//! `hostbeat check`, the doctor: loads the configuration exactly as `hostbeat run`
//! does and walks the causes of a failed heartbeat from the host's side, one finding
//! per line (ok / warn / fail), each warn or fail with what it means and the command
//! that fixes it.
//!
//! Order: the configuration and where each setting came from; the env file (owner,
//! mode, the token's hygiene, byte positions only); the proxy; per server, DNS and
//! TCP; the credential (token exchange, validate) and with it HTTP and TLS (what the
//! certificate says, or why it was refused); with `--heartbeat`, one heartbeat; the
//! clock; the cloud (`cloud`: what DMI says, whether the metadata service answers,
//! the identity). A later step that cannot run because an earlier one failed is skipped,
//! saying so.
//!
//! Invariants: no finding holds the token or any part of it (length and
//! fingerprint only); nothing changes on this host; nothing changes on the server
//! beyond what `check` says it sends (validate and the token exchange are reads;
//! `--heartbeat` registers when needed and sends one heartbeat, see `heartbeat`).

use std::path::PathBuf;

use serde::Serialize;

use crate::config::{ConfigInputs, Loaded};

mod cloud;
mod envfile;
mod heartbeat;
mod server;
mod tls;
pub mod unit;

/// How a finding weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// As it should be.
    Ok,
    /// Works, but probably not what the operator meant, or a risk.
    Warn,
    /// A cause of failed heartbeats.
    Fail,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok  ",
            Self::Warn => "warn",
            Self::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Ok, warn or fail.
    pub level: Level,
    /// Stable, for scripts to match: `area.what`, like `env_file.service_cannot_read`
    /// or `validate.credential_rejected`.
    pub code: String,
    /// What was checked, the code's first part: `config`, `env_file`, `token`,
    /// `proxy`, `dns`, `tcp`, `http`, `tls`, `clock`, `exchange`, `validate`,
    /// `register`, `heartbeat`, `server`, `cloud`.
    pub area: String,
    /// The finding, in one line.
    pub summary: String,
    /// For a warn or a fail: what it means.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meaning: Option<String>,
    /// For a warn or a fail: the command or change that fixes it, standing alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    /// A finding that needs nothing done.
    pub fn ok(code: impl Into<String>, summary: impl Into<String>) -> Self {
        let code = code.into();
        Self {
            level: Level::Ok,
            area: area_of(&code),
            code,
            summary: summary.into(),
            meaning: None,
            fix: None,
        }
    }

    /// A warning, with what it means and the fix.
    pub fn warn(
        code: impl Into<String>,
        summary: impl Into<String>,
        meaning: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            level: Level::Warn,
            ..Self::fail(code, summary, meaning, fix)
        }
    }

    /// A failure, with what it means and the fix.
    pub fn fail(
        code: impl Into<String>,
        summary: impl Into<String>,
        meaning: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            level: Level::Fail,
            meaning: Some(meaning.into()),
            fix: Some(fix.into()),
            ..Self::ok(code, summary)
        }
    }
}

/// `env_file.missing` -> `env_file`.
fn area_of(code: &str) -> String {
    code.split('.').next().unwrap_or(code).to_owned()
}

/// Every finding, in the order they were made.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The findings.
    pub findings: Vec<Finding>,
}

impl Report {
    fn push(&mut self, finding: Finding) {
        self.findings.push(finding);
    }

    fn worst(&self) -> Level {
        self.findings
            .iter()
            .map(|f| f.level)
            .max()
            .unwrap_or(Level::Ok)
    }

    /// 0 when all is ok, 1 when something fails, 2 when there are only warnings.
    pub fn exit_status(&self) -> u8 {
        match self.worst() {
            Level::Ok => 0,
            Level::Fail => 1,
            Level::Warn => 2,
        }
    }

    /// One line per finding, with what it means and the fix under every warn or
    /// fail, and a closing count.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        // The area column as wide as its widest entry, so that no area runs into
        // its summary.
        let width = self
            .findings
            .iter()
            .map(|f| f.area.len())
            .max()
            .unwrap_or(0);
        let indent = 4 + 1 + width + 1;
        for finding in &self.findings {
            let _ = writeln!(
                out,
                "{} {:<width$} {}",
                finding.level.label(),
                finding.area,
                finding.summary
            );
            if let Some(meaning) = &finding.meaning {
                let _ = writeln!(out, "{:indent$}means: {meaning}", "");
            }
            if let Some(fix) = &finding.fix {
                let _ = writeln!(out, "{:indent$}fix:   {fix}", "");
            }
        }
        let count = |level| self.findings.iter().filter(|f| f.level == level).count();
        let _ = writeln!(
            out,
            "\n{} ok, {} warnings, {} failures",
            count(Level::Ok),
            count(Level::Warn),
            count(Level::Fail)
        );
        out
    }

    /// The findings as JSON for fleet tooling, with the exit status.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "findings": self.findings,
            "exit_status": self.exit_status(),
        })
    }
}

/// Whether `check` ends with one real heartbeat (`--heartbeat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// Only reads: the token exchange and validate.
    Skip,
    /// Also registers when needed (idempotent) and sends one heartbeat `online`.
    Send,
}

/// Runs every check for `inputs`, the configuration `hostbeat run` would load.
pub async fn run(inputs: ConfigInputs, heartbeat: Heartbeat) -> Report {
    run_into(Report::default(), inputs, None, heartbeat).await
}

/// Variables outside hostbeat's own that the HTTP client reads from the
/// environment besides the proxy's (`crate::http::PROXY_VARIABLES`): `check` uses
/// its own, `run` the unit's.
const CA_VARIABLES: [&str; 2] = ["SSL_CERT_FILE", "SSL_CERT_DIR"];

/// Runs every check beside the service: with the unit's environment (see
/// [`mod@unit`]) in place of this process's `HOSTBEAT_*` variables, as `hostbeat
/// run` under systemd gets it, and the env file judged as the unit's user.
pub async fn run_as_service(
    inputs: ConfigInputs,
    service: unit::Service,
    heartbeat: Heartbeat,
) -> Report {
    let mut report = Report::default();
    report.push(Finding::ok(
        "config.unit_environment",
        format!(
            "environment of {}: {} Environment= assignments (systemctl show), as `hostbeat run` gets it",
            unit::UNIT,
            service.environment.len()
        ),
    ));
    for name in crate::http::PROXY_VARIABLES.into_iter().chain(CA_VARIABLES) {
        let unit_value = service
            .environment
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        if unit_value.is_some() && unit_value.map(str::to_owned) != std::env::var(name).ok() {
            report.push(Finding::warn(
                "config.unit_client_variable",
                format!("{name} is set by the unit and differs from this shell's"),
                "the HTTP checks below use this shell's value; `hostbeat run` uses the unit's",
                format!("run check with the unit's value (systemctl show {} -p Environment shows it): {name}=<value> hostbeat check", unit::UNIT),
            ));
        }
    }
    let (mut inputs, unseen) = inputs.as_service(service.environment);
    if let Some(dir) = &service.credentials_directory {
        inputs = inputs.var("CREDENTIALS_DIRECTORY", dir.display().to_string());
    }
    for name in unseen {
        let fix = if name == crate::config::token::CLIENT_TOKEN_VAR {
            "put the token in the env file (HOSTBEAT_CLIENT_TOKEN=<token>), where the service reads it".to_owned()
        } else {
            format!(
                "for the service to use it: systemctl edit hostbeat, then under [Service]: Environment={name}=<value>"
            )
        };
        report.push(Finding::warn(
            "config.not_in_unit",
            format!("{name} is set in this shell, not in the unit"),
            "`hostbeat run` under systemd does not see it, so this check does not use it either",
            fix,
        ));
    }
    let user = service.user.unwrap_or_else(|| "root".to_owned());
    run_into(report, inputs, Some(user), heartbeat).await
}

async fn run_into(
    mut report: Report,
    inputs: ConfigInputs,
    service_user: Option<String>,
    heartbeat: Heartbeat,
) -> Report {
    let env_file_hint = inputs.env_file_hint();
    let loaded = crate::config::load(inputs);
    let env_file: PathBuf = match &loaded {
        Ok(loaded) => loaded.settings.token_source.env_file.clone(),
        Err(_) => env_file_hint,
    };
    match &loaded {
        Ok(loaded) => config_findings(loaded, &mut report),
        Err(e) => {
            // The fix, and how to apply it, once.
            let fix = if e.fix().contains("systemctl restart") {
                e.fix().to_owned()
            } else {
                format!("{}; then: systemctl restart hostbeat", e.fix())
            };
            report.push(Finding::fail(
                "config.does_not_load",
                format!("the configuration does not load: {e}"),
                "`hostbeat run` exits 78 with this line and systemd does not restart it",
                fix,
            ));
        }
    }
    let token_elsewhere = loaded.as_ref().ok().and_then(|loaded| {
        let origin = &loaded.settings.token_source.origin;
        (!matches!(origin, crate::config::token::TokenOrigin::EnvFile(_)))
            .then(|| origin.to_string())
    });
    let warnings = loaded.as_ref().map_or(&[][..], |l| &l.warnings[..]);
    envfile::check(
        &env_file,
        &envfile::Context {
            token_elsewhere,
            warnings,
            service_user,
            config_error: loaded.as_ref().err().map(|e| e.setting().to_owned()),
        },
        &mut report,
    );
    if let Ok(loaded) = loaded {
        server::check(&loaded.settings, heartbeat, &mut report).await;
        cloud::check(&loaded.settings.cloud, &mut report).await;
    } else {
        report.push(Finding::warn(
            "server.skipped",
            "not checked: the configuration does not load",
            "the server, the clock and the credential need a valid configuration",
            "fix the configuration, then run hostbeat check again",
        ));
    }
    report
}

/// Where each setting came from, and the token as length and fingerprint.
fn config_findings(loaded: &Loaded, report: &mut Report) {
    let settings = &loaded.settings;
    report.push(Finding::ok(
        "config.loads",
        format!(
            "loads as `hostbeat run` loads it; {} mode, state in {}",
            if matches!(settings.auth, crate::config::AuthMode::Exchange(_)) {
                "token exchange"
            } else {
                "static token"
            },
            settings.state_dir.display()
        ),
    ));
    for (key, value, origin) in &loaded.sources {
        report.push(Finding::ok(
            "config.source",
            format!("{key} = {value} (from {})", origin.describe(key)),
        ));
    }
    let token = &settings.client_token;
    report.push(Finding::ok(
        "config.token",
        format!(
            "client_token: {} bytes, fingerprint {} (from {}); the settings not listed have their defaults",
            token.len(),
            token.fingerprint(),
            settings.token_source.origin
        ),
    ));
    // Set twice to the same value: said, not warned about (a differing value is
    // among the warnings below, which `run` logs too).
    for shadowed in loaded.shadowed.iter().filter(|s| !s.differ) {
        report.push(Finding::ok("config.shadowed_same", shadowed.describe()));
    }
    for warning in &loaded.warnings {
        report.push(Finding::warn(
            warning.code,
            warning.problem.clone(),
            "`hostbeat run` logs this warning at start and runs",
            warning.fix.clone().unwrap_or_else(|| {
                "see docs/configuration.md (/usr/share/doc/hostbeat/configuration.md)".to_owned()
            }),
        ));
    }
}
