//! Exchange mode: access tokens obtained, refreshed ahead of expiry, one exchange at
//! a time, and the token endpoint's failures.

use std::sync::Arc;

use hostbeat::api::ApiClient;
use hostbeat::credentials::Credentials;
use hostbeat_refplane::{Fault, PlaneConfig, Scope};

use crate::support::*;

fn lifetime(seconds: u64) -> PlaneConfig {
    PlaneConfig {
        token_lifetime: secs(seconds),
        ..PlaneConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_fifteen_minute_token_is_refreshed_before_expiry_for_an_hour() {
    let mut world = World::with(lifetime(900)).await;
    let (logs, _guard) = Logs::capture();
    let agent = world.spawn(world.exchange_inputs());
    pass(mins(61)).await;
    agent.stop().await;
    // Zero expired-token answers, about 120 heartbeats, and a refresh every 8.25 to
    // 12 minutes.
    assert_eq!(world.refusals(), vec![]);
    assert!(world.heartbeats().len() >= 110);
    let exchanges = world.requests_to("/oauth/token");
    assert!(
        (6..=9).contains(&exchanges.len()),
        "{} exchanges",
        exchanges.len()
    );
    for pair in exchanges.windows(2) {
        let gap = pair[1].at_ms - pair[0].at_ms;
        assert!(
            (495_000..=720_100).contains(&gap),
            "refreshed after {gap} ms"
        );
    }
    assert!(logs.events("heartbeat_failed").is_empty());
}

#[tokio::test(start_paused = true)]
async fn without_expires_in_the_jwt_exp_claim_gives_the_lifetime() {
    let mut world = World::with(PlaneConfig {
        send_expires_in: false,
        ..lifetime(600)
    })
    .await;
    let agent = world.spawn(world.exchange_inputs());
    pass(mins(60)).await;
    agent.stop().await;
    assert_eq!(world.refusals(), vec![]);
    // A 600 s token is refreshed 330 to 480 s after issue (120 s ahead, less up to
    // 25% of the lifetime, `refresh_after`): in an hour, the first exchange and 7
    // to 10 more.
    let exchanges = world.requests_to("/oauth/token").len();
    assert!((8..=11).contains(&exchanges), "{exchanges} exchanges");
}

#[tokio::test(start_paused = true)]
async fn an_opaque_token_without_lifetime_is_refreshed_on_401_only() {
    let mut world = World::with(PlaneConfig {
        send_expires_in: false,
        jwt: false,
        ..lifetime(300)
    })
    .await;
    let (logs, _guard) = Logs::capture();
    let agent = world.spawn(world.exchange_inputs());
    pass(mins(31)).await;
    agent.stop().await;
    let refusals = world.refusals();
    assert!(!refusals.is_empty());
    assert!(
        refusals
            .iter()
            .all(|(status, error)| *status == 401 && error == "token_expired")
    );
    // Each expiry costs one refusal and one exchange, and no heartbeat is lost.
    assert_eq!(world.requests_to("/oauth/token").len(), refusals.len() + 1);
    assert!(logs.events("heartbeat_failed").is_empty());
    let seqs = world.seqs();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

#[tokio::test(start_paused = true)]
async fn callers_that_need_a_token_at_once_share_one_exchange() {
    let world = World::start().await;
    let settings = settings(world.exchange_inputs());
    let api = Arc::new(ApiClient::new(&settings).unwrap());
    let credentials = Arc::new(Credentials::new(
        api,
        &settings.auth,
        settings.client_token.clone(),
        settings.token_source.clone(),
        settings.refresh_margin,
        settings.retry_after_max,
        settings.backoff,
    ));
    let callers: Vec<_> = (0..10)
        .map(|_| {
            let credentials = credentials.clone();
            tokio::spawn(async move { credentials.bearer().await.unwrap().generation })
        })
        .collect();
    let mut generations = Vec::new();
    for caller in callers {
        generations.push(caller.await.unwrap());
    }
    assert_eq!(world.requests_to("/oauth/token").len(), 1);
    assert!(generations.iter().all(|g| *g == 1), "{generations:?}");
    // A caller that reports generation 1 stale gets a new one; one that reports an
    // older generation gets the current one without another exchange.
    assert_eq!(credentials.refresh(Some(1)).await.unwrap().generation, 2);
    assert_eq!(credentials.refresh(Some(1)).await.unwrap().generation, 2);
    assert_eq!(world.requests_to("/oauth/token").len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_is_retried_while_the_old_token_is_valid() {
    // An hour-long token: its refresh comes 12 minutes ahead, room for three
    // tries on the transient schedule (30 s to 1 min, 30 s to 1.5 min, ...).
    let mut world = World::with(lifetime(3600)).await;
    let (logs, _guard) = Logs::capture();
    let agent = world.spawn_online(world.exchange_inputs()).await;
    world
        .plane
        .set_fault(Fault::status(503, ""), Scope::Token, Some(3));
    pass(mins(70)).await;
    agent.stop().await;
    // Three failures: the first is worth a warning, the retries are at debug.
    assert_eq!(
        logs.events("token_refresh_failed").len(),
        1,
        "{}",
        logs.text()
    );
    assert_eq!(logs.text().matches("token refresh failed again").count(), 2);
    assert!(logs.events("heartbeat_failed").is_empty());
    assert_eq!(world.refusals(), vec![]);
}

#[tokio::test(start_paused = true)]
async fn client_secret_post_sends_the_credentials_as_form_fields() {
    let world = World::start().await;
    let agent = world
        .spawn_online(
            world
                .exchange_inputs()
                .var("HOSTBEAT_CLIENT_AUTH", "post")
                .var("HOSTBEAT_SCOPE", "agents:write"),
        )
        .await;
    agent.stop().await;
    let token = &world.requests_to("/oauth/token")[0];
    assert!(token.header("authorization").is_none());
    assert_eq!(
        token.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    for field in [
        "grant_type=client_credentials",
        "scope=agents%3Awrite",
        "client_id=hostbeat",
        &format!("client_secret={SECRET}"),
    ] {
        assert!(token.body.contains(field), "{field} not in the form");
    }
}

#[tokio::test(start_paused = true)]
async fn token_endpoint_refusals_are_auth_failures_that_recover() {
    let world = World::start().await;
    let (logs, _guard) = Logs::capture();
    world.plane.deactivate(CLIENT_ID);
    let agent = world.spawn(world.exchange_inputs());
    pass(mins(30)).await;
    let during = world.requests().len();
    world.plane.activate(CLIENT_ID);
    assert!(until(mins(15) + secs(1), || !world.heartbeats().is_empty()).await);
    agent.stop().await;
    assert!((3..=20).contains(&during), "{during} requests in 30 min");
    let failures = logs.events("auth_failure");
    assert!(
        failures
            .iter()
            .all(|l| l.contains("reason=\"client_inactive\"") && l.contains("endpoint=\"token\"")),
        "{failures:?}"
    );
    assert!(failures[0].contains("Client account is not active"));

    // A wrong secret is a rejected credential.
    world.plane.rotate(CLIENT_ID, ROTATED);
    let (logs, _guard) = Logs::capture();
    let agent = world.spawn(world.exchange_inputs());
    assert!(until(mins(5), || !logs.events("auth_failure").is_empty()).await);
    agent.stop().await;
    let line = &logs.events("auth_failure")[0];
    assert!(
        line.contains("reason=\"credential_rejected\"") && line.contains("http_status=401"),
        "{line}"
    );
}

/// Regression: once the access token had expired during an outage, the refresher
/// retried the exchange in a loop with no wait. The refresher must leave an expired
/// token to the heartbeat loop, whose backoff bounds the attempts.
#[test]
fn an_outage_longer_than_the_token_lifetime_does_not_hammer_the_token_endpoint() {
    with_real_time_limit(secs(30), outage_longer_than_the_token_lifetime);
}

async fn outage_longer_than_the_token_lifetime() {
    let mut world = World::with(lifetime(60)).await;
    let (logs, _guard) = Logs::capture();
    let agent = world.spawn_online(world.exchange_inputs()).await;
    world.plane.set_fault(Fault::Outage, Scope::All, None);
    pass(mins(60)).await;
    let exchanges = world.requests_to("/oauth/token").len();
    world.plane.clear_fault();
    let back_at = tokio::time::Instant::now();
    assert!(until(mins(6), || world.heartbeats().len() >= 2).await);
    let recovery = back_at.elapsed();
    agent.stop().await;
    // Heartbeat attempts over an hour of 5-minute-capped backoff: about 30; the
    // exchange attempts are bounded by them.
    assert!(
        exchanges <= 80,
        "{exchanges} token requests during a one-hour outage"
    );
    let refresh_failed = logs.events("token_refresh_failed").len();
    assert!(refresh_failed <= 20, "{}", logs.text());
    // The expired token was not used: every accepted heartbeat carried a live one.
    let refused = world.refusals();
    assert!(
        !refused.iter().any(|(_, e)| e == "token_expired"),
        "{refused:?}"
    );
    Row::new("token-expiry-mid-outage")
        .figure("token lifetime", "60 s, in a 1 h outage")
        .figure("token requests during the outage", exchanges)
        .figure(
            "back after the plane's return",
            format!("{:.1} s", recovery.as_secs_f64()),
        )
        .figure("log entries about refreshes", refresh_failed)
        .scan(&world, &logs)
        .done();
}

/// A control plane that lost its token store refuses the access token as invalid:
/// in exchange mode that is the access token's problem, settled by one new token,
/// not a rejected client credential to back off from for the token's lifetime.
#[tokio::test(start_paused = true)]
async fn a_refused_access_token_is_replaced_at_once_for_heartbeats_and_registration() {
    let mut world = World::start().await;
    let (logs, _guard) = Logs::capture();
    let agent = world.spawn_online(world.exchange_inputs()).await;
    world.events();
    world.plane.revoke_tokens();
    assert!(until(mins(2), || world.heartbeats().len() >= 2).await);
    // Lost tokens and lost agents at once: the heartbeat is refused, a new token is
    // obtained, the retried heartbeat finds the agent unknown, registration (with the
    // new token) and the heartbeat go through, all in one attempt. The attempt
    // spans a few cadences: its requests beyond the two a failing stretch may run
    // ahead wait for the budget (protocol.md section 3, "One budget").
    world.plane.revoke_tokens();
    world.plane.forget_agents();
    assert!(until(mins(4), || world.heartbeats().len() >= 3).await);
    agent.stop().await;
    assert_eq!(
        world.refusals(),
        vec![
            (401, "Invalid client token".to_owned()),
            (401, "Invalid client token".to_owned()),
            (404, "unknown_agent".to_owned()),
        ]
    );
    assert_eq!(logs.events("token_refused").len(), 2);
    assert!(logs.events("auth_failure").is_empty());
    assert!(logs.events("heartbeat_failed").is_empty());
    let seqs = world.seqs();
    assert_eq!(&seqs[..3], &[1, 2, 3]);
}

/// SIGTERM while a refresh hangs on the token endpoint: the goodbye, from any
/// state, ends within `shutdown_timeout` (5 s), well inside the unit's
/// `TimeoutStopSec=20s`; the refresh in flight was waited for without a bound
/// (13.4 s with the defaults, 28.5 s with `request_timeout = 25s`).
#[tokio::test(start_paused = true)]
async fn a_stop_during_a_hanging_refresh_ends_within_shutdown_timeout() {
    let world = World::with(lifetime(120)).await;
    let (logs, _guard) = Logs::capture();
    let agent = world
        .spawn_online(
            world
                .exchange_inputs()
                .var("HOSTBEAT_REQUEST_TIMEOUT", "25s"),
        )
        .await;
    let before = world.requests_to("/oauth/token").len();
    world
        .plane
        .set_fault(Fault::Slow { delay_ms: 60_000 }, Scope::Token, None);
    // The refresh goes about a minute before expiry, and hangs.
    assert!(until(mins(3), || world.requests_to("/oauth/token").len() > before).await);
    pass(secs(1)).await;
    let took = agent.stop().await;
    assert!(
        took <= secs(5) + std::time::Duration::from_millis(100),
        "stopped in {took:?}"
    );
    assert_eq!(world.heartbeats().last().unwrap().status(), "offline");
    Row::new("sigterm-hung-refresh")
        .figure("request_timeout", "25 s")
        .figure(
            "stopped in",
            format!("{:.1} s (shutdown_timeout 5 s)", took.as_secs_f64()),
        )
        .figure("goodbye sent", "yes")
        .scan(&world, &logs)
        .done();
}

/// A token endpoint that gives lifetimes of 50 ms drove an exchange per round trip
/// (142 in 9.3 s): the lifetime is believed to be at least a minute, so at most two
/// exchanges a minute, and it is said once, with the figure.
#[tokio::test(start_paused = true)]
async fn a_lifetime_too_short_to_use_is_floored_and_said_once() {
    let world = World::with(PlaneConfig {
        token_lifetime: std::time::Duration::from_millis(50),
        ..PlaneConfig::default()
    })
    .await;
    let (logs, _guard) = Logs::capture();
    let agent = world.spawn(world.exchange_inputs());
    pass(mins(10)).await;
    agent.stop().await;
    // The refresher at most twice a minute, and each heartbeat the control plane
    // refuses as expired one more (then its backoff): at most 4 a minute at the
    // default 30 s interval, where it was one per round trip.
    let exchanges = world.requests_to("/oauth/token").len();
    assert!(
        exchanges <= 4 * 10 + 2,
        "{exchanges} exchanges in 10 minutes"
    );
    let said = logs.events("token_lifetime_short");
    assert_eq!(said.len(), 1, "{}", logs.text());
    assert!(
        said[0].contains("too short to use; treating it as 1m"),
        "{}",
        said[0]
    );
    Row::new("token-lifetime-short")
        .figure("lifetime given", "50 ms")
        .figure("exchanges in 10 min", exchanges)
        .figure("log entries about it", said.len())
        .scan(&world, &logs)
        .done();
}
