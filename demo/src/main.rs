//! The hostbeat demo: the agent and the reference control plane on loopback, with
//! short lifetimes, printing one timeline of both sides. It shows registration,
//! heartbeats, an access token refreshed before it expires, an outage with backoff
//! and recovery, a spot interruption notice from a mock metadata service (also on
//! loopback), and the goodbye. It ends by itself after about a minute, or on Ctrl-C
//! (which also says goodbye).
//!
//! The notice comes from EC2, or with an argument (`cargo run -p hostbeat-demo --
//! gcp`, `-- azure`) from Google Cloud's or Azure's mock: the control plane sees it
//! the same way, with its `source`.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use hostbeat::ConfigInputs;
use hostbeat::cloud::Cloud;
use hostbeat::secret::Token;
use hostbeat_refplane::azure::{self, MockAzure};
use hostbeat_refplane::gcp::MockGcp;
use hostbeat_refplane::imds::MockImds;
use hostbeat_refplane::{ControlPlane, Fault, PlaneConfig, PlaneEvent, Scope};

/// The demo client's secret: a made-up value for loopback only.
const DEMO_SECRET: &str = "demo-client-secret-not-for-production";

/// The script: (seconds after start, what happens).
const OUTAGE_AT: Duration = Duration::from_secs(26);
const OUTAGE_FOR: Duration = Duration::from_secs(12);
const NOTICE_AT: Duration = Duration::from_secs(46);
const STOP_AT: Duration = Duration::from_secs(56);

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        // The failure module's debug lines show each retry and its growing backoff,
        // which the daemon's default level summarises away.
        .with_env_filter(
            std::env::var("RUST_LOG")
                .unwrap_or_else(|_| "info,hostbeat::heartbeat::failures=debug".to_owned()),
        )
        .with_timer(tracing_subscriber::fmt::time::Uptime::default())
        .with_target(false)
        .with_writer(std::io::stderr)
        // Colour for a person at a terminal; none in a file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match demo().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The cloud the notice comes from: a mock of its metadata service on loopback.
enum Metadata {
    Ec2(MockImds),
    Gcp(MockGcp),
    Azure(MockAzure),
}

impl Metadata {
    /// The mock of the cloud named on the command line (EC2 without one), serving.
    async fn start() -> Result<(Self, Cloud, String), Box<dyn std::error::Error>> {
        let cloud = match std::env::args().nth(1) {
            None => Cloud::Ec2,
            Some(name) => Cloud::named(&name).ok_or(format!(
                "{name:?} is not a cloud: run the demo with ec2, gcp or azure, or nothing"
            ))?,
        };
        let (mock, addr) = match cloud {
            Cloud::Ec2 => {
                let mock = MockImds::new();
                let addr = mock.start().await?;
                (Self::Ec2(mock), addr)
            }
            Cloud::Gcp => {
                let mock = MockGcp::new();
                let addr = mock.start().await?;
                (Self::Gcp(mock), addr)
            }
            Cloud::Azure => {
                let mock = MockAzure::new();
                let addr = mock.start().await?;
                (Self::Azure(mock), addr)
            }
        };
        Ok((mock, cloud, format!("http://{addr}")))
    }

    /// The cloud gives notice that it reclaims the instance in two minutes (Google
    /// Cloud in about 30 seconds: the agent counts from when it sees it).
    fn give_notice(&self) {
        let reclaim_at = std::time::SystemTime::now() + Duration::from_secs(120);
        match self {
            Self::Ec2(mock) => {
                let at = humantime::format_rfc3339_seconds(reclaim_at);
                tracing::warn!("▶ demo: EC2 gives notice: this spot instance terminates at {at}");
                mock.give_interruption("terminate", &at.to_string());
            }
            Self::Gcp(mock) => {
                tracing::warn!("▶ demo: Google Cloud preempts this Spot VM (about 30 s of notice)");
                mock.preempt();
            }
            Self::Azure(mock) => {
                let at = httpdate::fmt_http_date(reclaim_at);
                tracing::warn!(
                    "▶ demo: Azure schedules a Preempt of this Spot VM, not before {at}"
                );
                mock.schedule("demo-1", "Preempt", &[azure::VM_NAME], &at);
            }
        }
    }
}

async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    let plane = ControlPlane::new(PlaneConfig {
        token_lifetime: Duration::from_secs(20),
        ..PlaneConfig::default()
    });
    plane.add_client("hostbeat", DEMO_SECRET);
    let addr = plane.start().await?;
    // A mock metadata service on loopback; never a real address.
    let (metadata, cloud, metadata_url) = Metadata::start().await?;
    tokio::spawn(narrate(plane.clone()));
    tracing::info!(
        "▶ demo: control plane on http://{addr} (tokens live 20 s); agent beats every 2 s; \
         outage at {}s for {}s; spot interruption notice at {}s; stop at {}s (Ctrl-C stops earlier)",
        OUTAGE_AT.as_secs(),
        OUTAGE_FOR.as_secs(),
        NOTICE_AT.as_secs(),
        STOP_AT.as_secs()
    );

    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("hostbeat.toml"), "")?;
    let url = format!("http://{addr}");
    // The embedded default configuration: what an operator would put in
    // /etc/hostbeat/hostbeat.env, with short timings so that a minute shows it all.
    let inputs = ConfigInputs::new()
        .config_file(dir.path().join("hostbeat.toml"))
        .var("HOSTBEAT_SERVER_URL", url.clone())
        .var("HOSTBEAT_TOKEN_URL", format!("{url}/oauth/token"))
        .var("HOSTBEAT_CLIENT_TOKEN", DEMO_SECRET)
        .var("HOSTBEAT_HEARTBEAT_INTERVAL", "2s")
        .var("HOSTBEAT_BACKOFF_CAP", "8s")
        .var("HOSTBEAT_CLOUD", cloud.name())
        .var(
            &hostbeat::config::env_var(cloud.url_setting()),
            metadata_url,
        )
        .var("HOSTBEAT_INTERRUPTION_POLL_INTERVAL", "1s")
        .var(
            "HOSTBEAT_STATE_DIR",
            dir.path().join("state").to_string_lossy(),
        )
        .var(
            "HOSTBEAT_ENV_FILE",
            dir.path().join("hostbeat.env").to_string_lossy(),
        );
    let settings = hostbeat::config::load(inputs)?.settings;

    let controls = hostbeat::Controls::new();
    let shutdown = controls.shutdown.clone();
    let agent = tokio::spawn(hostbeat::run(settings, controls));
    let script = async {
        tokio::time::sleep(OUTAGE_AT).await;
        tracing::warn!(
            "▶ demo: the control plane goes away for {} s",
            OUTAGE_FOR.as_secs()
        );
        plane.set_fault(Fault::Outage, Scope::All, None);
        tokio::time::sleep(OUTAGE_FOR).await;
        plane.clear_fault();
        tracing::info!("▶ demo: the control plane is back");
        tokio::time::sleep(NOTICE_AT.saturating_sub(OUTAGE_AT + OUTAGE_FOR)).await;
        metadata.give_notice();
        tokio::time::sleep(STOP_AT.saturating_sub(NOTICE_AT)).await;
        tracing::info!("▶ demo: stopping the agent (as SIGTERM would)");
    };
    tokio::select! {
        () = script => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("▶ demo: Ctrl-C, stopping the agent"),
    }
    plane.clear_fault();
    shutdown.cancel();
    agent.await??;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let heartbeats = plane.heartbeats();
    let failed = plane
        .requests()
        .iter()
        .filter(|r| r.fault.is_some())
        .count();
    // Token requests that were answered; those refused during the outage are counted
    // with the other attempts below.
    let tokens = plane.token_exchanges(&plane.requests());
    tracing::info!(
        "▶ demo: done: {} heartbeats accepted, {} access tokens issued, {} attempts during the outage, last status {:?}",
        heartbeats.len(),
        tokens,
        failed,
        heartbeats.last().map_or("none", |h| h.status())
    );
    Ok(())
}

/// Prints the control plane's side of the timeline (fingerprints, never tokens).
async fn narrate(plane: ControlPlane) {
    let mut events = plane.subscribe();
    while let Ok(event) = events.recv().await {
        match event {
            PlaneEvent::TokenIssued {
                client_id,
                lifetime,
            } => tracing::info!(
                "  control plane: issued an access token to {client_id}, valid {} s",
                lifetime.as_secs()
            ),
            PlaneEvent::Registered { agent_id, new } => tracing::info!(
                "  control plane: {} agent {agent_id}",
                if new { "registered new" } else { "recognised" }
            ),
            PlaneEvent::Heartbeat(beat) => {
                let fingerprint = Token::new(beat.bearer.clone()).fingerprint().to_string();
                let mut extra = match (&beat.body["missed"], &beat.body["unreachable_since"]) {
                    (serde_json::Value::Number(missed), serde_json::Value::String(since)) => {
                        format!(", missed {missed} since {since}")
                    }
                    _ => String::new(),
                };
                if let Some(notice) = beat.body.get("interruption") {
                    let _ = write!(extra, ", notice {notice}");
                }
                tracing::info!(
                    "  control plane: heartbeat seq={} status={} from {} (token fp {fingerprint}){extra}",
                    beat.seq(),
                    beat.status(),
                    beat.agent_id
                );
            }
            PlaneEvent::Refused {
                path,
                status,
                error,
            } => {
                tracing::info!("  control plane: refused {path}: {status} {error}");
            }
            PlaneEvent::Faulted { path, fault } => {
                tracing::info!("  control plane: (down) {path}: {fault}");
            }
        }
    }
}
