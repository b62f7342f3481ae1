//! The agent against control planes over TLS: real rustls on both sides, with
//! certificates generated for each test (`refplane::tls`). A certificate the agent
//! cannot trust is refused before a byte of the request (and so of the token) is
//! sent, logged once with reason `tls`, and retried on the backoff schedule.

use hostbeat::ConfigInputs;

use crate::support::*;

/// A plane presenting a certificate for `names`, signed by a private authority.
async fn plane(names: &[&str], validity: tls::Validity) -> (World, tls::Authority) {
    let authority = tls::Authority::new("hostbeat test CA");
    let world = World::with_tls(&authority.issue(names, validity)).await;
    (world, authority)
}

/// Runs the agent for 30 minutes against `world`, which it must refuse: no request
/// reaches the plane, one entry says why (`expect` in the rustls error), and the
/// attempts follow the backoff schedule.
async fn refused(key: &'static str, world: &World, inputs: ConfigInputs, expect: &str) {
    let (logs, _guard) = Logs::capture();
    let agent = world.spawn(inputs);
    pass(mins(30)).await;
    agent.stop().await;
    assert!(world.requests().is_empty(), "a request got through");
    let text = logs.text();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("reason=\"tls\"") && l.contains("event=\"heartbeat_failed\""))
        .collect();
    assert!(!lines.is_empty(), "{text}");
    assert!(lines[0].contains(expect), "{}", lines[0]);
    // The first failure, then a summary at most every 10 minutes.
    assert!(lines.len() <= 4, "{} entries: {lines:#?}", lines.len());
    let attempts = text.matches("reason=\"tls\"").count();
    Row::new(key)
        .figure("requests that reached the plane", 0)
        .figure("log entries in 30 min", lines.len())
        .figure("logged", expect)
        .figure("attempts in 30 min", attempts)
        .scan(world, &logs)
        .done();
}

#[tokio::test(start_paused = true)]
async fn a_certificate_from_an_unknown_authority_is_refused() {
    let (world, _authority) = plane(&["127.0.0.1"], tls::Validity::Current).await;
    refused("tls-unknown-ca", &world, world.inputs(), "UnknownIssuer").await;
}

/// In real time, at a 1 s interval: a whole handshake in paused time lets the
/// clock jump past the request timeout while the two sides take turns (tokio
/// advances a paused clock whenever every task waits, even on a socket).
#[tokio::test]
async fn the_same_certificate_is_accepted_with_its_authority_in_ca_file() {
    let (world, authority) = plane(&["127.0.0.1"], tls::Validity::Current).await;
    let ca = world.write_ca(&authority);
    let (logs, _guard) = Logs::capture();
    let agent = world.spawn(
        world
            .inputs()
            .var("HOSTBEAT_CA_FILE", ca.to_str().unwrap())
            .var("HOSTBEAT_HEARTBEAT_INTERVAL", "1s"),
    );
    assert!(
        until(secs(20), || world.heartbeats().len() >= 3).await,
        "{}",
        logs.text()
    );
    agent.stop().await;
    assert!(!logs.text().contains("reason=\"tls\""), "{}", logs.text());
    assert_eq!(world.heartbeats().last().unwrap().status(), "offline");
    Row::new("tls-ca-file")
        .figure("heartbeats accepted", world.heartbeats().len())
        .figure("TLS failures", 0)
        .scan(&world, &logs)
        .done();
}

#[tokio::test(start_paused = true)]
async fn an_expired_certificate_is_refused_even_from_a_trusted_authority() {
    let (world, authority) = plane(&["127.0.0.1"], tls::Validity::ExpiredDaysAgo(3)).await;
    let ca = world.write_ca(&authority);
    let inputs = world.inputs().var("HOSTBEAT_CA_FILE", ca.to_str().unwrap());
    refused("tls-expired", &world, inputs, "certificate expired").await;
}

#[tokio::test(start_paused = true)]
async fn a_certificate_for_another_name_is_refused_even_from_a_trusted_authority() {
    let (world, authority) = plane(&["control.example.net"], tls::Validity::Current).await;
    let ca = world.write_ca(&authority);
    let inputs = world.inputs().var("HOSTBEAT_CA_FILE", ca.to_str().unwrap());
    refused("tls-wrong-name", &world, inputs, "not valid for name").await;
}
