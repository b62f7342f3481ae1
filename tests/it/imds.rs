//! Spot awareness against a mock metadata service on loopback (IMDSv2): identity in
//! registration, notices to the control plane within one poll, the session token's
//! renewal and its 401, a host that is not on EC2, and a misbehaving service that
//! never disturbs the heartbeats. Virtual time throughout.

// Metric values compared here are Unix seconds the agent wrote, exactly.
#![allow(clippy::float_cmp)]

use std::net::SocketAddr;
use std::time::Duration;

use hostbeat::report::status_file;
use hostbeat_refplane::HeartbeatRecord;
use hostbeat_refplane::imds::INSTANCE_ID;
use tokio::time::Instant;

use crate::report::{gauge, scrape};
use crate::support::{
    Behaviour, Logs, MockImds, Row, World, mins, pass, secs, until, with_real_time_limit,
};

/// The default poll interval, and a bound for one metadata request.
const POLL: Duration = Duration::from_secs(5);
const REQUEST: Duration = Duration::from_secs(1);

async fn mock() -> (MockImds, SocketAddr) {
    let mock = MockImds::new();
    let addr = mock.start().await.expect("bind 127.0.0.1:0");
    (mock, addr)
}

fn carrying(beats: &[HeartbeatRecord]) -> Vec<&HeartbeatRecord> {
    beats
        .iter()
        .filter(|b| b.body.get("interruption").is_some())
        .collect()
}

#[test]
fn identity_lands_in_registration_and_the_instance_id_is_the_logical_id() {
    with_real_time_limit(Duration::from_secs(60), || async {
        let world = World::start().await;
        let (mock, addr) = mock().await;
        let agent = world.spawn_online(world.imds_inputs("on", addr)).await;
        agent.stop().await;
        let register: serde_json::Value =
            serde_json::from_str(&world.requests_to("register")[0].body).unwrap();
        assert_eq!(register["logical_agent_id"], INSTANCE_ID);
        assert_eq!(
            register["instance"],
            serde_json::json!({
                "cloud": "ec2",
                "id": INSTANCE_ID,
                "type": "m5.large",
                "availability_zone": "eu-west-1a",
                "lifecycle": "spot",
            })
        );
        // The token dance: a PUT first, then every GET with a valid session token.
        let requests = mock.requests();
        assert_eq!(requests[0].method, "PUT");
        assert!(
            requests[1..]
                .iter()
                .all(|r| r.method == "PUT" || r.valid_token)
        );
        let status = status_file::read(&world.state_dir()).unwrap();
        assert_eq!(status.instance.unwrap().id, INSTANCE_ID);
    });
}

#[test]
fn a_spot_interruption_reaches_the_control_plane_within_one_poll_and_only_once() {
    with_real_time_limit(Duration::from_secs(60), || async {
        let (logs, _guard) = Logs::capture();
        let world = World::start().await;
        let (mock, addr) = mock().await;
        let metrics = world.dir.path().join("hostbeat.prom");
        let inputs = world
            .imds_inputs("on", addr)
            .var("HOSTBEAT_METRICS_TEXTFILE", metrics.to_str().unwrap());
        let agent = world.spawn_online(inputs).await;
        pass(secs(7)).await;

        let given = Instant::now();
        mock.give_interruption("terminate", "2026-11-24T08:22:00Z");
        assert!(until(POLL + REQUEST, || !carrying(&world.heartbeats()).is_empty()).await);
        let took = given.elapsed();
        assert!(took <= POLL + REQUEST, "{took:?}");

        // It keeps beating, terminating from now on; the notice went once.
        let count = world.heartbeats().len();
        assert!(until(mins(3), || world.heartbeats().len() >= count + 4).await);
        let beats = world.heartbeats();
        let carried = carrying(&beats);
        assert_eq!(carried.len(), 1);
        assert_eq!(carried[0].status(), "terminating");
        assert_eq!(
            carried[0].body["interruption"],
            serde_json::json!({"source": "ec2", "action": "terminate", "time": "2026-11-24T08:22:00Z"})
        );
        assert!(beats[count..].iter().all(|b| b.status() == "terminating"));
        assert_eq!(logs.events("interruption").len(), 1, "{}", logs.text());

        let status = status_file::read(&world.state_dir()).unwrap();
        assert!(
            status
                .status_line
                .starts_with("interruption (ec2): terminate at 2026-11-24T08:22:00Z; online"),
            "{}",
            status.status_line
        );
        let notice = status.interruption.unwrap();
        assert_eq!(
            (notice.action.as_str(), notice.delivered),
            ("terminate", true)
        );
        assert_eq!(
            gauge(
                &scrape(&metrics),
                "hostbeat_interruption_notice_timestamp_seconds",
                &[
                    ("kind", "spot_interruption"),
                    ("action", "terminate"),
                    ("source", "ec2")
                ]
            ),
            1_795_508_520.0
        );
        agent.stop().await;
        assert_eq!(world.heartbeats().last().unwrap().status(), "offline");
        Row::new("notice-ec2")
            .figure(
                "notice to the control plane",
                format!("{} ms", took.as_millis()),
            )
            .figure("heartbeats carrying it", carried.len())
            .scan(&world, &logs)
            .done();
    });
}

#[test]
fn a_rebalance_recommendation_is_sent_once_and_the_host_stays_online() {
    with_real_time_limit(Duration::from_secs(60), || async {
        let (logs, _guard) = Logs::capture();
        let world = World::start().await;
        let (mock, addr) = mock().await;
        let agent = world.spawn_online(world.imds_inputs("on", addr)).await;
        mock.give_rebalance("2026-11-24T08:17:00Z");
        assert!(until(POLL + REQUEST, || !carrying(&world.heartbeats()).is_empty()).await);
        let count = world.heartbeats().len();
        assert!(until(mins(2), || world.heartbeats().len() >= count + 3).await);
        agent.stop().await;
        let beats = world.heartbeats();
        let carried = carrying(&beats);
        assert_eq!(carried.len(), 1);
        assert_eq!(carried[0].status(), "online");
        assert_eq!(carried[0].body["interruption"]["action"], "rebalance");
        assert!(
            beats[..beats.len() - 1]
                .iter()
                .all(|b| b.status() == "online")
        );
        assert_eq!(logs.events("rebalance_recommendation").len(), 1);
        let status = status_file::read(&world.state_dir()).unwrap();
        assert_eq!(status.advisory.unwrap().time, "2026-11-24T08:17:00Z");
    });
}

/// A metadata service that grants a session TTL of 2^64-1 s: the agent asked for
/// six hours and keeps to them (the answer overflowed the clock and aborted the
/// agent at start).
#[test]
fn a_session_ttl_beyond_any_clock_is_held_to_what_was_asked() {
    with_real_time_limit(Duration::from_secs(60), || async {
        let world = World::start().await;
        let (logs, _guard) = Logs::capture();
        let (mock, addr) = mock().await;
        mock.say_ttl(u64::MAX);
        let agent = world.spawn_online(world.imds_inputs("on", addr)).await;
        pass(mins(10)).await;
        assert!(world.heartbeats().len() >= 10);
        let puts = mock.requests().iter().filter(|r| r.method == "PUT").count();
        assert_eq!(puts, 1, "one session for the six hours asked");
        agent.stop().await;
        Row::new("imds-ttl-huge")
            .figure("TTL granted", "18446744073709551615 s")
            .figure("sessions opened in 10 min", puts)
            .figure("heartbeats in 10 min", world.heartbeats().len())
            .scan(&world, &logs)
            .done();
    });
}

#[test]
fn the_session_token_is_renewed_before_its_ttl_and_again_after_a_401() {
    with_real_time_limit(Duration::from_secs(60), || async {
        let (logs, _guard) = Logs::capture();
        let world = World::start().await;
        let (mock, addr) = mock().await;
        // Tokens of two minutes: renewed a minute before they run out.
        mock.cap_ttl(120);
        let agent = world.spawn_online(world.imds_inputs("on", addr)).await;
        pass(mins(10)).await;
        let requests = mock.requests();
        let puts = requests.iter().filter(|r| r.method == "PUT").count();
        assert!(
            (9..=12).contains(&puts),
            "{puts} session tokens in 10 minutes"
        );
        assert!(requests.iter().all(|r| r.method == "PUT" || r.valid_token));

        // The service forgets its tokens: one 401, a new token, and on.
        mock.revoke_tokens();
        pass(POLL * 2).await;
        let after = &mock.requests()[requests.len()..];
        assert_eq!(
            after
                .iter()
                .filter(|r| !r.valid_token && r.method == "GET")
                .count(),
            1
        );
        assert_eq!(after[1].method, "PUT");
        mock.give_interruption("stop", "2026-11-24T09:00:00Z");
        assert!(until(POLL + REQUEST, || !carrying(&world.heartbeats()).is_empty()).await);
        agent.stop().await;
        assert!(
            logs.events("imds_unavailable").is_empty(),
            "{}",
            logs.text()
        );
    });
}

/// `auto` on a host where nothing answers at the metadata address (a listener that
/// accepts and never answers, as a dropped packet looks): one probe's timeout at
/// start, logged once, and never a request again.
#[test]
fn a_host_that_is_not_on_ec2_costs_one_probe_in_auto_and_nothing_after() {
    with_real_time_limit(Duration::from_secs(60), || async {
        let (logs, _guard) = Logs::capture();
        let world = World::start().await;
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = silent.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(stream);
            }
        });
        let logical_id =
            hostbeat::identity::from_machine_id(&world.dir.path().join("machine-id")).unwrap();
        let splay = hostbeat::identity::splay(&logical_id, secs(30));
        let started = Instant::now();
        let agent = world.spawn(world.imds_inputs("auto", addr));
        assert!(until(mins(1), || !world.heartbeats().is_empty()).await);
        let delay = started.elapsed().saturating_sub(splay);
        assert!(
            delay <= REQUEST + Duration::from_millis(100),
            "{delay:?} after the splay"
        );
        pass(mins(5)).await;
        agent.stop().await;
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(logs.events("imds_absent").len(), 1, "{}", logs.text());
        let register: serde_json::Value =
            serde_json::from_str(&world.requests_to("register")[0].body).unwrap();
        assert_eq!(register["logical_agent_id"], logical_id.as_str());
        assert!(register.get("instance").is_none());
    });
}

/// Down, slow, 401 to everything, garbage: the heartbeats keep their cadence; the
/// trouble is logged once per change of state, and the recovery once.
#[test]
fn a_misbehaving_metadata_service_never_disturbs_the_heartbeat_cadence() {
    with_real_time_limit(Duration::from_secs(60), || async {
        let (logs, _guard) = Logs::capture();
        let world = World::start().await;
        let (mock, addr) = mock().await;
        let agent = world.spawn_online(world.imds_inputs("on", addr)).await;
        let first = world.heartbeats().len();
        for behaviour in [
            Behaviour::Down,
            Behaviour::Slow(secs(3)),
            Behaviour::Unauthorized,
            Behaviour::Garbage,
            Behaviour::Normal,
        ] {
            mock.set_behaviour(behaviour);
            pass(mins(3)).await;
        }
        agent.stop().await;
        let beats = world.heartbeats();
        let at: Vec<u64> = beats[first - 1..beats.len() - 1]
            .iter()
            .map(|b| b.at_ms)
            .collect();
        assert!(at.len() >= 25, "{} heartbeats in 15 minutes", at.len());
        for gap in at.windows(2).map(|w| w[1] - w[0]) {
            assert!((27_000..=33_000).contains(&gap), "a gap of {gap} ms");
        }
        let unavailable = logs.events("imds_unavailable");
        let reasons: Vec<&str> = unavailable
            .iter()
            .map(|l| {
                l.split("reason=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            reasons,
            ["unreachable", "unauthorized", "garbage"],
            "{}",
            logs.text()
        );
        assert_eq!(logs.events("imds_recovered").len(), 1);
    });
}

#[test]
fn with_imds_off_the_service_is_never_asked() {
    with_real_time_limit(Duration::from_secs(60), || async {
        let world = World::start().await;
        let (mock, addr) = mock().await;
        let agent = world.spawn_online(world.imds_inputs("off", addr)).await;
        pass(mins(2)).await;
        agent.stop().await;
        assert!(mock.requests().is_empty());
    });
}
