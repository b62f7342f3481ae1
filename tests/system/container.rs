//! A Debian bookworm container booted with `systemd-nspawn --boot`: a real systemd as
//! PID 1, sharing the host's network (so the service reaches a control plane on the
//! host's loopback). Each container runs on a private copy of the cached root that
//! tests/system/prepare built, and is powered off (or killed, by PID) and deleted
//! when dropped. Every wait is bounded.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::cgroup::Cgroup;
use std::time::{Duration, Instant};

/// Where tests/system/prepare leaves the root (`HOSTBEAT_TEST_ROOT` overrides it).
fn cached_root() -> PathBuf {
    std::env::var_os("HOSTBEAT_TEST_ROOT").map_or_else(
        || PathBuf::from("/var/cache/hostbeat-tests/bookworm"),
        PathBuf::from,
    )
}

/// The root with Debian's cloud-init, seeded by NoCloud only (tests/system/prepare).
pub fn cached_cloud_init_root() -> PathBuf {
    std::env::var_os("HOSTBEAT_TEST_CLOUD_ROOT").map_or_else(
        || PathBuf::from("/var/cache/hostbeat-tests/bookworm-cloud-init"),
        PathBuf::from,
    )
}

/// A booted container.
pub struct Container {
    nspawn: Child,
    /// The container's PID 1, as the host sees it.
    leader: u32,
    dir: tempfile::TempDir,
    /// Bound at /opt/artifacts, again at each boot.
    artifacts: PathBuf,
    /// Dropped after the fields above, once nspawn is gone.
    cgroup: Cgroup,
}

impl Container {
    /// Boots a copy of the cached root with `artifacts` at /opt/artifacts (read-only),
    /// and waits until systemd says the system is up.
    pub fn boot(artifacts: &Path) -> Self {
        Self::boot_from(&cached_root(), artifacts, |_| {})
    }

    /// Boots a copy of `cached` (a root tests/system/prepare built) with `artifacts`
    /// at /opt/artifacts, after `prepare` has written what it needs into the copy
    /// (given its path on the host), and waits until systemd says the system is up.
    pub fn boot_from(cached: &Path, artifacts: &Path, prepare: impl FnOnce(&Path)) -> Self {
        assert!(
            cached.join(".hostbeat-recipe").is_file(),
            "no Debian root at {}: run tests/system/prepare (scripts/test does)",
            cached.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("hostbeat-system-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let root = dir.path().join("root");
        run_ok(
            Command::new("cp")
                .arg("-a")
                .arg("--reflink=auto")
                .arg(cached)
                .arg(&root),
        );
        prepare(&root);
        let (nspawn, cgroup) = spawn_nspawn(dir.path(), artifacts);
        let mut container = Self {
            nspawn,
            leader: 0,
            dir,
            artifacts: artifacts.to_owned(),
            cgroup,
        };
        container.wait_until_up();
        container
    }

    /// Reboots: systemd in the container reboots, nspawn exits (it does not boot
    /// again by itself), and the same root is booted again, as a cloud instance is
    /// stopped and started with its disk.
    pub fn reboot(&mut self) {
        let _ = self.run(&["systemctl", "reboot"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.nspawn.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "the container did not reboot in 30 s\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let (nspawn, cgroup) = spawn_nspawn(self.dir.path(), &self.artifacts);
        self.nspawn = nspawn;
        self.cgroup = cgroup;
        self.leader = 0;
        self.wait_until_up();
    }

    /// Waits for the container's PID 1, then for systemd to say the system is up.
    fn wait_until_up(&mut self) {
        let nspawn_pid = self.nspawn.id();
        self.leader = wait_for(Duration::from_secs(30), || {
            std::fs::read_to_string(format!("/proc/{nspawn_pid}/task/{nspawn_pid}/children"))
                .ok()
                .and_then(|children| children.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or_else(|| panic!("no PID 1 in the container\n{}", self.console()));
        let booted = wait_for(Duration::from_secs(120), || {
            let state = self.run(&["systemctl", "is-system-running"]);
            let state = String::from_utf8_lossy(&state.stdout).trim().to_owned();
            matches!(state.as_str(), "running" | "degraded").then_some(state)
        });
        assert!(
            booted.is_some(),
            "the container did not boot\n{}",
            self.console()
        );
    }

    /// A path inside the container, seen from the host.
    pub fn path(&self, inside: &str) -> PathBuf {
        self.dir
            .path()
            .join("root")
            .join(inside.trim_start_matches('/'))
    }

    /// What the container printed on its console so far.
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    /// Runs a command in all the container's namespaces, with a clean environment.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg("--target")
            .arg(self.leader.to_string())
            .args([
                "--all",
                "--",
                "env",
                "-i",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C.UTF-8",
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("nsenter")
    }

    /// `sh -c script` in the container; panics with its output unless it succeeds.
    pub fn sh(&self, script: &str) -> String {
        stdout_of_success(
            &format!("in the container: {script}"),
            &self.run(&["sh", "-c", script]),
        )
    }

    /// One property of a unit (`systemctl show -p NAME --value`).
    pub fn unit_property(&self, unit: &str, name: &str) -> String {
        self.sh(&format!("systemctl show -p {name} --value {unit}"))
            .trim()
            .to_owned()
    }

    /// Shuts the container down and waits for nspawn to exit.
    pub fn poweroff(mut self) {
        let _ = self.run(&["systemctl", "poweroff"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.nspawn.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the container did not power off in 30 s\n{}",
            self.console()
        );
    }
}

impl Drop for Container {
    /// After a failure (or a poweroff that already ended it): kill the container's
    /// PID 1, which ends every process in its PID namespace, then nspawn.
    fn drop(&mut self) {
        if self.nspawn.try_wait().ok().flatten().is_none() {
            if self.leader != 0 {
                let _ = Command::new("kill")
                    .args(["-KILL", &self.leader.to_string()])
                    .status();
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && self.nspawn.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.nspawn.kill();
            let _ = self.nspawn.wait();
        }
    }
}

/// Starts `systemd-nspawn --boot` on `dir`/root, in a cgroup of its own, its
/// console to `dir`/console.log (appended: a reboot adds to it).
fn spawn_nspawn(dir: &Path, artifacts: &Path) -> (Child, Cgroup) {
    let console = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("console.log"))
        .unwrap();
    let name = unique_name();
    let cgroup = Cgroup::create(&name);
    // nspawn must start inside its cgroup (it forks at once): a shell moves
    // itself in, then becomes nspawn.
    let nspawn = Command::new("sh")
        .args([
            "-c",
            r#"for procs in $HOSTBEAT_CGROUP_PROCS; do echo $$ >"$procs"; done; exec "$@""#,
            "sh",
            "systemd-nspawn",
        ])
        .env(
            "HOSTBEAT_CGROUP_PROCS",
            cgroup
                .procs_files()
                .iter()
                .map(|p| p.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
        )
        .arg("--directory")
        .arg(dir.join("root"))
        .args([
            "--boot",
            "--register=no",
            "--keep-unit",
            "--console=read-only",
        ])
        .arg(format!("--machine={name}"))
        .arg(format!("--bind-ro={}:/opt/artifacts", artifacts.display()))
        .stdin(Stdio::null())
        .stdout(console.try_clone().unwrap())
        .stderr(console)
        .spawn()
        .expect("systemd-nspawn (tests/system/prepare installs it)");
    (nspawn, cgroup)
}

/// A machine name no other container of this test run (or of another run) has.
fn unique_name() -> String {
    static BOOTED: AtomicUsize = AtomicUsize::new(0);
    let n = BOOTED.fetch_add(1, Ordering::Relaxed);
    format!("hostbeat-test-{}-{n}", std::process::id())
}

/// Runs a host command; panics with its output unless it succeeds.
pub fn run_ok(command: &mut Command) -> String {
    let output = command.stdin(Stdio::null()).output().expect("spawn");
    stdout_of_success(&format!("{command:?}"), &output)
}

/// The standard output of a command that succeeded; else a panic with all it said.
fn stdout_of_success(what: &str, output: &Output) -> String {
    assert!(
        output.status.success(),
        "{what}\nexit: {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Polls `probe` every 100 ms for at most `limit` of real time.
pub fn wait_for<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = probe() {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
