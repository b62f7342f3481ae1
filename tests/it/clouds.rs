//! Google Cloud and Azure against mocks on loopback, and `cloud = auto` deciding
//! from fixture DMI directories: identity in registration, notices to the control
//! plane at once (Google Cloud's hanging request) or within one poll (Azure), once;
//! a neighbour's event ignored; a change between two requests never missed; a
//! misbehaving service that never disturbs the heartbeats. Virtual time throughout.

use std::net::SocketAddr;
use std::time::Duration;

use hostbeat::cloud::Cloud;
use hostbeat_refplane::HeartbeatRecord;
use hostbeat_refplane::azure::{self, MockAzure};
use hostbeat_refplane::gcp::{self, MockGcp};
use tokio::time::Instant;

use crate::support::{
    Agent, Logs, MockImds, Row, World, mins, pass, secs, until, with_real_time_limit,
};

/// The default poll interval, and a bound for one metadata request.
const POLL: Duration = Duration::from_secs(5);
const REQUEST: Duration = Duration::from_secs(1);

fn carrying(beats: &[HeartbeatRecord]) -> Vec<&HeartbeatRecord> {
    beats
        .iter()
        .filter(|b| b.body.get("interruption").is_some())
        .collect()
}

fn registered_instance(world: &World) -> serde_json::Value {
    let register: serde_json::Value =
        serde_json::from_str(&world.requests_to("register")[0].body).unwrap();
    register["instance"].clone()
}

/// The reasons of the `imds_unavailable` lines, in order.
fn trouble_reasons(logs: &Logs) -> Vec<String> {
    logs.events("imds_unavailable")
        .iter()
        .map(|l| {
            l.split("reason=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// The shortest and the longest gap between two heartbeats after the first and
/// before the goodbye, in ms.
fn gaps(beats: &[HeartbeatRecord], from: usize) -> (u64, u64) {
    let at: Vec<u64> = beats[from - 1..beats.len() - 1]
        .iter()
        .map(|b| b.at_ms)
        .collect();
    let gaps = at.windows(2).map(|w| w[1] - w[0]);
    (gaps.clone().min().unwrap_or(0), gaps.max().unwrap_or(0))
}

/// Every gap between two heartbeats after the first and before the goodbye.
fn cadence_holds(beats: &[HeartbeatRecord], from: usize) {
    let at: Vec<u64> = beats[from - 1..beats.len() - 1]
        .iter()
        .map(|b| b.at_ms)
        .collect();
    assert!(at.len() >= 10, "{} heartbeats", at.len());
    for gap in at.windows(2).map(|w| w[1] - w[0]) {
        assert!((27_000..=33_000).contains(&gap), "a gap of {gap} ms");
    }
}

async fn gcp_mock() -> (MockGcp, SocketAddr) {
    let mock = MockGcp::new();
    let addr = mock.start().await.expect("bind 127.0.0.1:0");
    (mock, addr)
}

/// An agent online with `cloud = gcp`, and the mock it asks.
async fn online_on_gcp(world: &World) -> (MockGcp, Agent) {
    let (mock, addr) = gcp_mock().await;
    let agent = world
        .spawn_online(world.cloud_inputs("gcp", Cloud::Gcp, addr))
        .await;
    (mock, agent)
}

/// An agent online with `cloud = azure`, and the mock it asks.
async fn online_on_azure(world: &World) -> (MockAzure, Agent) {
    let (mock, addr) = azure_mock().await;
    let agent = world
        .spawn_online(world.cloud_inputs("azure", Cloud::Azure, addr))
        .await;
    (mock, agent)
}

async fn azure_mock() -> (MockAzure, SocketAddr) {
    let mock = MockAzure::new();
    let addr = mock.start().await.expect("bind 127.0.0.1:0");
    (mock, addr)
}

#[test]
fn google_cloud_identity_lands_in_registration_and_every_request_carries_the_flavor() {
    with_real_time_limit(Duration::from_secs(60), || async {
        let world = World::start().await;
        let (mock, agent) = online_on_gcp(&world).await;
        pass(mins(3)).await;
        agent.stop().await;
        assert_eq!(
            registered_instance(&world),
            serde_json::json!({
                "cloud": "gcp",
                "id": gcp::INSTANCE_ID,
                "name": gcp::INSTANCE_NAME,
                "type": "e2-standard-4",
                "availability_zone": "europe-west4-a",
                "lifecycle": "spot",
            })
        );
        let requests = mock.requests();
        assert!(requests.iter().all(|r| r.flavored));
        // Each key followed by hanging requests that carry the last ETag: a
        // handful in three minutes, not a poll every few seconds.
        let preempted: Vec<_> = requests
            .iter()
            .filter(|r| r.key == "instance/preempted")
            .collect();
        assert!(!preempted[0].hanging);
        assert!(
            preempted[1..]
                .iter()
                .all(|r| r.hanging && r.last_etag.is_some())
        );
        assert!((2..=6).contains(&preempted.len()), "{preempted:?}");
    });
}

#[test]
fn a_google_cloud_preemption_reaches_the_control_plane_at_once_and_only_once() {
    with_real_time_limit(Duration::from_secs(60), || async {
        let (logs, _guard) = Logs::capture();
        let world = World::start().await;
        let (mock, agent) = online_on_gcp(&world).await;
        pass(secs(7)).await;
        let given = Instant::now();
        let wall = std::time::SystemTime::now();
        mock.preempt();
        assert!(until(REQUEST, || !carrying(&world.heartbeats()).is_empty()).await);
        let took = given.elapsed();
        assert!(took <= REQUEST, "{took:?}");
        let count = world.heartbeats().len();
        assert!(until(mins(3), || world.heartbeats().len() >= count + 4).await);
        agent.stop().await;
        let beats = world.heartbeats();
        let carried = carrying(&beats);
        assert_eq!(carried.len(), 1);
        assert_eq!(carried[0].status(), "terminating");
        let notice = &carried[0].body["interruption"];
        assert_eq!(
            (notice["source"].as_str(), notice["action"].as_str()),
            (Some("gcp"), Some("preempt"))
        );
        // The deadline: when it was seen plus gcp_preemption_notice (30 s).
        let deadline = humantime::parse_rfc3339(notice["time"].as_str().unwrap()).unwrap();
        let ahead = deadline.duration_since(wall).unwrap();
        assert!((secs(29)..=secs(31)).contains(&ahead), "{ahead:?}");
        assert!(
            beats[count..beats.len() - 1]
                .iter()
                .all(|b| b.status() == "terminating")
        );
        let said = logs.events("interruption");
        assert_eq!(said.len(), 1, "{}", logs.text());
        assert!(said[0].contains("source=\"gcp\""), "{}", said[0]);
        Row::new("notice-gcp")
            .figure(
                "notice to the control plane",
                format!("{} ms", took.as_millis()),
            )
            .figure("heartbeats carrying it", carried.len())
            .figure(
                "deadline after it was seen (RFC 3339 drops the fraction)",
                format!("{:.1} s", ahead.as_secs_f64()),
            )
            .scan(&world, &logs)
            .done();
    });
}

#[test]
fn google_cloud_maintenance_migrate_is_reported_and_terminate_is_a_notice() {
    with_real_time_limit(Duration::from_secs(60), || async {
        let (logs, _guard) = Logs::capture();
        let world = World::start().await;
        let (mock, agent) = online_on_gcp(&world).await;
        mock.maintenance("MIGRATE_ON_HOST_MAINTENANCE");
        assert!(until(REQUEST, || carrying(&world.heartbeats()).len() == 1).await);
        pass(mins(1)).await;
        assert!(world.heartbeats().iter().all(|b| b.status() == "online"));
        mock.maintenance("NONE");
        pass(secs(5)).await;
        mock.maintenance("TERMINATE_ON_HOST_MAINTENANCE");
        assert!(until(REQUEST, || carrying(&world.heartbeats()).len() == 2).await);
        agent.stop().await;
        let beats = world.heartbeats();
        let carried = carrying(&beats);
        assert_eq!(
            carried[0].body["interruption"]["action"],
            "maintenance_migrate"
        );
        assert_eq!(carried[0].status(), "online");
        assert_eq!(
            carried[1].body["interruption"]["action"],
            "maintenance_terminate"
        );
        assert_eq!(carried[1].status(), "terminating");
        assert_eq!(logs.events("maintenance").len(), 1, "{}", logs.text());
        assert_eq!(logs.events("interruption").len(), 1);
    });
}

/// A value that changes while no request is waiting (a 503 blip ended both keys'
/// hanging requests, and they retry a second later) is seen by the next request,
/// which carries the ETag from before the change; the single blip is not worth a
/// line in the journal.
#[test]
fn a_google_cloud_change_between_two_requests_is_never_missed_and_a_blip_is_quiet() {
    with_real_time_limit(Duration::from_secs(60), || async {
        let (logs, _guard) = Logs::capture();
        let world = World::start().await;
        let (mock, agent) = online_on_gcp(&world).await;
        pass(secs(5)).await;
        let before = mock.requests().len();
        mock.blip(2);
        pass(Duration::from_millis(200)).await;
        mock.preempt();
        assert!(until(secs(3), || !carrying(&world.heartbeats()).is_empty()).await);
        agent.stop().await;
        let lines = logs.events("imds_unavailable").len();
        assert_eq!(lines, 0, "{}", logs.text());
        let retried = mock.requests()[before..]
            .iter()
            .find(|r| r.key == "instance/preempted")
            .cloned()
            .unwrap();
        // The value's first version: the one the preemption changed.
        assert!(retried.hanging);
        assert_eq!(retried.last_etag.as_deref(), Some("0000000000000001"));
        Row::new("gcp-blip")
            .figure("503 answers", 2)
            .figure("journal lines for them", lines)
            .figure("notice to the control plane", "within 3 s")
            .scan(&world, &logs)
            .done();
    });
}

/// Without its header, down, garbage: the heartbeats keep their cadence; the
/// trouble is logged once per change of state, and the recovery once.
#[test]
fn a_misbehaving_google_cloud_metadata_server_never_disturbs_the_heartbeats() {
    with_real_time_limit(Duration::from_secs(60), || async {
        let (logs, _guard) = Logs::capture();
        let world = World::start().await;
        let (mock, agent) = online_on_gcp(&world).await;
        let first = world.heartbeats().len();
        // An impostor's "TRUE" is never believed.
        mock.set_behaviour(gcp::Behaviour::NoFlavor);
        mock.preempt();
        pass(mins(3)).await;
        assert!(carrying(&world.heartbeats()).is_empty());
        mock.set("instance/preempted", "FALSE");
        for behaviour in [
            gcp::Behaviour::Down,
            gcp::Behaviour::Garbage,
            gcp::Behaviour::Normal,
        ] {
            mock.set_behaviour(behaviour);
            // A hanging request already sent ends within its minute.
            pass(mins(3)).await;
        }
        agent.stop().await;
        cadence_holds(&world.heartbeats(), first);
        assert!(carrying(&world.heartbeats()).is_empty());
        assert_eq!(
            trouble_reasons(&logs),
            ["impostor", "unreachable", "garbage"],
            "{}",
            logs.text()
        );
        assert_eq!(logs.events("imds_recovered").len(), 1);
        // Bounded: each key asked at most once a second even while every answer
        // came at once, and far less while failing.
        let requests = mock.requests().len();
        assert!(requests < 300, "{requests} requests in 12 minutes");
        let (lowest, highest) = gaps(&world.heartbeats(), first);
        Row::new("gcp-misbehaving")
            .figure("trouble lines", "3 (impostor, unreachable, garbage)")
            .figure("recovery lines", 1)
            .figure("heartbeat gaps", format!("{lowest} to {highest} ms"))
            .figure("metadata requests in 12 min", requests)
            .scan(&world, &logs)
            .done();
    });
}

#[test]
fn azure_identity_lands_in_registration_and_every_request_says_metadata_true() {
    with_real_time_limit(Duration::from_secs(60), || async {
        let world = World::start().await;
        let (mock, agent) = online_on_azure(&world).await;
        pass(secs(30)).await;
        agent.stop().await;
        assert_eq!(
            registered_instance(&world),
            serde_json::json!({
                "cloud": "azure",
                "id": azure::VM_ID,
                "name": azure::VM_NAME,
                "type": "Standard_D2s_v3",
                "availability_zone": "westeurope",
                "lifecycle": "spot",
            })
        );
        let requests = mock.requests();
        assert!(
            requests
                .iter()
                .all(|r| r.metadata_header && r.api_version.is_some())
        );
        // Polled every interruption_poll_interval (5 s): about 6 in 30 s.
        let polls = mock.requests_for("/metadata/scheduledevents");
        assert!((5..=9).contains(&polls), "{polls} polls");
    });
}

/// A scale set's document lists its neighbours' events: only this VM's count. A
/// new incarnation made by a neighbour does not send this VM's notice again.
#[test]
fn an_azure_preemption_of_this_vm_reaches_the_control_plane_within_one_poll_once() {
    with_real_time_limit(Duration::from_secs(60), || async {
        let (logs, _guard) = Logs::capture();
        let world = World::start().await;
        let (mock, agent) = online_on_azure(&world).await;
        mock.schedule(
            "N1",
            "Preempt",
            &["vmss_7"],
            "Tue, 24 Nov 2026 08:21:00 GMT",
        );
        pass(mins(1)).await;
        assert!(carrying(&world.heartbeats()).is_empty());
        let given = Instant::now();
        mock.schedule(
            "E1",
            "Preempt",
            &["vmss_7", azure::VM_NAME],
            "Tue, 24 Nov 2026 08:22:00 GMT",
        );
        assert!(until(POLL + REQUEST, || !carrying(&world.heartbeats()).is_empty()).await);
        let took = given.elapsed();
        assert!(took <= POLL + REQUEST, "{took:?}");
        mock.schedule("N2", "Reboot", &["vmss_9"], "");
        let count = world.heartbeats().len();
        assert!(until(mins(3), || world.heartbeats().len() >= count + 4).await);
        agent.stop().await;
        let beats = world.heartbeats();
        let carried = carrying(&beats);
        assert_eq!(carried.len(), 1);
        assert_eq!(carried[0].status(), "terminating");
        assert_eq!(
            carried[0].body["interruption"],
            serde_json::json!({"source": "azure", "action": "preempt", "time": "2026-11-24T08:22:00Z"})
        );
        assert_eq!(logs.events("interruption").len(), 1, "{}", logs.text());
        Row::new("notice-azure")
            .figure(
                "notice to the control plane",
                format!("{} ms", took.as_millis()),
            )
            .figure("heartbeats carrying it", carried.len())
            .figure("neighbours' events sent", 0)
            .scan(&world, &logs)
            .done();
    });
}

#[test]
fn an_azure_freeze_is_reported_and_the_vm_stays_online() {
    with_real_time_limit(Duration::from_secs(60), || async {
        let world = World::start().await;
        let (mock, agent) = online_on_azure(&world).await;
        mock.schedule(
            "F1",
            "Freeze",
            &[azure::VM_NAME],
            "Tue, 24 Nov 2026 08:22:00 GMT",
        );
        assert!(until(POLL + REQUEST, || !carrying(&world.heartbeats()).is_empty()).await);
        pass(mins(1)).await;
        agent.stop().await;
        let beats = world.heartbeats();
        assert_eq!(carrying(&beats)[0].body["interruption"]["action"], "freeze");
        assert!(
            beats[..beats.len() - 1]
                .iter()
                .all(|b| b.status() == "online")
        );
    });
}

/// The first Scheduled Events request switches the service on and may take two
/// minutes: READY, registration and the heartbeats do not wait for it.
#[test]
fn a_slow_first_azure_answer_never_delays_the_heartbeats() {
    with_real_time_limit(Duration::from_secs(60), || async {
        let (logs, _guard) = Logs::capture();
        let world = World::start().await;
        let (mock, addr) = azure_mock().await;
        mock.slow_first_events(secs(110));
        let logical_splay = secs(30);
        let started = Instant::now();
        let agent = world.spawn(world.cloud_inputs("azure", Cloud::Azure, addr));
        assert!(until(mins(1), || !world.heartbeats().is_empty()).await);
        let first = started.elapsed();
        assert!(first <= logical_splay + REQUEST, "{first:?}");
        assert!(until(mins(2), || world.heartbeats().len() >= 3).await);
        mock.schedule(
            "E1",
            "Preempt",
            &[azure::VM_NAME],
            "Tue, 24 Nov 2026 08:22:00 GMT",
        );
        assert!(until(mins(2), || !carrying(&world.heartbeats()).is_empty()).await);
        agent.stop().await;
        // The identity at start, and the VM's name for matching events.
        assert_eq!(mock.requests_for("/metadata/instance"), 2);
        Row::new("azure-slow-first")
            .figure("first Scheduled Events answer", "after 110 s")
            .figure(
                "first heartbeat after start",
                format!("{} s (the splay is under 30 s)", first.as_secs()),
            )
            .figure("notice once it answers", "sent")
            .scan(&world, &logs)
            .done();
    });
}

#[test]
fn a_misbehaving_azure_metadata_service_never_disturbs_the_heartbeats() {
    with_real_time_limit(Duration::from_secs(60), || async {
        let (logs, _guard) = Logs::capture();
        let world = World::start().await;
        let (mock, agent) = online_on_azure(&world).await;
        let first = world.heartbeats().len();
        for behaviour in [
            azure::Behaviour::Down,
            azure::Behaviour::Garbage,
            azure::Behaviour::Normal,
        ] {
            mock.set_behaviour(behaviour);
            pass(mins(3)).await;
        }
        agent.stop().await;
        cadence_holds(&world.heartbeats(), first);
        assert_eq!(
            trouble_reasons(&logs),
            ["unreachable", "garbage"],
            "{}",
            logs.text()
        );
        assert_eq!(logs.events("imds_recovered").len(), 1);
        let (lowest, highest) = gaps(&world.heartbeats(), first);
        Row::new("azure-misbehaving")
            .figure("trouble lines", "2 (unreachable, garbage)")
            .figure("recovery lines", 1)
            .figure("heartbeat gaps", format!("{lowest} to {highest} ms"))
            .scan(&world, &logs)
            .done();
    });
}

/// `cloud = auto`: DMI names the cloud, without a packet, and its service alone is
/// asked; DMI that names no cloud means no metadata request at all.
#[test]
fn auto_asks_only_the_cloud_dmi_names_and_nothing_on_a_host_that_is_on_none() {
    with_real_time_limit(Duration::from_secs(60), || async {
        let (logs, _guard) = Logs::capture();
        let world = World::start().await;
        let (gcp, gcp_addr) = gcp_mock().await;
        let (azure, azure_addr) = azure_mock().await;
        let ec2 = MockImds::new();
        let ec2_addr = ec2.start().await.unwrap();
        let all_clouds = |dmi: &[(&str, &str)]| {
            world
                .inputs()
                .var("HOSTBEAT_CLOUD", "auto")
                .var("HOSTBEAT_EC2_METADATA_URL", format!("http://{ec2_addr}"))
                .var("HOSTBEAT_GCP_METADATA_URL", format!("http://{gcp_addr}"))
                .var(
                    "HOSTBEAT_AZURE_METADATA_URL",
                    format!("http://{azure_addr}"),
                )
                .var("HOSTBEAT_DMI_DIR", world.write_dmi(dmi).to_str().unwrap())
        };
        let asked = || {
            (
                ec2.requests().len(),
                gcp.requests().len(),
                azure.requests().len(),
            )
        };

        let agent = world
            .spawn_online(all_clouds(&[
                ("sys_vendor", "LENOVO"),
                ("product_name", "20XW"),
            ]))
            .await;
        pass(mins(2)).await;
        agent.stop().await;
        pass(secs(2)).await;
        assert_eq!(asked(), (0, 0, 0));
        assert_eq!(logs.events("imds_absent").len(), 1, "{}", logs.text());
        Row::new("cloud-none")
            .figure("metadata requests in 2 min", 0)
            .figure("lines saying so", 1)
            .scan(&world, &logs)
            .done();

        for (dmi, cloud) in [
            (
                &[
                    ("sys_vendor", "Google"),
                    ("product_name", "Google Compute Engine"),
                ][..],
                "gcp",
            ),
            (
                &[
                    ("sys_vendor", "Microsoft Corporation"),
                    (
                        "chassis_asset_tag",
                        hostbeat::cloud::detect::AZURE_ASSET_TAG,
                    ),
                ][..],
                "azure",
            ),
            (&[("sys_vendor", "Amazon EC2")][..], "ec2"),
        ] {
            let before = asked();
            let agent = world.spawn_online(all_clouds(dmi)).await;
            agent.stop().await;
            // A request sent just before the stop is counted, then none after.
            pass(secs(2)).await;
            let after = asked();
            let grew = [after.0 > before.0, after.1 > before.1, after.2 > before.2];
            let expected = match cloud {
                "ec2" => [true, false, false],
                "gcp" => [false, true, false],
                _ => [false, false, true],
            };
            assert_eq!(grew, expected, "{cloud}");
            let detected = logs.events("cloud_detected");
            assert!(
                detected
                    .last()
                    .unwrap()
                    .contains(&format!("source=\"{cloud}\"")),
                "{detected:?}"
            );
        }
    });
}

/// A cloud whose notices come and go (a maintenance value flapping every 1.5 s)
/// never sets how often the control plane is asked: the same notice again is not
/// news, and news brings a heartbeat forward at most once a cadence.
#[test]
fn a_flapping_notice_never_makes_the_heartbeats_more_frequent() {
    with_real_time_limit(Duration::from_secs(60), || async {
        let (logs, _guard) = Logs::capture();
        let world = World::start().await;
        let (mock, agent) = online_on_gcp(&world).await;
        let before = world.heartbeats().len();
        for value in [
            "MIGRATE_ON_HOST_MAINTENANCE",
            "NONE",
            "TERMINATE_ON_HOST_MAINTENANCE",
            "NONE",
        ]
        .into_iter()
        .cycle()
        .take(80)
        {
            mock.maintenance(value);
            pass(Duration::from_millis(1500)).await;
        }
        // Two minutes at a 30 s cadence: 4 beats, and at most one brought forward
        // per cadence.
        let beats = world.heartbeats().len() - before;
        assert!(beats <= 8, "{beats} heartbeats in 2 minutes");
        agent.stop().await;
        assert_eq!(logs.events("maintenance").len(), 1, "{}", logs.text());
        assert_eq!(logs.events("interruption").len(), 1);
        assert_eq!(carrying(&world.heartbeats()).len(), 2);
        Row::new("notice-flapping")
            .figure("value changes", 80)
            .figure("heartbeats in 2 min", beats)
            .figure("notices said and sent", 2)
            .scan(&world, &logs)
            .done();
    });
}

/// A notice that the host goes is never held back by an advisory brought forward
/// just before it.
#[test]
fn an_interruption_right_after_an_advisory_reaches_the_control_plane_at_once() {
    with_real_time_limit(Duration::from_secs(60), || async {
        let world = World::start().await;
        let (mock, agent) = online_on_gcp(&world).await;
        mock.maintenance("MIGRATE_ON_HOST_MAINTENANCE");
        assert!(until(REQUEST, || carrying(&world.heartbeats()).len() == 1).await);
        pass(secs(3)).await;
        mock.preempt();
        assert!(until(REQUEST, || carrying(&world.heartbeats()).len() == 2).await);
        agent.stop().await;
        let beats = world.heartbeats();
        assert_eq!(
            carrying(&beats)[1].body["interruption"]["action"],
            "preempt"
        );
    });
}

/// A VM whose scale set schedules one maintenance after another (a new event every
/// 6 s for 2 minutes, each news): each is shown and sent, but a heartbeat is
/// brought forward at most once a cadence for them.
#[test]
fn advisories_one_after_another_bring_a_heartbeat_forward_at_most_once_a_cadence() {
    with_real_time_limit(Duration::from_secs(60), || async {
        let world = World::start().await;
        let (mock, agent) = online_on_azure(&world).await;
        let before = world.heartbeats().len();
        for n in 0..20 {
            let kind = if n % 2 == 0 { "Freeze" } else { "Reboot" };
            mock.schedule(&format!("M{n}"), kind, &[azure::VM_NAME], "");
            pass(secs(6)).await;
        }
        let beats = world.heartbeats().len() - before;
        agent.stop().await;
        // Four at the 30 s cadence, and at most four brought forward.
        assert!((4..=9).contains(&beats), "{beats} heartbeats in 2 minutes");
        assert!(carrying(&world.heartbeats()).len() >= 4);
    });
}

/// Azure's watcher, on its own: each of this VM's events handed over once, whatever
/// the incarnations its neighbours' events make.
#[test]
fn azure_hands_each_event_of_this_vm_over_once_whatever_the_incarnations() {
    with_real_time_limit(Duration::from_secs(60), || async {
        use hostbeat::cloud::Provider;
        let world = World::start().await;
        let (mock, addr) = azure_mock().await;
        let settings = crate::support::settings(world.cloud_inputs("azure", Cloud::Azure, addr));
        let provider = Provider::new(Cloud::Azure, &settings.cloud);
        let mut watcher = provider.watch(
            &settings.cloud,
            tokio_util::sync::CancellationToken::new(),
            hostbeat::wheel::Grid::none(),
        );
        let mut next = async || {
            tokio::time::timeout(POLL * 3, watcher.notices.recv())
                .await
                .ok()
                .flatten()
        };
        mock.schedule("E1", "Freeze", &[azure::VM_NAME], "");
        assert_eq!(next().await.unwrap().action, "freeze");
        mock.schedule("N1", "Reboot", &["vmss_9"], "");
        mock.schedule("N2", "Redeploy", &["vmss_9"], "");
        assert_eq!(
            next().await,
            None,
            "a neighbour's incarnation handed E1 again"
        );
        mock.schedule(
            "E2",
            "Preempt",
            &[azure::VM_NAME],
            "Tue, 24 Nov 2026 08:22:00 GMT",
        );
        let preempt = next().await.unwrap();
        assert_eq!(
            (preempt.action.as_str(), preempt.time.as_str()),
            ("preempt", "2026-11-24T08:22:00Z")
        );
        assert_eq!(next().await, None);
    });
}
