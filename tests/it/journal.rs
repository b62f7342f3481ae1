//! The real journald (systemd-testing.md section 1): `systemd-journald` runs in a
//! private mount namespace with its own `/run` and journal directory, the real
//! binary logs to it with the native protocol, and the journal files are read from
//! the host with `journalctl -D`. Needs root, util-linux and systemd; fails, never
//! skips, without them. Every process it starts is ended by PID.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hostbeat_refplane::PlaneConfig;

use crate::binary::{Host, Process, eventually, plane, rotate_and_wait};
use crate::support::{CLIENT_ID, ROTATED, SECRET, contains, files_under};

/// A journald of the test's own, in a mount namespace.
struct Journald {
    dir: tempfile::TempDir,
    unshare: Child,
    pid: u32,
}

impl Journald {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal");
        std::fs::create_dir(&journal).unwrap();
        let conf = dir.path().join("journald.conf");
        std::fs::write(
            &conf,
            "[Journal]\nStorage=persistent\nReadKMsg=no\nForwardToSyslog=no\nForwardToWall=no\nRateLimitBurst=0\n",
        )
        .unwrap();
        let script = format!(
            "mount -t tmpfs -o mode=755 tmpfs /run && \
             mount -t tmpfs -o mode=755 tmpfs /var/log && mkdir /var/log/journal && \
             mount --bind {journal} /var/log/journal && \
             mount --bind {conf} /etc/systemd/journald.conf && \
             exec /lib/systemd/systemd-journald",
            journal = journal.display(),
            conf = conf.display()
        );
        let unshare = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--fork",
                "sh",
                "-c",
                &script,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("unshare (util-linux) is required");
        let mut journald = Self {
            dir,
            pid: 0,
            unshare,
        };
        // The forked child is journald once it has exec'd; its socket appears last.
        for _ in 0..200 {
            if let Some(pid) = child_of(journald.unshare.id()) {
                let ready = Command::new("nsenter")
                    .args([
                        "-t",
                        &pid.to_string(),
                        "-m",
                        "test",
                        "-S",
                        "/run/systemd/journal/socket",
                    ])
                    .status()
                    .is_ok_and(|s| s.success());
                if ready {
                    journald.pid = pid;
                    return journald;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "systemd-journald did not start in its namespace (root and /lib/systemd/systemd-journald are required)"
        );
    }

    /// A command that runs inside the journal's namespace.
    fn inside(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command.args(["-t", &self.pid.to_string(), "-m", program]);
        command
    }

    /// Flushes, stops journald, and returns every entry as JSON.
    fn stop_and_read(mut self) -> (Vec<serde_json::Value>, tempfile::TempDir) {
        let _ = self.inside("journalctl").arg("--flush").status();
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
        let _ = self.unshare.wait();
        self.pid = 0;
        let output = Command::new("journalctl")
            .arg("-D")
            .arg(self.dir.path().join("journal"))
            .args(["-o", "json", "--no-pager", "SYSLOG_IDENTIFIER=hostbeat"])
            .output()
            .expect("journalctl");
        let entries = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (entries, dir)
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        if self.pid != 0 {
            let _ = Command::new("kill").arg(self.pid.to_string()).status();
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

fn child_of(parent: u32) -> Option<u32> {
    let output = Command::new("pgrep")
        .args(["-P", &parent.to_string()])
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

fn field<'a>(entry: &'a serde_json::Value, name: &str) -> &'a str {
    entry[name].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures_reach_the_real_journal_with_their_fields_and_never_the_token() {
    let journald = Journald::start().await;
    let (plane, url) = plane(PlaneConfig::default()).await;
    plane.deactivate(CLIENT_ID);
    let host = Host::new(&format!("HOSTBEAT_CLIENT_TOKEN={SECRET}\n"));
    // The binary, in the journal's namespace (same network: the plane on loopback).
    let pid = journald.pid.to_string();
    let mut inside = host.command_in(
        &["nsenter", "-t", &pid, "-m"],
        &[
            ("HOSTBEAT_SERVER_URL", &url),
            ("HOSTBEAT_HEARTBEAT_INTERVAL", "1s"),
            ("HOSTBEAT_AUTH_BACKOFF_CAP", "2s"),
        ],
    );
    inside.arg("--log-target").arg("journald");
    let mut agent = Process::spawn(inside);
    assert!(
        eventually(Duration::from_secs(20), || plane.requests().len() >= 3).await,
        "{}",
        agent.text()
    );
    plane.activate(CLIENT_ID);
    assert!(
        eventually(Duration::from_secs(20), || !plane.heartbeats().is_empty()).await,
        "{}",
        agent.text()
    );
    // The token is rotated: on the control plane and in the env file.
    rotate_and_wait(&plane, &host, &agent).await;
    agent.signal("TERM");
    assert!(
        agent.wait(Duration::from_secs(10)).await.success(),
        "{}",
        agent.text()
    );
    // Everything went to the journal: nothing on stderr.
    assert_eq!(
        agent.text(),
        "",
        "stderr should be empty with --log-target journald"
    );

    let (entries, dir) = journald.stop_and_read();
    the_story_is_in_the_journal(&entries);
    // Neither token's bytes are anywhere in the journal files.
    for (path, bytes) in files_under(dir.path()) {
        assert!(
            !contains(&bytes, SECRET) && !contains(&bytes, ROTATED),
            "a token is in {}",
            path.display()
        );
    }
}

/// A Google Cloud preemption, as the operator finds it at 3 a.m.: one warning with
/// its MESSAGE_ID and `HOSTBEAT_SOURCE`, `HOSTBEAT_ACTION`, `HOSTBEAT_TIME`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_reaches_the_real_journal_with_its_source() {
    let journald = Journald::start().await;
    let (plane, url) = plane(PlaneConfig::default()).await;
    let gcp = hostbeat_refplane::gcp::MockGcp::new();
    let gcp_url = format!("http://{}", gcp.start().await.unwrap());
    let host = Host::new(&format!("HOSTBEAT_CLIENT_TOKEN={SECRET}\n"));
    let pid = journald.pid.to_string();
    let mut inside = host.command_in(
        &["nsenter", "-t", &pid, "-m"],
        &[
            ("HOSTBEAT_SERVER_URL", &url),
            ("HOSTBEAT_HEARTBEAT_INTERVAL", "1s"),
            ("HOSTBEAT_CLOUD", "gcp"),
            ("HOSTBEAT_GCP_METADATA_URL", &gcp_url),
        ],
    );
    inside.arg("--log-target").arg("journald");
    let mut agent = Process::spawn(inside);
    assert!(
        eventually(Duration::from_secs(20), || !plane.heartbeats().is_empty()).await,
        "{}",
        agent.text()
    );
    gcp.preempt();
    assert!(
        eventually(Duration::from_secs(20), || plane
            .heartbeats()
            .iter()
            .any(|b| b.status() == "terminating"))
        .await,
        "{}",
        agent.text()
    );
    agent.signal("TERM");
    assert!(agent.wait(Duration::from_secs(10)).await.success());
    let (entries, _dir) = journald.stop_and_read();
    let notices: Vec<_> = entries
        .iter()
        .filter(|e| field(e, "HOSTBEAT_EVENT") == "interruption")
        .collect();
    assert_eq!(notices.len(), 1, "{entries:#?}");
    let notice = notices[0];
    assert_eq!(field(notice, "HOSTBEAT_SOURCE"), "gcp");
    assert_eq!(field(notice, "HOSTBEAT_ACTION"), "preempt");
    assert!(humantime::parse_rfc3339(field(notice, "HOSTBEAT_TIME")).is_ok());
    assert_eq!(field(notice, "PRIORITY"), "4");
    assert_eq!(
        field(notice, "MESSAGE_ID"),
        hostbeat::logging::events::lookup("interruption")
            .unwrap()
            .message_id
    );
    assert!(
        field(notice, "MESSAGE").contains("Google Cloud will preempt this instance"),
        "{notice:#?}"
    );
    let detected: Vec<_> = entries
        .iter()
        .filter(|e| field(e, "HOSTBEAT_EVENT") == "cloud_detected")
        .collect();
    assert_eq!(detected.len(), 1);
    assert_eq!(field(detected[0], "HOSTBEAT_SOURCE"), "gcp");
}

/// The entries of a deactivation, a recovery and a rotation: fields, priorities,
/// MESSAGE_IDs and fingerprints as an operator reads them.
fn the_story_is_in_the_journal(entries: &[serde_json::Value]) {
    let auth: Vec<_> = entries
        .iter()
        .filter(|e| field(e, "HOSTBEAT_EVENT") == "auth_failure")
        .collect();
    assert!(!auth.is_empty(), "{entries:#?}");
    let fingerprint = hostbeat::secret::Token::new(SECRET.to_owned())
        .fingerprint()
        .to_string();
    let auth_id = hostbeat::logging::events::lookup("auth_failure")
        .unwrap()
        .message_id;
    for entry in &auth {
        assert_eq!(field(entry, "PRIORITY"), "3");
        assert_eq!(field(entry, "MESSAGE_ID"), auth_id);
        assert_eq!(field(entry, "HOSTBEAT_REASON"), "client_inactive");
        assert_eq!(field(entry, "HOSTBEAT_ENDPOINT"), "register");
        assert_eq!(field(entry, "HOSTBEAT_HTTP_STATUS"), "403");
        assert_eq!(field(entry, "HOSTBEAT_TOKEN_FP"), fingerprint);
        assert!(!field(entry, "HOSTBEAT_CONSECUTIVE_FAILURES").is_empty());
        assert!(!field(entry, "HOSTBEAT_NEXT_ATTEMPT_S").is_empty());
        assert!(field(entry, "MESSAGE").contains("Client account is not active"));
    }
    let recovered: Vec<_> = entries
        .iter()
        .filter(|e| field(e, "HOSTBEAT_EVENT") == "recovered")
        .collect();
    // One after the reactivation, one after the rotation's single refused attempt.
    assert_eq!(recovered.len(), 2);
    assert!(recovered.iter().all(|e| field(e, "PRIORITY") == "5"));
    let rotated: Vec<_> = entries
        .iter()
        .filter(|e| field(e, "HOSTBEAT_EVENT") == "token_reloaded")
        .collect();
    assert_eq!(
        rotated.len(),
        1,
        "{:#?}",
        entries
            .iter()
            .map(|e| (
                field(e, "HOSTBEAT_EVENT").to_owned(),
                field(e, "MESSAGE").to_owned()
            ))
            .collect::<Vec<_>>()
    );
    let new_fingerprint = hostbeat::secret::Token::new(ROTATED.to_owned())
        .fingerprint()
        .to_string();
    assert_eq!(field(rotated[0], "HOSTBEAT_TOKEN_FP"), new_fingerprint);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_journal_it_logs_to_stderr_and_says_so_once() {
    let (plane, url) = plane(PlaneConfig::default()).await;
    let host = Host::new(&format!("HOSTBEAT_CLIENT_TOKEN={SECRET}\n"));
    // An empty /run in a private mount namespace: no journal socket. unshare and sh
    // exec in turn, so the agent keeps the PID the test signals.
    let mut command = host.command_in(
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t tmpfs tmpfs /run && exec \"$0\" \"$@\"",
        ],
        &[
            ("HOSTBEAT_SERVER_URL", &url),
            ("HOSTBEAT_HEARTBEAT_INTERVAL", "1s"),
        ],
    );
    command.arg("--log-target").arg("journald");
    let mut agent = Process::spawn(command);
    assert!(
        eventually(Duration::from_secs(20), || plane.heartbeats().len() >= 2).await,
        "{}",
        agent.text()
    );
    agent.signal("TERM");
    assert!(agent.wait(Duration::from_secs(10)).await.success());
    let output = agent.text();
    assert_eq!(
        output.matches("cannot reach the journal").count(),
        1,
        "{output}"
    );
    assert!(output.contains("event=\"log_fallback\""), "{output}");
    assert!(output.contains("first heartbeat accepted"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_logs_to_the_journal_when_stderr_is_the_journal_stream() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;

    let journald = Journald::start().await;
    let (plane, url) = plane(PlaneConfig::default()).await;
    let host = Host::new(&format!("HOSTBEAT_CLIENT_TOKEN={SECRET}\n"));
    // As systemd does: stderr is a stream whose device and inode JOURNAL_STREAM names.
    let (mut reader, writer) = std::io::pipe().unwrap();
    let stat = std::fs::metadata(format!("/proc/self/fd/{}", writer.as_raw_fd())).unwrap();
    let pid = journald.pid.to_string();
    let stream = format!("{}:{}", stat.dev(), stat.ino());
    let mut command = host.command_in(
        &["nsenter", "-t", &pid, "-m"],
        &[
            ("HOSTBEAT_SERVER_URL", &url),
            ("HOSTBEAT_HEARTBEAT_INTERVAL", "1s"),
            ("JOURNAL_STREAM", &stream),
        ],
    );
    command.stderr(writer);
    let mut agent = Process::spawn_with_stderr(command);
    assert!(eventually(Duration::from_secs(20), || plane.heartbeats().len() >= 2).await);
    agent.signal("TERM");
    assert!(agent.wait(Duration::from_secs(10)).await.success());
    let mut stderr = String::new();
    reader.read_to_string(&mut stderr).unwrap();
    assert_eq!(
        stderr, "",
        "with auto and JOURNAL_STREAM matching, stderr stays empty"
    );
    let (entries, _dir) = journald.stop_and_read();
    assert!(
        entries
            .iter()
            .any(|e| field(e, "HOSTBEAT_EVENT") == "started"),
        "{entries:#?}"
    );
}
