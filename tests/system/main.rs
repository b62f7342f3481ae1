//! System tests: the packages, installed on a real systemd booted with
//! systemd-nspawn (`--boot --register=no --keep-unit`, both flags needed without a
//! host bus; the recipe is in container.rs). They
//! need root, the tools and the cached Debian root that tests/system/prepare
//! installs and builds (scripts/test runs it first); without them they fail, saying
//! so, rather than skip. The control plane runs on the host's loopback, which the
//! container shares; nothing is sent anywhere else.
//!
//! These drive real processes in real time, so they use the std clock and sleeps
//! (which clippy.toml bans elsewhere, for tokio's virtual clock).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod cgroup;
mod container;
mod deb_lifecycle;
mod first_boot;
mod host;
mod packages;
mod plane;
mod rpm_lifecycle;
// Shared with tests/it, which uses all of it.
#[allow(dead_code)]
#[path = "../common/scan.rs"]
mod scan;
