//! Test support: a reference control plane on loopback, the one place that builds
//! every test's configuration, a running agent handle, log capture, and waiting in
//! virtual time.
//!
//! Rule for this repo: tests talk to loopback only. [`World::inputs`] is the base of
//! every agent configuration in the tests: a `127.0.0.1` control plane, a private
//! state directory, env file and machine id.

#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hostbeat::{ConfigInputs, RunError, Settings};
pub use hostbeat_refplane::imds::{Behaviour, MockImds};
pub use hostbeat_refplane::tls;
use hostbeat_refplane::{ControlPlane, HeartbeatRecord, PlaneConfig, PlaneEvent, RecordedRequest};
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Where every metadata URL points unless a test starts a mock: the discard port
/// on loopback, where nothing listens.
pub const CLOSED_PORT: &str = "http://127.0.0.1:9";

/// The OAuth client id every test uses.
pub const CLIENT_ID: &str = "hostbeat";
/// The client token every test starts with: distinctive, to scan for it, and
/// random like a real one, so that no 10-byte run of it occurs in other fixtures
/// (the redaction of runs would find it there: "0123456789abcdef" is also in the
/// mock instance id).
pub const SECRET: &str = "ct_Zq9sEcReT-7Kp2vWx4Lm8Qn5Rt1Yz";
/// A rotated token.
pub const ROTATED: &str = "ct_RoTaTeD-Hj3Gf6Dq9Ns2Vb5Xc8Lk";

/// A control plane and a private directory for one test.
pub struct World {
    pub plane: ControlPlane,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    /// `http` or, for a plane started with [`World::with_tls`], `https`.
    scheme: &'static str,
    events: broadcast::Receiver<PlaneEvent>,
}

impl World {
    /// A plane with the default config.
    pub async fn start() -> Self {
        Self::with(PlaneConfig::default()).await
    }

    /// A plane with `config` and the test client.
    pub async fn with(config: PlaneConfig) -> Self {
        Self::serving(config, None).await
    }

    /// A plane over TLS presenting `identity` (see [`tls`]); its URL is
    /// `https://127.0.0.1:PORT`.
    pub async fn with_tls(identity: &tls::ServerIdentity) -> Self {
        Self::serving(PlaneConfig::default(), Some(identity)).await
    }

    async fn serving(config: PlaneConfig, identity: Option<&tls::ServerIdentity>) -> Self {
        let plane = ControlPlane::new(config);
        plane.add_client(CLIENT_ID, SECRET);
        let events = plane.subscribe();
        let addr = match identity {
            None => plane.start().await,
            Some(identity) => plane.start_tls(identity).await,
        }
        .expect("bind 127.0.0.1:0");
        let dir = tempfile::tempdir().expect("temp dir");
        // A machine id of its own, so that each test is a different host.
        let machine_id = hostbeat::identity::generate().expect("random id");
        std::fs::write(dir.path().join("machine-id"), format!("{machine_id}\n")).unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        std::fs::write(
            dir.path().join("hostbeat.toml"),
            "# settings come from the environment\n",
        )
        .unwrap();
        // As the package leaves it before the operator adds the token.
        std::fs::write(
            dir.path().join("hostbeat.env"),
            "# HOSTBEAT_CLIENT_TOKEN=\n",
        )
        .unwrap();
        Self {
            plane,
            addr,
            dir,
            scheme: if identity.is_some() { "https" } else { "http" },
            events,
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Writes `authority`'s certificate for `ca_file` and returns its path.
    pub fn write_ca(&self, authority: &tls::Authority) -> PathBuf {
        let path = self.dir.path().join("ca.pem");
        std::fs::write(&path, authority.pem()).unwrap();
        path
    }

    pub fn env_file(&self) -> PathBuf {
        self.dir.path().join("hostbeat.env")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The base configuration of every test (see module doc); static mode, the token
    /// in the environment, a 30 s interval.
    pub fn inputs(&self) -> ConfigInputs {
        ConfigInputs::new()
            .config_file(self.dir.path().join("hostbeat.toml"))
            .var("HOSTBEAT_SERVER_URL", self.url())
            .var("HOSTBEAT_CLIENT_TOKEN", SECRET)
            .var("HOSTBEAT_STATE_DIR", self.state_dir().to_str().unwrap())
            .var("HOSTBEAT_ENV_FILE", self.env_file().to_str().unwrap())
            // Off is the default; said here too, and every metadata URL points at a
            // closed loopback port and DMI at nothing, so that no test can ask a
            // real metadata address even by turning a cloud on. Tests of a cloud use
            // `cloud_inputs` and a loopback mock.
            .var("HOSTBEAT_CLOUD", "off")
            .var("HOSTBEAT_EC2_METADATA_URL", CLOSED_PORT)
            .var("HOSTBEAT_GCP_METADATA_URL", CLOSED_PORT)
            .var("HOSTBEAT_AZURE_METADATA_URL", CLOSED_PORT)
            .var(
                "HOSTBEAT_DMI_DIR",
                self.dir.path().join("no-dmi").to_str().unwrap(),
            )
            .machine_id_file(self.dir.path().join("machine-id"))
    }

    /// The base configuration with EC2's metadata service at `imds` on loopback,
    /// `mode` being `on` (`cloud = ec2`) or `auto` (DMI absent: one EC2 probe).
    pub fn imds_inputs(&self, mode: &str, imds: SocketAddr) -> ConfigInputs {
        let mode = if mode == "on" { "ec2" } else { mode };
        self.cloud_inputs(mode, hostbeat::cloud::Cloud::Ec2, imds)
    }

    /// The base configuration with `cloud = mode` and `cloud`'s metadata service at
    /// `service` on loopback: the one way tests turn a cloud on.
    pub fn cloud_inputs(
        &self,
        mode: &str,
        cloud: hostbeat::cloud::Cloud,
        service: SocketAddr,
    ) -> ConfigInputs {
        assert!(service.ip().is_loopback(), "tests ask loopback only");
        self.inputs().var("HOSTBEAT_CLOUD", mode).var(
            &hostbeat::config::env_var(cloud.url_setting()),
            format!("http://{service}"),
        )
    }

    /// A fixture DMI directory with `fields` (name, value) and nothing else, for
    /// `cloud = auto`.
    pub fn write_dmi(&self, fields: &[(&str, &str)]) -> PathBuf {
        let dir = self.dir.path().join("dmi");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, value) in fields {
            std::fs::write(dir.join(name), format!("{value}\n")).unwrap();
        }
        dir
    }

    /// The base configuration in exchange mode.
    pub fn exchange_inputs(&self) -> ConfigInputs {
        self.inputs()
            .var("HOSTBEAT_TOKEN_URL", format!("{}/oauth/token", self.url()))
    }

    /// The base configuration with the token left to the env file (written with
    /// [`Self::write_env_token`]), as the package keeps it: the place a rotated token
    /// lands. A token in the environment would win over it, as a drop-in's does.
    pub fn env_file_token_inputs(&self) -> ConfigInputs {
        self.inputs().without_var("HOSTBEAT_CLIENT_TOKEN")
    }

    /// Writes the env file with `token`.
    pub fn write_env_token(&self, token: &str) {
        let mut file = std::fs::File::create(self.env_file()).unwrap();
        writeln!(file, "# hostbeat env file written by a test").unwrap();
        writeln!(file, "HOSTBEAT_CLIENT_TOKEN={token}").unwrap();
    }

    /// Loads `inputs` and starts the agent in this runtime (a method, so that tests
    /// read `world.spawn(world.inputs())`).
    #[allow(clippy::unused_self)]
    pub fn spawn(&self, inputs: ConfigInputs) -> Agent {
        Agent::spawn(settings(inputs))
    }

    /// Starts an agent whose reload (SIGHUP, `agent.reload`) reads `make()` again as
    /// `hostbeat run` does: settings resolve as at a start, the files as they are now.
    #[allow(clippy::unused_self)]
    pub fn spawn_reloadable(
        &self,
        make: impl Fn() -> ConfigInputs + Send + Sync + 'static,
    ) -> Agent {
        let loaded = hostbeat::config::load(make()).expect("valid test config");
        let reloader = hostbeat::Reloader::new(
            move || hostbeat::config::load(make()).map(|l| l.settings),
            |_| {},
        );
        Agent::spawn_with(loaded.settings, Some(reloader))
    }

    /// Starts the agent and waits (up to 1 virtual minute, the splay included) for
    /// its first accepted heartbeat.
    pub async fn spawn_online(&self, inputs: ConfigInputs) -> Agent {
        let before = self.heartbeats().len();
        let agent = self.spawn(inputs);
        assert!(
            until(mins(1), || self.heartbeats().len() > before).await,
            "the agent did not come online"
        );
        agent
    }

    /// How many requests a fault was applied to.
    pub fn faulted(&self) -> usize {
        self.requests().iter().filter(|r| r.fault.is_some()).count()
    }

    /// The `seq` of every accepted heartbeat, in order.
    pub fn seqs(&self) -> Vec<u64> {
        self.heartbeats().iter().map(HeartbeatRecord::seq).collect()
    }

    pub fn heartbeats(&self) -> Vec<HeartbeatRecord> {
        self.plane.heartbeats()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.plane.requests()
    }

    /// Requests to paths containing `fragment`.
    pub fn requests_to(&self, fragment: &str) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.contains(fragment))
            .collect()
    }

    /// Events since the last call.
    pub fn events(&mut self) -> Vec<PlaneEvent> {
        let mut out = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            out.push(event);
        }
        out
    }

    /// The statuses of the refusals since the last call to `events`.
    pub fn refusals(&mut self) -> Vec<(u16, String)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                PlaneEvent::Refused { status, error, .. } => Some((status, error)),
                _ => None,
            })
            .collect()
    }
}

/// Loads and validates; panics with the error text (tests of errors call `load`).
pub fn settings(inputs: ConfigInputs) -> Settings {
    match hostbeat::config::load(inputs) {
        Ok(loaded) => loaded.settings,
        Err(e) => panic!("test config invalid: {e}"),
    }
}

/// An agent running in the test's runtime.
pub struct Agent {
    pub shutdown: CancellationToken,
    pub reload: Arc<Notify>,
    task: JoinHandle<Result<(), RunError>>,
}

impl Agent {
    pub fn spawn(settings: Settings) -> Self {
        Self::spawn_with(settings, None)
    }

    pub fn spawn_with(settings: Settings, reloader: Option<hostbeat::Reloader>) -> Self {
        let controls = hostbeat::Controls {
            reloader,
            ..hostbeat::Controls::new()
        };
        let (shutdown, reload) = (controls.shutdown.clone(), controls.reload.clone());
        let task = tokio::spawn(hostbeat::run(settings, controls));
        Self {
            shutdown,
            reload,
            task,
        }
    }

    /// Stops it (as SIGTERM does) and waits for it to return; returns the virtual
    /// time that took.
    pub async fn stop(self) -> Duration {
        let started = tokio::time::Instant::now();
        self.shutdown.cancel();
        self.task
            .await
            .expect("agent task panicked")
            .expect("agent failed");
        started.elapsed()
    }
}

/// Waits (in virtual time, polling every 50 ms) until `condition` holds, at most
/// `limit`; returns whether it held.
pub async fn until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a paused-clock test body with a real-time limit. Virtual time only moves
/// when every task waits, so a busy loop in the agent would make a virtual-time test
/// hang; under this guard it fails instead.
pub fn with_real_time_limit<F>(limit: Duration, body: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = ()>,
{
    let (done, finished) = std::sync::mpsc::channel();
    // Named after the test, as libtest names the test's own thread (`Row` reads it).
    let name = std::thread::current().name().unwrap_or("test").to_owned();
    let runner = std::thread::Builder::new().name(name);
    runner
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap();
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(body())));
            let _ = done.send(outcome);
        })
        .expect("spawn the test's runtime thread");
    match finished.recv_timeout(limit) {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(
            std::sync::mpsc::RecvTimeoutError::Timeout
            | std::sync::mpsc::RecvTimeoutError::Disconnected,
        ) => panic!("the test did not finish within {limit:?} of real time: a busy loop?"),
    }
}

/// Lets `duration` of virtual time pass.
pub async fn pass(duration: Duration) {
    tokio::time::sleep(duration).await;
}

pub const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub const fn mins(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

/// Everything the test's thread logs while the guard lives. Tests run on
/// current-thread runtimes, so that is every task of the test.
///
/// One global subscriber serves every test and writes to the buffer of the thread
/// that logs: per-thread `set_default` subscribers race on tracing's global
/// callsite-interest cache when tests run in parallel, and lose events.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

thread_local! {
    static CAPTURE: std::cell::RefCell<Option<Logs>> = const { std::cell::RefCell::new(None) };
}

/// Stops the capture when dropped.
pub struct CaptureGuard;

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURE.with(|c| c.borrow_mut().take());
    }
}

impl Logs {
    pub fn capture() -> (Self, CaptureGuard) {
        static INIT: std::sync::Once = std::sync::Once::new();
        INIT.call_once(|| {
            use tracing_subscriber::layer::SubscriberExt;
            use tracing_subscriber::util::SubscriberInitExt;
            // The agent's own filter syntax (hyper's trace lines would drown the rest).
            let filter = hostbeat::logging::parse_filter("trace,hyper=debug,hyper_util=debug")
                .expect("a valid filter");
            tracing_subscriber::fmt()
                .with_writer(ThreadWriter)
                .with_ansi(false)
                .with_max_level(tracing::Level::TRACE)
                .finish()
                .with(filter)
                .init();
        });
        let logs = Self::default();
        CAPTURE.with(|c| *c.borrow_mut() = Some(logs.clone()));
        (logs, CaptureGuard)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Lines with `event="name"`.
    pub fn events(&self, name: &str) -> Vec<String> {
        let needle = format!("event=\"{name}\"");
        self.text()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_owned)
            .collect()
    }
}

/// Writes to the capture of the current thread, if any.
struct ThreadWriter;

impl std::io::Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|c| {
            if let Some(logs) = c.borrow().as_ref() {
                logs.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ThreadWriter {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        Self
    }
}

mod figures;
pub use figures::Row;

/// The token scan, shared with tests/system.
#[path = "../../common/scan.rs"]
mod scan;
pub use scan::{assert_no_token, base64_url, contains, files_under, forms};

/// A forward proxy on loopback that tunnels every `CONNECT` to `target` (whatever
/// host the request names) and answers anything else with 502. It records each
/// request line it was sent.
pub struct TunnelProxy {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
}

impl TunnelProxy {
    pub async fn start(target: SocketAddr) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    // One byte at a time up to the blank line, so nothing of the
                    // tunnelled bytes is read here; a head is at most 8 KiB.
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                        match client.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let line = head.lines().next().unwrap_or_default().to_owned();
                    seen.lock().unwrap().push(line.clone());
                    if !line.starts_with("CONNECT ") {
                        let _ = client
                            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                            .await;
                        return;
                    }
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    if client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .is_ok()
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        Self { addr, requests }
    }

    /// The request lines received so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}
