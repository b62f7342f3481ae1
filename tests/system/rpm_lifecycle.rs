//! The .rpm's life on a booted systemd: its scriptlets (the user, the catalog, the
//! env file's owner, enable and start, restart on upgrade, stop and clean up on
//! erase) run for real. The root is Debian with rpm added (no Fedora root can be
//! built here without a network to its mirrors), so rpm is told to install beside
//! dpkg (`--force-debian`) and not to look for `systemd` in its own empty database
//! (`--nodeps`); everything else is what an rpm-based host does.

use crate::host::{ENV_FILE, Host};
use crate::packages::packages;
use crate::plane::SECRET;

const RPM_ON_DEBIAN: &str = "--force-debian --nodeps";

#[test]
fn install_configure_upgrade_erase() {
    let packages = packages();
    let host = Host::boot();
    let ct = &host.ct;

    let installed = ct.sh(&format!(
        "rpm -i {RPM_ON_DEBIAN} /opt/artifacts/{} 2>&1",
        packages.rpm
    ));
    host.assert_installed_waiting_for_token(&installed);
    host.configure_and_start();
    let agent = host.running_agent();
    host.upgrade_while_running(
        &format!(
            "rpm -U {RPM_ON_DEBIAN} /opt/artifacts/{} 2>&1",
            packages.rpm_upgrade
        ),
        ("rpm -q --qf '%{RELEASE}' hostbeat", "2"),
        &agent,
        SECRET,
    );

    // Erase: stopped with a goodbye, disabled, state gone; rpm keeps the operator's
    // modified env file (it holds their token) as .rpmsave, as it does for any
    // changed %config file.
    ct.sh(&format!("rpm -e {RPM_ON_DEBIAN} hostbeat 2>&1"));
    host.assert_removed_after_goodbye();
    assert!(
        ct.path(&format!("{ENV_FILE}.rpmsave")).is_file(),
        "the operator's env file was not kept"
    );
    assert!(!ct.path(ENV_FILE).exists());
    host.scan_journal_for_tokens();

    host.poweroff();
}
