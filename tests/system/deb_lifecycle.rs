//! The .deb's whole life on a booted systemd, as an operator lives it (the README's
//! install section, step by step): install, configure, start, a deactivated client,
//! a rotated token, a killed process, stop, upgrade, purge; and no trace of the token
//! in the container's journal.

use std::time::{Duration, Instant};

use crate::host::{Agent, ENV_FILE, Host, UNIT, catalog_message_id};
use crate::packages::packages;
use crate::plane::{CLIENT_ID, ROTATED};

#[test]
fn install_configure_run_rotate_restart_upgrade_purge() {
    let packages = packages();
    let host = Host::boot();
    let ct = &host.ct;

    // Step 1: install. The postinst starts the unit, which waits for a token.
    let installed = ct.sh(&format!("dpkg -i /opt/artifacts/{} 2>&1", packages.deb));
    host.assert_installed_waiting_for_token(&installed);
    // Steps 2 and 3: configure as the README says, start, and it runs.
    host.configure_and_start();
    let agent = host.running_agent();
    deactivate_and_reactivate(&host, &agent);
    rotate_and_reload(&host, &agent);
    let agent = kill_and_restart(&host, &agent);
    stop(&host, &agent);
    // Step 8: an upgrade while running.
    ct.sh(&format!("systemctl start {UNIT}"));
    host.upgrade_while_running(
        &format!("dpkg -i /opt/artifacts/{} 2>&1", packages.deb_upgrade),
        (
            "dpkg-query -W -f='${Version}' hostbeat",
            &format!("{}-2", env!("CARGO_PKG_VERSION")),
        ),
        &agent,
        ROTATED,
    );
    purge(&host);
    // Step 10.
    host.scan_journal_for_tokens();

    host.poweroff();
}

/// Step 4: The client deactivated: one err entry with the reason, the status says so;
/// reactivated: it recovers by itself, same process.
fn deactivate_and_reactivate(host: &Host, agent: &Agent) {
    let (ct, api) = (&host.ct, &host.plane.api);
    api.deactivate(CLIENT_ID);
    let entry = host.wait_until("the auth_failure entry", || {
        host.journal_entries("HOSTBEAT_EVENT=auth_failure")
            .into_iter()
            .next()
    });
    assert_eq!(entry["HOSTBEAT_REASON"], "client_inactive", "{entry}");
    assert_eq!(entry["PRIORITY"], "3", "{entry}");
    assert_eq!(
        entry["MESSAGE_ID"],
        catalog_message_id("auth_failure").as_str(),
        "{entry}"
    );
    host.wait_for_status("auth failure");
    let seen = api.heartbeats().len();
    api.activate(CLIENT_ID);
    host.wait_until("a heartbeat after reactivation", || {
        (!host.plane.heartbeats_since(seen).is_empty()).then_some(())
    });
    assert_eq!(
        ct.unit_property(UNIT, "MainPID"),
        agent.main_pid,
        "restarted instead of recovering"
    );
}

/// Step 5: A rotated token: control plane, env file, `systemctl reload`. Same process,
/// same agent. The operator also sets the interval in the env file, which the
/// drop-in's wins over at the reload too; `hostbeat check`, run from root's shell,
/// says so.
fn rotate_and_reload(host: &Host, agent: &Agent) {
    let ct = &host.ct;
    host.plane.api.rotate(CLIENT_ID, ROTATED);
    ct.sh(&format!(
        "sed -i 's|^HOSTBEAT_CLIENT_TOKEN=.*|HOSTBEAT_CLIENT_TOKEN={ROTATED}|' {ENV_FILE} && \
         echo HOSTBEAT_HEARTBEAT_INTERVAL=7s >> {ENV_FILE}"
    ));
    ct.sh(&format!("systemctl reload {UNIT}"));
    let rotated = host.wait_until("a heartbeat with the rotated token", || {
        host.plane
            .api
            .heartbeats()
            .into_iter()
            .find(|h| h.bearer == ROTATED)
    });
    assert_eq!(rotated.agent_id, agent.id);
    assert_eq!(
        ct.unit_property(UNIT, "MainPID"),
        agent.main_pid,
        "a reload must not restart"
    );
    // Still the drop-in's 1 s, not the env file's 7 s.
    let seen = host.plane.api.heartbeats().len();
    let beats = host.wait_until("four heartbeats after the reload", || {
        let beats = host.plane.heartbeats_since(seen);
        (beats.len() >= 4).then_some(beats)
    });
    let gaps: Vec<u64> = beats.windows(2).map(|w| w[1].at_ms - w[0].at_ms).collect();
    assert!(gaps.iter().all(|gap| *gap < 5_000), "{gaps:?} ms");

    let check = ct.run(&["hostbeat", "check", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&check.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&check.stdout)));
    let summaries: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["summary"].as_str())
        .collect();
    assert!(
        summaries
            .iter()
            .any(|s| s.starts_with("heartbeat_interval is set in 2 places")
                && s.ends_with("in use: environment variable HOSTBEAT_HEARTBEAT_INTERVAL")),
        "{summaries:#?}"
    );
    assert!(
        summaries
            .iter()
            .any(|s| s.starts_with("environment of hostbeat.service")),
        "{summaries:#?}"
    );

    // An env file the service's user cannot read: root can, but check judges as the
    // unit's User=, as `run` will read it (exit 78 at the next start).
    ct.sh(&format!("chmod 0600 {ENV_FILE}"));
    let check = ct.run(&["hostbeat", "check", "--json"]);
    ct.sh(&format!("chmod 0640 {ENV_FILE}"));
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(report["exit_status"], 1, "{report:#}");
    let codes: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["code"].as_str())
        .collect();
    assert!(
        codes.contains(&"env_file.service_cannot_read"),
        "{report:#}"
    );
}

/// Step 6: kill -9: systemd restarts it (RestartSec=5s) and it is the same agent.
fn kill_and_restart(host: &Host, agent: &Agent) -> Agent {
    let ct = &host.ct;
    ct.sh(&format!("kill -9 {}", agent.main_pid));
    let main_pid = host.wait_until("the restart after kill -9", || {
        let pid = ct.unit_property(UNIT, "MainPID");
        (pid != agent.main_pid && pid != "0" && ct.unit_property(UNIT, "SubState") == "running")
            .then_some(pid)
    });
    assert_eq!(ct.unit_property(UNIT, "NRestarts"), "1");
    let seen = host.plane.api.heartbeats().len();
    let after_restart = host.wait_until("a heartbeat after the restart", || {
        host.plane.heartbeats_since(seen).into_iter().next()
    });
    assert_eq!(after_restart.agent_id, agent.id);
    Agent {
        id: agent.id.clone(),
        main_pid,
    }
}

/// Step 7: Stop: the goodbye reaches the control plane, within the unit's timeout.
fn stop(host: &Host, agent: &Agent) {
    let ct = &host.ct;
    let stopping = Instant::now();
    ct.sh(&format!("systemctl stop {UNIT}"));
    assert!(
        stopping.elapsed() < Duration::from_secs(20),
        "{:?}",
        stopping.elapsed()
    );
    assert_eq!(ct.unit_property(UNIT, "ActiveState"), "inactive");
    let last = host.plane.api.heartbeats().pop().unwrap();
    assert_eq!(
        (last.status(), last.agent_id.as_str()),
        ("offline", agent.id.as_str())
    );
}

/// Step 9: Purge: stopped (with a goodbye), state and config gone.
fn purge(host: &Host) {
    host.ct.sh("dpkg --purge hostbeat");
    host.assert_removed_after_goodbye();
    assert!(
        !host.ct.path("/etc/hostbeat").exists(),
        "purge kept the config"
    );
}
