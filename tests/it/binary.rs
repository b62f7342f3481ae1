//! The real `hostbeat` binary, in real time: the command line, exit codes, signals,
//! and a scan of everything it writes for the token. Every wait is bounded.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hostbeat_refplane::{ControlPlane, Fault, PlaneConfig, Scope};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use crate::support::{CLIENT_ID, ROTATED, Row, SECRET, contains, files_under};

const BIN: &str = env!("CARGO_BIN_EXE_hostbeat");

/// A private directory with an empty config file, an env file and a state dir.
pub struct Host {
    pub dir: tempfile::TempDir,
}

impl Host {
    pub fn new(env_file: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hostbeat.toml"), "").unwrap();
        std::fs::write(dir.path().join("hostbeat.env"), env_file).unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        Self { dir }
    }

    /// The env file this host's agent reads.
    pub fn env_file(&self) -> std::path::PathBuf {
        self.dir.path().join("hostbeat.env")
    }

    /// `hostbeat run` with nothing of the test's environment but PATH.
    pub fn command(&self, vars: &[(&str, &str)]) -> Command {
        self.command_in(&[], vars)
    }

    /// The same, started through `wrapper` (e.g. `nsenter -t PID -m`).
    pub fn command_in(&self, wrapper: &[&str], vars: &[(&str, &str)]) -> Command {
        self.subcommand_in(wrapper, &["run"], vars)
    }

    /// `hostbeat ARGS` (e.g. `check --json`) through `wrapper`, on this host's files
    /// and with nothing of the test's environment but PATH.
    pub fn subcommand_in(&self, wrapper: &[&str], args: &[&str], vars: &[(&str, &str)]) -> Command {
        self.program_in(wrapper, std::path::Path::new(BIN), args, vars)
    }

    /// `program ARGS` (the hostbeat binary, maybe a renamed copy) through `wrapper`.
    pub fn program_in(
        &self,
        wrapper: &[&str],
        program: &std::path::Path,
        args: &[&str],
        vars: &[(&str, &str)],
    ) -> Command {
        let mut command = match wrapper.split_first() {
            Some((wrapper, wrapper_args)) => {
                let mut command = Command::new(wrapper);
                command.args(wrapper_args).arg(program);
                command
            }
            None => Command::new(program),
        };
        command
            .args(args)
            .arg("--config")
            .arg(self.dir.path().join("hostbeat.toml"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOSTBEAT_ENV_FILE", self.dir.path().join("hostbeat.env"))
            .env("HOSTBEAT_STATE_DIR", self.dir.path().join("state"))
            // No cloud, and none reachable off loopback if a test turns one on
            // without pointing it at a mock (as `World::inputs` does).
            .env("HOSTBEAT_CLOUD", "off")
            .env("HOSTBEAT_EC2_METADATA_URL", crate::support::CLOSED_PORT)
            .env("HOSTBEAT_GCP_METADATA_URL", crate::support::CLOSED_PORT)
            .env("HOSTBEAT_AZURE_METADATA_URL", crate::support::CLOSED_PORT)
            .env("HOSTBEAT_DMI_DIR", self.dir.path().join("no-dmi"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in vars {
            command.env(key, value);
        }
        command
    }
}

/// A running agent process and what it has written so far.
pub struct Process {
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Process {
    pub fn spawn(command: Command) -> Self {
        Self::spawn_reading(command, true)
    }

    /// For a command whose stderr the caller set up (only stdout is read here).
    pub fn spawn_with_stderr(command: Command) -> Self {
        Self::spawn_reading(command, false)
    }

    fn spawn_reading(mut command: Command, read_stderr: bool) -> Self {
        let mut child = command.spawn().expect("spawn hostbeat");
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        let stderr = read_stderr.then(|| child.stderr.take().unwrap());
        for mut stream in [
            stderr.map(|e| Box::new(e) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            Some(Box::new(child.stdout.take().unwrap())),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            readers.push(tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    output.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            }));
        }
        Self {
            child,
            output,
            readers,
        }
    }

    /// Whether it has exited (without waiting).
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit, and for everything it wrote to be read.
    pub async fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("exited in time")
            .unwrap();
        for reader in self.readers.drain(..) {
            tokio::time::timeout(limit, reader)
                .await
                .expect("output closed")
                .unwrap();
        }
        status
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }
}

pub async fn plane(config: PlaneConfig) -> (ControlPlane, String) {
    let plane = ControlPlane::new(config);
    plane.add_client(CLIENT_ID, SECRET);
    let addr = plane.start().await.unwrap();
    (plane, format!("http://{addr}"))
}

/// SIGTERM, then a clean exit after the `offline` heartbeat.
pub async fn stop_with_goodbye(agent: &mut Process, plane: &ControlPlane) {
    agent.signal("TERM");
    let status = agent.wait(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}\n{}", agent.text());
    assert_eq!(plane.heartbeats().last().unwrap().status(), "offline");
}

/// Rotates the token on the control plane and in the env file, and waits until the
/// running agent heartbeats with the new one.
pub async fn rotate_and_wait(plane: &ControlPlane, host: &Host, agent: &Process) {
    plane.rotate(CLIENT_ID, ROTATED);
    std::fs::write(
        host.env_file(),
        format!("HOSTBEAT_CLIENT_TOKEN={ROTATED}\n"),
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || plane
            .heartbeats()
            .iter()
            .any(|h| h.bearer == ROTATED))
        .await,
        "{}",
        agent.text()
    );
}

/// Polls every 20 ms for at most `limit` of real time.
pub async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

#[test]
fn version_and_help() {
    let version = std::process::Command::new(BIN)
        .arg("--version")
        .output()
        .unwrap();
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("hostbeat {}", env!("CARGO_PKG_VERSION"))
    );
    let help = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("run") && help.contains("--config"), "{help}");
}

#[tokio::test]
async fn a_configuration_that_cannot_work_exits_78_with_one_clear_line() {
    /// (env file, environment, what the one line must say)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case<'_>] = &[
        (
            "",
            &[("HOSTBEAT_CLIENT_TOKEN", SECRET)],
            &["server_url", "fix: set HOSTBEAT_SERVER_URL"],
        ),
        (
            "HOSTBEAT_SERVER_URL=https://cp.example.com\n",
            &[],
            &["client_token", "no client token", "LoadCredential"],
        ),
        (
            "HOSTBEAT_SERVER_URL=https://cp.example.com\nHOSTBEAT_CLIENT_TOKEN=ct_abc\tdefghij\n",
            &[],
            &["a tab at byte 7 (of 14)", "hostbeat.env"],
        ),
        (
            "",
            &[
                ("HOSTBEAT_SERVER_URL", "http://cp.example.com"),
                ("HOSTBEAT_CLIENT_TOKEN", SECRET),
            ],
            &["clear text", "HOSTBEAT_ALLOW_INSECURE_HTTP=true"],
        ),
        (
            "",
            &[
                ("HOSTBEAT_SERVER_URL", "https://cp.example.com"),
                ("HOSTBEAT_CLIENT_TOKEN", SECRET),
                ("HOSTBEAT_BACKOFF_CAP", "5 minutes-ish"),
            ],
            &[
                "backoff_cap (from environment variable HOSTBEAT_BACKOFF_CAP)",
                "fix: write it like 30s",
            ],
        ),
        (
            "",
            &[
                ("HOSTBEAT_SERVER_URL", "https://cp.example.com"),
                ("HOSTBEAT_CLIENT_TOKEN", SECRET),
                ("HOSTBEAT_CA_FILE", "/nonexistent/ca.pem"),
            ],
            &[
                "ca_file (from /nonexistent/ca.pem): cannot read it",
                "fix: point ca_file at a PEM file",
            ],
        ),
    ];
    for (env_file, vars, expected) in cases {
        let host = Host::new(env_file);
        let output = host.command(vars).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("hostbeat: configuration error: "),
            "{stderr}"
        );
        for needle in *expected {
            assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
        }
        assert!(
            !stderr.contains(SECRET) && !stderr.contains("ct_abc"),
            "{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_reloads_and_stops_with_a_goodbye_and_writes_the_token_nowhere() {
    let (plane, url) = plane(PlaneConfig {
        token_lifetime: Duration::from_secs(4),
        ..PlaneConfig::default()
    })
    .await;
    // A token as an editor on another system leaves it: quotes and CRLF.
    let host = Host::new(&format!("HOSTBEAT_CLIENT_TOKEN=\"{SECRET}\"\r\n"));
    let mut agent = Process::spawn(host.command(&[
        ("HOSTBEAT_SERVER_URL", &url),
        ("HOSTBEAT_TOKEN_URL", &format!("{url}/oauth/token")),
        ("HOSTBEAT_HEARTBEAT_INTERVAL", "1s"),
        ("HOSTBEAT_LOG_LEVEL", "trace"),
    ]));
    assert!(
        eventually(Duration::from_secs(20), || plane.heartbeats().len() >= 3).await,
        "{}",
        agent.text()
    );
    // SIGHUP re-reads the token and does not stop the agent.
    agent.signal("HUP");
    // The 4 s access token is refreshed while it runs.
    assert!(
        eventually(Duration::from_secs(20), || plane.requests_to_token() >= 2).await,
        "{}",
        agent.text()
    );
    // The client is disabled for a while: auth failures are logged.
    plane.deactivate(CLIENT_ID);
    plane.expire_tokens();
    assert!(
        eventually(Duration::from_secs(20), || agent
            .text()
            .contains("auth_failure"))
        .await,
        "{}",
        agent.text()
    );
    plane.activate(CLIENT_ID);
    assert!(
        eventually(Duration::from_secs(30), || agent
            .text()
            .contains("recovered"))
        .await,
        "{}",
        agent.text()
    );
    stop_with_goodbye(&mut agent, &plane).await;

    let output = agent.text();
    for line in [
        "registered with",
        "first heartbeat accepted",
        "access token obtained",
        "told this host is offline",
    ] {
        assert!(output.contains(line), "{line:?} not in:\n{output}");
    }
    // Neither the client token nor any access token appears in anything it wrote.
    let mut secrets = vec![SECRET.to_owned()];
    secrets.extend(plane.heartbeats().into_iter().map(|h| h.bearer));
    let mut written = vec![("output".into(), output.into_bytes())];
    written.extend(files_under(&host.dir.path().join("state")));
    for (path, bytes) in &written {
        for secret in &secrets {
            assert!(
                !contains(bytes, secret),
                "a token appears in {}",
                std::path::Path::new(path).display()
            );
        }
    }
}

/// Plain http is allowed to a loopback control plane only because the token then
/// never leaves the host. With every proxy variable pointing at a proxy, the agent
/// still reaches its loopback plane directly: not one connection to the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_plane_is_reached_directly_whatever_the_proxy_variables_say() {
    let (plane, url) = plane(PlaneConfig::default()).await;
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let connections = Arc::new(Mutex::new(0usize));
    let counted = connections.clone();
    let accepting = tokio::spawn(async move {
        while proxy.accept().await.is_ok() {
            *counted.lock().unwrap() += 1;
        }
    });
    let host = Host::new(&format!("HOSTBEAT_CLIENT_TOKEN={SECRET}\n"));
    let mut agent = Process::spawn(host.command(&[
        ("HOSTBEAT_SERVER_URL", &url),
        ("HOSTBEAT_TOKEN_URL", &format!("{url}/oauth/token")),
        ("HOSTBEAT_HEARTBEAT_INTERVAL", "1s"),
        ("HTTP_PROXY", &proxy_url),
        ("http_proxy", &proxy_url),
        ("HTTPS_PROXY", &proxy_url),
        ("ALL_PROXY", &proxy_url),
    ]));
    assert!(
        eventually(Duration::from_secs(20), || plane.heartbeats().len() >= 2).await,
        "{}",
        agent.text()
    );
    stop_with_goodbye(&mut agent, &plane).await;
    accepting.abort();
    let proxied = *connections.lock().unwrap();
    assert_eq!(proxied, 0, "{}", agent.text());
    Row::new("proxy-loopback")
        .figure(
            "proxy variables set",
            "HTTP_PROXY, http_proxy, HTTPS_PROXY, ALL_PROXY",
        )
        .figure("connections to the proxy", proxied)
        .figure("heartbeats at the plane", plane.heartbeats().len())
        .scan_written(
            &host.dir.path().join("state"),
            "output",
            agent.text().into_bytes(),
        )
        .done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_the_middle_of_a_backoff_wait_exits_at_once_after_the_goodbye() {
    let (plane, url) = plane(PlaneConfig::default()).await;
    let host = Host::new(&format!("HOSTBEAT_CLIENT_TOKEN={SECRET}\n"));
    let mut agent = Process::spawn(host.command(&[
        ("HOSTBEAT_SERVER_URL", &url),
        ("HOSTBEAT_HEARTBEAT_INTERVAL", "1s"),
        ("HOSTBEAT_BACKOFF_CAP", "10m"),
    ]));
    assert!(
        eventually(Duration::from_secs(20), || !plane.heartbeats().is_empty()).await,
        "{}",
        agent.text()
    );
    plane.set_fault(Fault::Outage, Scope::All, Some(1));
    assert!(
        eventually(Duration::from_secs(20), || agent
            .text()
            .contains("heartbeat_failed"))
        .await,
        "{}",
        agent.text()
    );
    let stopping = tokio::time::Instant::now();
    agent.signal("TERM");
    let status = agent.wait(Duration::from_secs(10)).await;
    assert!(status.success(), "{}", agent.text());
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "took {:?}",
        stopping.elapsed()
    );
    assert_eq!(plane.heartbeats().last().unwrap().status(), "offline");
}

/// Two stop signals at once (`timeout(1)` signals its child, then its group) are
/// one request: the goodbye is still said, and the exit is clean. A second signal
/// a second or more later means "now": exit status 1 without waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_stop_signal_means_now_only_a_second_after_the_first() {
    let (plane, url) = plane(PlaneConfig::default()).await;
    let host = Host::new(&format!("HOSTBEAT_CLIENT_TOKEN={SECRET}\n"));
    let vars = [
        ("HOSTBEAT_SERVER_URL", url.as_str()),
        ("HOSTBEAT_HEARTBEAT_INTERVAL", "1s"),
    ];
    for (gap, code) in [(Duration::ZERO, 0), (Duration::from_millis(1500), 1)] {
        plane.clear_fault();
        let before = plane.heartbeats().len();
        let mut agent = Process::spawn(host.command(&vars));
        // Two heartbeats of this agent: it is running, its signals handled.
        assert!(
            eventually(Duration::from_secs(20), || plane.heartbeats().len()
                >= before + 2)
            .await,
            "{}",
            agent.text()
        );
        // The goodbye hangs for 3 s (within shutdown_timeout, 5 s).
        plane.set_fault(Fault::Slow { delay_ms: 3_000 }, Scope::All, None);
        let stopping = tokio::time::Instant::now();
        agent.signal("TERM");
        tokio::time::sleep(gap).await;
        agent.signal("TERM");
        let status = agent.wait(Duration::from_secs(10)).await;
        assert_eq!(status.code(), Some(code), "{}", agent.text());
        let took = stopping.elapsed();
        if code == 0 {
            assert!(took >= Duration::from_secs(3), "took {took:?}");
            assert!(
                agent.text().contains("told this host is offline"),
                "{}",
                agent.text()
            );
        } else {
            assert!(took < Duration::from_millis(2_800), "took {took:?}");
            assert!(
                agent.text().contains("second stop signal"),
                "{}",
                agent.text()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_is_used_after_the_first_rejection_without_a_restart() {
    let (plane, url) = plane(PlaneConfig::default()).await;
    // As the package keeps it: the token in the env file, which hostbeat reads.
    let host = Host::new(&format!("HOSTBEAT_CLIENT_TOKEN={SECRET}\n"));
    let mut agent = Process::spawn(host.command(&[
        ("HOSTBEAT_SERVER_URL", &url),
        ("HOSTBEAT_HEARTBEAT_INTERVAL", "1s"),
    ]));
    assert!(
        eventually(Duration::from_secs(20), || !plane.heartbeats().is_empty()).await,
        "{}",
        agent.text()
    );
    rotate_and_wait(&plane, &host, &agent).await;
    // SIGINT (Ctrl-C in a terminal) stops it like SIGTERM.
    agent.signal("INT");
    assert!(agent.wait(Duration::from_secs(10)).await.success());
    assert_eq!(plane.heartbeats().last().unwrap().status(), "offline");
    assert!(agent.text().contains("token_reloaded"), "{}", agent.text());
    assert!(!agent.text().contains(ROTATED) && !agent.text().contains(SECRET));
}

trait TokenRequests {
    fn requests_to_token(&self) -> usize;
}

impl TokenRequests for ControlPlane {
    fn requests_to_token(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path.starts_with("/oauth/token"))
            .count()
    }
}
