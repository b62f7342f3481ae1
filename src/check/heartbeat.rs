//! `check --heartbeat`: one real heartbeat, as the daemon sends it, to prove the
//! whole way end to end. It sends exactly this, and says so in its findings:
//! - a registration when the agent id is not known yet (configured `agent_id`, or
//!   the one in the daemon's state file): idempotent, the same logical id gets the
//!   agent id the daemon has;
//! - one heartbeat `"status": "online"` with `seq` 1 and `uptime_s` 0, which the
//!   control plane sees as coming from an agent that has just started.
//!
//! It writes nothing on this host: the state file is read, never repaired or
//! created, and a host that has no logical id yet (no machine id, and the daemon
//! never ran) is not registered under a throwaway one.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::server::failure;
use super::{Finding, Report};
use crate::api::ApiClient;
use crate::api::wire::{HeartbeatRequest, RegisterRequest, Status};
use crate::config::Settings;
use crate::credentials::Bearer;
use crate::duration::show;
use crate::identity;
use crate::reaction::{Failed, Mode, Retry, react};
use crate::report::timestamp::rfc3339;
use crate::state::{PersistedState, StateStore};

pub(super) async fn send(
    settings: &Settings,
    api: &ApiClient,
    bearer: &Bearer,
    report: &mut Report,
) {
    let store = StateStore::new(&settings.state_dir);
    let state = match store.peek() {
        Ok(state) => state.unwrap_or_default(),
        Err(why) => {
            report.push(Finding::warn(
                "heartbeat.state_file_unusable",
                format!("the state file {} is not usable: {why}", store.path().display()),
                "check registers again (idempotent) instead of using the daemon's agent id; the daemon sets a corrupt file aside at its next start",
                format!("run check as root or as the hostbeat user; look at {}", store.path().display()),
            ));
            PersistedState::default()
        }
    };
    // The daemon's own logical id first: on EC2 it is the instance id, which check
    // does not ask the metadata service for.
    let logical_id = state.registered_logical_id.clone().or_else(|| {
        identity::known_logical_id(
            &settings.machine_id_file,
            state.generated_logical_id.as_deref(),
        )
    });
    let Some(logical_id) = logical_id else {
        report.push(Finding::warn(
            "heartbeat.no_logical_id",
            "not sent: this host has no logical agent id yet",
            format!(
                "there is no usable machine id ({}) and the daemon has not generated and kept an id yet; check does not make one up, so as not to register a host the daemon would not be",
                settings.machine_id_file.display()
            ),
            "start the daemon once (systemctl start hostbeat), or give the host a machine id: systemd-machine-id-setup",
        ));
        return;
    };
    // Only an id from the state file is registered again when forgotten; a
    // configured one never is (as the daemon does).
    let from_state = settings.agent_id.is_none() && state.agent_id.is_some();
    let mut agent_id = match settings.agent_id.clone().or(state.agent_id) {
        Some(agent_id) => agent_id,
        None => match register(settings, api, bearer, &logical_id, report).await {
            Some(agent_id) => agent_id,
            None => return,
        },
    };
    let started = Instant::now();
    let body = HeartbeatRequest {
        status: Status::Online,
        seq: 1,
        sent_at: rfc3339(SystemTime::now()),
        uptime_s: 0,
        unreachable_since: None,
        missed: None,
        interruption: None,
    };
    let mut result = api.heartbeat(&bearer.token, &agent_id, &body).await;
    // Registered again as the daemon would (the failure table says when), for an
    // agent id from the state file: a configured one is never replaced.
    let forgotten = result.as_ref().err().is_some_and(|error| {
        react(Failed::from(error), Mode::of(settings)).retry == Some(Retry::Register)
    });
    if forgotten && from_state {
        report.push(Finding::ok(
            "heartbeat.unknown_agent",
            format!("the control plane does not know agent {agent_id} (from the state file); registering again, as the daemon would"),
        ));
        let Some(registered) = register(settings, api, bearer, &logical_id, report).await else {
            return;
        };
        agent_id = registered;
        result = api.heartbeat(&bearer.token, &agent_id, &body).await;
    }
    let took = started.elapsed();
    match result {
        Ok(answer) if answer.success != Some(false) => report.push(Finding::ok(
            "heartbeat.sent",
            format!(
                "sent one heartbeat (status online, seq 1, uptime_s 0) for agent {agent_id}: accepted{} ({})",
                answer
                    .next_heartbeat_in
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .map(|s| format!(
                        "; the server asks for the next in {}",
                        show(Duration::from_secs_f64(s.min(86_400.0)))
                    ))
                    .unwrap_or_default(),
                show(took)
            ),
        )),
        Ok(_) => report.push(Finding::fail(
            "heartbeat.refused",
            format!("sent one heartbeat for agent {agent_id}: the control plane answered 200 with \"success\": false"),
            "the control plane did not take the heartbeat, without saying why",
            "ask the control plane's operators what it refuses; check server_url and heartbeat_path",
        )),
        Err(error) => report.push(failure(settings, "heartbeat", &error, took)),
    }
}

/// Registers `logical_id` (idempotent); the agent id, or `None` with a finding.
async fn register(
    settings: &Settings,
    api: &ApiClient,
    bearer: &Bearer,
    logical_id: &str,
    report: &mut Report,
) -> Option<String> {
    let started = Instant::now();
    let request = RegisterRequest::new(logical_id.to_owned(), identity::hostname());
    match api.register(&bearer.token, &request).await {
        Ok(answer) => {
            report.push(Finding::ok(
                "register.registered",
                format!(
                    "registered logical id {logical_id} as {:?}: agent {} ({}; idempotent, the daemon gets the same id)",
                    request.hostname,
                    answer.agent_id,
                    show(started.elapsed())
                ),
            ));
            Some(answer.agent_id)
        }
        Err(error) => {
            report.push(failure(settings, "register", &error, started.elapsed()));
            None
        }
    }
}
