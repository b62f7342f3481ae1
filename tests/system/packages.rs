//! The packages under test, built once per test run from this checkout by
//! packaging/build.sh (the documented command), and the checks that need no
//! container: lintian on the .deb, and the .rpm's files, modes and scripts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::container::run_ok;

/// Package revision 1, and the same files as revision 2 (the upgrade).
pub struct Packages {
    /// The directory holding `v1/` and `v2/`, bound into containers.
    pub dir: PathBuf,
    pub deb: String,
    pub deb_upgrade: String,
    pub rpm: String,
    pub rpm_upgrade: String,
}

/// Builds the packages on first use; every test shares them.
pub fn packages() -> &'static Packages {
    static PACKAGES: OnceLock<Packages> = OnceLock::new();
    PACKAGES.get_or_init(|| {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = repo.join("target/system-test/packages");
        let _ = std::fs::remove_dir_all(&dir);
        let build = |revision: &str| {
            let out = dir.join(format!("v{revision}"));
            run_ok(
                Command::new(repo.join("packaging/build.sh"))
                    .args(["--revision", revision, "--out"])
                    .arg(&out)
                    .current_dir(repo),
            );
            out
        };
        let (v1, v2) = (build("1"), build("2"));
        let find = |dir: &Path, suffix: &str| {
            let name = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .find(|n| n.ends_with(suffix))
                .unwrap_or_else(|| panic!("no *{suffix} in {}", dir.display()));
            let version = dir.file_name().unwrap().to_string_lossy().into_owned();
            format!("{version}/{name}")
        };
        Packages {
            deb: find(&v1, ".deb"),
            deb_upgrade: find(&v2, ".deb"),
            rpm: find(&v1, ".rpm"),
            rpm_upgrade: find(&v2, ".rpm"),
            dir,
        }
    })
}

impl Packages {
    /// A package's path on the host.
    pub fn host_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

#[test]
fn lintian_reports_no_error_and_no_warning() {
    let deb = packages().host_path(&packages().deb);
    let output = Command::new("lintian")
        .args(["--pedantic", "--display-info", "--tag-display-limit", "0"])
        .arg(&deb)
        .output()
        .expect("lintian (tests/system/prepare installs it)");
    let report = String::from_utf8_lossy(&output.stdout);
    let serious: Vec<&str> = report
        .lines()
        .filter(|line| line.starts_with("E:") || line.starts_with("W:"))
        .collect();
    assert!(
        serious.is_empty(),
        "lintian on {}:\n{report}",
        deb.display()
    );
    assert!(
        output.status.success(),
        "lintian failed: {report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_deb_holds_what_an_operator_needs() {
    let deb = packages().host_path(&packages().deb);
    let listing = run_ok(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for (mode, path) in [
        ("-rwxr-xr-x 0/0", "./usr/bin/hostbeat"),
        ("-rw-r----- 0/0", "./etc/hostbeat/hostbeat.env"),
        (
            "-rw-r--r-- 0/0",
            "./usr/lib/systemd/system/hostbeat.service",
        ),
        ("-rw-r--r-- 0/0", "./usr/lib/sysusers.d/hostbeat.conf"),
        (
            "-rw-r--r-- 0/0",
            "./usr/lib/systemd/catalog/hostbeat.catalog",
        ),
        ("-rw-r--r-- 0/0", "./usr/share/man/man8/hostbeat.8.gz"),
        ("-rw-r--r-- 0/0", "./usr/share/man/man8/hostbeat-run.8.gz"),
        (
            "-rw-r--r-- 0/0",
            "./usr/share/man/man8/hostbeat-status.8.gz",
        ),
        (
            "-rw-r--r-- 0/0",
            "./usr/share/bash-completion/completions/hostbeat",
        ),
        ("-rw-r--r-- 0/0", "./usr/share/doc/hostbeat/changelog.gz"),
        (
            "-rw-r--r-- 0/0",
            "./usr/share/doc/hostbeat/changelog.Debian.gz",
        ),
        ("-rw-r--r-- 0/0", "./usr/share/doc/hostbeat/copyright"),
        ("-rw-r--r-- 0/0", "./usr/share/doc/hostbeat/operations.md"),
    ] {
        assert_listed(&listing, mode, path);
    }
    let conffiles = run_ok(
        Command::new("dpkg-deb")
            .arg("--info")
            .arg(&deb)
            .arg("conffiles"),
    );
    assert_eq!(conffiles.trim(), "/etc/hostbeat/hostbeat.env");
    let control = run_ok(Command::new("dpkg-deb").arg("--field").arg(&deb));
    let version = format!("Version: {}-1", env!("CARGO_PKG_VERSION"));
    assert!(control.contains(&version), "{control}");
    assert!(
        control.contains("Depends: ") && control.contains("systemd"),
        "{control}"
    );
    // The binary is stripped: no symbol table left.
    let unpacked = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("dpkg-deb")
            .arg("--extract")
            .arg(&deb)
            .arg(unpacked.path()),
    );
    let sections = run_ok(
        Command::new("readelf")
            .arg("--section-headers")
            .arg(unpacked.path().join("usr/bin/hostbeat")),
    );
    assert!(!sections.contains(".symtab"), "not stripped:\n{sections}");
}

#[test]
fn the_rpm_holds_the_same_files_with_config_noreplace() {
    let rpm = packages().host_path(&packages().rpm);
    let query = |args: &[&str]| {
        run_ok(
            Command::new("rpm")
                .args(["--query", "--package"])
                .args(args)
                .arg(&rpm),
        )
    };
    let files = query(&["--list", "--verbose"]);
    for (mode, path) in [
        ("-rwxr-xr-x", "/usr/bin/hostbeat"),
        ("-rw-r-----", "/etc/hostbeat/hostbeat.env"),
        ("-rw-r--r--", "/usr/lib/systemd/system/hostbeat.service"),
        ("-rw-r--r--", "/usr/lib/sysusers.d/hostbeat.conf"),
        ("-rw-r--r--", "/usr/lib/systemd/catalog/hostbeat.catalog"),
        ("-rw-r--r--", "/usr/share/man/man8/hostbeat.8"),
    ] {
        assert_listed(&files, mode, path);
    }
    // %config(noreplace): rpm -q --dump gives the file flags; noreplace is 0x10 | config 0x1.
    assert_eq!(
        query(&["--configfiles"]).trim(),
        "/etc/hostbeat/hostbeat.env"
    );
    let dump = query(&["--queryformat", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]"]);
    assert!(
        dump.lines()
            .any(|line| line.starts_with("/etc/hostbeat/hostbeat.env ")
                && line.contains('c')
                && line.contains('n')),
        "{dump}"
    );
    let requires = query(&["--requires"]);
    assert!(
        requires.lines().any(|line| line.trim() == "systemd"),
        "{requires}"
    );
    let info = query(&["--info"]);
    assert!(
        info.contains(&format!("Version     : {}", env!("CARGO_PKG_VERSION"))),
        "{info}"
    );
    assert!(info.contains("License     : MIT"), "{info}");
}

/// A package listing (`dpkg-deb -c`, `rpm -qlv`) has `path` with `mode` and owners.
fn assert_listed(listing: &str, mode: &str, path: &str) {
    assert!(
        listing
            .lines()
            .any(|line| line.starts_with(mode) && line.ends_with(path)),
        "{path} with {mode} in:\n{listing}"
    );
}
