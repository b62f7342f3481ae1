//! sd_notify as systemd sees it: the real binary with `NOTIFY_SOCKET` bound to a
//! datagram socket of the test's, in real time. Every wait is bounded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hostbeat_refplane::{Fault, Scope};
use tokio::time::Instant;

use crate::binary::{Host, Process, eventually, plane};
use crate::support::{CLIENT_ID, SECRET};

/// A bound notification socket and every datagram received, with its time.
struct NotifySocket {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    received: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl NotifySocket {
    fn bind() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = tokio::net::UnixDatagram::bind(&path).unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf).await {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock().unwrap().push((Instant::now(), text));
            }
        });
        Self {
            _dir: dir,
            path,
            received,
        }
    }

    fn messages(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// Whether a heartbeat was accepted (the status line says so).
    fn online(&self) -> bool {
        self.statuses()
            .iter()
            .any(|s| s.starts_with("online, last heartbeat "))
    }

    fn statuses(&self) -> Vec<String> {
        self.messages()
            .iter()
            .flat_map(|m| {
                m.lines()
                    .filter_map(|l| l.strip_prefix("STATUS="))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// When each `WATCHDOG=1` arrived between `from` and `to`.
    fn pings_between(&self, from: Instant, to: Instant) -> Vec<Instant> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, m)| *at >= from && *at < to && m.lines().any(|l| l == "WATCHDOG=1"))
            .map(|(at, _)| *at)
            .collect()
    }
}

/// The real agent against `url`, a heartbeat every second, telling `notify`, with
/// the watchdog armed (`WATCHDOG_USEC`) and `more` settings.
fn beating_every_second(
    host: &Host,
    url: &str,
    notify: &NotifySocket,
    watchdog_usec: &str,
    more: &[(&str, &str)],
) -> Process {
    let socket = notify.path.to_str().unwrap();
    let mut vars = vec![
        ("HOSTBEAT_SERVER_URL", url),
        ("HOSTBEAT_HEARTBEAT_INTERVAL", "1s"),
        ("NOTIFY_SOCKET", socket),
        ("WATCHDOG_USEC", watchdog_usec),
    ];
    vars.extend_from_slice(more);
    Process::spawn(host.command(&vars))
}

// One scenario in order: the order of the datagrams is what is tested.
#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_status_watchdog_reload_and_stopping_in_order() {
    let (plane, url) = plane(hostbeat_refplane::PlaneConfig::default()).await;
    let notify = NotifySocket::bind();
    let host = Host::new(&format!("HOSTBEAT_CLIENT_TOKEN={SECRET}\n"));
    // WatchdogSec=1s: a ping every 500 ms.
    let mut agent = beating_every_second(
        &host,
        &url,
        &notify,
        "1000000",
        &[
            ("HOSTBEAT_BACKOFF_CAP", "2s"),
            ("HOSTBEAT_AUTH_BACKOFF_CAP", "2s"),
        ],
    );
    assert!(
        eventually(Duration::from_secs(20), || notify.online()).await,
        "{:?}\n{}",
        notify.messages(),
        agent.text()
    );

    // Watchdog pings within half of WATCHDOG_USEC (500 ms), some riding on the 1 s
    // heartbeats, never sooner than 125 ms apart. The bounds allow for the
    // datagrams' trip to this test's reader.
    let from = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pings = notify.pings_between(from, Instant::now());
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        (5..=13).contains(&pings.len())
            && gaps
                .iter()
                .all(|gap| *gap >= Duration::from_millis(100) && *gap <= Duration::from_secs(1)),
        "{} watchdog pings in 3 s, {gaps:?} apart",
        pings.len()
    );

    // SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1 again.
    let before = notify.messages().len();
    agent.signal("HUP");
    let reloaded = |n: &NotifySocket, before: usize| {
        let after = &n.messages()[before..];
        let reloading = after.iter().position(|m| m.contains("RELOADING=1"));
        reloading.is_some_and(|i| after[i + 1..].iter().any(|m| m.contains("READY=1")))
    };
    assert!(
        eventually(Duration::from_secs(10), || reloaded(&notify, before)).await,
        "{:?}",
        notify.messages()
    );
    let reloading = notify
        .messages()
        .into_iter()
        .find(|m| m.contains("RELOADING=1"))
        .unwrap();
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("RELOADING=1 carries MONOTONIC_USEC")
        .parse()
        .unwrap();
    assert!(usec > 0);

    // A reload that changes a setting ends with READY=1 too (it once returned to
    // the loop before saying so, and `systemctl reload` hung for its timeout);
    // and so does a reload with a broken configuration: refused, the running one
    // stays, and systemd still sees the reload end (READY=1 after RELOADING=1).
    for level in ["debug", "loud=["] {
        std::fs::write(
            host.env_file(),
            format!("HOSTBEAT_CLIENT_TOKEN={SECRET}\nHOSTBEAT_LOG_LEVEL={level}\n"),
        )
        .unwrap();
        let before = notify.messages().len();
        agent.signal("HUP");
        assert!(
            eventually(Duration::from_secs(10), || reloaded(&notify, before)).await,
            "{level}: {:?}",
            notify.messages()
        );
    }
    assert!(
        eventually(Duration::from_secs(5), || agent
            .text()
            .contains("config_rejected"))
        .await,
        "{}",
        agent.text()
    );
    let beats = plane.heartbeats().len();
    assert!(
        eventually(Duration::from_secs(10), || plane.heartbeats().len()
            >= beats + 2)
        .await
    );

    // The control plane goes away, then refuses the client: STATUS says so.
    plane.set_fault(Fault::Outage, Scope::All, None);
    assert!(
        eventually(Duration::from_secs(20), || notify
            .statuses()
            .iter()
            .any(|s| s.starts_with("backing off: could not connect since ")))
        .await,
        "{:?}",
        notify.statuses()
    );
    plane.clear_fault();
    plane.deactivate(CLIENT_ID);
    assert!(
        eventually(Duration::from_secs(20), || notify.statuses().iter().any(
            |s| s.starts_with("auth failure: the client is not active on the control plane since ")
        ))
        .await,
        "{:?}",
        notify.statuses()
    );
    plane.activate(CLIENT_ID);
    let count = notify.statuses().len();
    assert!(
        eventually(Duration::from_secs(20), || notify.statuses()[count..]
            .iter()
            .any(|s| s.starts_with("online")))
        .await,
        "{:?}",
        notify.statuses()
    );

    agent.signal("TERM");
    assert!(agent.wait(Duration::from_secs(10)).await.success());
    let messages = notify.messages();
    assert!(
        messages[0].starts_with("READY=1\nSTATUS=starting, first heartbeat in "),
        "{:?}",
        messages[0]
    );
    let last = messages
        .iter()
        .rposition(|m| !m.contains("WATCHDOG=1"))
        .unwrap();
    assert!(
        messages[last].starts_with("STOPPING=1\n"),
        "{:?}",
        &messages[last - 2..]
    );
    // The token never reaches systemd either.
    assert!(messages.iter().all(|m| !m.contains(SECRET)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_watchdog_no_pings_and_ready_does_not_wait_for_the_control_plane() {
    // Nothing listens here: the control plane is away at boot.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let notify = NotifySocket::bind();
    let host = Host::new(&format!("HOSTBEAT_CLIENT_TOKEN={SECRET}\n"));
    let socket = notify.path.to_str().unwrap().to_owned();
    let mut agent = Process::spawn(host.command(&[
        ("HOSTBEAT_SERVER_URL", &format!("http://{closed}")),
        ("NOTIFY_SOCKET", &socket),
    ]));
    assert!(
        eventually(Duration::from_secs(10), || notify
            .messages()
            .iter()
            .any(|m| m.contains("READY=1")))
        .await
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    agent.signal("TERM");
    assert!(agent.wait(Duration::from_secs(10)).await.success());
    assert!(notify.messages().iter().all(|m| !m.contains("WATCHDOG=1")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_ride_on_heartbeats_when_they_come_often_enough() {
    let (_plane, url) = plane(hostbeat_refplane::PlaneConfig::default()).await;
    let notify = NotifySocket::bind();
    let host = Host::new(&format!("HOSTBEAT_CLIENT_TOKEN={SECRET}\n"));
    // A ping within 3 s: the timer's deadline is 1.5 s to 3 s after the last ping,
    // and a heartbeat (1 s +-10%) whose next one would come later pings.
    let mut agent = beating_every_second(&host, &url, &notify, "6000000", &[]);
    assert!(
        eventually(Duration::from_secs(20), || notify.online()).await,
        "{}",
        agent.text()
    );
    let from = Instant::now();
    tokio::time::sleep(Duration::from_secs(7)).await;
    agent.signal("TERM");
    assert!(agent.wait(Duration::from_secs(10)).await.success());

    // Each ping went out with a heartbeat's new status (the same turn of the loop),
    // none on the timer's own wake-up.
    let received = notify.received.lock().unwrap().clone();
    let pings: Vec<usize> = (0..received.len())
        .filter(|&i| received[i].0 >= from && received[i].1.lines().any(|l| l == "WATCHDOG=1"))
        .collect();
    assert!(
        (2..=5).contains(&pings.len()),
        "{} pings in 7 s: {received:?}",
        pings.len()
    );
    for i in pings {
        let (at, _) = received[i];
        let beat = received[i + 1..].iter().find(|(then, m)| {
            *then - at < Duration::from_millis(100) && m.contains("STATUS=online, last heartbeat")
        });
        assert!(beat.is_some(), "a ping with no heartbeat: {received:?}");
    }
}
