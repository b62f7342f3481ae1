//! What `check` predicts, `run` does: the real binary's two commands on the same
//! broken inputs reach the same verdict (fatal, works with a warning, clean) and say
//! the same words about it.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use hostbeat_refplane::PlaneConfig;

use crate::binary::{Host, Process, eventually, plane};
use crate::support::SECRET;

/// What both commands conclude.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// `run` exits 78; `check` fails (exit status 1).
    Fatal,
    /// `run` heartbeats and logs a warning at start; `check` warns (exit status 2).
    Warns,
    /// `run` heartbeats; `check` finds nothing (exit status 0).
    Clean,
}

/// One misconfiguration: its name, how to lay it out on a host (given the host and
/// the control plane's URL, returning the variables), who runs the commands, the
/// verdict, and the words both must say.
struct Case {
    name: &'static str,
    setup: fn(&Host, &str) -> Vec<(String, String)>,
    as_nobody: bool,
    verdict: Verdict,
    says: &'static str,
}

/// The token in the env file, as the package keeps it (0640).
fn token_in_env_file(host: &Host) {
    std::fs::write(host.env_file(), format!("HOSTBEAT_CLIENT_TOKEN={SECRET}\n")).unwrap();
    std::fs::set_permissions(host.env_file(), std::fs::Permissions::from_mode(0o640)).unwrap();
}

fn server(url: &str) -> (String, String) {
    ("HOSTBEAT_SERVER_URL".to_owned(), url.to_owned())
}

const CASES: &[Case] = &[
    Case {
        name: "no token",
        setup: |_, url| vec![server(url)],
        as_nobody: false,
        verdict: Verdict::Fatal,
        says: "no client token is configured",
    },
    Case {
        name: "the required key misspelt",
        setup: |host, url| {
            token_in_env_file(host);
            vec![("HOSTBEAT_SERVER_ULR".to_owned(), url.to_owned())]
        },
        as_nobody: false,
        verdict: Verdict::Fatal,
        says: "did you mean HOSTBEAT_SERVER_URL?",
    },
    Case {
        name: "an env file the service's user cannot read",
        setup: |host, url| {
            token_in_env_file(host);
            std::fs::set_permissions(host.env_file(), std::fs::Permissions::from_mode(0o600))
                .unwrap();
            for (path, mode) in [
                (host.dir.path().to_owned(), 0o755),
                (host.dir.path().join("hostbeat.toml"), 0o644),
            ] {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            vec![server(url)]
        },
        as_nobody: true,
        verdict: Verdict::Fatal,
        says: "Permission denied",
    },
    Case {
        name: "a missing env file named by HOSTBEAT_ENV_FILE",
        setup: |host, url| {
            vec![
                server(url),
                ("HOSTBEAT_CLIENT_TOKEN".to_owned(), SECRET.to_owned()),
                (
                    "HOSTBEAT_ENV_FILE".to_owned(),
                    host.dir
                        .path()
                        .join("hostbeat.env.new")
                        .display()
                        .to_string(),
                ),
            ]
        },
        as_nobody: false,
        verdict: Verdict::Warns,
        says: "hostbeat.env.new does not exist",
    },
    Case {
        name: "a token file every user can read",
        setup: |host, url| {
            let token = host.dir.path().join("client-token");
            std::fs::write(&token, SECRET).unwrap();
            std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
            vec![
                server(url),
                (
                    "HOSTBEAT_CLIENT_TOKEN_FILE".to_owned(),
                    token.display().to_string(),
                ),
            ]
        },
        as_nobody: false,
        verdict: Verdict::Warns,
        says: "holds the client token and every user on this host can read it (mode 0644)",
    },
    Case {
        name: "plain http off loopback",
        setup: |host, _| {
            token_in_env_file(host);
            vec![server("http://cp.example.com")]
        },
        as_nobody: false,
        verdict: Verdict::Fatal,
        says: "would send the token in clear text",
    },
    Case {
        name: "a bad duration",
        setup: |host, url| {
            token_in_env_file(host);
            vec![
                server(url),
                (
                    "HOSTBEAT_HEARTBEAT_INTERVAL".to_owned(),
                    "5 minutes-ish".to_owned(),
                ),
            ]
        },
        as_nobody: false,
        verdict: Verdict::Fatal,
        says: "a number and a unit (ms, s, m, h, d)",
    },
    Case {
        name: "a key set in the env file and the environment, differently",
        setup: |host, url| {
            token_in_env_file(host);
            std::fs::write(
                host.env_file(),
                format!("HOSTBEAT_CLIENT_TOKEN={SECRET}\nHOSTBEAT_HEARTBEAT_INTERVAL=7s\n"),
            )
            .unwrap();
            vec![
                server(url),
                ("HOSTBEAT_HEARTBEAT_INTERVAL".to_owned(), "2s".to_owned()),
            ]
        },
        as_nobody: false,
        verdict: Verdict::Warns,
        says: "heartbeat_interval is set in 2 places",
    },
    Case {
        name: "a stray quote in the token",
        setup: |host, url| {
            std::fs::write(
                host.env_file(),
                format!("HOSTBEAT_CLIENT_TOKEN=\"{SECRET}\n"),
            )
            .unwrap();
            vec![server(url)]
        },
        as_nobody: false,
        verdict: Verdict::Fatal,
        says: "a quote that is not matched at byte 1",
    },
    Case {
        name: "a relative path",
        setup: |host, url| {
            token_in_env_file(host);
            vec![
                server(url),
                ("HOSTBEAT_CA_FILE".to_owned(), "ca.pem".to_owned()),
            ]
        },
        as_nobody: false,
        verdict: Verdict::Fatal,
        says: "is a relative path",
    },
    Case {
        name: "a proxy left in the env file by an older package",
        setup: |host, url| {
            std::fs::write(
                host.env_file(),
                format!("HOSTBEAT_CLIENT_TOKEN={SECRET}\nHTTPS_PROXY=http://127.0.0.1:9\n"),
            )
            .unwrap();
            vec![server(url)]
        },
        as_nobody: false,
        verdict: Verdict::Warns,
        says: "HTTPS_PROXY in",
    },
    Case {
        name: "a drop-in clearing exchange mode with an empty value",
        setup: |host, url| {
            std::fs::write(
                host.env_file(),
                format!("HOSTBEAT_CLIENT_TOKEN={SECRET}\nHOSTBEAT_TOKEN_URL={url}/oauth/token\n"),
            )
            .unwrap();
            vec![
                server(url),
                ("HOSTBEAT_TOKEN_URL".to_owned(), String::new()),
            ]
        },
        as_nobody: false,
        verdict: Verdict::Clean,
        says: "static token",
    },
    Case {
        name: "a setting in lower case in the env file",
        setup: |host, url| {
            std::fs::write(
                host.env_file(),
                format!("HOSTBEAT_CLIENT_TOKEN={SECRET}\nhostbeat_heartbeat_interval=15s\n"),
            )
            .unwrap();
            vec![server(url)]
        },
        as_nobody: false,
        verdict: Verdict::Warns,
        says: "rename it to HOSTBEAT_HEARTBEAT_INTERVAL",
    },
    Case {
        name: "an empty variable clearing the server",
        setup: |host, url| {
            std::fs::write(
                host.env_file(),
                format!("HOSTBEAT_CLIENT_TOKEN={SECRET}\nHOSTBEAT_SERVER_URL={url}\n"),
            )
            .unwrap();
            vec![("HOSTBEAT_SERVER_URL".to_owned(), String::new())]
        },
        as_nobody: false,
        verdict: Verdict::Fatal,
        says: "is empty, which clears the value of HOSTBEAT_SERVER_URL in",
    },
    Case {
        name: "a FIFO for the env file",
        setup: |host, url| {
            let fifo = host.dir.path().join("fifo.env");
            let made = std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap();
            assert!(made.success());
            vec![
                server(url),
                ("HOSTBEAT_CLIENT_TOKEN".to_owned(), SECRET.to_owned()),
                ("HOSTBEAT_ENV_FILE".to_owned(), fifo.display().to_string()),
            ]
        },
        as_nobody: false,
        verdict: Verdict::Fatal,
        says: "is not a regular file",
    },
    Case {
        name: "a quoted token with a comment after it",
        setup: |host, url| {
            std::fs::write(
                host.env_file(),
                format!("HOSTBEAT_CLIENT_TOKEN=\"{SECRET}\" # issued 2026-11\n"),
            )
            .unwrap();
            vec![server(url)]
        },
        as_nobody: false,
        verdict: Verdict::Clean,
        says: "static token",
    },
    Case {
        name: "as the package keeps it",
        setup: |host, url| {
            token_in_env_file(host);
            vec![server(url)]
        },
        as_nobody: false,
        verdict: Verdict::Clean,
        says: "static token",
    },
];

/// Where `setup` writes the control plane's URL, which is known only once each
/// command's own plane runs.
const PLANE_URL: &str = "http://127.0.0.1:9";

/// `vars` with the placeholder replaced by `url`.
fn at<'a>(vars: &[(&'a str, &'a str)], url: &'a str) -> Vec<(&'a str, &'a str)> {
    vars.iter()
        .map(|&(k, v)| (k, if v == PLANE_URL { url } else { v }))
        .collect()
}

const NOBODY: &[&str] = &[
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
];

/// What `hostbeat run` did: exited 78 at once, or heartbeat (then it is stopped).
async fn run_verdict(case: &Case, host: &Host, vars: &[(&str, &str)]) -> (Verdict, String) {
    let (plane, url) = plane(PlaneConfig::default()).await;
    let vars = at(vars, &url);
    let wrapper = if case.as_nobody { NOBODY } else { &[] };
    let mut agent = Process::spawn(host.command_in(wrapper, &vars));
    let mut exited = false;
    let beat = eventually(Duration::from_secs(10), || {
        exited = exited || agent.exited();
        exited || !plane.heartbeats().is_empty()
    })
    .await;
    if !beat || exited {
        let status = agent.wait(Duration::from_secs(10)).await;
        assert_eq!(status.code(), Some(78), "{}: {}", case.name, agent.text());
        return (Verdict::Fatal, agent.text());
    }
    agent.signal("TERM");
    agent.wait(Duration::from_secs(10)).await;
    let text = agent.text();
    let verdict = if text.contains("config_warning") {
        Verdict::Warns
    } else {
        Verdict::Clean
    };
    (verdict, text)
}

/// What `hostbeat check --json` concluded, by its exit status, and its findings.
async fn check_verdict(case: &Case, host: &Host, vars: &[(&str, &str)]) -> (Verdict, String) {
    let (_plane, url) = plane(PlaneConfig::default()).await;
    let vars = at(vars, &url);
    let wrapper = if case.as_nobody { NOBODY } else { &[] };
    let output = host
        .subcommand_in(wrapper, &["check", "--json"], &vars)
        .output()
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: {}",
            case.name,
            String::from_utf8_lossy(&output.stdout)
        )
    });
    let verdict = match output.status.code() {
        Some(1) => Verdict::Fatal,
        Some(2) => Verdict::Warns,
        Some(0) => Verdict::Clean,
        other => panic!("{}: check exited {other:?}", case.name),
    };
    (verdict, json.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_and_check_agree_on_every_misconfiguration() {
    for case in CASES {
        let host = Host::new("# as packaged\n");
        std::fs::set_permissions(host.env_file(), std::fs::Permissions::from_mode(0o640)).unwrap();
        let vars = (case.setup)(&host, PLANE_URL);
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (ran, run_text) = run_verdict(case, &host, &vars).await;
        let (checked, check_text) = check_verdict(case, &host, &vars).await;
        assert_eq!(ran, case.verdict, "{}: run said:\n{run_text}", case.name);
        assert_eq!(
            checked, case.verdict,
            "{}: check said:\n{check_text}",
            case.name
        );
        assert!(
            run_text.contains(case.says),
            "{}: run said:\n{run_text}",
            case.name
        );
        assert!(
            check_text.contains(case.says),
            "{}: check said:\n{check_text}",
            case.name
        );
        assert!(
            !run_text.contains(SECRET) && !check_text.contains(SECRET),
            "{}",
            case.name
        );
    }
}
