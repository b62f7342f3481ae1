//! The `hostbeat` command: parses the command line, loads the configuration, and
//! runs the daemon on a single-threaded runtime. Exit status: 0 after a clean stop,
//! 78 (EX_CONFIG) for a configuration that cannot work, 70 (EX_SOFTWARE) when the
//! runtime cannot start.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use hostbeat::cli::{Cli, Command, EX_CONFIG, EX_SOFTWARE, STATUS_NOT_RUNNING, STATUS_UNKNOWN};
use hostbeat::report::status_file::{self, Daemon};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    // The process holds the token: no core dump of it, and a panic's message (which
    // may quote anything) passes the last line of defence like every output.
    hostbeat::secret::forbid_core_dumps();
    hostbeat::http::remember_proxy_passwords();
    std::panic::set_hook(Box::new(|info| {
        err(&format!("hostbeat: internal error: {info}"));
    }));
    let cli = Cli::parse();
    match cli.command {
        Command::Run { log_target } => run(cli.config, log_target),
        Command::Status { json, state_dir } => status(cli.config, json, state_dir),
        Command::Check { json, heartbeat } => check(cli.config, json, heartbeat),
    }
}

/// `hostbeat check`: every finding, then the exit status they add up to.
fn check(config_file: Option<PathBuf>, json: bool, heartbeat: bool) -> ExitCode {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let heartbeat = if heartbeat {
        hostbeat::check::Heartbeat::Send
    } else {
        hostbeat::check::Heartbeat::Skip
    };
    let inputs = hostbeat::ConfigInputs::from_process(config_file);
    // Beside an installed service, judge with the service's environment: what
    // `check` predicts is then what `run` does.
    let report = match hostbeat::check::unit::service(hostbeat::check::unit::UNIT) {
        Some(service) => {
            runtime.block_on(hostbeat::check::run_as_service(inputs, service, heartbeat))
        }
        None => runtime.block_on(hostbeat::check::run(inputs, heartbeat)),
    };
    if json {
        out(&format!("{:#}\n", report.to_json()));
    } else {
        out(&report.render());
    }
    ExitCode::from(report.exit_status())
}

/// `hostbeat status`: the status file, judged and printed; with `--json`, always
/// JSON on stdout, whatever the outcome.
fn status(config_file: Option<PathBuf>, json: bool, state_dir: Option<PathBuf>) -> ExitCode {
    let state_dir = state_dir.unwrap_or_else(|| {
        let inputs = hostbeat::ConfigInputs::from_process(config_file);
        let hint = inputs.state_dir_hint();
        match hostbeat::config::load(inputs) {
            Ok(loaded) => loaded.settings.state_dir,
            Err(e) => {
                err(&format!(
                    "hostbeat: the configuration does not load ({e}); reading {}",
                    hint.display()
                ));
                hint
            }
        }
    });
    let file = status_file::path(&state_dir);
    let snapshot = match status_file::read(&state_dir) {
        Ok(snapshot) => snapshot,
        Err(e) => {
            if json {
                let daemon = match e {
                    status_file::ReadError::Missing(_) => "never_ran",
                    _ => "unknown",
                };
                let value = serde_json::json!({
                    "daemon": daemon,
                    "status_file": file.display().to_string(),
                    "error": e.to_string(),
                });
                out(&format!("{value:#}\n"));
            } else {
                err(&format!("hostbeat: {e}"));
            }
            return ExitCode::from(STATUS_UNKNOWN);
        }
    };
    let now = std::time::SystemTime::now();
    let daemon = status_file::daemon(&snapshot, now, hostbeat::report::liveness::runs);
    if json {
        out(&format!(
            "{:#}\n",
            status_file::to_json(&snapshot, daemon, &file)
        ));
    } else {
        out(&status_file::render(&snapshot, daemon, &file, now));
    }
    match daemon {
        Daemon::Running => ExitCode::SUCCESS,
        Daemon::Stopped | Daemon::NotRunning | Daemon::Stale => ExitCode::from(STATUS_NOT_RUNNING),
    }
}

/// Writes `text` to stdout, through the last line of defence against secrets. A
/// reader that went away (`hostbeat check | head -1`) is
/// not an error, and never a panic: the exit status stays the command's own.
fn out(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(hostbeat::redact::redact(text).as_bytes())
        .and_then(|()| stdout.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        err(&format!("hostbeat: cannot write to stdout: {e}"));
    }
}

/// Writes one line to stderr, through the last line of defence against secrets,
/// ignoring a closed stderr (`eprintln!` would panic).
fn err(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr().lock(),
        "{}",
        hostbeat::redact::redact(line)
    );
}

fn run(config_file: Option<PathBuf>, log_target: hostbeat::logging::LogTarget) -> ExitCode {
    let loaded =
        match hostbeat::config::load(hostbeat::ConfigInputs::from_process(config_file.clone())) {
            Ok(loaded) => loaded,
            Err(e) => {
                err(&format!("hostbeat: configuration error: {e}"));
                return ExitCode::from(EX_CONFIG);
            }
        };
    let (level, note) = hostbeat::logging::init(&loaded.settings.log_level, log_target);
    if let Some(note) = note {
        tracing::warn!(event = "log_fallback", "{note}");
    }
    for warning in &loaded.warnings {
        tracing::warn!(event = "config_warning", "{warning}");
    }
    // Taken just before the runtime's clock starts, so that deadlines can be put on
    // its timer wheel's boundaries (src/wheel.rs).
    let timer_grid = if cfg!(feature = "timer-grid-off") {
        hostbeat::wheel::Grid::none()
    } else {
        hostbeat::wheel::Grid::for_runtime_built_next()
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        // A reload reads the files again by the rule of a start: the environment
        // (the unit's and drop-ins' lines, fixed at start) over the env file as it
        // is now, over the config file.
        let reloader = hostbeat::Reloader::new(
            move || {
                let inputs = hostbeat::ConfigInputs::from_process(config_file.clone());
                hostbeat::config::load(inputs).map(|loaded| loaded.settings)
            },
            move |filter| level.set(filter),
        );
        let controls = hostbeat::Controls {
            notifier: Arc::new(hostbeat::systemd::Notifier::from_env()),
            reloader: Some(reloader),
            timer_grid,
            ..hostbeat::Controls::new()
        };
        if let Err(e) = watch_signals(controls.shutdown.clone(), controls.reload.clone()) {
            err(&format!("hostbeat: cannot install signal handlers: {e}"));
            return Ok(ExitCode::from(EX_SOFTWARE));
        }
        hostbeat::run(loaded.settings, controls)
            .await
            .map(|()| ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        // Found only when the HTTP client is built (ca_file): said like every other
        // configuration error, on stderr in one line.
        Err(hostbeat::RunError::Config(e)) => {
            err(&format!("hostbeat: configuration error: {e}"));
            ExitCode::from(EX_CONFIG)
        }
    }
}

/// The single-threaded runtime every command runs on; on failure, the exit status.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            err(&format!("hostbeat: cannot start the runtime: {e}"));
            ExitCode::from(EX_SOFTWARE)
        })
}

/// A stop signal this soon after the first is the same request, not a second
/// one: `timeout(1)` signals its child and then its process group, and a terminal's
/// Ctrl-C reaches every process of the group.
const SAME_STOP: std::time::Duration = std::time::Duration::from_secs(1);

/// SIGTERM and SIGINT cancel `shutdown`; a second one, [`SAME_STOP`] or more after
/// the first, exits at once (status 1). SIGHUP notifies `reload`. Installed before
/// anything else awaits, so none is lost.
fn watch_signals(shutdown: CancellationToken, reload: Arc<Notify>) -> std::io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        let mut first = None;
        loop {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
                _ = hangup.recv() => { reload.notify_one(); continue; }
            }
            let at = *first.get_or_insert_with(tokio::time::Instant::now);
            if shutdown.is_cancelled() && at.elapsed() >= SAME_STOP {
                tracing::warn!(
                    event = "shutdown",
                    "second stop signal: exiting without waiting for the goodbye"
                );
                std::process::exit(1);
            }
            shutdown.cancel();
        }
    });
    Ok(())
}
