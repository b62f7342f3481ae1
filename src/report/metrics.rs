//! The Prometheus text exposition format (version 0.0.4) for node_exporter's
//! textfile collector: `metrics_textfile = /var/lib/prometheus/node-exporter/hostbeat.prom`.
//!
//! Names follow Prometheus conventions: a `hostbeat_` prefix, `_total` on counters,
//! base units (`_seconds`, timestamps as Unix seconds). Every label value a series
//! can take is written from the start (zero counters included), so that `rate()`
//! and alerts see a series before its first increment. A time not known yet (no
//! success so far, no access token) is left out rather than written as 0.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{AgentState, Snapshot};

/// The whole file for `snapshot`.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = Exposition::default();
    out.gauge(
        "hostbeat_up",
        "1 while the control plane accepts this host's heartbeats, else 0.",
        flag(snapshot.state == AgentState::Online),
    );
    out.family(
        "hostbeat_info",
        "gauge",
        "The agent's version and identity; always 1.",
        [(
            labels(&[
                ("version", &snapshot.version),
                ("agent_id", snapshot.agent_id.as_deref().unwrap_or("")),
                ("server", &snapshot.server),
            ]),
            "1".to_owned(),
        )],
    );
    out.family(
        "hostbeat_state",
        "gauge",
        "The agent's state: 1 for the current one, 0 for the others.",
        AgentState::ALL.iter().map(|state| {
            (
                labels(&[("state", state.name())]),
                flag(*state == snapshot.state),
            )
        }),
    );
    let counters = &snapshot.counters;
    out.family(
        "hostbeat_heartbeats_total",
        "counter",
        "Heartbeat attempts since the daemon started, by result.",
        [
            ("accepted", counters.heartbeats_accepted),
            ("failed", counters.heartbeats_failed),
        ]
        .map(|(result, n)| (labels(&[("result", result)]), n.to_string())),
    );
    // Every reason the failure table makes an authentication failure, so that
    // each has its series from the start; and any other counted, so that none is
    // lost if the two ever disagree.
    let known = crate::reaction::auth_reasons();
    let others = counters
        .auth_failures
        .keys()
        .map(String::as_str)
        .filter(|reason| !known.contains(reason))
        .collect::<Vec<_>>();
    out.family(
        "hostbeat_auth_failures_total",
        "counter",
        "Heartbeat attempts refused for the credential or the client, by reason.",
        known.into_iter().chain(others).map(|reason| {
            let n = counters.auth_failures.get(reason).copied().unwrap_or(0);
            (labels(&[("reason", reason)]), n.to_string())
        }),
    );
    out.gauge(
        "hostbeat_consecutive_failures",
        "Failed attempts since the last accepted heartbeat.",
        snapshot.consecutive_failures.to_string(),
    );
    for (name, help, time) in [
        (
            "hostbeat_last_success_timestamp_seconds",
            "When the last heartbeat was accepted (Unix time).",
            snapshot.last_success.as_ref().map(|s| s.at),
        ),
        (
            "hostbeat_last_failure_timestamp_seconds",
            "When the last heartbeat attempt failed (Unix time).",
            snapshot.last_failure.as_ref().map(|f| f.at),
        ),
        (
            "hostbeat_token_expiry_timestamp_seconds",
            "When the access token in use expires (Unix time; exchange mode).",
            snapshot.token_expires_at,
        ),
        (
            "hostbeat_next_attempt_timestamp_seconds",
            "When the next heartbeat attempt is due (Unix time).",
            snapshot.next_attempt_at,
        ),
    ] {
        if let Some(time) = time {
            out.gauge(name, help, unix_seconds(time));
        }
    }
    notices(&mut out, snapshot);
    out.text
}

/// The cloud's notices: when each action happens, by kind, action and source.
fn notices(out: &mut Exposition, snapshot: &Snapshot) {
    out.family(
        "hostbeat_interruption_notice_timestamp_seconds",
        "gauge",
        "A notice from the cloud's metadata service: when the action happens (Unix time), by kind, action and source (ec2, gcp, azure); absent without a notice.",
        [&snapshot.interruption, &snapshot.advisory]
            .into_iter()
            .filter_map(|notice| {
                let notice = notice.as_ref()?;
                let at = humantime::parse_rfc3339_weak(&notice.time).ok()?;
                Some((
                    labels(&[
                        ("kind", notice.kind.name()),
                        ("action", &notice.action),
                        ("source", notice.source.name()),
                    ]),
                    unix_seconds(at),
                ))
            }),
    );
}

/// The file being written: one metric family after another.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    /// A family: HELP, TYPE, then one line per (labels, value).
    fn family(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: impl IntoIterator<Item = (String, String)>,
    ) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(self.text, "{name}{labels} {value}");
        }
    }

    /// A gauge without labels.
    fn gauge(&mut self, name: &str, help: &str, value: String) {
        self.family(name, "gauge", help, [(String::new(), value)]);
    }
}

fn flag(on: bool) -> String {
    if on { "1" } else { "0" }.to_owned()
}

/// `{name="value",...}` with values escaped as the format requires.
fn labels(pairs: &[(&str, &str)]) -> String {
    let body: Vec<String> = pairs
        .iter()
        .map(|(name, value)| {
            let escaped = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{name}=\"{escaped}\"")
        })
        .collect();
    format!("{{{}}}", body.join(","))
}

/// Unix seconds with millisecond precision.
fn unix_seconds(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:03}", since.as_secs(), since.subsec_millis())
}
