//! The shipped systemd unit and its companions, checked offline with the real
//! `systemd-analyze` (which must be installed: these tests fail, not skip, without it).

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .expect("systemd-analyze is required for these tests (apt-get install systemd)")
}

fn unit() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("systemd/hostbeat.service")).unwrap()
}

/// The values of `key=` lines in the unit (a key may repeat).
fn values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_unit_is_hardened_to_an_exposure_of_at_most_1_5() {
    let path = format!("{ROOT}/systemd/hostbeat.service");
    let output = systemd_analyze(&["security", "--offline=yes", "--threshold=15", &path]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for hostbeat.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no score in:\n{text}"));
    assert!(score <= 1.5, "exposure {score}");
}

#[test]
fn systemd_analyze_verify_prints_nothing() {
    // verify needs ExecStart to exist: check a copy that points at the built binary.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("hostbeat.service");
    std::fs::write(
        &copy,
        unit().replace("/usr/bin/hostbeat", env!("CARGO_BIN_EXE_hostbeat")),
    )
    .unwrap();
    let output = systemd_analyze(&["verify", copy.to_str().unwrap()]);
    // verify exits 0 even on parse errors: any output at all is a failure.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stderr.is_empty(), "{stderr}");
}

#[test]
fn the_unit_runs_the_daemon_as_the_operations_docs_expect() {
    let unit = unit();
    for (key, expected) in [
        ("Type", "notify"),
        ("ExecStart", "/usr/bin/hostbeat run"),
        ("ExecReload", "/bin/sh -c 'kill -HUP $$MAINPID'"),
        ("User", "hostbeat"),
        ("StateDirectory", "hostbeat"),
        ("Restart", "on-failure"),
        ("RestartPreventExitStatus", "78"),
        ("Wants", "network-online.target"),
        ("After", "network-online.target"),
    ] {
        assert_eq!(values(&unit, key), vec![expected.to_owned()], "{key}");
    }
    assert!(!values(&unit, "WatchdogSec").is_empty());
    // No core dump: the process holds the token.
    assert_eq!(values(&unit, "LimitCORE"), vec!["0".to_owned()]);
    assert!(!values(&unit, "Documentation").is_empty());
}

/// systemd lets `EnvironmentFile=` beat `Environment=`, drop-ins included: the unit
/// has none (hostbeat reads the env file itself, below the drop-ins), its packaged
/// defaults are `Environment=` lines a drop-in can change, and the packaged env
/// file sets nothing at all until the operator adds the token.
#[test]
fn a_drop_in_can_change_every_packaged_default() {
    let unit = unit();
    assert!(values(&unit, "EnvironmentFile").is_empty());
    assert_eq!(values(&unit, "Environment"), vec!["HOSTBEAT_CLOUD=auto"]);
    let template = std::fs::read_to_string(format!("{ROOT}/systemd/hostbeat.env")).unwrap();
    let file =
        hostbeat::config::envfile::EnvFile::parse(Path::new("hostbeat.env"), template.as_bytes())
            .unwrap();
    assert!(file.vars.is_empty(), "{:?}", file.vars);
    assert!(file.client_token.is_none());
    assert!(template.contains("#HOSTBEAT_CLIENT_TOKEN="));
}

#[test]
fn the_env_template_and_the_override_examples_name_only_real_settings() {
    let known: Vec<String> = hostbeat::config::KEYS
        .iter()
        .map(|(k, _)| hostbeat::config::env_var(k))
        .collect();
    let template = std::fs::read_to_string(format!("{ROOT}/systemd/hostbeat.env")).unwrap();
    let example = std::fs::read_to_string(format!("{ROOT}/systemd/override.conf.example")).unwrap();
    let mut named = 0;
    for line in template.lines().chain(example.lines()) {
        let line = line
            .trim_start_matches('#')
            .trim_start_matches("Environment=");
        if let Some((name, _)) = line
            .split_once('=')
            .filter(|(n, _)| n.starts_with("HOSTBEAT_"))
        {
            assert!(known.iter().any(|k| k == name), "{name} is not a setting");
            named += 1;
        }
    }
    assert!(named >= 8, "only {named} settings named");
    // The template, uncommented as an operator would, is a valid env file.
    let uncommented = template.replace("\n#HOSTBEAT_", "\nHOSTBEAT_");
    hostbeat::config::envfile::EnvFile::parse(Path::new("hostbeat.env"), uncommented.as_bytes())
        .unwrap();
}

#[test]
fn the_message_catalog_explains_every_event_by_its_id() {
    let catalog = std::fs::read_to_string(format!("{ROOT}/systemd/hostbeat.catalog")).unwrap();
    let ids: Vec<&str> = catalog
        .lines()
        .filter_map(|l| l.strip_prefix("-- "))
        .collect();
    let events = hostbeat::logging::events::EVENTS;
    assert_eq!(ids.len(), events.len());
    for event in events {
        assert!(
            ids.contains(&event.message_id),
            "{} has no catalog entry",
            event.name
        );
    }
}

#[test]
fn the_operations_guide_lists_every_event_with_its_message_id() {
    let guide = std::fs::read_to_string(format!("{ROOT}/docs/operations.md")).unwrap();
    for event in hostbeat::logging::events::EVENTS {
        let row = format!("| `{}` | `{}` |", event.name, event.message_id);
        assert!(guide.contains(&row), "docs/operations.md lacks {row}");
    }
}

/// The goodbye fits the unit's stop timeout: the highest `shutdown_timeout`
/// hostbeat accepts ends, with a second to spare for the exit, before systemd
/// would kill the agent in the middle of its offline heartbeat.
#[test]
fn the_longest_goodbye_fits_the_units_stop_timeout() {
    let stop = values(&unit(), "TimeoutStopSec");
    assert_eq!(stop.len(), 1, "{stop:?}");
    let stop = humantime::parse_duration(&stop[0]).unwrap();
    let (_, longest) = hostbeat::config::CEILINGS
        .iter()
        .find(|(key, _)| *key == "shutdown_timeout")
        .unwrap();
    assert!(
        *longest + std::time::Duration::from_secs(1) < stop,
        "shutdown_timeout up to {longest:?}, TimeoutStopSec={stop:?}"
    );
}
