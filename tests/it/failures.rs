//! One test per row of protocol.md section 3: each failure class and what the agent
//! does about it, against the reference control plane, in virtual time.

use std::time::Duration;

use hostbeat_refplane::{Fault, Scope};

use crate::support::*;

/// Row 1: 401 token_expired -> refresh now, retry the same heartbeat once.
#[tokio::test(start_paused = true)]
async fn expired_access_token_is_refreshed_and_the_same_heartbeat_retried() {
    let mut world = World::start().await;
    let (logs, _guard) = Logs::capture();
    let agent = world.spawn(world.exchange_inputs());
    assert!(until(mins(2), || world.heartbeats().len() >= 2).await);
    let tokens_before = world.requests_to("/oauth/token").len();
    world.events();
    world.plane.expire_tokens();
    assert!(until(mins(2), || world.heartbeats().len() >= 3).await);
    agent.stop().await;

    assert_eq!(world.refusals(), vec![(401, "token_expired".to_owned())]);
    assert_eq!(world.requests_to("/oauth/token").len(), tokens_before + 1);
    // The retried heartbeat is the one that was refused: same seq, accepted.
    let beats = world.requests_to("/heartbeat");
    let refused = beats
        .iter()
        .rposition(|r| serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["seq"] == 3);
    let seqs = world.seqs();
    assert_eq!(&seqs[..3], &[1, 2, 3], "{seqs:?}");
    assert!(refused.is_some());
    assert_eq!(logs.events("token_refused").len(), 1);
    assert!(logs.events("auth_failure").is_empty());
}

/// Row 2: credential rejected, env file unchanged -> auth failure logged, auth schedule.
#[tokio::test(start_paused = true)]
async fn rejected_credential_backs_off_on_the_auth_schedule() {
    let world = World::start().await;
    world.write_env_token(SECRET);
    let (logs, _guard) = Logs::capture();
    let agent = world.spawn_online(world.env_file_token_inputs()).await;
    // Rotated on the server only: the agent's token no longer works.
    world.plane.rotate(CLIENT_ID, ROTATED);
    let before = world.requests().len();
    pass(mins(60)).await;
    let during = world.requests().len() - before;
    agent.stop().await;

    // Auth schedule: base 1 s doubling to a 15 min cap, full jitter. Over an hour
    // that averages about 15 attempts; 30 would mean the cap is not applied.
    assert!((5..=30).contains(&during), "{during} requests in an hour");
    // The first failure in full, then at most one summary per 10 minutes: an hour
    // of rejections is at most 7 entries, however many attempts it took.
    let failures = logs.events("auth_failure");
    assert!((2..=7).contains(&failures.len()), "{}", logs.text());
    assert!(
        failures[1..]
            .iter()
            .all(|l| l.contains("still failing after ")),
        "{failures:?}"
    );
    let line = &failures[0];
    for field in [
        "reason=\"credential_rejected\"",
        "endpoint=\"heartbeat\"",
        "http_status=401",
        "Invalid client token",
        "consecutive_failures=",
        "next_attempt_s=",
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
    let fingerprint = hostbeat::secret::Token::new(SECRET.to_owned())
        .fingerprint()
        .to_string();
    assert!(line.contains(&format!("token_fp={fingerprint}")), "{line}");
    assert!(line.contains("agent_id=\"agt-0001\""), "{line}");
    // What the re-read found, and where the new token goes, on the same line.
    let env_file = world.env_file().display().to_string();
    assert!(
        line.contains(&format!(
            "re-read HOSTBEAT_CLIENT_TOKEN in {env_file} after the rejection: the token there is unchanged (token_fp {fingerprint}); put the new one in {env_file} as HOSTBEAT_CLIENT_TOKEN=<token>"
        )),
        "{line}"
    );
    // No separate line per re-read: the failures' own rule governs.
    assert!(logs.events("token_reload_failed").is_empty());
}

/// A control plane that refuses every access token (exchange mode) while the token
/// endpoint keeps issuing them: one `token_refused` line for the stretch, routine
/// `token_refreshed` below the default level, and the auth failures once, then in
/// summaries. It was a `token_refused`/`token_refreshed` pair per attempt.
#[tokio::test(start_paused = true)]
async fn a_persistent_401_in_exchange_mode_is_said_once_then_summarised() {
    let world = World::start().await;
    let (logs, _guard) = Logs::capture();
    let agent = world
        .spawn_online(
            world
                .exchange_inputs()
                .var("HOSTBEAT_AUTH_BACKOFF_CAP", "2s"),
        )
        .await;
    world.plane.set_fault(
        Fault::Status {
            status: 401,
            body: "Invalid client token".to_owned(),
            retry_after: None,
            www_authenticate: None,
        },
        Scope::Agents,
        None,
    );
    let before = world.requests_to("/oauth/token").len();
    // Attempts a cadence apart at least (the cap is shorter), each with its new
    // access token; under ten minutes, so that no summary is due yet.
    pass(mins(9)).await;
    agent.stop().await;
    let exchanges = world.requests_to("/oauth/token").len() - before;
    assert!(
        exchanges >= 5,
        "{exchanges} exchanges: the scenario did not repeat"
    );
    let at_default_level = |event: &str| {
        logs.events(event)
            .iter()
            .filter(|l| !l.contains("DEBUG") && !l.contains("TRACE"))
            .count()
    };
    assert_eq!(at_default_level("token_refused"), 1, "{}", logs.text());
    assert_eq!(at_default_level("token_refreshed"), 0, "{}", logs.text());
    assert_eq!(at_default_level("auth_failure"), 1, "{}", logs.text());
    for line in logs.events("token_refused") {
        assert!(line.contains("access_token_fp="), "{line}");
        assert!(!line.contains(" token_fp="), "{line}");
    }
}

/// Row 2, rotation: a token rotated in the env file is used at once after the
/// first rejection, without a restart and without an auth backoff wait.
#[tokio::test(start_paused = true)]
async fn token_rotated_in_the_env_file_is_picked_up_after_the_first_rejection() {
    let mut world = World::start().await;
    world.write_env_token(SECRET);
    let (logs, _guard) = Logs::capture();
    let agent = world.spawn_online(world.env_file_token_inputs()).await;
    world.events();
    world.plane.rotate(CLIENT_ID, ROTATED);
    world.write_env_token(&format!("  \"{ROTATED}\"  "));
    assert!(
        until(mins(2), || world
            .heartbeats()
            .iter()
            .any(|h| h.bearer == ROTATED))
        .await
    );
    agent.stop().await;

    assert_eq!(
        world.refusals(),
        vec![(401, "Invalid client token".to_owned())]
    );
    let beats = world.requests_to("/heartbeat");
    let rejected = beats
        .iter()
        .rposition(|r| r.bearer() == Some(SECRET))
        .unwrap();
    let retried = &beats[rejected + 1];
    assert_eq!(retried.bearer(), Some(ROTATED));
    assert!(
        retried.at_ms - beats[rejected].at_ms < 100,
        "retried at once"
    );
    assert_eq!(logs.events("token_reloaded").len(), 1);
    assert!(logs.events("auth_failure").is_empty());
    // Same agent, no new registration.
    assert_eq!(world.requests_to("register").len(), 1);
    Row::new("token-rotated")
        .figure("rejections before the new token was used", 1)
        .figure(
            "new token used after the rejection",
            format!("{} ms", retried.at_ms - beats[rejected].at_ms),
        )
        .figure("registrations", 1)
        .scan(&world, &logs)
        .done();
}

/// Row 3: 401 missing_token -> auth failure logged (the start-up check is a
/// binary test: a config without a token exits 78).
#[tokio::test(start_paused = true)]
async fn missing_token_answer_is_an_auth_failure() {
    let world = World::start().await;
    let (logs, _guard) = Logs::capture();
    world.plane.set_fault(
        Fault::Status {
            status: 401,
            body: r#"{"message":"No token provided"}"#.into(),
            retry_after: None,
            www_authenticate: Some(r#"Bearer realm="api""#.into()),
        },
        Scope::All,
        None,
    );
    let agent = world.spawn(world.inputs());
    pass(mins(20)).await;
    agent.stop().await;
    let failures = logs.events("auth_failure");
    assert!(!failures.is_empty());
    assert!(
        failures
            .iter()
            .all(|l| l.contains("reason=\"missing_token\"")),
        "{failures:?}"
    );
    // Every request still carried the token: the server's claim is what is logged.
    assert!(world.requests().iter().all(|r| r.bearer() == Some(SECRET)));
}

/// Row 4: 403 client inactive -> auth schedule, and recovery without restart.
#[tokio::test(start_paused = true)]
async fn inactive_client_backs_off_and_recovers_when_activated() {
    let world = World::start().await;
    let (logs, _guard) = Logs::capture();
    let agent = world.spawn_online(world.inputs()).await;
    world.plane.deactivate(CLIENT_ID);
    let before = world.requests().len();
    pass(mins(30)).await;
    let during = world.requests().len() - before;
    let accepted = world.heartbeats().len();
    world.plane.activate(CLIENT_ID);
    let activated = tokio::time::Instant::now();
    // Back within one auth cap (15 min) of the reactivation.
    assert!(until(mins(15) + secs(1), || world.heartbeats().len() > accepted).await);
    let back_after = activated.elapsed();
    agent.stop().await;

    // Base 1 s doubling to 15 min: about 10 attempts in the first 17 minutes, then
    // one per 7.5 min on average. "A few requests a cap."
    assert!((3..=20).contains(&during), "{during} requests in 30 min");
    let failures = logs.events("auth_failure");
    assert!(
        failures
            .iter()
            .all(|l| l.contains("reason=\"client_inactive\"") && l.contains("http_status=403"))
    );
    assert!(
        failures[0].contains("Client account is not active"),
        "{}",
        failures[0]
    );
    assert_eq!(logs.events("recovered").len(), 1);
    Row::new("client-deactivated")
        .figure("requests in 30 min deactivated", during)
        .figure("log entries about it", failures.len() + 1)
        .figure(
            "back after reactivation",
            format!("{:.0} s", back_after.as_secs_f64()),
        )
        .scan(&world, &logs)
        .done();
}

/// Row 5: 404 unknown agent -> register again, then go on.
#[tokio::test(start_paused = true)]
async fn unknown_agent_registers_again() {
    let world = World::start().await;
    let (logs, _guard) = Logs::capture();
    let agent = world.spawn_online(world.inputs()).await;
    world.plane.forget_agents();
    assert!(until(mins(2), || world.heartbeats().len() >= 2).await);
    agent.stop().await;

    assert_eq!(world.requests_to("register").len(), 2);
    let beats = world.heartbeats();
    assert_eq!(beats[0].agent_id, "agt-0001");
    assert_eq!(beats[1].agent_id, "agt-0002");
    assert_eq!(logs.events("unknown_agent").len(), 1);
    let state = std::fs::read_to_string(world.state_dir().join("state.json")).unwrap();
    assert!(state.contains("agt-0002"), "{state}");
}

/// Row 6: 429 with Retry-After in seconds -> wait what it asks.
#[tokio::test(start_paused = true)]
async fn retry_after_seconds_is_honoured() {
    let world = World::start().await;
    let (logs, _guard) = Logs::capture();
    let agent = world.spawn_online(world.inputs()).await;
    world
        .plane
        .set_fault(Fault::retry_after(429, "120"), Scope::All, Some(1));
    assert!(until(mins(5), || world.heartbeats().len() >= 2).await);
    agent.stop().await;
    let beats = world.requests_to("/heartbeat");
    let limited = beats.iter().position(|r| r.fault.is_some()).unwrap();
    let gap = beats[limited + 1].at_ms - beats[limited].at_ms;
    assert!((119_900..=120_100).contains(&gap), "waited {gap} ms");
    Row::new("retry-after-seconds")
        .figure("asked", "429, Retry-After: 120")
        .figure(
            "waited",
            format!("{:.1} s", Duration::from_millis(gap).as_secs_f64()),
        )
        .scan(&world, &logs)
        .done();
}

/// Row 6: 503 with Retry-After as an HTTP date, bounded by retry_after_max.
#[tokio::test(start_paused = true)]
async fn retry_after_date_is_honoured_up_to_the_ceiling() {
    let world = World::start().await;
    let (logs, _guard) = Logs::capture();
    let agent = world
        .spawn_online(world.inputs().var("HOSTBEAT_RETRY_AFTER_MAX", "10m"))
        .await;
    let in_two_hours = httpdate::fmt_http_date(std::time::SystemTime::now() + secs(7200));
    world
        .plane
        .set_fault(Fault::retry_after(503, in_two_hours), Scope::All, Some(1));
    assert!(until(mins(15), || world.heartbeats().len() >= 2).await);
    agent.stop().await;
    let beats = world.requests_to("/heartbeat");
    let limited = beats.iter().position(|r| r.fault.is_some()).unwrap();
    let gap = beats[limited + 1].at_ms - beats[limited].at_ms;
    assert!(
        (599_900..=600_100).contains(&gap),
        "waited {gap} ms, not the 10 min ceiling"
    );
    Row::new("retry-after-date")
        .figure("asked", "503, Retry-After: a date 2 h ahead")
        .figure(
            "waited",
            format!(
                "{:.1} s (retry_after_max)",
                Duration::from_millis(gap).as_secs_f64()
            ),
        )
        .scan(&world, &logs)
        .done();
}

/// A `Retry-After` of 2^64-1 seconds under the highest `retry_after_max` allowed
/// (a day): the wait is the day, and the agent is alive after it (an unbounded
/// `retry_after_max` let the answer overflow the clock and abort the agent).
#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_any_clock_waits_the_ceiling() {
    let world = World::start().await;
    let (logs, _guard) = Logs::capture();
    let agent = world
        .spawn_online(world.inputs().var("HOSTBEAT_RETRY_AFTER_MAX", "1day"))
        .await;
    world.plane.set_fault(
        Fault::retry_after(503, "18446744073709551615".to_owned()),
        Scope::All,
        Some(1),
    );
    let before = world.heartbeats().len();
    pass(secs(86_000)).await;
    assert_eq!(world.heartbeats().len(), before, "asked to wait, it waits");
    assert!(until(mins(10), || world.heartbeats().len() > before).await);
    agent.stop().await;
    let beats = world.requests_to("/heartbeat");
    let limited = beats.iter().position(|r| r.fault.is_some()).unwrap();
    let gap = beats[limited + 1].at_ms - beats[limited].at_ms;
    assert!((86_399_000..=86_401_000).contains(&gap), "waited {gap} ms");
    Row::new("retry-after-huge")
        .figure("Retry-After", "18446744073709551615 (seconds)")
        .figure("retry_after_max", "1 day (its ceiling)")
        .figure("waited", format!("{} s", gap / 1000))
        .scan(&world, &logs)
        .done();
}

/// Row 7: 5xx -> exponential backoff with full jitter, capped, never giving up.
#[tokio::test(start_paused = true)]
async fn server_errors_back_off_capped_and_never_give_up() {
    let world = World::start().await;
    let (logs, _guard) = Logs::capture();
    let agent = world
        .spawn_online(world.inputs().var("HOSTBEAT_BACKOFF_CAP", "2m"))
        .await;
    world.plane.set_fault(
        Fault::status(500, r#"{"error":"internal"}"#),
        Scope::All,
        None,
    );
    pass(Duration::from_secs(6 * 3600)).await;
    let attempts = world.requests_to("/heartbeat");
    agent.stop().await;

    let failed: Vec<_> = attempts.iter().filter(|r| r.fault.is_some()).collect();
    // Still trying after six hours, and never more than the cap apart.
    assert!(failed.last().unwrap().at_ms > 6 * 3600 * 1000 - 2 * 60 * 1000);
    for pair in failed.windows(2) {
        assert!(pair[1].at_ms - pair[0].at_ms <= 120_100, "gap over the cap");
    }
    // Full jitter: with a 2-minute cap, an average gap near one minute.
    let mean = (failed.last().unwrap().at_ms - failed[0].at_ms) / (failed.len() as u64 - 1);
    assert!((30_000..=90_000).contains(&mean), "mean gap {mean} ms");
    let warned = logs.events("heartbeat_failed");
    assert!(warned[0].contains("reason=\"server_error\"") && warned[0].contains("http_status=500"));
    Row::new("server-errors")
        .figure("attempts in 6 h of HTTP 500", failed.len())
        .figure(
            "mean gap at a 2 min cap",
            format!("{:.0} s", Duration::from_millis(mean).as_secs_f64()),
        )
        .figure("log entries about it", warned.len())
        .scan(&world, &logs)
        .done();
}

/// Row 7: an answer slower than the request timeout is a timeout, retried.
#[tokio::test(start_paused = true)]
async fn slow_answers_time_out_and_are_retried() {
    let world = World::start().await;
    let (logs, _guard) = Logs::capture();
    let agent = world
        .spawn_online(world.inputs().var("HOSTBEAT_REQUEST_TIMEOUT", "10s"))
        .await;
    world
        .plane
        .set_fault(Fault::Slow { delay_ms: 30_000 }, Scope::All, Some(2));
    assert!(until(mins(5), || world.heartbeats().len() >= 2).await);
    agent.stop().await;
    // Two timeouts: the first is logged, the repeat is not; the recovery counts both.
    let failed = logs.events("heartbeat_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("reason=\"timeout\""));
    // In a few words, naming the setting; not the HTTP library's chain.
    assert!(
        failed[0].contains("timed out after 10s (request_timeout)")
            && !failed[0].contains("error sending request"),
        "{}",
        failed[0]
    );
    assert!(logs.events("recovered")[0].contains("consecutive_failures=2"));
    Row::new("slow-answers")
        .figure("timeouts before recovery", 2)
        .figure("log entries about it", failed.len() + 1)
        .scan(&world, &logs)
        .done();
}

/// Row 7: connection refused -> connect class, retried.
#[tokio::test(start_paused = true)]
async fn connection_refused_is_retried() {
    let world = World::start().await;
    // A port with nothing listening: bind one, then close it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (logs, _guard) = Logs::capture();
    let agent = world.spawn(
        world
            .inputs()
            .var("HOSTBEAT_SERVER_URL", format!("http://{closed}")),
    );
    pass(mins(10)).await;
    agent.stop().await;
    // Retried all along (at debug), logged once (ten minutes is not yet a summary).
    let failed = logs.events("heartbeat_failed");
    assert_eq!(failed.len(), 1, "{}", logs.text());
    assert!(
        failed[0].contains("reason=\"connect\"")
            && failed[0].contains("connection refused")
            && !failed[0].contains("error sending request")
            && !failed[0].contains("os error"),
        "{}",
        failed[0]
    );
    assert!(
        logs.text().matches("failed again").count() >= 2,
        "{}",
        logs.text()
    );
}

/// Row 7: the server closes the connection without answering (an outage).
#[tokio::test(start_paused = true)]
async fn closed_connections_are_transient() {
    let world = World::start().await;
    let (logs, _guard) = Logs::capture();
    let agent = world.spawn_online(world.inputs()).await;
    world.plane.set_fault(Fault::Outage, Scope::All, Some(3));
    assert!(until(mins(10), || world.heartbeats().len() >= 2).await);
    agent.stop().await;
    let failed = logs.events("heartbeat_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("reason=\"connect\""));
    let recovered = logs.events("recovered");
    assert_eq!(recovered.len(), 1);
    assert!(
        recovered[0].contains("after 3 failed attempts"),
        "{}",
        recovered[0]
    );
}

/// Row 8: a 200 that is not JSON, or JSON of another shape, is a protocol error:
/// counted like a transient failure, the body never logged.
#[tokio::test(start_paused = true)]
async fn invalid_json_and_json_of_the_wrong_shape_are_protocol_errors() {
    let world = World::start().await;
    let (logs, _guard) = Logs::capture();
    let agent = world.spawn_online(world.inputs()).await;
    world.plane.set_fault(Fault::Garbage, Scope::All, Some(1));
    assert!(until(mins(5), || world.heartbeats().len() >= 2).await);
    // A heartbeat answer of another shape: a string for `next_heartbeat_in`.
    world.plane.set_fault(
        Fault::status(200, r#"{"success":true,"next_heartbeat_in":"thirty"}"#),
        Scope::All,
        Some(1),
    );
    assert!(until(mins(5), || world.heartbeats().len() >= 3).await);
    agent.stop().await;
    let failed = logs.events("heartbeat_failed");
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed.iter().all(|l| l.contains("reason=\"protocol\"")));
    let text = logs.text();
    assert!(!text.contains("Bad Gateway (not JSON)") && !text.contains("thirty"));
    Row::new("invalid-json")
        .figure("bad answers", world.faulted())
        .figure(
            "log entries about them",
            failed.len() + logs.events("recovered").len(),
        )
        .scan(&world, &logs)
        .done();
}

/// Row 8: an answer over the 64 KiB body limit is refused before it is read whole.
#[tokio::test(start_paused = true)]
async fn an_oversized_answer_is_a_protocol_error() {
    let world = World::start().await;
    let (logs, _guard) = Logs::capture();
    let agent = world.spawn_online(world.inputs()).await;
    world
        .plane
        .set_fault(Fault::Oversized { bytes: 16 << 20 }, Scope::All, Some(1));
    assert!(until(mins(5), || world.heartbeats().len() >= 2).await);
    agent.stop().await;
    let failed = logs.events("heartbeat_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("reason=\"protocol\"") && failed[0].contains("64 KiB"));
    assert!(!logs.text().contains("xxxxxxxx"));
    Row::new("oversized")
        .figure("answer", "16 MiB on a 200")
        .figure("retries before recovery", 1)
        .scan(&world, &logs)
        .done();
}

/// Row 7: the connection closed in the middle of the answer's body.
#[tokio::test(start_paused = true)]
async fn a_connection_cut_in_the_middle_of_the_body_is_retried() {
    let world = World::start().await;
    let (logs, _guard) = Logs::capture();
    let agent = world.spawn_online(world.inputs()).await;
    world
        .plane
        .set_fault(Fault::CutMidBody, Scope::All, Some(3));
    assert!(until(mins(5), || world.heartbeats().len() >= 2).await);
    agent.stop().await;
    let failed = logs.events("heartbeat_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].contains("reason=\"connect\"") || failed[0].contains("reason=\"protocol\""),
        "{}",
        failed[0]
    );
    let recovered = logs.events("recovered");
    assert!(
        recovered[0].contains("after 3 failed attempts"),
        "{recovered:?}"
    );
    // The plane accepted none of the three cut ones; the agent went on counting.
    let seqs = world.seqs();
    assert!(
        seqs.len() >= 2 && seqs.windows(2).all(|w| w[0] < w[1]),
        "{seqs:?}"
    );
    Row::new("cut-mid-body")
        .figure("cut answers", 3)
        .figure("log entries about them", failed.len() + recovered.len())
        .scan(&world, &logs)
        .done();
}

/// The token echoed in the encodings a server's own library may choose: percent-
/// encoding with lower-case hex and `~` left alone, and the base64 of Basic's
/// `client_id:secret` in static mode (where the agent never sent one): none of it,
/// whole or cut short, reaches the logs.
#[tokio::test(start_paused = true)]
async fn an_echo_in_any_encoding_is_scrubbed() {
    let world = World::start().await;
    let (logs, _guard) = Logs::capture();
    let lower: String = SECRET
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02x}")
            }
        })
        .collect();
    let forms = forms(SECRET);
    let basic = forms
        .iter()
        .find(|(w, _)| w == "its Basic form")
        .unwrap()
        .1
        .clone();
    world.plane.set_fault(
        Fault::Status {
            status: 401,
            body: format!(
                r#"{{"error":"invalid","detail":"{lower} | Basic {basic} | {}"}}"#,
                &basic[..30]
            ),
            retry_after: None,
            www_authenticate: None,
        },
        Scope::All,
        Some(2),
    );
    let agent = world.spawn(world.inputs());
    assert!(until(mins(30), || !world.heartbeats().is_empty()).await);
    agent.stop().await;
    let text = logs.text();
    assert!(text.contains("[redacted]"), "{text}");
    assert!(!text.contains(&basic[..30]), "{text}");
    for run in SECRET.as_bytes().windows(hostbeat::redact::PARTIAL) {
        let run = std::str::from_utf8(run).unwrap();
        assert!(!text.contains(run), "{run:?} in:\n{text}");
    }
    Row::new("echo-cut-short")
        .figure(
            "echo",
            "the token after 190 characters; its Basic and URL-encoded forms",
        )
        .figure(
            "runs of 10 bytes of the token logged",
            format!("0 of {}", SECRET.len() - hostbeat::redact::PARTIAL + 1),
        )
        .scan(&world, &logs)
        .done();
}

/// A server that echoes the credential in its error must not get it into the logs.
#[tokio::test(start_paused = true)]
async fn a_token_echoed_by_the_server_is_scrubbed_from_the_logs() {
    let world = World::start().await;
    let (logs, _guard) = Logs::capture();
    world.plane.set_fault(
        Fault::Status {
            status: 401,
            body: format!(r#"{{"error":"Invalid token {SECRET}","detail":"got Bearer {SECRET}"}}"#),
            retry_after: None,
            www_authenticate: None,
        },
        Scope::All,
        Some(3),
    );
    let agent = world.spawn(world.inputs());
    assert!(until(mins(30), || !world.heartbeats().is_empty()).await);
    agent.stop().await;
    let text = logs.text();
    assert!(text.contains("Invalid token [redacted]"), "{text}");
    assert!(!text.contains(SECRET));
}

/// An echo longer than a log line can hold, with the token at its end: scrubbed
/// before it is cut short, so that no part of the token reaches the log (15 of 25
/// characters did). And the echo of HTTP Basic's `client_id:secret` by a token
/// endpoint, in base64 and URL-encoded: scrubbed as the token itself.
#[tokio::test(start_paused = true)]
async fn an_echo_cut_short_or_encoded_leaves_no_part_of_the_token() {
    let world = World::start().await;
    let (logs, _guard) = Logs::capture();
    let padding = "x".repeat(190);
    world.plane.set_fault(
        Fault::Status {
            status: 401,
            body: format!(
                r#"{{"error":"invalid_client","error_description":"{padding} {SECRET}"}}"#
            ),
            retry_after: None,
            www_authenticate: None,
        },
        Scope::Token,
        Some(1),
    );
    let agent = world.spawn(world.exchange_inputs());
    assert!(until(mins(30), || !world.heartbeats().is_empty()).await);
    agent.stop().await;
    let forms = forms(SECRET);
    let form = |what: &str| {
        forms
            .iter()
            .find(|(w, _)| w == what)
            .map_or(SECRET, |(_, f)| f.as_str())
    };
    let (basic, encoded) = (form("its Basic form"), form("it URL-encoded"));
    world.plane.set_fault(
        Fault::Status {
            status: 401,
            body: format!(
                r#"{{"error":"invalid_client","error_description":"got Basic {basic} and client_secret={encoded}"}}"#
            ),
            retry_after: None,
            www_authenticate: None,
        },
        Scope::Token,
        Some(1),
    );
    let before = world.heartbeats().len();
    let agent = world.spawn(world.exchange_inputs());
    assert!(until(mins(30), || world.heartbeats().len() > before).await);
    agent.stop().await;
    let text = logs.text();
    assert!(text.contains("invalid_client"), "{text}");
    for (what, form) in &forms {
        assert!(!text.contains(form.as_str()), "{what} in:\n{text}");
    }
    for run in SECRET.as_bytes().windows(hostbeat::redact::PARTIAL) {
        let run = std::str::from_utf8(run).unwrap();
        assert!(!text.contains(run), "{run:?} in:\n{text}");
    }
}
