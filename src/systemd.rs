//! Telling systemd how the agent is (sd_notify): `READY=1` once the loop runs,
//! `STATUS=` in one line on every state change, `WATCHDOG=1` from the loop itself,
//! `RELOADING=1` and `READY=1` around a reload, `STOPPING=1` at shutdown.
//!
//! Invariants: without a service manager (`NOTIFY_SOCKET` unset) every call is a
//! no-op; a notification that fails is logged once and never stops the agent.
//! Readiness never waits for the control plane: a host that boots while the control
//! plane is away must not fail its unit.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

/// The agent's line to the service manager.
#[derive(Debug)]
pub struct Notifier {
    enabled: bool,
    watchdog: Option<Duration>,
    warned: AtomicBool,
    /// The last STATUS sent, so that an unchanged state sends nothing.
    status: Mutex<String>,
}

impl Notifier {
    /// From the process environment systemd set up (`NOTIFY_SOCKET`,
    /// `WATCHDOG_USEC`, `WATCHDOG_PID`); read once, at start-up.
    pub fn from_env() -> Self {
        Self {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            watchdog: sd_notify::watchdog_enabled(),
            warned: AtomicBool::new(false),
            status: Mutex::new(String::new()),
        }
    }

    /// A notifier that says nothing (tests, the demo).
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            watchdog: None,
            warned: AtomicBool::new(false),
            status: Mutex::new(String::new()),
        }
    }

    /// How often to send `WATCHDOG=1`: half the unit's `WatchdogSec=`, if armed.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2).filter(|d| !d.is_zero())
    }

    /// `READY=1`, with the current status.
    pub fn ready(&self, status: &str) {
        self.remember(status);
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `STATUS=`, when it changed.
    pub fn status(&self, status: &str) {
        if self.remember(status) {
            self.send(&[NotifyState::Status(status)]);
        }
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// `RELOADING=1` with `MONOTONIC_USEC`, as `Type=notify-reload` requires.
    pub fn reloading(&self) {
        if !self.enabled {
            return;
        }
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[
                NotifyState::Reloading,
                now,
                NotifyState::Status("reloading"),
            ]),
            Err(e) => self.warn_once(&e),
        }
    }

    /// `STOPPING=1`.
    pub fn stopping(&self, status: &str) {
        self.remember(status);
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// Stores `status`; true when it differs from the last one.
    fn remember(&self, status: &str) -> bool {
        let mut last = self.status.lock().expect("not poisoned");
        if *last == status {
            return false;
        }
        status.clone_into(&mut last);
        true
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        // `STATUS=` is shown to every user by `systemctl status`: the last line of
        // defence applies to it too.
        let redacted: Vec<String> = states
            .iter()
            .map(|state| match state {
                NotifyState::Status(text) => crate::redact::redact(text).into_owned(),
                _ => String::new(),
            })
            .collect();
        let states: Vec<NotifyState<'_>> = states
            .iter()
            .zip(&redacted)
            .map(|(state, text)| match state {
                NotifyState::Status(_) => NotifyState::Status(text),
                other => other.clone(),
            })
            .collect();
        if let Err(e) = sd_notify::notify(&states) {
            self.warn_once(&e);
        }
    }

    fn warn_once(&self, error: &std::io::Error) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                event = "notify_failed",
                "cannot notify systemd ({error}); the service state may be stale"
            );
        }
    }
}
