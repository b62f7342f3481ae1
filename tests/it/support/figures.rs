//! The figures of the fault matrix in docs/reliability.md.
//!
//! Each row's test asserts what the agent does, then records what it cost (requests
//! made, time to recovery, entries logged) on a [`Row`], and scans everything the
//! agent wrote for the token. When `HOSTBEAT_FIGURES` names a file (as
//! scripts/reliability does), [`Row::done`] appends the row to it as one JSON line;
//! `cargo run -p xtask -- reliability` turns those lines into the matrix. A row is
//! written only by a test that got to its end, so a failed row leaves a gap that the
//! generator refuses.

use std::fmt::Display;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use super::{Logs, ROTATED, SECRET, World, assert_no_token, files_under};

/// One row of the matrix, keyed as xtask's list of rows keys it.
pub struct Row {
    key: &'static str,
    test: String,
    figures: Vec<(String, String)>,
}

impl Row {
    pub fn new(key: &'static str) -> Self {
        // libtest names each test's thread after the test.
        let test = std::thread::current()
            .name()
            .unwrap_or("a test with a thread of its own")
            .to_owned();
        Self {
            key,
            test,
            figures: Vec::new(),
        }
    }

    /// Records `name = value`.
    pub fn figure(&mut self, name: &str, value: impl Display) -> &mut Self {
        self.figures.push((name.to_owned(), value.to_string()));
        self
    }

    /// Fails if the token (the first or the rotated one) is in the logs or in any
    /// file of the state directory (state, status, metrics), and records the scan.
    pub fn scan(&mut self, world: &World, logs: &Logs) -> &mut Self {
        self.scan_written(&world.state_dir(), "logs", logs.text().into_bytes())
    }

    /// The same scan of `said` (named `what`: the logs, a process's output) and
    /// of the files under `state_dir`.
    pub fn scan_written(&mut self, state_dir: &Path, what: &str, said: Vec<u8>) -> &mut Self {
        let mut written = files_under(state_dir);
        let files = written.len();
        written.push((format!("the {what}").into(), said));
        assert_no_token(&written, &[SECRET, ROTATED]);
        let bytes: usize = written.iter().map(|(_, b)| b.len()).sum();
        self.figure(
            "token in output",
            format!("none ({what} and {files} state files, {bytes} bytes)"),
        )
    }

    /// Appends the row to `$HOSTBEAT_FIGURES`, if set.
    pub fn done(&mut self) {
        // Tests run in parallel threads: one line at a time.
        static WRITER: Mutex<()> = Mutex::new(());
        let Some(path) = std::env::var_os("HOSTBEAT_FIGURES") else {
            return;
        };
        let line = serde_json::json!({
            "row": self.key,
            "test": self.test,
            "figures": self.figures,
        });
        let _one = WRITER
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("HOSTBEAT_FIGURES={}: {e}", path.display()));
        writeln!(file, "{line}").unwrap();
    }
}
