//! No retry storms (protocol.md section 3, "Transient", "One budget", "One view of
//! the plane"): whatever fails, a failing agent sends its control plane no more
//! than a healthy one does, its first retry comes no sooner than its next beat would
//! have, and the token refresher stands aside while the heartbeat path probes a
//! plane that is down. In virtual time, against the reference control plane.

use std::time::Duration;

use hostbeat_refplane::{Fault, RecordedRequest, Scope};

use crate::support::*;

/// The packaged interval.
const INTERVAL: Duration = Duration::from_secs(30);

/// The most requests that fall in any window of `width` among `requests`.
fn busiest(requests: &[RecordedRequest], width: Duration) -> usize {
    let width = u64::try_from(width.as_millis()).unwrap();
    let at: Vec<u64> = requests.iter().map(|r| r.at_ms).collect();
    (0..at.len())
        .map(|i| at[i..].iter().take_while(|&&t| t < at[i] + width).count())
        .max()
        .unwrap_or(0)
}

/// What a failing plane gets from one agent over an hour, for each way of failing:
/// no more than a healthy agent sends it, in any window of one interval or longer.
#[test]
fn a_failing_plane_gets_no_more_than_a_healthy_agent_sends() {
    // Ten hours of virtual time in all; seconds alone, minutes beside the suite.
    with_real_time_limit(Duration::from_secs(600), || async {
        let token_expired = || Fault::Status {
            status: 401,
            body: r#"{"error":"invalid_token","error_description":"Token expired"}"#.into(),
            retry_after: None,
            www_authenticate: Some(r#"Bearer error="invalid_token""#.into()),
        };
        for (name, fault, scope) in [
            ("no answer", Fault::Outage, Scope::All),
            ("503", Fault::status(503, ""), Scope::All),
            // Every access token refused: a new one, and the same call once more.
            ("token_expired", token_expired(), Scope::Agents),
            // The plane lost every agent: a new registration, then the heartbeat.
            ("unknown agent", Fault::status(404, ""), Scope::Agents),
            (
                "rate limited, Retry-After: 1",
                Fault::retry_after(429, "1"),
                Scope::All,
            ),
        ] {
            let world = World::start().await;
            let agent = world.spawn_online(world.exchange_inputs()).await;
            pass(mins(5)).await;
            let healthy_from = world.requests().len();
            pass(mins(60)).await;
            let healthy = world.requests().len() - healthy_from;

            world.plane.set_fault(fault, scope, None);
            let failing_from = world.requests().len();
            pass(mins(60)).await;
            let failing = world.requests()[failing_from..].to_vec();
            world.plane.clear_fault();
            agent.stop().await;

            assert!(
                failing.len() <= healthy + 2,
                "{name}: {} requests in a failing hour, {healthy} in a healthy one",
                failing.len()
            );
            // The budget's first burst (a failure and its one follow-up), then one
            // per interval.
            let in_interval = busiest(&failing, INTERVAL);
            assert!(
                in_interval <= 2,
                "{name}: {in_interval} requests within 30 s"
            );
            let in_ten = busiest(&failing, mins(10));
            assert!(in_ten <= 22, "{name}: {in_ten} requests within 10 minutes");
        }
    });
}

/// The first retry after a failed heartbeat comes no sooner than the next beat
/// would have: one interval, and no later than two.
#[tokio::test(start_paused = true)]
async fn the_first_retry_comes_no_sooner_than_the_next_beat() {
    for _ in 0..20 {
        let world = World::start().await;
        let agent = world.spawn_online(world.inputs()).await;
        world.plane.set_fault(Fault::Outage, Scope::All, Some(1));
        assert!(until(mins(2), || world.faulted() == 1).await);
        let failed = world.requests().last().unwrap().at_ms;
        let retry = || {
            world
                .requests()
                .iter()
                .find(|r| r.at_ms > failed)
                .map(|r| r.at_ms)
        };
        assert!(until(mins(2), || retry().is_some()).await);
        let after = Duration::from_millis(retry().unwrap() - failed);
        agent.stop().await;
        assert!(
            (INTERVAL..=INTERVAL * 2 + secs(1)).contains(&after),
            "retried {after:?} after the failure"
        );
    }
}

/// While the plane is down, the token refresher adds nothing of its own: over a
/// 40-minute outage (longer than the 15-minute token), the agent's requests are its
/// heartbeat attempts, each one probe; when the plane is back, the exchange and the
/// heartbeat follow the first probe that finds it.
#[tokio::test(start_paused = true)]
async fn the_refresher_stands_aside_while_the_plane_is_down() {
    let world = World::start().await;
    let (logs, _guard) = Logs::capture();
    let agent = world.spawn_online(world.exchange_inputs()).await;
    pass(mins(2)).await;
    world.plane.set_fault(Fault::Outage, Scope::All, None);
    let from = world.requests().len();
    pass(mins(40)).await;
    let during = world.requests()[from..].to_vec();
    world.plane.clear_fault();
    let last_failed = during.last().unwrap().at_ms;
    assert!(
        until(mins(6), || world
            .heartbeats()
            .last()
            .is_some_and(|h| h.at_ms > last_failed))
        .await
    );
    agent.stop().await;

    // Each attempt is one request: a heartbeat while the token is valid, an
    // exchange once it has expired; the refresher's one try when its token came
    // due is held to the same budget.
    assert!(busiest(&during, INTERVAL) <= 2, "{during:?}");
    // The transient schedule over 40 minutes: attempts 30 s to 5 min apart.
    assert!(
        (8..=50).contains(&during.len()),
        "{} requests",
        during.len()
    );
    assert!(
        logs.events("token_refresh_failed").len() <= 2,
        "{}",
        logs.text()
    );
}

/// An identity provider on a host of its own has a budget of its own: while it is
/// down, heartbeats that still hold a valid access token go on.
#[tokio::test(start_paused = true)]
async fn an_identity_provider_down_never_stops_heartbeats_with_a_valid_token() {
    let world = World::start().await;
    // The same plane on a second port: another origin, as an outside provider is.
    let provider = world.plane.start().await.expect("bind 127.0.0.1:0");
    let inputs = world.inputs().var(
        "HOSTBEAT_TOKEN_URL",
        format!("http://{provider}/oauth/token"),
    );
    let agent = world.spawn_online(inputs).await;
    world.plane.set_fault(Fault::Outage, Scope::Token, None);
    let from = world.heartbeats().len();
    // The token (15 minutes, refreshed 3 minutes ahead) is valid for at least 10
    // more minutes: every beat of them is accepted.
    pass(mins(10)).await;
    let accepted = world.heartbeats().len() - from;
    agent.stop().await;
    assert!(
        (18..=23).contains(&accepted),
        "{accepted} heartbeats in 10 minutes"
    );
}
