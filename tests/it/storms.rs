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
pub(crate) fn busiest(requests: &[RecordedRequest], width: Duration) -> usize {
    let width = u64::try_from(width.as_millis()).unwrap();
    let at: Vec<u64> = requests.iter().map(|r| r.at_ms).collect();
    (0..at.len())
        .map(|i| at[i..].iter().take_while(|&&t| t < at[i] + width).count())
        .max()
        .unwrap_or(0)
}

/// How a plane fails, for an hour.
#[derive(Debug)]
enum Failing {
    Fault(Fault, Scope),
    /// Registration works, and the plane forgets every agent at once: every
    /// heartbeat is `unknown_agent`, every new registration is accepted.
    LosesAgents,
}

/// What a failing plane gets from one agent over an hour, for each way of failing
/// (no answer, a timeout, 5xx, 429, each kind of authentication failure, a plane
/// that forgets its agents, a token endpoint that fails): no more than a healthy
/// agent sends it in an hour, and in any window of one interval or more no more
/// than one request a cadence and three more from the first failure on (the
/// budget, src/plane_view.rs): the two a failing stretch may run ahead, and the
/// first failure, which went before the stretch began.
#[test]
fn a_failing_plane_gets_no_more_than_a_healthy_agent_sends() {
    with_real_time_limit(Duration::from_secs(600), || async {
        let token_expired = Fault::Status {
            status: 401,
            body: r#"{"error":"invalid_token","error_description":"Token expired"}"#.into(),
            retry_after: None,
            www_authenticate: Some(r#"Bearer error="invalid_token""#.into()),
        };
        let invalid_client = Fault::Status {
            status: 401,
            body: r#"{"error":"invalid_client"}"#.into(),
            retry_after: None,
            www_authenticate: None,
        };
        for (name, failing) in [
            ("no answer", Failing::Fault(Fault::Outage, Scope::All)),
            (
                "timeout",
                Failing::Fault(Fault::Slow { delay_ms: 120_000 }, Scope::All),
            ),
            ("503", Failing::Fault(Fault::status(503, ""), Scope::All)),
            // The client token refused: every exchange is invalid_client.
            (
                "credential rejected",
                Failing::Fault(invalid_client, Scope::Token),
            ),
            // Every access token refused: a new one, and the same call once more.
            (
                "token_expired",
                Failing::Fault(token_expired, Scope::Agents),
            ),
            // Every heartbeat and registration refused as unknown.
            ("404", Failing::Fault(Fault::status(404, ""), Scope::Agents)),
            // A new registration, then the heartbeat once more, then unknown again.
            ("loses its agents", Failing::LosesAgents),
            (
                "Retry-After: 1",
                Failing::Fault(Fault::retry_after(429, "1"), Scope::All),
            ),
            // Heartbeats go on while the token lasts; the refresher's tries and,
            // once it has expired, the heartbeat's own exchanges fail.
            (
                "token endpoint 500",
                Failing::Fault(Fault::status(500, ""), Scope::Token),
            ),
        ] {
            let world = World::start().await;
            let agent = world.spawn_online(world.exchange_inputs()).await;
            pass(mins(5)).await;
            let healthy_from = world.requests().len();
            pass(mins(60)).await;
            let healthy = world.requests().len() - healthy_from;

            let failing_from = world.requests().len();
            let forgetting = match failing {
                Failing::Fault(fault, scope) => {
                    world.plane.set_fault(fault, scope, None);
                    None
                }
                Failing::LosesAgents => {
                    let plane = world.plane.clone();
                    Some(tokio::spawn(async move {
                        loop {
                            plane.forget_agents();
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }))
                }
            };
            pass(mins(60)).await;
            let failing = world.requests()[failing_from..].to_vec();
            // The stretch begins at the first request the fault answered: the
            // healthy ones before it (a token still valid) are no part of it. A
            // plane that forgets its agents fails them from the first.
            let stretch: Vec<RecordedRequest> = failing
                .iter()
                .skip_while(|r| forgetting.is_none() && r.fault.is_none())
                .cloned()
                .collect();
            assert!(!stretch.is_empty(), "{name}: nothing failed");
            // A plane that forgets its agents accepts the heartbeat after each
            // registration, which ends the stretch: a token refresh due just then
            // goes uncharged (what the stretch left unpaid still carries).
            let between = usize::from(forgetting.is_some());
            world.plane.clear_fault();
            if let Some(task) = forgetting {
                task.abort();
            }
            agent.stop().await;

            assert!(
                failing.len() <= healthy + 1,
                "{name}: {} requests in a failing hour, {healthy} in a healthy one",
                failing.len()
            );
            if std::env::var_os("STORMS_DEBUG").is_some() {
                for r in &failing {
                    eprintln!("{name}: {} {}", r.at_ms, r.path);
                }
            }
            for k in [1, 2, 5, 10, 40] {
                let busiest = busiest(&stretch, INTERVAL * k);
                assert!(
                    busiest <= k as usize + 3 + between,
                    "{name}: {busiest} requests within {k} intervals"
                );
            }
        }
    });
}

/// The first retry after a failed heartbeat comes no sooner than the next beat
/// would have: one interval, and no later than two.
#[tokio::test(start_paused = true)]
async fn the_first_retry_comes_no_sooner_than_the_next_beat() {
    for fault in [Fault::Outage, Fault::retry_after(503, "1")] {
        for _ in 0..10 {
            let world = World::start().await;
            let agent = world.spawn_online(world.inputs()).await;
            world.plane.set_fault(fault.clone(), Scope::All, Some(1));
            assert!(until(mins(2), || world.faulted() == 1).await);
            let failed = world.requests().last().unwrap().at_ms;
            let retry = || {
                world
                    .requests()
                    .iter()
                    .find(|r| r.at_ms > failed)
                    .map(|r| r.at_ms)
            };
            assert!(until(mins(3), || retry().is_some()).await);
            let after = Duration::from_millis(retry().unwrap() - failed);
            agent.stop().await;
            assert!(
                (INTERVAL..=INTERVAL * 2 + secs(1)).contains(&after),
                "{fault:?}: retried {after:?} after the failure"
            );
        }
    }
}

/// While the plane is down, the token refresher asks nothing of its own: its token
/// comes due during an outage, and no exchange is tried until the token has
/// expired (the heartbeat's attempts, which then need one, are the probes); when
/// the plane is back, the exchange and the heartbeat follow the probe that finds
/// it.
#[tokio::test(start_paused = true)]
async fn the_refresher_stands_aside_while_the_plane_is_down() {
    let world = World::start().await;
    let (logs, _guard) = Logs::capture();
    let agent = world.spawn_online(world.exchange_inputs()).await;
    let issued = world.requests_to("/oauth/token").last().unwrap().at_ms;
    // The 15-minute token comes due 8.25 to 12 minutes after it was issued.
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

    let expired = issued + 15 * 60 * 1000;
    let early_exchanges: Vec<&RecordedRequest> = during
        .iter()
        .filter(|r| r.path.starts_with("/oauth/token") && r.at_ms < expired)
        .collect();
    assert!(early_exchanges.is_empty(), "{early_exchanges:?}");
    assert!(
        logs.events("token_refresh_failed").is_empty(),
        "{}",
        logs.text()
    );
    // The transient schedule over 40 minutes: attempts 30 s to 5 min apart.
    assert!(
        (8..=50).contains(&during.len()),
        "{} requests",
        during.len()
    );
}

/// An identity provider on a host of its own is probed by the refresher alone, on
/// a budget of its own: while it is down, heartbeats that still hold a valid access
/// token go on, its failures do not make the plane look down, it gets no more
/// than one request a cadence (and the two a stretch may run ahead), and a stop
/// still says goodbye.
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
    // The 15-minute token comes due 8.25 to 12 minutes after it was issued and
    // expires at 15: the refresher tries before then, and fails.
    pass(mins(14)).await;
    let beats = world.heartbeats()[from..].to_vec();
    let accepted = beats.len();
    let exchanges = world.requests_to("/oauth/token");
    let tried = exchanges.len();
    agent.stop().await;
    for k in [1, 2, 5] {
        let busiest = busiest(&exchanges, INTERVAL * k);
        assert!(
            busiest <= k as usize + 2,
            "{busiest} exchanges within {k} intervals"
        );
    }
    assert!(
        (25..=31).contains(&accepted),
        "{accepted} heartbeats in 14 minutes"
    );
    assert!(tried >= 2, "the refresher tried {tried} exchanges in all");
    // The provider's failures held back no heartbeat: every one on its cadence.
    for pair in beats.windows(2) {
        let gap = pair[1].at_ms - pair[0].at_ms;
        assert!(gap <= 33_100, "a heartbeat {gap} ms after the one before");
    }
    assert_eq!(world.heartbeats().last().unwrap().status(), "offline");
}

/// The goodbye is a request like any other: stopped right after an attempt that
/// spent the budget (every access token refused: the heartbeat, a new token, the
/// heartbeat again), the agent sends nothing more, and says why; stopped once the
/// plane has accepted a heartbeat again, it says goodbye as always.
#[tokio::test(start_paused = true)]
async fn no_goodbye_beyond_the_budget() {
    let world = World::start().await;
    let (logs, _guard) = Logs::capture();
    let agent = world.spawn_online(world.exchange_inputs()).await;
    let token_expired = Fault::Status {
        status: 401,
        body: r#"{"error":"invalid_token"}"#.into(),
        retry_after: None,
        www_authenticate: Some(r#"Bearer error="invalid_token""#.into()),
    };
    world.plane.set_fault(token_expired, Scope::Agents, None);
    assert!(until(mins(2), || world.faulted() >= 2).await);
    let failed = world.requests().len();
    pass(secs(1)).await;
    agent.stop().await;
    assert_eq!(world.requests().len(), failed, "a goodbye was sent");
    let said = logs.events("shutdown");
    assert!(
        said.len() == 1 && said[0].contains("no offline heartbeat"),
        "{}",
        logs.text()
    );

    world.plane.clear_fault();
    let agent = world.spawn_online(world.exchange_inputs()).await;
    agent.stop().await;
    assert_eq!(world.heartbeats().last().unwrap().status(), "offline");
}

/// The first beat after a failing stretch is drawn over a whole cadence (half to
/// one and a half intervals), so that a fleet that came back together does not
/// beat in step; the ones after it are back to the interval's +-10%.
#[tokio::test(start_paused = true)]
async fn the_first_beat_after_a_recovery_is_drawn_over_a_whole_cadence() {
    let mut outside_tenth = 0;
    for _ in 0..20 {
        let world = World::start().await;
        let agent = world.spawn_online(world.inputs()).await;
        world.plane.set_fault(Fault::Outage, Scope::All, Some(1));
        assert!(until(mins(2), || world.faulted() == 1).await);
        let failed = world.requests().last().unwrap().at_ms;
        let after = || -> Vec<u64> {
            world
                .heartbeats()
                .iter()
                .map(|h| h.at_ms)
                .filter(|&at| at > failed)
                .collect()
        };
        assert!(until(mins(5), || after().len() >= 3).await);
        agent.stop().await;
        let beats = after();
        let (first, then) = (beats[1] - beats[0], beats[2] - beats[1]);
        assert!(
            (15_000..=45_100).contains(&first),
            "{first} ms after recovering"
        );
        assert!((27_000..=33_100).contains(&then), "then {then} ms");
        if !(27_000..=33_000).contains(&first) {
            outside_tenth += 1;
        }
    }
    // With the +-10% alone, none would be.
    assert!(outside_tenth > 0);
}
