//! A cgroup of its own for each container. `systemd-nspawn --keep-unit` on a host
//! whose PID 1 is not systemd boots the container in the cgroup it was started in
//! (splitting it into `payload` and `supervisor`); two containers started from the
//! same test process would share that tree, and each one's systemd would manage (and
//! kill) the other's services. Found when the .deb and .rpm tests first ran side by
//! side: "Failed to kill control group ... Input/output error".

use std::path::{Path, PathBuf};

/// One directory in each cgroup hierarchy systemd uses here (the named `systemd` v1
/// hierarchy and the unified v2 one, or the v2 root alone), removed when dropped.
pub struct Cgroup {
    dirs: Vec<PathBuf>,
}

impl Cgroup {
    /// Creates `name` under this process's own cgroup in every such hierarchy.
    pub fn create(name: &str) -> Self {
        let dirs: Vec<PathBuf> = hierarchies()
            .into_iter()
            .map(|parent| parent.join(name))
            .collect();
        assert!(!dirs.is_empty(), "no systemd cgroup hierarchy mounted");
        for dir in &dirs {
            std::fs::create_dir(dir)
                .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", dir.display()));
        }
        Self { dirs }
    }

    /// The `cgroup.procs` files a process writes its PID to, to move itself in.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }
}

impl Drop for Cgroup {
    /// Removes what the container's systemd left below, deepest first. Runs after
    /// every process of the container ended; a cgroup that still holds one stays.
    fn drop(&mut self) {
        for dir in &self.dirs {
            remove_tree(dir);
        }
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// This process's cgroup in the hierarchies systemd uses, as host paths.
fn hierarchies() -> Vec<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let mount_point = |fstype: &str, option: Option<&str>| {
        mounts.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let matches = fields.get(2) == Some(&fstype)
                && option
                    .is_none_or(|o| fields.get(3).is_some_and(|f| f.split(',').any(|x| x == o)));
            matches.then(|| PathBuf::from(fields[1]))
        })
    };
    let own_path = |controller: &str| {
        own.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, name, path) = (parts.next()?, parts.next()?, parts.next()?);
            (name == controller).then(|| path.trim_start_matches('/').to_owned())
        })
    };
    let mut found = Vec::new();
    if let (Some(mount), Some(path)) = (
        mount_point("cgroup", Some("name=systemd")),
        own_path("name=systemd"),
    ) {
        found.push(mount.join(path));
    }
    if let (Some(mount), Some(path)) = (mount_point("cgroup2", None), own_path("")) {
        found.push(mount.join(path));
    }
    found
}
