//! The command line, defined once: `hostbeat` parses it, and the man pages and shell
//! completions the packages install are generated from it (`cargo run -p xtask`), so
//! they never drift from `--help`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Exit status for a configuration that cannot work (EX_CONFIG); the unit's
/// `RestartPreventExitStatus=` names it, so systemd waits for a human.
pub const EX_CONFIG: u8 = 78;
/// Exit status when the runtime cannot start (EX_SOFTWARE).
pub const EX_SOFTWARE: u8 = 70;
/// `hostbeat status`: no readable status file.
pub const STATUS_UNKNOWN: u8 = 1;
/// `hostbeat status`: the daemon is stopped, gone, or its status file is stale (as
/// `systemctl status` says 3 for a unit that is not active).
pub const STATUS_NOT_RUNNING: u8 = 3;

/// The files an operator meets, for `--help` and the FILES section of hostbeat(8).
pub const FILES: &[(&str, &str)] = &[
    (
        "/etc/systemd/system/hostbeat.service.d/override.conf",
        "Settings, written by `systemctl edit hostbeat` as Environment=HOSTBEAT_<KEY>=value \
         lines; they win over the env file. A change needs `systemctl restart hostbeat`.",
    ),
    (
        "/etc/hostbeat/hostbeat.env",
        "The client token (mode 0640, root:hostbeat), read by hostbeat itself. \
         `systemctl reload hostbeat` applies a change without a restart.",
    ),
    (
        "/etc/hostbeat/hostbeat.toml",
        "Optional config file. A drop-in's Environment= beats the env file, which beats this file.",
    ),
    (
        "/var/lib/hostbeat/state.json",
        "The agent id, kept across restarts and upgrades.",
    ),
    (
        "/var/lib/hostbeat/status.json",
        "What the daemon last did (state, last heartbeat, failures), replaced at every \
         attempt; `hostbeat status` prints it. Readable by the hostbeat group.",
    ),
];

/// What each exit status means, for `--help` and the EXIT STATUS section.
pub const EXIT_STATUS: &[(u8, &str)] = &[
    (0, "Stopped cleanly, after the offline heartbeat."),
    (
        1,
        "A second stop signal, a second or more after the first, ended it without \
         waiting for the offline heartbeat.",
    ),
    (
        EX_CONFIG,
        "The configuration cannot work; the message names the setting and the fix. \
         systemd does not restart it until a human has acted.",
    ),
    (EX_SOFTWARE, "The runtime could not start."),
];

/// Where to look when something is wrong.
pub const LOGS: &str = "journalctl -u hostbeat shows what the agent did and why; \
    journalctl -u hostbeat HOSTBEAT_EVENT=auth_failure the authentication failures. \
    Settings and operations are described in /usr/share/doc/hostbeat/.";

/// The text after the options in `hostbeat --help`.
fn after_long_help() -> String {
    use std::fmt::Write as _;
    let mut text = String::from("Files:\n");
    for (path, what) in FILES {
        let _ = writeln!(text, "  {path}\n      {what}");
    }
    text.push_str("\nExit status:\n");
    for (code, what) in EXIT_STATUS {
        let _ = writeln!(text, "  {code:<3} {what}");
    }
    text.push_str("\nLogs: ");
    text.push_str(LOGS);
    text
}

/// Keeps this host visibly alive to its control plane.
#[derive(Debug, Parser)]
#[command(
    name = "hostbeat",
    version,
    about,
    long_about = None,
    after_long_help = after_long_help()
)]
pub struct Cli {
    /// The TOML config file (default /etc/hostbeat/hostbeat.toml, if present).
    #[arg(long, global = true, env = "HOSTBEAT_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent in the foreground (what systemd starts).
    ///
    /// Settings come from HOSTBEAT_* variables (a drop-in's Environment=), then
    /// /etc/hostbeat/hostbeat.env, then the config file; see
    /// /usr/share/doc/hostbeat/configuration.md. SIGTERM or SIGINT stop it after an
    /// offline heartbeat; SIGHUP (`systemctl reload`) reads the configuration again
    /// and applies what changed.
    Run {
        /// Where to log: the journal when stderr is connected to it (auto), stderr,
        /// or the journal.
        #[arg(long, value_enum, default_value = "auto")]
        log_target: crate::logging::LogTarget,
    },
    /// Walk every cause of a failed heartbeat from this host's side.
    ///
    /// Loads the configuration exactly as `hostbeat run` does, then checks where each
    /// setting came from, the env file (owner, mode, the token's hygiene by byte
    /// position, never its content), the proxy, DNS, TCP, HTTP and TLS to each
    /// server (the certificate's names, issuer and expiry), the clock against the
    /// server's, the token exchange and the validate call. One line per finding (ok,
    /// warn, FAIL), with what it means and the fix under each warn and FAIL. Changes
    /// nothing on this host, and nothing on the server unless --heartbeat is given.
    /// Exit status: 0 when all is ok, 1 when something fails, 2 when there are only
    /// warnings.
    Check {
        /// Print the findings as JSON for fleet tooling.
        #[arg(long)]
        json: bool,
        /// Also send one real heartbeat: registers first when the agent id is not
        /// known yet (idempotent: the daemon's own id), then one heartbeat "online"
        /// with seq 1 and uptime 0, which the control plane sees as from an agent
        /// that has just started.
        #[arg(long)]
        heartbeat: bool,
    },
    /// Show what the daemon last reported: state, last heartbeat, failures.
    ///
    /// Reads the status file the daemon keeps in its state directory
    /// (/var/lib/hostbeat/status.json), so it works for root and members of the
    /// hostbeat group and asks the daemon nothing. Says so when the daemon is not
    /// running or has stopped updating the file. Exit status: 0 when the daemon runs,
    /// 3 when it is stopped, gone or stale, 1 when there is no readable status file.
    Status {
        /// Print JSON for scripts, whatever the outcome: the status file's fields,
        /// plus `daemon` (running, stopped, not_running, stale) and `status_file`;
        /// without a readable file, `daemon` (never_ran, unknown), `status_file` and
        /// `error`.
        #[arg(long)]
        json: bool,
        /// The state directory (default: the configured one, as `hostbeat run`
        /// resolves it).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
}
