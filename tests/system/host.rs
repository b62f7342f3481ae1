//! A booted host with hostbeat's package on it, and the control plane it reports to:
//! the steps that are the same whichever package manager installed it (what a fresh
//! install looks like without a token, configuring it as the README says, a running
//! agent, an upgrade while running, the token scan), and the probes the steps share.

use std::time::Duration;

use crate::container::{Container, wait_for};
use crate::packages::packages;
use crate::plane::{CLIENT_ID, Plane, ROTATED, SECRET};

pub const UNIT: &str = "hostbeat.service";
pub const ENV_FILE: &str = "/etc/hostbeat/hostbeat.env";
pub const STATE_FILE: &str = "/var/lib/hostbeat/state.json";

/// The operator's `systemctl edit hostbeat`, after the server (`{url}`): the
/// interval changed, short backoff caps so that recoveries take seconds here, and the
/// unit's `HOSTBEAT_CLOUD=auto` turned off: the container shares the host's network,
/// and no test may send a packet to a metadata address. Belt and braces: every
/// metadata URL points at a closed loopback port and DMI at nothing, so that even a
/// cloud turned back on could not leave loopback.
const OVERRIDE: &str = "[Service]\n\
    Environment=HOSTBEAT_SERVER_URL={url}\n\
    Environment=HOSTBEAT_HEARTBEAT_INTERVAL=1s\n\
    Environment=HOSTBEAT_BACKOFF_CAP=2s\n\
    Environment=HOSTBEAT_AUTH_BACKOFF_CAP=2s\n\
    Environment=HOSTBEAT_CLOUD=off\n\
    Environment=HOSTBEAT_EC2_METADATA_URL=http://127.0.0.1:9\n\
    Environment=HOSTBEAT_GCP_METADATA_URL=http://127.0.0.1:9\n\
    Environment=HOSTBEAT_AZURE_METADATA_URL=http://127.0.0.1:9\n\
    Environment=HOSTBEAT_DMI_DIR=/nonexistent\n";

/// The booted container and the control plane it reports to.
pub struct Host {
    pub ct: Container,
    pub plane: Plane,
}

/// The running service as the steps see it.
pub struct Agent {
    pub id: String,
    pub main_pid: String,
}

impl Host {
    /// Starts a control plane on loopback and boots a container with the packages
    /// at /opt/artifacts.
    pub fn boot() -> Self {
        let plane = Plane::start();
        let ct = Container::boot(&packages().dir);
        Self { ct, plane }
    }

    /// Powers the container off (the control plane stops when dropped).
    pub fn poweroff(self) {
        self.ct.poweroff();
    }

    /// After the package manager installed the package (printing `output`): the user,
    /// the enabled unit, the env file's owner and mode, the catalog; and the unit,
    /// started by the maintainer script without a token, exited 78, says what to
    /// configure, and is not restarted.
    pub fn assert_installed_waiting_for_token(&self, output: &str) {
        let ct = &self.ct;
        assert!(output.contains("HOSTBEAT_CLIENT_TOKEN"), "{output}");
        // The maintainer scripts ran clean: a comment that held debhelper's marker
        // once became a command ("create: not found").
        assert!(!output.contains("not found"), "{output}");
        ct.sh("getent passwd hostbeat");
        assert_eq!(
            ct.sh(&format!("systemctl is-enabled {UNIT}")).trim(),
            "enabled"
        );
        assert_eq!(self.env_file_owner_and_mode(), "root:hostbeat 640");
        let catalog = ct.sh("journalctl --list-catalog");
        assert!(
            catalog.contains(&catalog_message_id("auth_failure")),
            "catalog not installed:\n{catalog}"
        );
        assert_eq!(ct.unit_property(UNIT, "ExecMainStatus"), "78");
        assert_eq!(
            ct.unit_property(UNIT, "ActiveState"),
            "failed",
            "restarting in a loop?"
        );
        assert_eq!(ct.unit_property(UNIT, "NRestarts"), "0");
        let status = ct.run(&["systemctl", "status", "--no-pager", "--lines=5", UNIT]);
        let status = String::from_utf8_lossy(&status.stdout);
        assert!(
            status.contains("configuration error") && status.contains("fix:"),
            "{status}"
        );
    }

    /// Configures as the README says: the token in the env file as the package left
    /// it, every other setting in a drop-in, which wins over the env file (the
    /// packaged defaults included). Before the start, the unit's environment turns
    /// IMDS off; after it, the daemon's environment holds no token.
    pub fn configure_and_start(&self) {
        let ct = &self.ct;
        ct.sh(&format!(
            "sed -i -e 's|^#HOSTBEAT_CLIENT_TOKEN=.*|HOSTBEAT_CLIENT_TOKEN={SECRET}|' {ENV_FILE}"
        ));
        let env_file = std::fs::read_to_string(ct.path(ENV_FILE)).unwrap();
        let active: Vec<&str> = env_file
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .collect();
        assert_eq!(active, [format!("HOSTBEAT_CLIENT_TOKEN={SECRET}")]);
        assert_eq!(self.env_file_owner_and_mode(), "root:hostbeat 640");
        let dropin = ct.path("/etc/systemd/system/hostbeat.service.d/override.conf");
        std::fs::create_dir_all(dropin.parent().unwrap()).unwrap();
        std::fs::write(&dropin, OVERRIDE.replace("{url}", &self.plane.url)).unwrap();
        ct.sh("systemctl daemon-reload");
        let environment = ct.unit_property(UNIT, "Environment");
        assert!(
            environment.contains("HOSTBEAT_CLOUD=off")
                && !environment.contains("HOSTBEAT_CLOUD=auto"),
            "the drop-in must turn the cloud off before the start: {environment}"
        );
        ct.sh(&format!("systemctl start {UNIT}"));
        let main_pid = ct.unit_property(UNIT, "MainPID");
        let environ = ct.sh(&format!("tr '\\0' '\\n' < /proc/{main_pid}/environ"));
        assert!(
            environ.lines().any(|l| l == "HOSTBEAT_CLOUD=off")
                && !environ.contains("HOSTBEAT_CLIENT_TOKEN"),
            "the daemon's environment:\n{environ}"
        );
    }

    /// Running, with a Status: line; heartbeats with the token at the drop-in's
    /// interval (1 s, not the default 30 s); start-up entries in the journal.
    pub fn running_agent(&self) -> Agent {
        let ct = &self.ct;
        assert_eq!(ct.unit_property(UNIT, "SubState"), "running");
        let first = self.wait_until("four heartbeats", || {
            let beats = self.plane.heartbeats_since(0);
            (beats.len() >= 4).then_some(beats)
        });
        assert!(
            first
                .iter()
                .all(|h| h.bearer == SECRET && h.client_id == CLIENT_ID)
        );
        let mut gaps: Vec<u64> = first.windows(2).map(|w| w[1].at_ms - w[0].at_ms).collect();
        gaps.sort_unstable();
        assert!(
            gaps[gaps.len() / 2] < 5_000,
            "not the drop-in's 1 s interval: {gaps:?} ms"
        );
        self.wait_for_status("online");
        let status = ct.sh(&format!("systemctl status --no-pager {UNIT}"));
        assert!(status.contains("Status: \"online"), "{status}");
        let events: Vec<String> = self
            .journal_entries("")
            .iter()
            .filter_map(|e| e["HOSTBEAT_EVENT"].as_str().map(str::to_owned))
            .collect();
        for event in ["started", "registered", "online"] {
            assert!(
                events.iter().any(|e| e == event),
                "no {event} in {events:?}"
            );
        }
        let main_pid = ct.unit_property(UNIT, "MainPID");
        // `hostbeat status` works for an operator in the hostbeat group, not root.
        ct.sh("useradd --groups hostbeat --no-create-home fleetops");
        let status = ct.sh("runuser -u fleetops -- hostbeat status");
        assert!(
            status.starts_with(&format!("hostbeat: online (pid {main_pid})")),
            "{status}"
        );
        Agent {
            id: first[0].agent_id.clone(),
            main_pid,
        }
    }

    /// Upgrades the running service with `upgrade` (a shell command), after which
    /// `version_query` prints `version`: restarted, env file and state kept, the same
    /// agent beating with the token it had (`bearer`); and what the daemon wrote in
    /// its state directory holds no token.
    pub fn upgrade_while_running(
        &self,
        upgrade: &str,
        (version_query, version): (&str, &str),
        agent: &Agent,
        bearer: &str,
    ) {
        let ct = &self.ct;
        let before_upgrade = ct.unit_property(UNIT, "MainPID");
        let env_before = std::fs::read(ct.path(ENV_FILE)).unwrap();
        let state_before = std::fs::read(ct.path(STATE_FILE)).unwrap();
        ct.sh(upgrade);
        assert_eq!(ct.sh(version_query), version);
        assert_eq!(std::fs::read(ct.path(ENV_FILE)).unwrap(), env_before);
        assert_eq!(std::fs::read(ct.path(STATE_FILE)).unwrap(), state_before);
        let after_upgrade = ct.unit_property(UNIT, "MainPID");
        assert!(
            after_upgrade != before_upgrade && after_upgrade != "0",
            "not restarted"
        );
        let seen = self.plane.api.heartbeats().len();
        let upgraded = self.wait_until("a heartbeat after the upgrade", || {
            self.plane
                .heartbeats_since(seen)
                .into_iter()
                .find(|h| h.status() == "online")
        });
        assert_eq!(
            (upgraded.agent_id.as_str(), upgraded.bearer.as_str()),
            (agent.id.as_str(), bearer)
        );

        let state_files = crate::scan::files_under(&ct.path("/var/lib/hostbeat"));
        assert!(!state_files.is_empty());
        crate::scan::assert_no_token(&state_files, &[SECRET, ROTATED]);
    }

    /// After the package is gone: `/var/lib/hostbeat` and the unit are gone too, and
    /// the control plane got the goodbye.
    pub fn assert_removed_after_goodbye(&self) {
        assert_eq!(
            self.plane.api.heartbeats().pop().unwrap().status(),
            "offline"
        );
        for gone in [
            "/var/lib/hostbeat",
            "/usr/lib/systemd/system/hostbeat.service",
        ] {
            assert!(!self.ct.path(gone).exists(), "{gone} survived");
        }
    }

    /// Not one byte of either token in the journal, as files or as journalctl reads
    /// them, nor on the console.
    pub fn scan_journal_for_tokens(&self) {
        let ct = &self.ct;
        ct.sh("journalctl --flush");
        let mut written = crate::scan::files_under(&ct.path("/var/log/journal"));
        assert!(!written.is_empty(), "no journal files to scan");
        written.push((
            "journalctl -o export".into(),
            ct.run(&["journalctl", "-o", "export"]).stdout,
        ));
        written.push(("console".into(), ct.console().into_bytes()));
        crate::scan::assert_no_token(&written, &[SECRET, ROTATED]);
    }

    pub fn env_file_owner_and_mode(&self) -> String {
        self.ct
            .sh(&format!("stat -c '%U:%G %a' {ENV_FILE}"))
            .trim()
            .to_owned()
    }

    /// Waits until the unit's STATUS= text starts with `prefix`.
    pub fn wait_for_status(&self, prefix: &str) {
        self.wait_until(&format!("a {prefix:?} status"), || {
            self.ct
                .unit_property(UNIT, "StatusText")
                .starts_with(prefix)
                .then_some(())
        });
    }

    /// Polls (every 100 ms, at most 30 s); on timeout, fails with the unit's journal.
    pub fn wait_until<T>(&self, what: &str, probe: impl FnMut() -> Option<T>) -> T {
        wait_for(Duration::from_secs(30), probe).unwrap_or_else(|| {
            let journal = self
                .ct
                .run(&["journalctl", "-u", UNIT, "--no-pager", "-n", "40"]);
            panic!(
                "timed out waiting for {what}\n{}",
                String::from_utf8_lossy(&journal.stdout)
            )
        })
    }

    /// The unit's journal entries matching `filter` (e.g. `FIELD=value`), oldest
    /// first.
    pub fn journal_entries(&self, filter: &str) -> Vec<serde_json::Value> {
        let mut args = vec!["journalctl", "-u", UNIT, "-o", "json", "--no-pager"];
        if !filter.is_empty() {
            args.push(filter);
        }
        let output = self.ct.run(&args);
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

/// An event's MESSAGE_ID, which the packaged catalog must document.
pub fn catalog_message_id(event: &str) -> String {
    let id = hostbeat::logging::events::lookup(event)
        .unwrap_or_else(|| panic!("no event {event}"))
        .message_id;
    let catalog = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/hostbeat.catalog"
    ))
    .unwrap();
    assert!(
        catalog.contains(&format!("-- {id}")),
        "{event} ({id}) not in the catalog"
    );
    id.to_owned()
}
