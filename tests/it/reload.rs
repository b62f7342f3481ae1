//! Reload (SIGHUP): the configuration read again and applied without losing the
//! agent id or the heartbeat sequence; a broken one refused.

use std::path::PathBuf;

use crate::support::*;

/// Inputs as the packaged unit hands them over: the environment holds only the
/// unit's and drop-ins' `Environment=` lines (`drop_in`), fixed at start; the env
/// file, which hostbeat reads itself at every load, holds the token and the rest.
fn as_systemd(
    dir: PathBuf,
    drop_in: &'static [(&'static str, &'static str)],
) -> impl Fn() -> hostbeat::ConfigInputs + Send + Sync + 'static {
    move || {
        let mut inputs = hostbeat::ConfigInputs::new()
            .config_file(dir.join("hostbeat.toml"))
            .var("HOSTBEAT_STATE_DIR", dir.join("state").to_str().unwrap())
            .var(
                "HOSTBEAT_ENV_FILE",
                dir.join("hostbeat.env").to_str().unwrap(),
            )
            .machine_id_file(dir.join("machine-id"));
        for (key, value) in drop_in {
            inputs = inputs.var(key, *value);
        }
        inputs
    }
}

/// The env file: the token, the server (unless `lines` names one) and `lines`.
fn write_env(world: &World, lines: &str) {
    let server = if lines.contains("HOSTBEAT_SERVER_URL=") {
        String::new()
    } else {
        format!("HOSTBEAT_SERVER_URL={}\n", world.url())
    };
    std::fs::write(
        world.env_file(),
        format!("HOSTBEAT_CLIENT_TOKEN={SECRET}\n{server}{lines}"),
    )
    .unwrap();
}

fn gaps_ms(beats: &[hostbeat_refplane::HeartbeatRecord]) -> Vec<u64> {
    beats.windows(2).map(|w| w[1].at_ms - w[0].at_ms).collect()
}

#[tokio::test(start_paused = true)]
async fn reload_applies_the_env_files_new_values_over_the_stale_environment() {
    let second = World::start().await;
    let world = World::start().await;
    write_env(
        &world,
        &format!(
            "HOSTBEAT_SERVER_URL={}\nHOSTBEAT_HEARTBEAT_INTERVAL=30s\n",
            world.url()
        ),
    );
    let (logs, _guard) = Logs::capture();
    let agent = world.spawn_reloadable(as_systemd(world.dir.path().to_owned(), &[]));
    assert!(until(mins(3), || world.heartbeats().len() >= 3).await);

    // The operator edits the env file: a slower interval and another server.
    write_env(
        &world,
        &format!(
            "HOSTBEAT_SERVER_URL={}\nHOSTBEAT_HEARTBEAT_INTERVAL=2m\n",
            second.url()
        ),
    );
    agent.reload.notify_one();
    assert!(until(mins(10), || second.heartbeats().len() >= 4).await);
    agent.stop().await;

    let reloaded = logs.events("config_reloaded");
    assert_eq!(reloaded.len(), 1, "{}", logs.text());
    assert!(
        reloaded[0].contains("server_url") && reloaded[0].contains("heartbeat_interval"),
        "{}",
        reloaded[0]
    );
    // The new server got the next heartbeat within one interval, then one every
    // 2 min +-10%.
    let beats = second.heartbeats();
    for gap in &gaps_ms(&beats)[1..3] {
        assert!((108_000..=132_000).contains(gap), "gap {gap} ms");
    }
    // Same process, same sequence: seq goes on from where the first server left it.
    let last_on_first = *world.seqs().last().unwrap();
    assert_eq!(second.seqs()[0], last_on_first + 1);
    assert!(logs.events("config_rejected").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_broken_configuration_is_refused_and_the_running_one_stays() {
    let world = World::start().await;
    write_env(&world, "HOSTBEAT_HEARTBEAT_INTERVAL=30s\n");
    let (logs, _guard) = Logs::capture();
    let agent = world.spawn_reloadable(as_systemd(world.dir.path().to_owned(), &[]));
    assert!(until(mins(2), || world.heartbeats().len() >= 2).await);
    write_env(&world, "HOSTBEAT_HEARTBEAT_INTERVAL=often\n");
    agent.reload.notify_one();
    let before = world.heartbeats().len();
    pass(mins(5)).await;
    agent.stop().await;
    let rejected = logs.events("config_rejected");
    assert_eq!(rejected.len(), 1, "{}", logs.text());
    assert!(
        rejected[0].contains("setting=\"heartbeat_interval\"")
            && rejected[0].contains("fix: write it like 30s"),
        "{}",
        rejected[0]
    );
    // Still at 30 s: about 10 beats in 5 minutes.
    let during = world.heartbeats().len() - before;
    assert!((8..=12).contains(&during), "{during} beats in 5 min");
    let agent_ids: std::collections::BTreeSet<_> =
        world.heartbeats().into_iter().map(|h| h.agent_id).collect();
    assert_eq!(agent_ids.len(), 1);
    Row::new("sighup-broken-config")
        .figure("broken setting", "heartbeat_interval=often")
        .figure("heartbeats in the 5 min after", during)
        .figure("log entries about it", rejected.len())
        .scan(&world, &logs)
        .done();
}

/// A drop-in's `Environment=` wins over the env file for every key, at a start and
/// at a reload alike: an edit of the env file takes effect only where no drop-in
/// sets the key.
#[tokio::test(start_paused = true)]
async fn a_drop_in_wins_over_the_env_file_at_a_start_and_at_every_reload() {
    let world = World::start().await;
    write_env(
        &world,
        &format!(
            "HOSTBEAT_SERVER_URL={}\nHOSTBEAT_HEARTBEAT_INTERVAL=7s\n",
            world.url()
        ),
    );
    let (logs, _guard) = Logs::capture();
    // Environment=HOSTBEAT_HEARTBEAT_INTERVAL=45s in an override.conf.
    let agent = world.spawn_reloadable(as_systemd(
        world.dir.path().to_owned(),
        &[("HOSTBEAT_HEARTBEAT_INTERVAL", "45s")],
    ));
    // The start's splay (up to one interval) and three intervals of up to 49.5 s.
    assert!(until(mins(4), || world.heartbeats().len() >= 4).await);
    let beats = world.heartbeats();
    for gap in gaps_ms(&beats[1..4]) {
        assert!(
            (40_500..=49_500).contains(&gap),
            "gap {gap} ms: the drop-in's 45 s"
        );
    }

    // The env file's interval changes: the drop-in still wins after a reload.
    write_env(
        &world,
        &format!(
            "HOSTBEAT_SERVER_URL={}\nHOSTBEAT_HEARTBEAT_INTERVAL=2m\nHOSTBEAT_BACKOFF_CAP=1m\n",
            world.url()
        ),
    );
    agent.reload.notify_one();
    pass(secs(1)).await;
    let before = world.heartbeats().len();
    assert!(until(mins(5), || world.heartbeats().len() >= before + 4).await);
    agent.stop().await;
    let reloaded = logs.events("config_reloaded");
    // The key no drop-in sets took effect; the interval did not change.
    assert!(
        reloaded[0].contains("backoff_cap") && !reloaded[0].contains("heartbeat_interval"),
        "{}",
        reloaded[0]
    );
    // After the beat the reload brings forward, still the drop-in's 45 s.
    let beats = world.heartbeats();
    for gap in gaps_ms(&beats[before..before + 3]) {
        assert!((40_500..=49_500).contains(&gap), "gap {gap} ms");
    }
}

/// Reloads that change a setting during an outage, every 10 seconds for 20
/// minutes, each rebuilding the connection: every reload in a failing stretch
/// brings the next attempt within one interval, and the budget, which the rebuilt
/// client takes over, still holds the plane to one request a cadence (protocol.md
/// section 3, "One budget").
#[tokio::test(start_paused = true)]
async fn reloads_during_an_outage_stay_within_the_budget() {
    let world = World::start().await;
    write_env(&world, "HOSTBEAT_HEARTBEAT_INTERVAL=30s\n");
    let agent = world.spawn_reloadable(as_systemd(world.dir.path().to_owned(), &[]));
    assert!(until(mins(1), || !world.heartbeats().is_empty()).await);
    world.plane.set_fault(
        hostbeat_refplane::Fault::Outage,
        hostbeat_refplane::Scope::All,
        None,
    );
    let from = world.requests().len();
    for reload in 0..120 {
        // request_timeout is a connection setting: the client is built again.
        let timeout = if reload % 2 == 0 { "5s" } else { "6s" };
        write_env(
            &world,
            &format!("HOSTBEAT_HEARTBEAT_INTERVAL=30s\nHOSTBEAT_REQUEST_TIMEOUT={timeout}\n"),
        );
        agent.reload.notify_one();
        pass(secs(10)).await;
    }
    let during = world.requests()[from..].to_vec();
    agent.stop().await;
    assert!(
        during.len() <= 40 + 2,
        "{} requests in 20 minutes",
        during.len()
    );
    for k in [1, 2, 5, 10] {
        let busiest = crate::storms::busiest(&during, secs(30) * k);
        assert!(
            busiest <= k as usize + 3,
            "{busiest} requests within {k} intervals"
        );
    }
    // Reloads bring the retries forward: more than the backoff alone would make.
    assert!(
        during.len() >= 20,
        "{} requests in 20 minutes",
        during.len()
    );
}

/// A reload that changes a setting brings the next beat within one interval, but
/// never before a `Retry-After` the plane asked for has passed.
#[tokio::test(start_paused = true)]
async fn a_reload_does_not_cut_a_retry_after_short() {
    let world = World::start().await;
    write_env(&world, "HOSTBEAT_HEARTBEAT_INTERVAL=30s\n");
    let agent = world.spawn_reloadable(as_systemd(world.dir.path().to_owned(), &[]));
    assert!(until(mins(1), || !world.heartbeats().is_empty()).await);
    world.plane.set_fault(
        hostbeat_refplane::Fault::retry_after(429, "600"),
        hostbeat_refplane::Scope::All,
        Some(1),
    );
    assert!(until(mins(1), || world.faulted() == 1).await);
    let asked_at = world.requests().last().unwrap().at_ms;
    pass(secs(10)).await;
    write_env(
        &world,
        "HOSTBEAT_HEARTBEAT_INTERVAL=30s\nHOSTBEAT_REQUEST_TIMEOUT=6s\n",
    );
    agent.reload.notify_one();
    let after = || {
        world
            .requests()
            .iter()
            .find(|r| r.at_ms > asked_at)
            .map(|r| r.at_ms)
    };
    assert!(until(mins(12), || after().is_some()).await);
    agent.stop().await;
    let waited = after().unwrap() - asked_at;
    assert!(
        waited >= 600_000,
        "the next request {waited} ms after a 600 s Retry-After"
    );
}
