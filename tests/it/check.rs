//! `hostbeat check`: each finding produced for real (a crafted env file, a control
//! plane that refuses, a closed port, a skewed clock), with its line, its fix and
//! the exit status; and the real binary's `--json`, scanned for the token.

use std::os::unix::fs::PermissionsExt;

use hostbeat::check::{Level, Report};
use hostbeat_refplane::PlaneConfig;

use crate::support::{CLIENT_ID, SECRET, World, contains};

/// The finding of `area` whose summary contains `text`; panics with the report.
fn finding<'a>(report: &'a Report, area: &str, text: &str) -> &'a hostbeat::check::Finding {
    report
        .findings
        .iter()
        .find(|f| f.area == area && f.summary.contains(text))
        .unwrap_or_else(|| panic!("no {area} finding with {text:?} in:\n{}", report.render()))
}

fn assert_no_token(report: &Report) {
    let text = format!("{}{}", report.render(), report.to_json());
    assert!(!text.contains(SECRET), "the token in:\n{text}");
}

#[tokio::test]
async fn all_ok_exits_0_and_shows_the_token_only_as_length_and_fingerprint() {
    let world = World::start().await;
    let report = hostbeat::check::run(world.inputs()).await;
    assert_eq!(report.exit_status(), 0, "{}", report.render());
    let token = finding(&report, "config", "client_token: 32 bytes, fingerprint");
    assert!(
        token
            .summary
            .contains("environment variable HOSTBEAT_CLIENT_TOKEN")
    );
    finding(&report, "config", "server_url = http://127.0.0.1:");
    finding(&report, "dns", "127.0.0.1 resolves to 127.0.0.1");
    finding(&report, "tcp", "connected to 127.0.0.1:");
    finding(
        &report,
        "validate",
        "accepts the credential (client hostbeat",
    );
    finding(&report, "clock", "within");
    assert_no_token(&report);
}

#[tokio::test]
async fn an_env_file_from_windows_with_a_readable_mode_warns_with_positions_and_fixes() {
    let world = World::start().await;
    // A BOM, a quoted token and CRLF: hostbeat copes, but says so; and 0644.
    let file = format!("\u{feff}# written on Windows\r\nHOSTBEAT_CLIENT_TOKEN=\"{SECRET}\"\r\n");
    std::fs::write(world.env_file(), file).unwrap();
    std::fs::set_permissions(world.env_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let inputs = world.inputs().var("HOSTBEAT_CLIENT_TOKEN", "");
    let report = hostbeat::check::run(without_token_var(inputs)).await;
    assert_eq!(report.exit_status(), 2, "{}", report.render());
    let bom = finding(&report, "token", "byte order mark (bytes 1-3)");
    assert_eq!(bom.level, Level::Warn);
    assert!(bom.fix.as_deref().unwrap().starts_with("sed -i"));
    let cr = finding(&report, "token", "carriage return (byte 35 of the value)");
    assert_eq!(
        cr.fix.as_deref().unwrap(),
        format!("sed -i 's/\\r$//' {}", world.env_file().display())
    );
    finding(&report, "token", "quoted");
    let mode = finding(&report, "env_file", "mode 0644");
    assert_eq!(mode.level, Level::Warn);
    assert!(
        mode.meaning
            .as_deref()
            .unwrap()
            .contains("every user on this host can read the token")
    );
    assert!(mode.fix.as_deref().unwrap().contains("chmod 0640"));
    // The token still works: the validate call succeeds.
    finding(&report, "validate", "accepts the credential");
    assert_no_token(&report);
}

#[tokio::test]
async fn an_unmatched_quote_fails_at_its_byte() {
    let world = World::start().await;
    std::fs::write(
        world.env_file(),
        format!("HOSTBEAT_CLIENT_TOKEN=\"{SECRET}\n"),
    )
    .unwrap();
    std::fs::set_permissions(world.env_file(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let report = hostbeat::check::run(without_token_var(world.inputs())).await;
    assert_eq!(report.exit_status(), 1, "{}", report.render());
    let quote = finding(
        &report,
        "token",
        "an unmatched quote at byte 1 of the value",
    );
    assert_eq!(quote.level, Level::Fail);
    // And the control plane refuses the token with the quote in it.
    assert_eq!(finding(&report, "validate", "401").level, Level::Fail);
    assert_no_token(&report);
}

#[tokio::test]
async fn an_invalid_token_and_an_inactive_client_fail_in_the_servers_words() {
    let world = World::start().await;
    let wrong = "ct_NotTheRightToken-000000000";
    let report = hostbeat::check::run(world.inputs().var("HOSTBEAT_CLIENT_TOKEN", wrong)).await;
    assert_eq!(report.exit_status(), 1, "{}", report.render());
    let invalid = finding(&report, "validate", "401");
    assert!(
        invalid
            .meaning
            .as_deref()
            .unwrap()
            .contains("rotated on one side only")
    );
    assert!(
        invalid
            .fix
            .as_deref()
            .unwrap()
            .contains("systemctl reload hostbeat")
    );
    finding(&report, "http", "answers over http");

    world.plane.deactivate(CLIENT_ID);
    let report = hostbeat::check::run(world.inputs()).await;
    assert_eq!(report.exit_status(), 1, "{}", report.render());
    let inactive = finding(&report, "validate", "Client account is not active");
    assert!(inactive.meaning.as_deref().unwrap().contains("deactivated"));
    assert!(
        inactive
            .fix
            .as_deref()
            .unwrap()
            .contains("activate the client")
    );
    assert_no_token(&report);
}

#[tokio::test]
async fn a_closed_port_fails_tcp_and_http_with_the_error() {
    let world = World::start().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let inputs = world
        .inputs()
        .var("HOSTBEAT_SERVER_URL", format!("http://{closed}"));
    let report = hostbeat::check::run(inputs).await;
    assert_eq!(report.exit_status(), 1, "{}", report.render());
    let tcp = finding(&report, "tcp", "Connection refused");
    assert!(tcp.summary.contains(" ms)"), "{}", tcp.summary);
    assert_eq!(
        finding(&report, "http", "could not connect").level,
        Level::Fail
    );
}

#[tokio::test]
async fn a_skewed_clock_warns_with_the_offset() {
    let world = World::with(PlaneConfig {
        date_offset: 3600,
        ..PlaneConfig::default()
    })
    .await;
    let report = hostbeat::check::run(world.inputs()).await;
    assert_eq!(report.exit_status(), 2, "{}", report.render());
    let clock = finding(&report, "clock", "s behind the control plane's");
    assert_eq!(clock.level, Level::Warn);
    assert!(clock.fix.as_deref().unwrap().contains("timedatectl"));
}

/// The real binary: `hostbeat check --json` is JSON with the findings and the exit
/// status it exits with, and no token in anything it prints.
#[test]
fn the_binary_prints_json_and_exits_with_its_status() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let world = runtime.block_on(World::start());
    world.plane.deactivate(CLIENT_ID);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hostbeat"))
        .args(["check", "--json", "--config"])
        .arg(world.dir.path().join("hostbeat.toml"))
        .env_clear()
        .env("HOSTBEAT_SERVER_URL", world.url())
        .env("HOSTBEAT_CLIENT_TOKEN", SECRET)
        .env("HOSTBEAT_ENV_FILE", world.env_file())
        .env("HOSTBEAT_STATE_DIR", world.state_dir())
        .output()
        .unwrap();
    assert!(!contains(&output.stdout, SECRET) && !contains(&output.stderr, SECRET));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(json["exit_status"], 1);
    let inactive = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["area"] == "validate")
        .unwrap();
    assert_eq!(inactive["level"], "fail");
    assert!(
        inactive["fix"]
            .as_str()
            .unwrap()
            .contains("activate the client")
    );
}

/// The world's inputs with the token left to the env file.
fn without_token_var(inputs: hostbeat::ConfigInputs) -> hostbeat::ConfigInputs {
    inputs.without_var("HOSTBEAT_CLIENT_TOKEN")
}
