//! `hostbeat check`: each finding produced for real (a crafted env file, a control
//! plane that refuses, a closed port, a skewed clock, TLS servers with certificates
//! from an unknown CA, expired, for another name and about to expire), with its
//! line, its fix and the exit status; and the real binary's `--json`, scanned for the token.

use std::os::unix::fs::PermissionsExt;

use hostbeat::check::{Heartbeat, Level, Report};
use hostbeat_refplane::PlaneConfig;

use crate::support::{CLIENT_ID, SECRET, TunnelProxy, World, contains, tls};

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
    for (what, form) in crate::support::forms(SECRET) {
        assert!(!text.contains(&form), "{what} in:\n{text}");
    }
    assert_well_formed(report);
}

/// What scripts and people rely on in every report: a stable `area.what` code per
/// finding, each finding once, fixes that stand alone, and an area column that
/// never runs into the summary.
fn assert_well_formed(report: &Report) {
    let mut seen = std::collections::BTreeSet::new();
    for finding in &report.findings {
        let (area, what) = finding
            .code
            .split_once('.')
            .unwrap_or_else(|| panic!("code {:?} is not area.what", finding.code));
        assert_eq!(area, finding.area);
        assert!(
            !what.is_empty()
                && finding
                    .code
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.'),
            "{:?}",
            finding.code
        );
        assert!(
            seen.insert((finding.code.clone(), finding.summary.clone())),
            "reported twice: {finding:?}"
        );
        if let Some(fix) = &finding.fix {
            assert!(
                !fix.contains("above"),
                "a fix that does not stand alone: {fix}"
            );
        }
    }
    let rendered = report.render();
    let finding_lines = rendered
        .lines()
        .filter(|l| ["ok  ", "warn", "FAIL"].iter().any(|p| l.starts_with(p)));
    for (line, finding) in finding_lines.zip(&report.findings) {
        let after_label = &line[5..];
        assert!(
            after_label.starts_with(&format!("{} ", finding.area)),
            "{line:?}"
        );
    }
}

#[tokio::test]
async fn all_ok_exits_0_and_shows_the_token_only_as_length_and_fingerprint() {
    let world = World::start().await;
    let report = hostbeat::check::run(world.inputs(), Heartbeat::Skip).await;
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
async fn an_env_file_from_windows_is_read_as_run_reads_it_and_its_mode_warned_about() {
    let world = World::start().await;
    // A BOM, a quoted token and CRLF: hostbeat copes, but says so; and 0644.
    let file = format!("\u{feff}# written on Windows\r\nHOSTBEAT_CLIENT_TOKEN=\"{SECRET}\"\r\n");
    std::fs::write(world.env_file(), file).unwrap();
    std::fs::set_permissions(world.env_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let inputs = world.inputs().var("HOSTBEAT_CLIENT_TOKEN", "");
    let report = hostbeat::check::run(without_token_var(inputs), Heartbeat::Skip).await;
    assert_eq!(report.exit_status(), 2, "{}", report.render());
    // What hostbeat strips is said, not warned about (`run` copes, and warns of
    // nothing): the one warning is the mode, which `run` logs too.
    let clean = finding(&report, "token", "32 bytes, nothing inside it");
    assert_eq!(clean.level, Level::Ok);
    for said in [
        "byte order mark",
        "carriage return (byte 35 of the value",
        "the token is quoted",
    ] {
        assert!(
            clean.summary.contains(said),
            "{said:?} not in {}",
            clean.summary
        );
    }
    let mode = finding(
        &report,
        "env_file",
        "holds the client token and every user on this host can read it (mode 0644)",
    );
    assert_eq!(mode.level, Level::Warn);
    assert_eq!(mode.code, "env_file.token_world_readable");
    assert!(mode.fix.as_deref().unwrap().contains("chmod 0640"));
    let warnings: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.level == Level::Warn)
        .collect();
    assert_eq!(warnings.len(), 1, "{}", report.render());
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
    let report = hostbeat::check::run(without_token_var(world.inputs()), Heartbeat::Skip).await;
    assert_eq!(report.exit_status(), 1, "{}", report.render());
    // `run` refuses it (exit 78), and check says so once, with the position.
    let quote = finding(&report, "config", "a quote that is not matched at byte 1");
    assert_eq!(quote.level, Level::Fail);
    assert!(
        quote
            .fix
            .as_deref()
            .unwrap()
            .contains("quote the whole value")
    );
    assert!(
        report
            .findings
            .iter()
            .all(|f| f.area != "token" || f.level != Level::Fail),
        "{}",
        report.render()
    );
    assert_no_token(&report);
}

#[tokio::test]
async fn an_invalid_token_and_an_inactive_client_fail_in_the_servers_words() {
    let world = World::start().await;
    let wrong = "ct_NotTheRightToken-000000000";
    let report = hostbeat::check::run(
        world.inputs().var("HOSTBEAT_CLIENT_TOKEN", wrong),
        Heartbeat::Skip,
    )
    .await;
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
            .contains("systemctl restart hostbeat")
    );
    finding(&report, "http", "answers over http");

    world.plane.deactivate(CLIENT_ID);
    let report = hostbeat::check::run(world.inputs(), Heartbeat::Skip).await;
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
async fn a_closed_port_fails_tcp_once_with_the_error() {
    let world = World::start().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let inputs = world
        .inputs()
        .var("HOSTBEAT_SERVER_URL", format!("http://{closed}"));
    let report = hostbeat::check::run(inputs, Heartbeat::Skip).await;
    assert_eq!(report.exit_status(), 1, "{}", report.render());
    let tcp = finding(&report, "tcp", "connection refused");
    assert!(took_ends(&tcp.summary), "{}", tcp.summary);
    assert!(!tcp.summary.contains("os error"), "{}", tcp.summary);
    // The same failure is not said again by the HTTP step, which is skipped.
    assert!(
        report.findings.iter().all(|f| f.area != "http"),
        "{}",
        report.render()
    );
    assert_eq!(
        finding(&report, "validate", "not checked").level,
        Level::Warn
    );
}

#[tokio::test]
async fn a_skewed_clock_warns_with_the_offset() {
    let world = World::with(PlaneConfig {
        date_offset: 3600,
        ..PlaneConfig::default()
    })
    .await;
    let report = hostbeat::check::run(world.inputs(), Heartbeat::Skip).await;
    assert_eq!(report.exit_status(), 2, "{}", report.render());
    let clock = finding(&report, "clock", "s behind the control plane's");
    assert_eq!(clock.level, Level::Warn);
    assert!(clock.fix.as_deref().unwrap().contains("timedatectl"));
}

/// A TLS plane presenting a certificate for `names` from a private CA.
async fn tls_world(names: &[&str], validity: tls::Validity) -> (World, tls::Authority) {
    let authority = tls::Authority::new("hostbeat test CA");
    let world = World::with_tls(&authority.issue(names, validity)).await;
    (world, authority)
}

fn with_ca_file(world: &World, authority: &tls::Authority) -> hostbeat::ConfigInputs {
    let ca_file = world.write_ca(authority);
    world
        .inputs()
        .var("HOSTBEAT_CA_FILE", ca_file.to_str().unwrap())
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_fails_tls_until_ca_file_names_the_ca() {
    let (world, authority) = tls_world(&["127.0.0.1"], tls::Validity::Current).await;
    let report = hostbeat::check::run(world.inputs(), Heartbeat::Skip).await;
    assert_eq!(report.exit_status(), 1, "{}", report.render());
    let refused = finding(&report, "tls", "UnknownIssuer");
    assert_eq!(refused.level, Level::Fail);
    assert!(took_ends(&refused.summary), "{}", refused.summary);
    assert!(
        refused
            .meaning
            .as_deref()
            .unwrap()
            .contains("a CA this host does not trust")
    );
    assert!(refused.fix.as_deref().unwrap().contains("HOSTBEAT_CA_FILE"));

    let report = hostbeat::check::run(with_ca_file(&world, &authority), Heartbeat::Skip).await;
    assert_eq!(report.exit_status(), 0, "{}", report.render());
    let accepted = finding(
        &report,
        "tls",
        "verified against the system roots and ca_file",
    );
    assert_eq!(accepted.level, Level::Ok);
    assert!(
        accepted.summary.contains("CN=127.0.0.1")
            && accepted.summary.contains("CN=hostbeat test CA"),
        "{}",
        accepted.summary
    );
    assert!(
        accepted.summary.contains("(in 364 days)"),
        "{}",
        accepted.summary
    );
    finding(&report, "http", "answers over https");
    finding(&report, "validate", "accepts the credential");
}

#[tokio::test]
async fn an_expired_certificate_and_one_for_another_name_fail_each_with_its_fix() {
    let (world, authority) = tls_world(&["127.0.0.1"], tls::Validity::ExpiredDaysAgo(3)).await;
    let report = hostbeat::check::run(with_ca_file(&world, &authority), Heartbeat::Skip).await;
    assert_eq!(report.exit_status(), 1, "{}", report.render());
    let expired = finding(&report, "tls", "expired");
    assert!(expired.meaning.as_deref().unwrap().contains("has expired"));
    assert!(expired.fix.as_deref().unwrap().contains("renew"));

    let (world, authority) = tls_world(&["control.example.net"], tls::Validity::Current).await;
    let report = hostbeat::check::run(with_ca_file(&world, &authority), Heartbeat::Skip).await;
    assert_eq!(report.exit_status(), 1, "{}", report.render());
    let wrong_name = finding(&report, "tls", "not valid for name");
    assert!(
        wrong_name
            .meaning
            .as_deref()
            .unwrap()
            .contains("does not name the host in server_url")
    );
    assert!(
        wrong_name
            .fix
            .as_deref()
            .unwrap()
            .contains("subjectAltName")
    );
}

#[tokio::test]
async fn a_certificate_that_expires_within_two_weeks_warns() {
    let (world, authority) = tls_world(&["127.0.0.1"], tls::Validity::ExpiresInDays(5)).await;
    let report = hostbeat::check::run(with_ca_file(&world, &authority), Heartbeat::Skip).await;
    assert_eq!(report.exit_status(), 2, "{}", report.render());
    let soon = finding(&report, "tls", "in 4 days");
    assert_eq!(soon.level, Level::Warn);
    assert!(soon.fix.as_deref().unwrap().contains("renew"));
}

#[tokio::test]
async fn without_heartbeat_check_only_reads_and_writes_nothing() {
    let world = World::start().await;
    let report = hostbeat::check::run(world.exchange_inputs(), Heartbeat::Skip).await;
    assert_eq!(report.exit_status(), 0, "{}", report.render());
    let paths: Vec<String> = world.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/oauth/token", "/api/v1/client/validate"]);
    assert_eq!(world.plane.agent_count(), 0);
    assert_eq!(std::fs::read_dir(world.state_dir()).unwrap().count(), 0);
}

#[tokio::test]
async fn heartbeat_registers_and_sends_one_online_beat_with_the_daemons_id() {
    let world = World::start().await;
    let report = hostbeat::check::run(world.exchange_inputs(), Heartbeat::Send).await;
    assert_eq!(report.exit_status(), 0, "{}", report.render());
    let registered = finding(&report, "register", "idempotent");
    let beat = finding(
        &report,
        "heartbeat",
        "sent one heartbeat (status online, seq 1, uptime_s 0) for agent ",
    );
    assert!(beat.summary.contains("accepted"), "{}", beat.summary);
    let heartbeats = world.heartbeats();
    assert_eq!(heartbeats.len(), 1);
    assert_eq!(heartbeats[0].status(), "online");
    assert_eq!(heartbeats[0].seq(), 1);
    assert_eq!(heartbeats[0].body["uptime_s"], 0);
    assert!(registered.summary.contains(&heartbeats[0].agent_id));
    // Registration is by logical id: again, it is the same agent, not a second one.
    let again = hostbeat::check::run(world.exchange_inputs(), Heartbeat::Send).await;
    assert_eq!(again.exit_status(), 0, "{}", again.render());
    assert_eq!(world.plane.agent_count(), 1);
    assert_eq!(world.heartbeats()[1].agent_id, heartbeats[0].agent_id);
    // Nothing written on this host.
    assert_eq!(std::fs::read_dir(world.state_dir()).unwrap().count(), 0);
    assert_no_token(&report);
}

#[tokio::test]
async fn heartbeat_uses_the_daemons_agent_id_and_registers_again_when_it_is_forgotten() {
    let world = World::start().await;
    let state = world.state_dir().join("state.json");
    let content = "{\"agent_id\": \"ag-forgotten\"}\n";
    std::fs::write(&state, content).unwrap();
    let report = hostbeat::check::run(world.inputs(), Heartbeat::Send).await;
    assert_eq!(report.exit_status(), 0, "{}", report.render());
    finding(&report, "heartbeat", "does not know agent ag-forgotten");
    finding(&report, "register", "registered logical id");
    finding(&report, "heartbeat", "accepted");
    assert_eq!(world.heartbeats().len(), 1);
    // The daemon's file is the daemon's: untouched.
    assert_eq!(std::fs::read_to_string(&state).unwrap(), content);
}

#[tokio::test]
async fn heartbeat_is_not_sent_for_a_host_without_an_id_or_with_a_refused_credential() {
    let world = World::start().await;
    let inputs = world
        .inputs()
        .machine_id_file(world.dir.path().join("no-machine-id"));
    let report = hostbeat::check::run(inputs, Heartbeat::Send).await;
    assert_eq!(report.exit_status(), 2, "{}", report.render());
    let no_id = finding(
        &report,
        "heartbeat",
        "not sent: this host has no logical agent id",
    );
    assert!(
        no_id
            .fix
            .as_deref()
            .unwrap()
            .contains("systemd-machine-id-setup")
    );

    world.plane.deactivate(CLIENT_ID);
    let report = hostbeat::check::run(world.inputs(), Heartbeat::Send).await;
    assert_eq!(report.exit_status(), 1, "{}", report.render());
    finding(
        &report,
        "heartbeat",
        "not sent: the control plane did not accept the credential",
    );
    assert_eq!(world.plane.agent_count(), 0);
    assert!(world.heartbeats().is_empty());
}

/// Runs the real binary's `check --json` for `world`, with `env` added to a clean
/// environment; returns the JSON and the exit status, after scanning all it
/// printed for the token.
fn check_binary(world: &World, env: &[(&str, String)]) -> (serde_json::Value, i32) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hostbeat"))
        .args(["check", "--json", "--config"])
        .arg(world.dir.path().join("hostbeat.toml"))
        .env_clear()
        .env("HOSTBEAT_SERVER_URL", world.url())
        .env("HOSTBEAT_CLIENT_TOKEN", SECRET)
        .env("HOSTBEAT_ENV_FILE", world.env_file())
        .env("HOSTBEAT_STATE_DIR", world.state_dir())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(!contains(&output.stdout, SECRET) && !contains(&output.stderr, SECRET));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let status = output.status.code().unwrap();
    assert_eq!(json["exit_status"], status);
    (json, status)
}

/// The JSON finding of `area` whose summary contains `text`.
fn json_finding<'a>(json: &'a serde_json::Value, area: &str, text: &str) -> &'a serde_json::Value {
    json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["area"] == area && f["summary"].as_str().unwrap().contains(text))
        .unwrap_or_else(|| panic!("no {area} finding with {text:?} in {json:#}"))
}

/// A runtime for the plane of a test that runs the binary (which blocks).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// The real binary: `hostbeat check --json` is JSON with the findings and the exit
/// status it exits with, and no token in anything it prints.
#[test]
fn the_binary_prints_json_and_exits_with_its_status() {
    let runtime = runtime();
    let world = runtime.block_on(World::start());
    world.plane.deactivate(CLIENT_ID);
    let (json, status) = check_binary(&world, &[]);
    assert_eq!(status, 1);
    let inactive = json_finding(&json, "validate", "");
    assert_eq!(inactive["level"], "fail");
    // A code a script can match on, whatever the words say.
    assert_eq!(inactive["code"], "validate.client_inactive");
    assert!(
        inactive["fix"]
            .as_str()
            .unwrap()
            .contains("activate the client")
    );
}

/// The system's roots are what OpenSSL would read: `SSL_CERT_FILE` (set in the
/// unit's environment) replaces the distribution's bundle, so a private CA placed
/// there is trusted without `ca_file`; a store with no root at all, and no
/// `ca_file`, is refused by name with the fix.
#[test]
fn ssl_cert_file_replaces_the_system_roots_and_no_roots_at_all_is_named() {
    let runtime = runtime();
    let (world, authority) = runtime.block_on(tls_world(&["127.0.0.1"], tls::Validity::Current));
    let bundle = world.write_ca(&authority);

    let (json, status) = check_binary(&world, &[("SSL_CERT_FILE", bundle.display().to_string())]);
    assert_eq!(status, 0, "{json:#}");
    json_finding(&json, "tls", "verified against the system roots");

    let empty = world.dir.path().join("no-roots.pem");
    std::fs::write(&empty, "").unwrap();
    let (json, status) = check_binary(&world, &[("SSL_CERT_FILE", empty.display().to_string())]);
    assert_ne!(status, 0, "{json:#}");
    let refused = json_finding(&json, "http", "no certificate authority to trust");
    assert!(
        refused
            .to_string()
            .contains("no-roots.pem, and ca_file is not set"),
        "{refused:#}"
    );
    assert!(
        refused.to_string().contains("ca-certificates"),
        "{refused:#}"
    );
}

/// The proxy from the environment, as reqwest applies it: DNS and TCP go to the
/// proxy, the calls through it, and NO_PROXY sends them direct again. The plane
/// itself is the proxy (it serves absolute-form requests), and the server's own
/// address is a closed port: only the proxy can make the calls succeed.
#[test]
fn a_proxy_in_the_environment_is_checked_and_used_and_no_proxy_bypasses_it() {
    let runtime = runtime();
    let authority = tls::Authority::new("hostbeat test CA");
    let world = runtime.block_on(World::with_tls(
        &authority.issue(&["plane.test"], tls::Validity::Current),
    ));
    let proxy = runtime.block_on(TunnelProxy::start(world.addr));
    let ca_file = world.write_ca(&authority).display().to_string();
    // A name that no resolver here knows: only the proxy can reach it.
    let server = format!("https://plane.test:{}", world.addr.port());
    let proxy_url = format!("http://user:pa55word@{}", proxy.addr);
    let (json, status) = check_binary(
        &world,
        &[
            ("HOSTBEAT_SERVER_URL", server.clone()),
            ("HOSTBEAT_CA_FILE", ca_file.clone()),
            ("HTTPS_PROXY", proxy_url.clone()),
        ],
    );
    assert_eq!(status, 0, "{json:#}");
    json_finding(
        &json,
        "proxy",
        &format!("HTTPS_PROXY=http://user:****@{}", proxy.addr),
    );
    json_finding(
        &json,
        "proxy",
        &format!(
            "{server}/ is reached through the proxy http://{}/",
            proxy.addr
        ),
    );
    json_finding(&json, "tcp", &format!("connected to {}", proxy.addr));
    json_finding(&json, "validate", "accepts the credential");
    assert!(!json.to_string().contains("pa55word"), "{json:#}");
    assert_eq!(world.requests_to("validate").len(), 1);
    let tunnels = proxy.requests();
    assert!(!tunnels.is_empty());
    for line in &tunnels {
        assert!(
            line.starts_with(&format!("CONNECT plane.test:{} ", world.addr.port())),
            "{line}"
        );
    }

    let (json, status) = check_binary(
        &world,
        &[
            ("HOSTBEAT_SERVER_URL", server),
            ("HOSTBEAT_CA_FILE", ca_file),
            ("HTTPS_PROXY", proxy_url),
            ("NO_PROXY", "plane.test".to_owned()),
        ],
    );
    assert_eq!(status, 1, "{json:#}");
    json_finding(&json, "dns", "plane.test");
    assert_eq!(world.requests_to("validate").len(), 1);
    assert_eq!(proxy.requests().len(), tunnels.len());
}

/// A proxy's loopback is not this host's, and a plain http control plane is
/// allowed on loopback only because the token never leaves the host: `check`, like
/// the daemon (binary.rs), reaches a loopback plane directly whatever the proxy
/// variables say, and says so.
#[test]
fn a_loopback_control_plane_is_never_reached_through_a_proxy() {
    let runtime = runtime();
    let world = runtime.block_on(World::start());
    let proxy = runtime.block_on(TunnelProxy::start(world.addr));
    let proxy_url = format!("http://{}", proxy.addr);
    let (json, status) = check_binary(
        &world,
        &[
            ("HTTP_PROXY", proxy_url.clone()),
            ("HTTPS_PROXY", proxy_url.clone()),
            ("ALL_PROXY", proxy_url),
        ],
    );
    assert_eq!(status, 0, "{json:#}");
    json_finding(
        &json,
        "proxy",
        &format!("{}/ is on loopback: reached directly", world.url()),
    );
    json_finding(&json, "tcp", &format!("connected to {}", world.addr));
    json_finding(&json, "validate", "accepts the credential");
    assert_eq!(proxy.requests(), Vec::<String>::new());
}

/// Whether `summary` ends with the time the step took, in parentheses, as a
/// duration is written ("(3ms)", "(1s 20ms)").
fn took_ends(summary: &str) -> bool {
    summary
        .rsplit_once('(')
        .and_then(|(_, took)| took.strip_suffix(')'))
        .is_some_and(|took| {
            took.split(' ').all(|part| {
                let unit = part.trim_start_matches(|c: char| c.is_ascii_digit());
                unit.len() < part.len() && matches!(unit, "ms" | "s" | "us" | "ns" | "m")
            })
        })
}

/// The world's inputs with the token left to the env file.
fn without_token_var(inputs: hostbeat::ConfigInputs) -> hostbeat::ConfigInputs {
    inputs.without_var("HOSTBEAT_CLIENT_TOKEN")
}

/// Beside the service, `check` loads with the unit's environment, as `hostbeat run`
/// under systemd does: it flags a token set by `Environment=`, a key the drop-in and
/// the env file both set, and a variable of the shell that the service never sees.
#[tokio::test]
async fn beside_the_service_check_judges_with_the_units_environment() {
    let world = World::start().await;
    std::fs::write(world.env_file(), "HOSTBEAT_HEARTBEAT_INTERVAL=7s\n").unwrap();
    let unit: Vec<(String, String)> = [
        ("HOSTBEAT_SERVER_URL", world.url()),
        (
            "HOSTBEAT_STATE_DIR",
            world.state_dir().display().to_string(),
        ),
        ("HOSTBEAT_ENV_FILE", world.env_file().display().to_string()),
        ("HOSTBEAT_CLOUD", "off".to_owned()),
        ("HOSTBEAT_HEARTBEAT_INTERVAL", "2s".to_owned()),
        ("HOSTBEAT_CLIENT_TOKEN", SECRET.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let shell = world.inputs().var("HOSTBEAT_LOG_LEVEL", "debug");
    let service = hostbeat::check::unit::Service {
        environment: unit,
        ..Default::default()
    };
    let report = hostbeat::check::run_as_service(shell, service, Heartbeat::Skip).await;
    assert_eq!(report.exit_status(), 2, "{}", report.render());
    finding(&report, "config", "environment of hostbeat.service:");
    let token = finding(
        &report,
        "config",
        "HOSTBEAT_CLIENT_TOKEN is set by an Environment= line",
    );
    assert_eq!(token.level, Level::Warn);
    assert!(
        token
            .fix
            .as_deref()
            .unwrap()
            .contains("LoadCredential=client-token:")
    );
    let interval = finding(&report, "config", "heartbeat_interval is set in 2 places");
    assert!(
        interval
            .summary
            .ends_with("in use: environment variable HOSTBEAT_HEARTBEAT_INTERVAL")
    );
    let unseen = finding(
        &report,
        "config",
        "HOSTBEAT_LOG_LEVEL is set in this shell, not in the unit",
    );
    assert!(
        unseen
            .fix
            .as_deref()
            .unwrap()
            .contains("Environment=HOSTBEAT_LOG_LEVEL=")
    );
    finding(&report, "validate", "accepts the credential");
    assert_no_token(&report);
}

/// The cloud as `run` finds it: the configured cloud's identity, or for `auto` what
/// DMI names; a host whose DMI names no cloud gets no metadata request from
/// `check` either.
#[tokio::test]
async fn check_says_which_cloud_from_which_dmi_fields_and_the_identity() {
    use hostbeat::cloud::Cloud;
    use hostbeat_refplane::gcp::MockGcp;
    let world = World::start().await;
    let gcp = MockGcp::new();
    let addr = gcp.start().await.unwrap();
    let report =
        hostbeat::check::run(world.cloud_inputs("gcp", Cloud::Gcp, addr), Heartbeat::Skip).await;
    assert_eq!(report.exit_status(), 0, "{}", report.render());
    finding(&report, "cloud", "cloud = gcp");
    let identity = finding(&report, "cloud", "Google Cloud metadata service at");
    assert!(
        identity
            .summary
            .contains(hostbeat_refplane::gcp::INSTANCE_ID)
            && identity
                .summary
                .contains("e2-standard-4, europe-west4-a, spot"),
        "{}",
        identity.summary
    );

    let asked = gcp.requests().len();
    let dmi = world.write_dmi(&[("sys_vendor", "LENOVO")]);
    let inputs = world
        .cloud_inputs("auto", Cloud::Gcp, addr)
        .var("HOSTBEAT_DMI_DIR", dmi.to_str().unwrap());
    let report = hostbeat::check::run(inputs, Heartbeat::Skip).await;
    finding(
        &report,
        "cloud",
        "names no cloud hostbeat knows (sys_vendor=\"LENOVO\"",
    );
    assert_eq!(gcp.requests().len(), asked);

    let dmi = world.write_dmi(&[("sys_vendor", "Google")]);
    gcp.set_behaviour(hostbeat_refplane::gcp::Behaviour::NoFlavor);
    let inputs = world
        .cloud_inputs("auto", Cloud::Gcp, addr)
        .var("HOSTBEAT_DMI_DIR", dmi.to_str().unwrap());
    let report = hostbeat::check::run(inputs, Heartbeat::Skip).await;
    let detected = finding(&report, "cloud", "DMI says sys_vendor=\"Google\"");
    assert!(
        detected.summary.contains("names Google Cloud"),
        "{}",
        detected.summary
    );
    let absent = finding(&report, "cloud", "did not answer as it should");
    assert_eq!(absent.level, Level::Warn, "{}", report.render());
    assert!(
        absent.summary.contains("Metadata-Flavor: Google"),
        "{}",
        absent.summary
    );
}

/// A container on EC2 with the default hop limit: the token's PUT gets no answer
/// though the address accepts connections. `check` names it and the fix.
#[tokio::test]
async fn check_names_the_ec2_hop_limit_symptom_and_its_fix() {
    let world = World::start().await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let report = hostbeat::check::run(world.imds_inputs("on", addr), Heartbeat::Skip).await;
    assert_eq!(report.exit_status(), 1, "{}", report.render());
    let symptom = finding(
        &report,
        "cloud",
        "accepts connections, but its session-token PUT",
    );
    assert_eq!(symptom.code, "cloud.ec2_hop_limit");
    assert!(
        symptom
            .fix
            .as_deref()
            .unwrap()
            .contains("--http-put-response-hop-limit 2"),
        "{symptom:?}"
    );
}
