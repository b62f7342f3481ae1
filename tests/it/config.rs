//! Configuration: layers and precedence, validation messages, token sources and
//! hygiene, and the documentation of every setting.

use hostbeat::cloud::Cloud;
use hostbeat::config::{self, AuthMode, ClientAuth, CloudMode, ConfigError, ConfigInputs};

use crate::support::*;

/// A private directory and the minimal valid inputs on top of it.
struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// No config file, an empty env file: only what the test adds.
    fn bare(&self) -> ConfigInputs {
        if !self.path("hostbeat.env").exists() {
            self.write("hostbeat.env", "");
        }
        ConfigInputs::new()
            .config_file(self.write("hostbeat.toml", ""))
            .var(
                "HOSTBEAT_ENV_FILE",
                self.path("hostbeat.env").to_str().unwrap(),
            )
    }

    fn valid(&self) -> ConfigInputs {
        self.bare()
            .var("HOSTBEAT_SERVER_URL", "https://cp.example.com")
            .var("HOSTBEAT_CLIENT_TOKEN", SECRET)
    }
}

/// An empty directory in `dir`, for a scan of what loading wrote (nothing).
fn empty_dir(dir: &Dir) -> std::path::PathBuf {
    let path = dir.path("written");
    std::fs::create_dir_all(&path).unwrap();
    path
}

fn error(inputs: ConfigInputs) -> ConfigError {
    config::load(inputs).expect_err("should be refused")
}

#[test]
fn defaults_are_the_documented_ones() {
    let dir = Dir::new();
    let settings = settings(dir.valid());
    assert_eq!(settings.heartbeat_interval, secs(30));
    assert_eq!(settings.refresh_margin, secs(60));
    // Retries are paced by the interval (protocol.md section 3).
    assert_eq!(settings.backoff.floor(), secs(30));
    assert_eq!(settings.auth_backoff.floor(), secs(30));
    assert_eq!(settings.backoff.cap(), mins(5));
    assert_eq!(settings.auth_backoff.cap(), mins(15));
    assert_eq!(settings.retry_after_max, mins(60));
    assert_eq!(
        (
            settings.connect_timeout,
            settings.request_timeout,
            settings.shutdown_timeout
        ),
        (secs(5), secs(10), secs(5))
    );
    assert_eq!(
        settings.state_dir,
        std::path::PathBuf::from("/var/lib/hostbeat")
    );
    assert_eq!(
        settings.paths.heartbeat,
        "/api/v1/agents/{agent_id}/heartbeat"
    );
    assert_eq!(settings.auth, AuthMode::Static);
    assert_eq!(settings.log_level, "info");
    // No metadata requests unless configured (the packaged unit says auto).
    let cloud = &settings.cloud;
    assert_eq!(cloud.mode, CloudMode::Off);
    assert_eq!(cloud.ec2_url.as_str(), "http://169.254.169.254/");
    assert_eq!(cloud.gcp_url.as_str(), "http://metadata.google.internal/");
    assert_eq!(cloud.azure_url.as_str(), "http://169.254.169.254/");
    assert_eq!(cloud.dmi_dir, std::path::PathBuf::from("/sys/class/dmi/id"));
    assert_eq!(cloud.poll_interval, secs(5));
    assert_eq!(cloud.gcp_preemption_notice, secs(30));
}

#[test]
fn cloud_settings_accept_each_cloud_and_its_service_and_refuse_anything_else() {
    let dir = Dir::new();
    for (mode, expected) in [
        ("auto", CloudMode::Auto),
        ("off", CloudMode::Off),
        ("ec2", CloudMode::Only(Cloud::Ec2)),
        ("GCP", CloudMode::Only(Cloud::Gcp)),
        ("azure", CloudMode::Only(Cloud::Azure)),
    ] {
        assert_eq!(
            settings(dir.valid().var("HOSTBEAT_CLOUD", mode)).cloud.mode,
            expected
        );
    }
    let e = error(dir.valid().var("HOSTBEAT_CLOUD", "aws"));
    assert_eq!(e.setting(), "cloud");
    assert!(
        e.to_string().contains("write off, auto, ec2, gcp or azure"),
        "{e}"
    );
    for (key, url) in [
        ("EC2", "http://169.254.169.254"),
        ("EC2", "http://[fd00:ec2::254]"),
        ("GCP", "http://metadata.google.internal"),
        ("GCP", "http://169.254.169.254"),
        ("AZURE", "http://127.0.0.1:9"),
    ] {
        settings(
            dir.valid()
                .var(&format!("HOSTBEAT_{key}_METADATA_URL"), url),
        );
    }
    // Google's name is Google's: not a typo's way to send EC2 or Azure requests there.
    let e = error(dir.valid().var(
        "HOSTBEAT_AZURE_METADATA_URL",
        "http://metadata.google.internal",
    ));
    assert_eq!(e.setting(), "azure_metadata_url");
    // A typo under the old name is fixed under the new one.
    let e = error(dir.valid().var("HOSTBEAT_IMDS_URL", "http://10.0.0.1"));
    assert_eq!(e.setting(), "imds_url");
    assert!(
        e.to_string()
            .contains("HOSTBEAT_EC2_METADATA_URL=http://169.254.169.254"),
        "{e}"
    );
    let e = error(dir.valid().var("HOSTBEAT_DMI_DIR", "dmi"));
    assert!(e.to_string().contains("/sys/class/dmi/id"), "{e}");
    for url in [
        "http://10.0.0.1",
        "https://169.254.169.254",
        "169.254.169.254",
        "http://metadata.google.internal.evil.example",
        "http://user@169.254.169.254",
        "http://169.254.169.254/computeMetadata",
    ] {
        let e = error(dir.valid().var("HOSTBEAT_GCP_METADATA_URL", url));
        assert_eq!(e.setting(), "gcp_metadata_url", "{url}");
        assert!(
            e.to_string()
                .contains("HOSTBEAT_GCP_METADATA_URL=http://metadata.google.internal"),
            "{e}"
        );
    }
    for (key, value) in [
        ("HOSTBEAT_INTERRUPTION_POLL_INTERVAL", "10ms"),
        ("HOSTBEAT_GCP_PREEMPTION_NOTICE", "1h"),
        ("HOSTBEAT_DMI_DIR", "sys/class/dmi/id"),
    ] {
        let e = error(dir.valid().var(key, value));
        assert_eq!(
            hostbeat::config::env_var(e.setting()),
            key,
            "{key}={value}: {e}"
        );
    }
}

/// `imds` and `imds_url` still work, with one warning each naming the new line. In
/// the same place as `cloud` the old name decides: under systemd the packaged
/// `HOSTBEAT_CLOUD=auto` and an operator's old `HOSTBEAT_IMDS=off` drop-in are both
/// in the environment, and the operator's wish must win.
#[test]
fn the_deprecated_imds_settings_still_work_and_say_what_replaces_them() {
    let dir = Dir::new();
    for (mode, expected) in [
        ("on", CloudMode::Only(Cloud::Ec2)),
        ("auto", CloudMode::Auto),
        ("off", CloudMode::Off),
    ] {
        let loaded = config::load(
            dir.valid()
                .var("HOSTBEAT_CLOUD", "auto")
                .var("HOSTBEAT_IMDS", mode),
        )
        .unwrap();
        assert_eq!(loaded.settings.cloud.mode, expected, "imds={mode}");
        let deprecated: Vec<String> = loaded
            .warnings
            .iter()
            .filter(|w| w.code == "config.deprecated")
            .map(ToString::to_string)
            .collect();
        assert_eq!(deprecated.len(), 1, "{deprecated:?}");
        let cloud = match mode {
            "on" => "ec2",
            other => other,
        };
        assert!(
            deprecated[0].contains(&format!("Environment=HOSTBEAT_CLOUD={cloud}")),
            "{}",
            deprecated[0]
        );
    }
    // A higher place's `cloud` beats a lower place's `imds`.
    let env_file = dir.write("hostbeat.env", "HOSTBEAT_IMDS=on\n");
    let loaded = config::load(
        dir.valid()
            .var("HOSTBEAT_ENV_FILE", env_file.to_str().unwrap())
            .var("HOSTBEAT_CLOUD", "gcp"),
    )
    .unwrap();
    assert_eq!(loaded.settings.cloud.mode, CloudMode::Only(Cloud::Gcp));
    let said: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert!(
        said.iter().any(|w| w.contains("HOSTBEAT_IMDS in")
            && w.contains("no longer decides: environment variable HOSTBEAT_CLOUD wins")
            && w.contains("Environment=HOSTBEAT_CLOUD=ec2")),
        "{said:?}"
    );
    let loaded = config::load(
        dir.valid()
            .var("HOSTBEAT_IMDS_URL", "http://127.0.0.1:1338")
            .var("HOSTBEAT_CLOUD", "ec2"),
    )
    .unwrap();
    assert_eq!(
        loaded.settings.cloud.ec2_url.as_str(),
        "http://127.0.0.1:1338/"
    );
    let e = error(dir.valid().var("HOSTBEAT_IMDS", "maybe"));
    assert_eq!(e.setting(), "imds");
    assert!(e.to_string().contains("HOSTBEAT_CLOUD=auto"), "{e}");
}

#[test]
fn the_environment_wins_over_the_env_file_which_wins_over_the_config_file() {
    let dir = Dir::new();
    let toml = dir.write("hostbeat.toml", "heartbeat_interval = \"10s\"\nbackoff_cap = 120\nserver_url = [\"https://a.example\", \"https://b.example\"]\n");
    dir.write(
        "hostbeat.env",
        "HOSTBEAT_HEARTBEAT_INTERVAL=20s\nHOSTBEAT_CLIENT_TOKEN=from-env-file\n",
    );
    let inputs = || {
        ConfigInputs::new().config_file(&toml).var(
            "HOSTBEAT_ENV_FILE",
            dir.path("hostbeat.env").to_str().unwrap(),
        )
    };
    let from_file = settings(inputs());
    assert_eq!(from_file.heartbeat_interval, secs(20));
    assert_eq!(
        from_file.backoff.cap(),
        secs(120),
        "a bare number is seconds"
    );
    assert_eq!(from_file.servers.len(), 2);
    assert_eq!(
        from_file.token_source.origin.to_string(),
        format!(
            "HOSTBEAT_CLIENT_TOKEN in {}",
            dir.path("hostbeat.env").display()
        )
    );
    let from_env = settings(
        inputs()
            .var("HOSTBEAT_HEARTBEAT_INTERVAL", "45s")
            .var("HOSTBEAT_CLIENT_TOKEN", SECRET),
    );
    assert_eq!(from_env.heartbeat_interval, secs(45));
    assert_eq!(
        from_env.token_source.origin.to_string(),
        "environment variable HOSTBEAT_CLIENT_TOKEN"
    );
    // An empty variable clears the setting, whoever set it below: a drop-in's
    // `Environment=HOSTBEAT_HEARTBEAT_INTERVAL=` returns it to the default.
    assert_eq!(
        settings(inputs().var("HOSTBEAT_HEARTBEAT_INTERVAL", "")).heartbeat_interval,
        secs(30)
    );
    // An empty token counts as unset: the env file's token is the one in use.
    assert_eq!(
        settings(inputs().var("HOSTBEAT_CLIENT_TOKEN", " "))
            .token_source
            .origin
            .to_string(),
        format!(
            "HOSTBEAT_CLIENT_TOKEN in {}",
            dir.path("hostbeat.env").display()
        )
    );
}

#[test]
fn errors_name_the_setting_its_origin_and_the_fix() {
    let dir = Dir::new();
    let e = error(dir.bare().var("HOSTBEAT_CLIENT_TOKEN", SECRET));
    assert_eq!(e.setting(), "server_url");
    assert!(
        e.to_string().contains("fix: set HOSTBEAT_SERVER_URL="),
        "{e}"
    );

    let e = error(dir.valid().var("HOSTBEAT_HEARTBEAT_INTERVAL", "often"));
    assert!(
        e.to_string().starts_with(
            "heartbeat_interval (from environment variable HOSTBEAT_HEARTBEAT_INTERVAL): \"often\" is not a duration"
        ),
        "{e}"
    );
    assert!(e.to_string().contains("fix: write it like 30s, 5m or 1h"));

    let e = error(dir.valid().var("HOSTBEAT_HEARTBEAT_INTERVAL", "500ms"));
    assert!(e.to_string().contains("below the floor of 1s"), "{e}");

    let toml = dir.write("bad.toml", "heartbeat_intreval = \"10s\"\n");
    let e = error(dir.valid().config_file(&toml));
    assert!(
        e.to_string().contains("did you mean `heartbeat_interval`"),
        "{e}"
    );
    assert!(e.to_string().contains("bad.toml"), "{e}");

    let toml = dir.write("broken.toml", "server_url = \n");
    let e = error(dir.valid().config_file(&toml));
    assert!(e.to_string().starts_with("config file (from "), "{e}");

    let e = error(dir.valid().config_file(dir.path("missing.toml")));
    assert!(e.to_string().contains("does not exist"), "{e}");

    let e = error(dir.valid().var("HOSTBEAT_HEARTBEAT_PATH", "/beat"));
    assert!(e.to_string().contains("{agent_id}"), "{e}");

    let e = error(
        dir.valid()
            .var("HOSTBEAT_TOKEN_URL", "https://idp.example/token")
            .var("HOSTBEAT_CLIENT_AUTH", "jwt"),
    );
    assert!(e.to_string().contains("write basic or post"), "{e}");

    let e = error(dir.valid().var("HOSTBEAT_LOG_LEVEL", "loud=["));
    assert_eq!(e.setting(), "log_level");
}

#[test]
fn unknown_environment_variables_are_warned_about() {
    let dir = Dir::new();
    let loaded = config::load(dir.valid().var("HOSTBEAT_HEARTBEAT_INTERVALL", "5s")).unwrap();
    assert_eq!(loaded.warnings.len(), 1);
    assert!(
        loaded.warnings[0]
            .to_string()
            .contains("did you mean HOSTBEAT_HEARTBEAT_INTERVAL"),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn the_retired_backoff_base_is_named_where_it_is_set_and_still_checked() {
    let dir = Dir::new();
    let loaded = config::load(dir.valid().var("HOSTBEAT_BACKOFF_BASE", "2s")).unwrap();
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    let said = loaded.warnings[0].to_string();
    assert!(
        said.contains("backoff_base")
            && said.contains("environment variable HOSTBEAT_BACKOFF_BASE")
            && said.contains("heartbeat_interval"),
        "{said}"
    );
    // The retry schedule is the interval's, whatever it says.
    assert_eq!(loaded.settings.backoff.floor(), secs(30));
    assert_eq!(
        error(dir.valid().var("HOSTBEAT_BACKOFF_BASE", "soon")).setting(),
        "backoff_base"
    );
}

#[test]
fn plain_http_is_refused_off_loopback_unless_allowed() {
    let dir = Dir::new();
    let e = error(
        dir.valid()
            .var("HOSTBEAT_SERVER_URL", "http://cp.example.com"),
    );
    assert!(
        e.to_string().contains("clear text")
            && e.to_string()
                .contains("Environment=HOSTBEAT_ALLOW_INSECURE_HTTP=true in the drop-in"),
        "{e}"
    );
    // The fix in the syntax of the file the URL came from.
    dir.write(
        "hostbeat.env",
        "HOSTBEAT_SERVER_URL=http://cp.example.com\n",
    );
    let e = error(dir.bare().var("HOSTBEAT_CLIENT_TOKEN", SECRET));
    assert!(
        e.to_string().contains(&format!(
            "set HOSTBEAT_ALLOW_INSECURE_HTTP=true in {}",
            dir.path("hostbeat.env").display()
        )),
        "{e}"
    );
    std::fs::write(dir.path("hostbeat.env"), "").unwrap();
    let toml = dir.write("plain.toml", "server_url = \"http://cp.example.com\"\n");
    let e = error(
        dir.valid()
            .without_var("HOSTBEAT_SERVER_URL")
            .config_file(&toml),
    );
    assert!(
        e.to_string().contains(&format!(
            "set allow_insecure_http = true in {}",
            toml.display()
        )),
        "{e}"
    );
    Row::new("plain-http")
        .figure("http://cp.example.com", "refused at start, exit 78")
        .figure("loopback, or allow_insecure_http = true", "accepted")
        .done();
    let e = error(
        dir.valid()
            .var("HOSTBEAT_TOKEN_URL", "http://10.1.2.3/token"),
    );
    assert_eq!(e.setting(), "token_url");
    for loopback in [
        "http://127.0.0.1:8080",
        "http://localhost:1",
        "http://[::1]:9",
    ] {
        settings(dir.valid().var("HOSTBEAT_SERVER_URL", loopback));
    }
    settings(
        dir.valid()
            .var("HOSTBEAT_SERVER_URL", "http://cp.example.com")
            .var("HOSTBEAT_ALLOW_INSECURE_HTTP", "true"),
    );
    let e = error(
        dir.valid()
            .var("HOSTBEAT_SERVER_URL", "https://user:pw@cp.example.com"),
    );
    assert!(e.to_string().contains("user name or password"), "{e}");
}

#[test]
fn exchange_mode_settings() {
    let dir = Dir::new();
    let s = settings(
        dir.valid()
            .var("HOSTBEAT_TOKEN_URL", "https://idp.example/oauth/token")
            .var("HOSTBEAT_CLIENT_AUTH", "post")
            .var("HOSTBEAT_SCOPE", "agents"),
    );
    let AuthMode::Exchange(exchange) = s.auth else {
        panic!("static")
    };
    assert_eq!(exchange.client_id, "hostbeat");
    assert_eq!(exchange.client_auth, ClientAuth::Post);
    assert_eq!(exchange.scope.as_deref(), Some("agents"));
}

#[test]
fn the_token_is_found_in_the_documented_order() {
    let dir = Dir::new();
    let token_file = dir.write("token", "from-token-file\n");
    let credentials = dir.path("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(credentials.join("client-token"), "from-credential").unwrap();
    let base = || {
        dir.bare()
            .var("HOSTBEAT_SERVER_URL", "https://cp.example.com")
            .var("CREDENTIALS_DIRECTORY", credentials.to_str().unwrap())
    };
    let origin = |inputs: ConfigInputs| settings(inputs).token_source.origin.to_string();
    assert!(origin(base()).starts_with("systemd credential"));
    assert!(
        origin(base().var("HOSTBEAT_CLIENT_TOKEN_FILE", token_file.to_str().unwrap()))
            .starts_with("client_token_file")
    );
    assert!(
        origin(
            base()
                .var("HOSTBEAT_CLIENT_TOKEN_FILE", token_file.to_str().unwrap())
                .var("HOSTBEAT_CLIENT_TOKEN", SECRET)
        )
        .starts_with("environment")
    );
    let s = settings(base());
    assert!(*s.client_token == hostbeat::secret::Token::new("from-credential".into()));

    let e = error(
        dir.bare()
            .var("HOSTBEAT_SERVER_URL", "https://cp.example.com"),
    );
    assert_eq!(e.setting(), "client_token");
    assert!(
        e.to_string().contains("HOSTBEAT_CLIENT_TOKEN") && e.to_string().contains("LoadCredential"),
        "{e}"
    );
}

#[test]
fn a_token_with_hidden_characters_is_refused_with_its_position_not_its_content() {
    let dir = Dir::new();
    dir.write(
        "hostbeat.env",
        "HOSTBEAT_SERVER_URL=https://cp.example.com\nHOSTBEAT_CLIENT_TOKEN=abc\u{1}defSECRETPART\n",
    );
    let e = error(dir.bare());
    let text = e.to_string();
    assert!(
        text.contains("a control character at byte 4 (of 17)"),
        "{text}"
    );
    assert!(text.contains("hostbeat.env"), "{text}");
    assert!(
        !text.contains("SECRETPART") && !text.contains("abc"),
        "{text}"
    );
    // What editors leave around a token is cleaned away.
    dir.write("hostbeat.env", &format!("\u{feff}HOSTBEAT_SERVER_URL=https://cp.example.com\r\nHOSTBEAT_CLIENT_TOKEN=\"  {SECRET}  \"\r\n"));
    assert!(*settings(dir.bare()).client_token == hostbeat::secret::Token::new(SECRET.to_owned()));
}

#[test]
fn the_state_directory_comes_from_systemd_when_not_set() {
    let dir = Dir::new();
    let s = settings(
        dir.valid()
            .var("STATE_DIRECTORY", "/var/lib/hostbeat-a:/var/lib/other"),
    );
    assert_eq!(s.state_dir, std::path::PathBuf::from("/var/lib/hostbeat-a"));
    let s = settings(
        dir.valid()
            .var("STATE_DIRECTORY", "/x")
            .var("HOSTBEAT_STATE_DIR", "/y"),
    );
    assert_eq!(s.state_dir, std::path::PathBuf::from("/y"));
}

#[test]
fn settings_debug_output_holds_no_token() {
    let dir = Dir::new();
    let debug = format!("{:?}", settings(dir.valid()));
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(debug.contains("Token(fp="));
}

#[test]
fn every_setting_is_documented_with_its_default() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    for (key, default) in config::KEYS {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{key}`")))
            .unwrap_or_else(|| panic!("{key} is not in docs/configuration.md"));
        if let Some(default) = default {
            assert!(
                row.contains(&format!("`{default}`")),
                "{key}: default {default} not in: {row}"
            );
        }
    }
}

#[test]
fn an_env_file_every_user_can_read_is_warned_about_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new();
    let env_file = dir.write("hostbeat.env", &format!("HOSTBEAT_CLIENT_TOKEN={SECRET}\n"));
    let inputs = || {
        dir.bare()
            .var("HOSTBEAT_SERVER_URL", "https://cp.example.com")
    };
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(config::load(inputs()).unwrap().warnings.is_empty());
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let warnings = config::load(inputs()).unwrap().warnings;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .to_string()
            .contains("every user on this host can read it (mode 0644)")
            && warnings[0].to_string().contains("chmod 0640"),
        "{}",
        warnings[0]
    );
    assert!(!warnings[0].to_string().contains(SECRET));
    // Without a token in it, the mode is nobody's business.
    std::fs::write(&env_file, "HOSTBEAT_HEARTBEAT_INTERVAL=10s\n").unwrap();
    assert!(
        config::load(inputs().var("HOSTBEAT_CLIENT_TOKEN", SECRET))
            .unwrap()
            .warnings
            .is_empty()
    );
    Row::new("env-file-mode")
        .figure(
            "env file with the token, mode 0644",
            "config_warning at start with the chmod fix; `check` warns too",
        )
        .figure("mode 0640", "no warning")
        .done();
}

/// The rule for every key: the environment (a drop-in) over the env file over the
/// config file; each key set in more than one place is named with the one in use.
#[test]
fn every_key_set_in_two_places_is_named_with_the_one_in_use() {
    let dir = Dir::new();
    let toml = dir.write("layers.toml", "heartbeat_interval = \"10s\"\n");
    dir.write(
        "hostbeat.env",
        &format!("HOSTBEAT_HEARTBEAT_INTERVAL=7s\nHOSTBEAT_CLIENT_TOKEN={SECRET}\n"),
    );
    let loaded = config::load(
        dir.valid()
            .config_file(&toml)
            .var("HOSTBEAT_HEARTBEAT_INTERVAL", "2s"),
    )
    .unwrap();
    assert_eq!(loaded.settings.heartbeat_interval, secs(2));
    let lines: Vec<String> = loaded
        .shadowed
        .iter()
        .map(config::Shadowed::describe)
        .collect();
    let env_file = dir.path("hostbeat.env");
    assert_eq!(
        lines,
        [
            format!(
                "heartbeat_interval is set in 3 places (heartbeat_interval in {}, HOSTBEAT_HEARTBEAT_INTERVAL in {}, environment variable HOSTBEAT_HEARTBEAT_INTERVAL); in use: environment variable HOSTBEAT_HEARTBEAT_INTERVAL",
                toml.display(),
                env_file.display()
            ),
            format!(
                "client_token is set in 2 places (HOSTBEAT_CLIENT_TOKEN in {}, environment variable HOSTBEAT_CLIENT_TOKEN); in use: environment variable HOSTBEAT_CLIENT_TOKEN (the same value)",
                env_file.display()
            ),
        ]
    );
    // Differing values are a warning, which `run` logs as `check` shows it; the
    // same token twice is not.
    let shadowed: Vec<&str> = loaded
        .warnings
        .iter()
        .filter(|w| w.code == "config.shadowed")
        .map(|w| w.problem.as_str())
        .collect();
    assert_eq!(shadowed, [lines[0].as_str()]);
    assert!(!lines.concat().contains(SECRET));
}

/// A token set by the unit's `Environment=` (readable by every local user through
/// `systemctl show`) is warned about with the fix; from a shell it is not.
#[test]
fn a_token_in_the_units_environment_is_warned_about_with_the_fix() {
    let dir = Dir::new();
    let codes = |inputs| -> Vec<&'static str> {
        config::load(inputs)
            .unwrap()
            .warnings
            .iter()
            .map(|w| w.code)
            .collect()
    };
    assert!(codes(dir.valid()).is_empty());
    let unit = vec![
        (
            "HOSTBEAT_SERVER_URL".to_owned(),
            "https://cp.example.com".to_owned(),
        ),
        ("HOSTBEAT_CLIENT_TOKEN".to_owned(), SECRET.to_owned()),
        (
            "HOSTBEAT_ENV_FILE".to_owned(),
            dir.path("hostbeat.env").display().to_string(),
        ),
    ];
    let (inputs, unseen) = ConfigInputs::new()
        .config_file(dir.write("hostbeat.toml", ""))
        .var("HOSTBEAT_LOG_LEVEL", "debug")
        .as_service(unit);
    assert_eq!(unseen, ["HOSTBEAT_LOG_LEVEL"]);
    let loaded = config::load(inputs).unwrap();
    assert_eq!(
        loaded.settings.log_level, "info",
        "the shell's variable is not the unit's"
    );
    let warning = &loaded.warnings[0];
    assert_eq!(warning.code, "config.token_in_unit_environment");
    let text = warning.to_string();
    assert!(
        text.contains("systemctl show hostbeat -p Environment"),
        "{text}"
    );
    assert!(text.contains("LoadCredential=client-token:"), "{text}");
    assert!(!text.contains(SECRET));
}

/// A required setting nobody set, next to a variable whose name is close to it:
/// the fix names the variable, its place and the right name.
#[test]
fn a_misspelt_required_key_gets_did_you_mean() {
    let dir = Dir::new();
    let e = error(
        dir.bare()
            .var("HOSTBEAT_CLIENT_TOKEN", SECRET)
            .var("HOSTBEAT_SERVER_ULR", "https://cp.example.com"),
    );
    assert_eq!(e.setting(), "server_url");
    assert!(
        e.to_string().contains(
            "fix: HOSTBEAT_SERVER_ULR is set in the environment (a drop-in's Environment= under systemd): did you mean HOSTBEAT_SERVER_URL? rename it"
        ),
        "{e}"
    );
    dir.write("hostbeat.env", "HOSTBEAT_CLIENT_TOKN=abc\n");
    let e = error(
        dir.bare()
            .var("HOSTBEAT_SERVER_URL", "https://cp.example.com"),
    );
    assert_eq!(e.setting(), "client_token");
    assert!(
        e.to_string().contains("HOSTBEAT_CLIENT_TOKN is set in"),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("did you mean HOSTBEAT_CLIENT_TOKEN?"),
        "{e}"
    );
    assert!(!e.to_string().contains("abc"), "{e}");
}

/// The fix for a missing setting names the env file in use, not the default one.
#[test]
fn a_missing_token_is_fixed_in_the_env_file_actually_in_use() {
    let dir = Dir::new();
    let e = error(
        dir.bare()
            .var("HOSTBEAT_SERVER_URL", "https://cp.example.com"),
    );
    assert!(
        e.to_string().contains(&format!(
            "put HOSTBEAT_CLIENT_TOKEN=<token> in {}",
            dir.path("hostbeat.env").display()
        )),
        "{e}"
    );
}

/// A syntax error in the config file is said by its position only: the parser's
/// own words quote the line, which held the token (on stderr, in the journal, in
/// `check`, in a refused reload).
#[test]
fn a_config_file_syntax_error_never_quotes_the_line() {
    let dir = Dir::new();
    let mut said = String::new();
    for (name, text) in [
        ("unquoted.toml", format!("client_token = {SECRET}\n")),
        ("unterminated.toml", format!("client_token = \"{SECRET}\n")),
    ] {
        let toml = dir.write(name, &text);
        let e = error(dir.valid().config_file(&toml)).to_string();
        assert!(e.contains("not valid TOML at line 1, column"), "{e}");
        assert!(e.contains("every text in quotes"), "{e}");
        for (what, form) in forms(SECRET) {
            assert!(!e.contains(form.as_str()), "{what} in {e}");
        }
        said.push_str(&e);
    }
    let toml = dir.write(
        "swallowed.toml",
        &format!("server_url = '''\nclient_token = \"{SECRET}\"\n'''\n"),
    );
    said.push_str(&error(dir.valid().config_file(&toml)).to_string());
    Row::new("config-file-token")
        .figure(
            "files",
            "the token unquoted; a quote left open; a multi-line string over its line",
        )
        .figure("said", "the position, or the setting it ran into")
        // Loading writes no state: the scan is of the errors.
        .scan_written(&empty_dir(&dir), "errors", said.into_bytes())
        .done();
}

/// A multi-line string left open above the token's line would carry the token
/// into another setting's value, which is logged and written to the status file:
/// refused, quoting neither. A config file that is no regular file or is huge is
/// refused before it is read.
#[test]
fn a_config_file_cannot_carry_the_token_into_another_setting_or_hang_the_start() {
    let dir = Dir::new();
    for (name, text) in [
        (
            "literal.toml",
            format!("server_url = '''https://cp.example.com\nclient_token = \"{SECRET}\"\n'''\n"),
        ),
        (
            "basic.toml",
            format!("log_level = \"\"\"info\n  client_token = {SECRET}\"\"\"\n"),
        ),
        (
            "quoted_key.toml",
            format!(
                "server_url = \"\"\"http://127.0.0.1:1\n\"client_token\" = \"{SECRET}\"\n\"\"\"\n"
            ),
        ),
        (
            "upper_case.toml",
            format!("scope = \"\"\"read\nCLIENT_TOKEN = '{SECRET}'\"\"\"\n"),
        ),
    ] {
        let toml = dir.write(name, &text);
        let e = error(dir.valid().config_file(&toml)).to_string();
        assert!(e.contains("runs over the client_token line"), "{name}: {e}");
        assert!(e.contains("close the quotes of"), "{e}");
        for (what, form) in forms(SECRET) {
            assert!(!e.contains(form.as_str()), "{what} in {e}");
        }
    }
    let fifo = dir.path("fifo.toml");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let e = error(dir.valid().config_file(&fifo)).to_string();
    assert!(e.contains("not a regular file"), "{e}");
    let huge = dir.write("huge.toml", &"# comment\n".repeat(200_000));
    let e = error(dir.valid().config_file(&huge)).to_string();
    assert!(e.contains("larger than 1024 KiB"), "{e}");
}

/// However the token's assignment gets into another setting's value (two settings
/// on one line of the env file, a backslash joining a commented-out old token, a
/// variable holding both), that setting is refused without quoting it: its value
/// would be logged, shown by `check` and written to the status file.
#[test]
fn no_setting_carries_a_token_assignment_from_any_place() {
    let dir = Dir::new();
    let old = "ct_OlDtOkEn-Rq8Wm3Zs6Xk1Pv4Nd7";
    for (env_file, var, says) in [
        (
            format!("HOSTBEAT_SERVER_URL=http://127.0.0.1:1 HOSTBEAT_CLIENT_TOKEN={SECRET}\n"),
            None,
            "holds a client token setting",
        ),
        (
            format!(
                "HOSTBEAT_CLIENT_TOKEN={SECRET}\nHOSTBEAT_SCOPE=read \\\n# HOSTBEAT_CLIENT_TOKEN={old}\n"
            ),
            None,
            "joins the comment below it",
        ),
        (
            String::new(),
            Some(format!("read HOSTBEAT_CLIENT_TOKEN={SECRET}")),
            "holds a client token setting",
        ),
    ] {
        dir.write("hostbeat.env", &env_file);
        let mut inputs = dir
            .bare()
            .var("HOSTBEAT_SERVER_URL", "https://cp.example.com")
            .var("HOSTBEAT_CLIENT_TOKEN", SECRET);
        if let Some(value) = &var {
            inputs = inputs.var("HOSTBEAT_SCOPE", value);
        }
        let e = error(inputs).to_string();
        assert!(e.contains(says), "{e}");
        for token in [SECRET, old] {
            for (what, form) in forms(token) {
                assert!(!e.contains(form.as_str()), "{what} in {e}");
            }
        }
    }
}

/// Every duration setting has a documented ceiling, so that no value can make a
/// deadline overflow (`heartbeat_interval = 1000000y` aborted at the first status
/// write, past year 9999) or a wait outlast anyone's patience.
#[test]
fn every_duration_setting_has_a_ceiling_and_the_docs_say_it() {
    let dir = Dir::new();
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    for (key, ceiling) in hostbeat::config::CEILINGS {
        let variable = config::env_var(key);
        for too_long in ["1000000y", "18446744073709551615"] {
            let e = error(dir.valid().var(&variable, too_long));
            assert_eq!(e.setting(), *key, "{e}");
        }
        let above = format!("{}s", ceiling.as_secs() + 1);
        let e = error(dir.valid().var(&variable, &above));
        assert!(e.to_string().contains("above the ceiling"), "{e}");
        let at = format!("{}s", ceiling.as_secs());
        let docs_row = docs
            .lines()
            .find(|l| l.starts_with(&format!("| `{key}` |")))
            .unwrap();
        let shown = humantime::format_duration(*ceiling).to_string();
        let squeezed = docs_row.to_lowercase().replace(' ', "");
        assert!(
            squeezed.contains(&format!("atmost{shown}")),
            "{key}: {docs_row}"
        );
        // The ceiling itself is accepted, unless the floor of another setting
        // forbids it (backoff caps are at least the base).
        let _ = config::load(dir.valid().var(&variable, &at));
    }
}
