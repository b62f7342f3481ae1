//! A `tracing` layer that writes to the journal with its native protocol
//! (<https://systemd.io/JOURNAL_NATIVE_PROTOCOL/>): one datagram per event with
//! `MESSAGE`, `PRIORITY`, `SYSLOG_IDENTIFIER=hostbeat`, `MESSAGE_ID` and the event's
//! fields as `HOSTBEAT_<FIELD>`.
//!
//! Why not `tracing-journald`: it prefixes every field or none and derives
//! `PRIORITY` from the level alone, so a per-event `MESSAGE_ID` (what fleets search
//! on, and what the message catalog is keyed on) and a `notice` for a recovery
//! would mean renaming every field at every call site. Here both come from one table
//! ([`super::events`]).
//!
//! Invariants: sending never blocks the runtime (the socket is non-blocking; an
//! entry that does not fit is retried once with its message cut); a field name is
//! made a valid journal name (`A-Z0-9_`).

use std::fmt::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

use super::events;

/// Where journald listens for native-protocol datagrams.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// The layer: a connected datagram socket.
#[derive(Debug)]
pub struct JournaldLayer {
    socket: UnixDatagram,
}

impl JournaldLayer {
    /// Connects to the journal socket at `path`.
    pub fn connect(path: &Path) -> std::io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        socket.set_nonblocking(true)?;
        Ok(Self { socket })
    }
}

impl<S: Subscriber> Layer<S> for JournaldLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let known = fields.event.as_deref().and_then(events::lookup);
        let priority = known
            .and_then(|e| e.priority)
            .unwrap_or_else(|| level_priority(*meta.level()));
        let mut entry = Entry::default();
        entry.field("PRIORITY", &priority.to_string());
        entry.field("SYSLOG_IDENTIFIER", "hostbeat");
        if let Some(event) = known {
            entry.field("MESSAGE_ID", event.message_id);
        }
        if let (Some(file), Some(line)) = (meta.file(), meta.line()) {
            entry.field("CODE_FILE", file);
            entry.field("CODE_LINE", &line.to_string());
        }
        for (name, value) in &fields.fields {
            entry.field(&journal_name(name), value);
        }
        let message = fields.message.unwrap_or_default();
        let without_message = entry.0.len();
        entry.field("MESSAGE", &message);
        if self.socket.send(&entry.0).is_err() {
            // Too large for one datagram (or a full buffer): the fields matter more
            // than a long message. Nothing more can be done without blocking.
            entry.0.truncate(without_message);
            entry.field("MESSAGE", &message.chars().take(2048).collect::<String>());
            let _ = self.socket.send(&entry.0);
        }
    }
}

/// syslog priorities by level: a rejected credential is `err`, a transient
/// failure `warning`, routine state `info`; notices come from the event table.
fn level_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// `http_status` -> `HOSTBEAT_HTTP_STATUS`.
fn journal_name(field: &str) -> String {
    let mut name = String::from("HOSTBEAT_");
    for c in field.chars() {
        name.push(if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        });
    }
    name.truncate(64);
    name
}

/// An entry in the native format.
#[derive(Default)]
struct Entry(Vec<u8>);

impl Entry {
    /// `NAME=value\n`, or the binary form for a value with a newline; the value
    /// passes the last line of defence against secrets first.
    fn field(&mut self, name: &str, value: &str) {
        let value = crate::redact::redact(value);
        self.0.extend_from_slice(name.as_bytes());
        if value.contains('\n') {
            self.0.push(b'\n');
            self.0
                .extend_from_slice(&(value.len() as u64).to_le_bytes());
        } else {
            self.0.push(b'=');
        }
        self.0.extend_from_slice(value.as_bytes());
        self.0.push(b'\n');
    }
}

/// The message, the `event` field, and every other field as text.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    event: Option<String>,
    fields: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = Some(value.to_owned()),
            name => {
                if name == "event" {
                    self.event = Some(value.to_owned());
                }
                self.fields.push((name, value.to_owned()));
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.record_str(field, &text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// The datagrams a layer sends to a socket of the test's, parsed.
    fn capture(log: impl FnOnce()) -> Vec<std::collections::BTreeMap<String, String>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        receiver.set_nonblocking(true).unwrap();
        let subscriber =
            tracing_subscriber::registry().with(JournaldLayer::connect(&path).unwrap());
        tracing::subscriber::with_default(subscriber, log);
        let mut entries = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = receiver.recv(&mut buf) {
            entries.push(parse(&buf[..n]));
        }
        entries
    }

    /// Parses the native format, both forms.
    fn parse(mut data: &[u8]) -> std::collections::BTreeMap<String, String> {
        let mut fields = std::collections::BTreeMap::new();
        while !data.is_empty() {
            let end = data.iter().position(|b| *b == b'\n' || *b == b'=').unwrap();
            let name = String::from_utf8(data[..end].to_vec()).unwrap();
            if data[end] == b'=' {
                let rest = &data[end + 1..];
                let stop = rest.iter().position(|b| *b == b'\n').unwrap();
                fields.insert(name, String::from_utf8(rest[..stop].to_vec()).unwrap());
                data = &rest[stop + 1..];
            } else {
                let len = usize::try_from(u64::from_le_bytes(
                    data[end + 1..end + 9].try_into().unwrap(),
                ))
                .unwrap();
                let value = &data[end + 9..end + 9 + len];
                fields.insert(name, String::from_utf8(value.to_vec()).unwrap());
                data = &data[end + 9 + len + 1..];
            }
        }
        fields
    }

    #[test]
    fn an_auth_failure_is_one_entry_with_its_message_id_priority_and_fields() {
        let entries = capture(|| {
            tracing::error!(
                event = "auth_failure",
                reason = "client_inactive",
                http_status = 403_u16,
                token_fp = %"3b9aa7a816a7",
                "authentication failed:\nclient inactive"
            );
        });
        assert_eq!(entries.len(), 1);
        let entry = &entries[0];
        assert_eq!(entry["MESSAGE"], "authentication failed:\nclient inactive");
        assert_eq!(entry["PRIORITY"], "3");
        assert_eq!(entry["SYSLOG_IDENTIFIER"], "hostbeat");
        assert_eq!(
            entry["MESSAGE_ID"],
            events::lookup("auth_failure").unwrap().message_id
        );
        assert_eq!(entry["HOSTBEAT_EVENT"], "auth_failure");
        assert_eq!(entry["HOSTBEAT_REASON"], "client_inactive");
        assert_eq!(entry["HOSTBEAT_HTTP_STATUS"], "403");
        assert_eq!(entry["HOSTBEAT_TOKEN_FP"], "3b9aa7a816a7");
        assert!(entry.contains_key("CODE_LINE"));
    }

    /// The last line of defence: a secret the process knows never reaches the
    /// journal, in the message or any field, whole or cut short.
    #[test]
    fn no_known_secret_reaches_the_journal() {
        let secret = "jr-Vb8Kd2Qw5Zx9Lm3Np7Ty";
        let entries = capture(|| {
            // Learnt just before it is logged, and as a fixed secret: the client
            // tokens the other tests of this binary load, in parallel, would soon
            // push it out of the bounded list of client forms.
            crate::redact::remember(secret, crate::redact::Kind::Fixed);
            tracing::warn!(
                event = "heartbeat_failed",
                detail = %format!("server said {secret}"),
                "cut: {}",
                &secret[..14]
            );
        });
        let entry = &entries[0];
        assert_eq!(entry["MESSAGE"], "cut: [redacted]");
        assert_eq!(entry["HOSTBEAT_DETAIL"], "server said [redacted]");
    }

    #[test]
    fn priorities_follow_syslog_and_the_event_table() {
        let entries = capture(|| {
            tracing::warn!(event = "heartbeat_failed", "transient");
            tracing::info!(event = "recovered", "back");
            tracing::info!("routine");
            tracing::debug!("detail");
        });
        let priorities: Vec<&str> = entries.iter().map(|e| e["PRIORITY"].as_str()).collect();
        assert_eq!(priorities, ["4", "5", "6", "7"]);
        assert!(!entries[2].contains_key("MESSAGE_ID"));
    }

    #[test]
    fn field_names_become_valid_journal_names() {
        assert_eq!(journal_name("next_attempt_s"), "HOSTBEAT_NEXT_ATTEMPT_S");
        assert_eq!(journal_name("a.b-c"), "HOSTBEAT_A_B_C");
        assert_eq!(journal_name(&"x".repeat(100)).len(), 64);
    }
}
