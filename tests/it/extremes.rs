//! Every duration that comes from outside (a setting, a server's answer, the
//! metadata service's header), fed the extremes: zero, a nanosecond, 2^64-1
//! seconds, negative, NaN, infinity, 1e308. Each gives a bounded value or a clear
//! refusal, never a panic: the release build aborts on one, and `Restart=` would
//! turn it into a crash loop.

use std::time::{Duration, SystemTime};

use hostbeat::config::{self, CEILINGS, ConfigInputs};

use crate::support::{SECRET, base64_url};

/// The extremes as a setting could spell them.
const SPELLED: &[&str] = &[
    "0",
    "0s",
    "1ns",
    "-1s",
    "-0",
    "18446744073709551615",
    "18446744073709551615s",
    "18446744073709551616s",
    "1e308",
    "1e308s",
    "NaN",
    "nans",
    "inf",
    "1y 1000000000000d",
    "9999999999999999999999999999ms",
];

/// The extremes as a number in a JSON answer.
const NUMBERS: &[f64] = &[
    0.0,
    -0.0,
    1e-9,
    5e-324,
    -1.0,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    1e308,
    f64::MAX,
    18_446_744_073_709_551_615.0,
];

fn inputs(dir: &tempfile::TempDir) -> ConfigInputs {
    let env_file = dir.path().join("hostbeat.env");
    std::fs::write(&env_file, "").unwrap();
    ConfigInputs::new()
        .config_file(dir.path().join("absent.toml"))
        .var("HOSTBEAT_ENV_FILE", env_file.to_str().unwrap())
        .var("HOSTBEAT_SERVER_URL", "https://cp.example.com")
        .var("HOSTBEAT_CLIENT_TOKEN", SECRET)
}

/// Every duration setting, from the environment and from the TOML file (where a
/// bare number is a TOML number): loaded within its ceiling, or refused with the
/// setting named.
#[test]
fn every_duration_setting_takes_the_extremes_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    for (key, ceiling) in CEILINGS {
        for value in SPELLED {
            let from_env = config::load(inputs(&dir).var(&config::env_var(key), *value));
            let toml = dir.path().join("hostbeat.toml");
            std::fs::write(&toml, format!("{key} = {value}\n")).unwrap();
            let from_file = config::load(inputs(&dir).config_file(&toml));
            for (place, loaded) in [("environment", from_env), ("file", from_file)] {
                match loaded {
                    Ok(loaded) => {
                        let shown = duration_of(&loaded.settings, key);
                        assert!(
                            shown <= *ceiling,
                            "{key} = {value} in the {place}: {shown:?} over {ceiling:?}"
                        );
                    }
                    Err(e) => assert!(
                        e.setting() == *key || e.setting() == "config file",
                        "{key} = {value} in the {place}: {e}"
                    ),
                }
            }
        }
    }
}

/// The value of duration setting `key`.
fn duration_of(settings: &hostbeat::Settings, key: &str) -> Duration {
    match key {
        "heartbeat_interval" => settings.heartbeat_interval,
        "refresh_margin" => settings.refresh_margin,
        // Retired: checked (the extremes above), and kept nowhere.
        "backoff_base" => Duration::ZERO,
        "backoff_cap" => settings.backoff.cap(),
        "auth_backoff_cap" => settings.auth_backoff.cap(),
        "retry_after_max" => settings.retry_after_max,
        "connect_timeout" => settings.connect_timeout,
        "request_timeout" => settings.request_timeout,
        "shutdown_timeout" => settings.shutdown_timeout,
        "interruption_poll_interval" => settings.cloud.poll_interval,
        "gcp_preemption_notice" => settings.cloud.gcp_preemption_notice,
        other => panic!("{other} is a duration setting this test does not know"),
    }
}

/// The server's `next_heartbeat_in`: the wait keeps within 1 s..1 h, in a steady
/// stretch and after a recovery alike.
#[test]
fn any_next_heartbeat_in_gives_a_wait_within_the_bounds() {
    use hostbeat::heartbeat::{wait_after_recovery, wait_after_success};
    for number in NUMBERS {
        for _ in 0..100 {
            for wait in [
                wait_after_success(Some(*number), Duration::from_secs(30)),
                wait_after_recovery(Some(*number), Duration::from_secs(30)),
            ] {
                assert!(
                    (config::HEARTBEAT_FLOOR..=hostbeat::heartbeat::SERVER_INTERVAL_MAX)
                        .contains(&wait),
                    "{number}: {wait:?}"
                );
            }
        }
    }
}

/// A token answer's `expires_in`, and a JWT's `exp`: a lifetime within the
/// ceiling, or none. (One under a minute, zero included, is then believed to be a
/// minute: tests/it/credentials.rs holds the agent to it.)
#[test]
fn any_token_lifetime_is_within_the_ceiling_or_none() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let within = |lifetime: Option<Duration>, what: &str| {
        if let Some(lifetime) = lifetime {
            assert!(
                lifetime <= hostbeat::credentials::LIFETIME_CEILING,
                "{what}: {lifetime:?}"
            );
        }
    };
    for number in NUMBERS {
        within(
            hostbeat::credentials::token_lifetime(Some(*number), "opaque", now),
            &format!("expires_in {number}"),
        );
    }
    for exp in [
        "0",
        "-1",
        "1e308",
        "18446744073709551615",
        "-9223372036854775808",
        "9223372036854775807",
        "1795000000.5",
    ] {
        let payload = base64_url(format!("{{\"exp\":{exp}}}").as_bytes());
        let jwt = format!("eyJhbGciOiJub25lIn0.{payload}.sig");
        within(
            hostbeat::credentials::token_lifetime(None, &jwt, now),
            &format!("exp {exp}"),
        );
    }
}

/// `Retry-After` of any size parses or is ignored; the wait the agent takes from
/// it is held to `retry_after_max`, whose ceiling keeps the clock from overflowing.
#[test]
fn any_retry_after_parses_or_is_ignored_and_the_ceiling_keeps_the_clock() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let (_, most) = CEILINGS
        .iter()
        .find(|(key, _)| *key == "retry_after_max")
        .unwrap();
    for value in SPELLED.iter().copied().chain([
        "Fri, 31 Dec 9999 23:59:59 GMT",
        "Thu, 01 Jan 1970 00:00:00 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT",
    ]) {
        if let Some(wait) = hostbeat::api::classify::parse_retry_after(value, now) {
            assert!(
                tokio::time::Instant::now()
                    .checked_add(wait.min(*most))
                    .is_some(),
                "{value}: {wait:?}"
            );
        }
    }
}

/// The metadata service's session TTL: held to what was asked, at least a second.
#[test]
fn any_session_ttl_is_held_to_what_was_asked() {
    for header in SPELLED
        .iter()
        .map(|v| Some(*v))
        .chain([None, Some(" 21600 "), Some("")])
    {
        let ttl = hostbeat::cloud::ec2::granted_ttl(header);
        assert!(
            (Duration::from_secs(1)..=hostbeat::cloud::ec2::SESSION_TTL).contains(&ttl),
            "{header:?}: {ttl:?}"
        );
    }
}
