//! From launch template to online: examples/cloud-init/debian.yaml, as an operator
//! pastes it, on the first boot of a Debian bookworm with Debian's cloud-init
//! (booted with systemd-nspawn, seeded by NoCloud), then a second boot of the same
//! instance. The test changes only what the example marks CHANGE: the repository
//! (a flat apt repository of the .deb under test, bound at /opt/artifacts), the
//! control plane (the reference one on loopback) and the token.

use std::process::Command;
use std::time::Duration;

use crate::container::{Container, cached_cloud_init_root, run_ok, wait_for};
use crate::host::{ENV_FILE, STATE_FILE, UNIT};
use crate::packages::packages;
use crate::plane::{Plane, SECRET};
use crate::scan::contains;

const EXAMPLE: &str = include_str!("../../examples/cloud-init/debian.yaml");

/// The test's own drop-in, in the root before the first boot: the unit's
/// `HOSTBEAT_CLOUD=auto` turned off and every metadata URL on a closed loopback
/// port (the container shares the host's network and sees the host's DMI), so that
/// no test ever sends a packet to a metadata address.
const NO_CLOUD_DROP_IN: &str = "[Service]\n\
    Environment=HOSTBEAT_CLOUD=off\n\
    Environment=HOSTBEAT_EC2_METADATA_URL=http://127.0.0.1:9\n\
    Environment=HOSTBEAT_GCP_METADATA_URL=http://127.0.0.1:9\n\
    Environment=HOSTBEAT_AZURE_METADATA_URL=http://127.0.0.1:9\n";

#[test]
fn the_debian_example_brings_a_first_boot_online_and_a_second_boot_changes_nothing() {
    let plane = Plane::start();
    let repo = apt_repository();
    let user_data = as_pasted(EXAMPLE, &plane.url);
    let mut ct = Container::boot_from(&cached_cloud_init_root(), repo.path(), |root| {
        let seed = root.join("var/lib/cloud/seed/nocloud");
        std::fs::create_dir_all(&seed).unwrap();
        std::fs::write(seed.join("user-data"), &user_data).unwrap();
        std::fs::write(
            seed.join("meta-data"),
            "instance-id: i-hostbeat-first-boot\nlocal-hostname: spot-1\n",
        )
        .unwrap();
        let drop_ins = root.join("etc/systemd/system/hostbeat.service.d");
        std::fs::create_dir_all(&drop_ins).unwrap();
        std::fs::write(drop_ins.join("00-tests.conf"), NO_CLOUD_DROP_IN).unwrap();
    });

    // First boot: cloud-init ends, hostbeat is online at the plane.
    cloud_init_done(&ct);
    let online = wait_for(Duration::from_secs(60), || {
        (!plane.api.heartbeats().is_empty()).then_some(())
    });
    assert!(online.is_some(), "no heartbeat\n{}", journal(&ct));
    assert_eq!(ct.unit_property(UNIT, "ActiveState"), "active");
    let environment = ct.unit_property(UNIT, "Environment");
    assert!(
        environment.contains(&format!("HOSTBEAT_SERVER_URL={}", plane.url))
            && environment.contains("HOSTBEAT_HEARTBEAT_INTERVAL=30s")
            && environment.contains("HOSTBEAT_CLOUD=off"),
        "the drop-ins are not in effect: {environment}"
    );
    assert_eq!(
        ct.sh(&format!("stat -c '%U:%G %a' {ENV_FILE}")).trim(),
        "root:hostbeat 640"
    );
    // The package's own files, untouched by a prompt: no copy beside them.
    assert_eq!(ct.sh("ls -A /etc/hostbeat").trim(), "hostbeat.env");
    assert!(
        ct.sh("dpkg-query -W -f='${Status}' hostbeat")
            .contains("install ok installed")
    );
    let first_agent_id = agent_id(&ct);
    no_token_anywhere(&ct);

    // Second boot of the same instance: nothing done again. The reboot returns
    // once the first boot's goodbye is in and the system is up again, so every
    // heartbeat after it is the second boot's.
    let first_installs = installs(&ct);
    let first_semaphores = semaphores(&ct);
    assert!(
        first_semaphores.contains("config_write_files_deferred")
            && first_semaphores.contains("config_scripts_user"),
        "{first_semaphores}"
    );
    let plane_agent = plane.api.heartbeats()[0].agent_id.clone();
    ct.reboot();
    let seen = plane.api.heartbeats().len();
    cloud_init_done(&ct);
    let again = wait_for(Duration::from_secs(60), || {
        plane
            .heartbeats_since(seen)
            .into_iter()
            .find(|b| b.status() == "online")
    });
    let again = again.unwrap_or_else(|| panic!("not online after the reboot\n{}", journal(&ct)));
    assert_eq!(again.agent_id, plane_agent, "another agent at the plane");
    assert_eq!(ct.unit_property(UNIT, "ActiveState"), "active");
    // cloud-init's own record: a once-per-instance step that ran again would have
    // rewritten its semaphore.
    assert_eq!(
        semaphores(&ct),
        first_semaphores,
        "a first-boot step ran again"
    );
    assert_eq!(agent_id(&ct), first_agent_id, "a second agent id");
    assert_eq!(installs(&ct), first_installs, "hostbeat installed again");
    assert_eq!(
        ct.sh("ls /etc/systemd/system/hostbeat.service.d").trim(),
        "00-tests.conf\n50-fleet.conf"
    );
    let env_file = std::fs::read_to_string(ct.path(ENV_FILE)).unwrap();
    assert_eq!(
        env_file.matches("\nHOSTBEAT_CLIENT_TOKEN=").count(),
        1,
        "the token appended twice:\n{}",
        env_file.replace(SECRET, "<token>")
    );
    no_token_anywhere(&ct);
    ct.poweroff();
}

/// The example with its CHANGE values set for this test: the repository is a flat
/// one at /opt/artifacts (unsigned, on the container's own disk), the control plane
/// on loopback, the test's token.
fn as_pasted(example: &str, plane_url: &str) -> String {
    let mut out = String::new();
    let mut in_key = false;
    for line in example.lines() {
        if line.trim_start().starts_with("key: |") {
            in_key = true;
            continue;
        }
        if in_key {
            in_key = !line.contains("-----END PGP PUBLIC KEY BLOCK-----");
            continue;
        }
        let line = if line.contains("source: \"deb [signed-by=$KEY_FILE]") {
            "      source: \"deb [trusted=yes] file:/opt/artifacts ./\"".to_owned()
        } else {
            line.replace("https://cp.example.com", plane_url)
                .replace("ct_REPLACE_WITH_YOUR_CLIENT_TOKEN", SECRET)
        };
        out.push_str(&line);
        out.push('\n');
    }
    // The test stays on the host only while the example keeps the image's apt
    // sources (the root has none): without it, cloud-init would write Debian's.
    assert!(
        out.contains(SECRET)
            && out.contains(plane_url)
            && out.contains("file:/opt/artifacts")
            && out.contains("preserve_sources_list: true"),
        "the example no longer has what this test relies on:\n{}",
        out.replace(SECRET, "<token>")
    );
    out
}

/// A flat apt repository of the .deb under test: the package and its `Packages`.
fn apt_repository() -> tempfile::TempDir {
    let packages = packages();
    let dir = tempfile::Builder::new()
        .prefix("hostbeat-apt-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let deb = packages.host_path(&packages.deb);
    std::fs::copy(&deb, dir.path().join(deb.file_name().unwrap())).unwrap();
    let index = run_ok(
        Command::new("dpkg-scanpackages")
            .args([".", "/dev/null"])
            .current_dir(dir.path()),
    );
    std::fs::write(dir.path().join("Packages"), index).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(dir.path(), mode).unwrap();
    dir
}

/// Waits (bounded) for cloud-init to finish this boot, and says how it went.
fn cloud_init_done(ct: &Container) {
    let status = ct.run(&["timeout", "300", "cloud-init", "status", "--wait", "--long"]);
    let said = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        said.contains("status: done"),
        "cloud-init did not finish cleanly:\n{said}\n{}",
        std::fs::read_to_string(ct.path("/var/log/cloud-init-output.log"))
            .unwrap_or_default()
            .replace(SECRET, "<token>")
    );
}

/// The agent id in the daemon's state file.
fn agent_id(ct: &Container) -> String {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ct.path(STATE_FILE)).unwrap()).unwrap();
    state["agent_id"].as_str().unwrap().to_owned()
}

/// The semaphores of the steps cloud-init ran once for this instance, with their
/// times.
fn semaphores(ct: &Container) -> String {
    ct.sh("cd /var/lib/cloud/instance/sem && stat -c '%n %Y' *")
}

/// How many times dpkg installed hostbeat (its log, across boots).
fn installs(ct: &Container) -> usize {
    ct.sh("grep -c ' install hostbeat' /var/log/dpkg.log || true")
        .trim()
        .parse()
        .unwrap()
}

/// The token in none of the journal, cloud-init's log and its output log.
fn no_token_anywhere(ct: &Container) {
    let journal = ct.run(&["journalctl", "-o", "export", "--no-pager"]).stdout;
    assert!(!contains(&journal, SECRET), "the token is in the journal");
    for log in ["/var/log/cloud-init.log", "/var/log/cloud-init-output.log"] {
        let bytes = std::fs::read(ct.path(log)).unwrap_or_else(|e| panic!("{log}: {e}"));
        assert!(!bytes.is_empty(), "{log} is empty");
        assert!(!contains(&bytes, SECRET), "the token is in {log}");
    }
}

/// hostbeat's journal, for a failure's message.
fn journal(ct: &Container) -> String {
    String::from_utf8_lossy(&ct.run(&["journalctl", "-u", UNIT, "--no-pager"]).stdout)
        .replace(SECRET, "<token>")
}
