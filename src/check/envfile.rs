//! The env file as the operator left it: there, owned and guarded as a file with a
//! secret should be, parseable, and its token line free of what editors and shells
//! leave behind. Positions are bytes (1-based) of the token's value; the content is
//! never shown.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{Finding, Level, Report};
use crate::config::envfile::EnvFile;

const TOKEN_KEY: &[u8] = b"HOSTBEAT_CLIENT_TOKEN=";
/// Shorter than this, a token was probably cut when it was pasted.
const SHORT_TOKEN: usize = 16;

/// The user the packaged unit runs hostbeat as (`User=`).
const SERVICE_USER: &str = "hostbeat";

/// What the configuration's load already said about the env file, so that nothing
/// is reported twice.
pub(super) struct Context<'a> {
    /// Where the token in use came from, when that is not this file.
    pub token_elsewhere: Option<String>,
    /// The warnings of the load, which `check` reports in its config step.
    pub warnings: &'a [crate::config::Warning],
}

impl Context<'_> {
    fn reported(&self, code: &str, path: &Path) -> bool {
        self.warnings
            .iter()
            .any(|w| w.code == code && w.file.as_deref() == Some(path))
    }
}

/// Checks the env file at `path`.
pub(super) fn check(path: &Path, context: &Context<'_>, report: &mut Report) {
    let shown = path.display();
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if context.reported("env_file_missing", path) {
                return;
            }
            if let Some(origin) = &context.token_elsewhere {
                report.push(Finding::ok(
                    "env_file.absent",
                    format!("{shown} does not exist; the token comes from {origin}"),
                ));
                return;
            }
            report.push(Finding::warn(
                "env_file.missing",
                format!("{shown} does not exist"),
                "settings and the token must come from elsewhere (a drop-in, a credential), and a rotated token cannot be picked up by a reload",
                format!("create it from the template: install -m 0640 -o root -g hostbeat /usr/share/doc/hostbeat/examples/hostbeat.env {shown}, or reinstall the package"),
            ));
            return;
        }
        Err(e) => {
            report.push(Finding::fail(
                "env_file.unexaminable",
                format!("cannot examine {shown}: {e}"),
                "hostbeat cannot read its settings",
                "run hostbeat check as root, or as a member of the hostbeat group",
            ));
            return;
        }
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            report.push(Finding::fail(
                "env_file.unreadable",
                format!("cannot read {shown}: {e}"),
                "this user cannot see the settings; the checks below use what it can read",
                "run hostbeat check as root, or as a member of the hostbeat group",
            ));
            return;
        }
    };
    let holds_token = token_value(&bytes).is_some();
    permissions(path, &metadata, holds_token, context, report);
    match EnvFile::parse(path, &bytes) {
        Ok(_) => report.push(Finding::ok("env_file.parses", format!("{shown} parses"))),
        Err(e) => report.push(Finding::fail(
            "env_file.unparsable",
            format!("{shown} does not parse: {e}"),
            "`hostbeat run` exits 78 with this line",
            e.fix().to_owned(),
        )),
    }
    for finding in token_hygiene(&bytes, &shown.to_string()) {
        report.push(finding);
    }
}

/// Readable by the service's user (`hostbeat run` reads the file itself and exits 78
/// when it cannot); when it holds the token, nobody else may read it, and only
/// root may own it.
fn permissions(
    path: &Path,
    metadata: &std::fs::Metadata,
    holds_token: bool,
    context: &Context<'_>,
    report: &mut Report,
) {
    let shown = path.display();
    let mode = metadata.mode() & 0o7777;
    let owner = name_of("/etc/passwd", metadata.uid());
    let group = name_of("/etc/group", metadata.gid());
    let fix = format!("chown root:hostbeat {shown} && chmod 0640 {shown}");
    let summary = format!("{shown}: owner {owner}, group {group}, mode {mode:04o}");
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let file = (metadata.uid(), metadata.gid(), metadata.mode());
    if may_read(SERVICE_USER, file, &passwd, &groups) == Some(false) {
        report.push(Finding::fail(
            "env_file.service_cannot_read",
            summary,
            format!("the {SERVICE_USER} user, which the unit runs hostbeat as, cannot read it: `hostbeat run` exits 78 (env_file: cannot read {shown})"),
            fix,
        ));
        return;
    }
    let mut problems = Vec::new();
    if holds_token && mode & 0o004 != 0 && !context.reported("token_file_world_readable", path) {
        problems.push("every user on this host can read the token".to_owned());
    }
    if holds_token && mode & 0o040 != 0 && group != "root" && group != SERVICE_USER {
        problems.push(format!("members of group {group} can read the token"));
    }
    if metadata.uid() != 0 && mode & 0o200 != 0 {
        problems.push(format!(
            "{owner} owns it and can change hostbeat's settings"
        ));
    }
    if problems.is_empty() {
        report.push(Finding::ok("env_file.permissions", summary));
    } else {
        report.push(Finding::warn(
            "env_file.permissions",
            summary,
            problems.join("; "),
            fix,
        ));
    }
}

/// Whether `user` may read a file of `(owner, group, mode)` by those alone (ACLs
/// aside), given the host's passwd and group files; `None` when it has no such user.
fn may_read(
    user: &str,
    (owner, group, mode): (u32, u32, u32),
    passwd: &str,
    groups: &str,
) -> Option<bool> {
    let (uid, gid) = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 4 || fields[0] != user {
            return None;
        }
        Some((
            fields[2].parse::<u32>().ok()?,
            fields[3].parse::<u32>().ok()?,
        ))
    })?;
    if uid == 0 {
        return Some(true);
    }
    if owner == uid {
        return Some(mode & 0o400 != 0);
    }
    let member = gid == group
        || groups.lines().any(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            fields.len() > 3
                && fields[2].parse::<u32>().ok() == Some(group)
                && fields[3].split(',').any(|name| name == user)
        });
    Some(if member {
        mode & 0o040 != 0
    } else {
        mode & 0o004 != 0
    })
}

/// The name of `id` in a passwd or group file, else the number.
fn name_of(file: &str, id: u32) -> String {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                (fields.nth(1)?.parse::<u32>().ok()? == id).then(|| name.to_owned())
            })
        })
        .unwrap_or_else(|| id.to_string())
}

/// What is wrong around and inside the token's value in the env file's bytes. Warn
/// for what hostbeat strips (but other tools would not), fail for what it refuses.
pub(super) fn token_hygiene(file: &[u8], shown: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    let bom = b"\xef\xbb\xbf";
    if file.starts_with(bom) {
        findings.push(Finding::warn(
            "token.bom",
            format!("{shown} starts with a UTF-8 byte order mark (bytes 1-3)"),
            "a Windows editor saved it; systemd and hostbeat skip it, other tools may read it as part of the first line",
            format!("sed -i '1s/^\\xEF\\xBB\\xBF//' {shown}"),
        ));
    }
    let Some(value) = token_value(file) else {
        findings.push(Finding::ok(
            "token.no_line",
            format!("{shown} has no HOSTBEAT_CLIENT_TOKEN line (the token comes from elsewhere)"),
        ));
        return findings;
    };
    let before = findings.len();
    let (start, end) = surroundings(value, shown, &mut findings);
    let token = &value[start..end];
    contents(token, start, shown, &mut findings);
    if findings[before..].iter().all(|f| f.level == Level::Ok) {
        findings.push(Finding::ok(
            "token.clean",
            format!(
                "{} bytes, nothing around or inside it that should not be",
                token.len()
            ),
        ));
    }
    findings
}

/// What surrounds the value: a CR, white space, quotes. Returns where the token
/// itself starts and ends in `value`.
fn surroundings(value: &[u8], shown: &str, findings: &mut Vec<Finding>) -> (usize, usize) {
    if value.ends_with(b"\r") {
        findings.push(Finding::warn(
            "token.carriage_return",
            format!(
                "the token line ends in a carriage return (byte {} of the value)",
                value.len()
            ),
            "the file was written on Windows (CRLF); hostbeat strips it, but a copy of the token made with shell tools keeps it",
            format!("sed -i 's/\\r$//' {shown}"),
        ));
    }
    let value = value.strip_suffix(b"\r").unwrap_or(value);
    let start = value
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    if start > 0 || end < value.len() {
        findings.push(Finding::warn(
            "token.white_space",
            format!(
                "white space around the token ({start} bytes before, {} after)",
                value.len() - end
            ),
            "hostbeat strips it; a server that compares the raw value would refuse the token",
            format!(
                "remove the spaces around the value on the HOSTBEAT_CLIENT_TOKEN line of {shown}"
            ),
        ));
    }
    let (mut inner_start, mut inner_end) = (start, end);
    let quoted =
        end - start >= 2 && matches!(value[start], b'"' | b'\'') && value[start] == value[end - 1];
    if quoted {
        inner_start += 1;
        inner_end -= 1;
        findings.push(Finding::ok(
            "token.quoted",
            "the token is quoted (systemd and hostbeat remove the quotes)",
        ));
    } else if let Some(i) = (start..end).find(|&i| matches!(value[i], b'"' | b'\'')) {
        findings.push(Finding::fail(
            "token.unmatched_quote",
            format!("an unmatched quote at byte {} of the value", i + 1),
            "it becomes part of the token, which the control plane then refuses",
            format!(
                "remove it, or quote the whole value, on the HOSTBEAT_CLIENT_TOKEN line of {shown}"
            ),
        ));
    }
    (inner_start, inner_end)
}

/// What is inside the token (`offset`: where it starts in the value): bytes a
/// token cannot hold, and shapes that suggest the wrong token.
fn contents(token: &[u8], offset: usize, shown: &str, findings: &mut Vec<Finding>) {
    if let Some((i, what)) = token.iter().enumerate().find_map(|(i, &b)| {
        let what = match b {
            b' ' | b'\t' => "white space",
            0..=0x1f | 0x7f => "a control character",
            0x80..=0xff => "a non-ASCII byte",
            _ => return None,
        };
        Some((i, what))
    }) {
        findings.push(Finding::fail(
            "token.bad_byte",
            format!("{what} at byte {} of the value", offset + i + 1),
            "a token is visible ASCII only; hostbeat refuses this one (a paste from a document or chat often brings such bytes)",
            format!("paste the token again as plain text; see the bytes with: grep HOSTBEAT_CLIENT_TOKEN {shown} | od -c"),
        ));
    }
    if token.starts_with(b"eyJ") && token.split(|&b| b == b'.').count() == 3 {
        findings.push(Finding::warn(
            "token.jwt",
            "the token looks like a JWT (eyJ...), not a client token",
            "a JWT is usually an access token, which expires within the hour; hostbeat needs the long-lived client token the control plane issued",
            "ask the control plane for this fleet's client token and put it in the env file",
        ));
    }
    if !token.is_empty() && token.len() < SHORT_TOKEN {
        findings.push(Finding::warn(
            "token.short",
            format!("the token is only {} bytes long", token.len()),
            "a client token is usually longer; it may have been cut when pasted",
            "compare the token's fingerprint (printf %s \"$TOKEN\" | sha256sum | cut -c1-12) with the control plane's copy",
        ));
    }
}

/// The raw bytes after `HOSTBEAT_CLIENT_TOKEN=` on its (last) line, CR included.
fn token_value(file: &[u8]) -> Option<&[u8]> {
    file.split(|&b| b == b'\n')
        .filter_map(|line| {
            let line = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line);
            let start = line.iter().position(|b| !b.is_ascii_whitespace())?;
            let line = &line[start..];
            let line = line.strip_prefix(b"export ").unwrap_or(line);
            line.strip_prefix(TOKEN_KEY)
        })
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0::/root:/bin/sh\nhostbeat:x:998:997::/nonexistent:/usr/sbin/nologin\nops:x:1000:1000::/home/ops:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nhostbeat:x:997:\nadm:x:4:hostbeat,ops\nops:x:1000:\n";

    /// `check` as root judges as the unit's user, who `run` is.
    #[test]
    fn judges_the_service_user_by_owner_group_and_mode() {
        let judge = |file| may_read("hostbeat", file, PASSWD, GROUP);
        assert_eq!(judge((0, 997, 0o640)), Some(true), "root:hostbeat 0640");
        assert_eq!(judge((0, 0, 0o640)), Some(false), "root:root 0640");
        assert_eq!(judge((0, 0, 0o600)), Some(false), "root:root 0600");
        assert_eq!(judge((0, 0, 0o644)), Some(true), "world-readable");
        assert_eq!(judge((0, 4, 0o640)), Some(true), "a supplementary group");
        assert_eq!(judge((998, 0, 0o200)), Some(false), "owner without read");
        assert_eq!(may_read("nobody-here", (0, 0, 0o600), PASSWD, GROUP), None);
    }

    fn findings(file: &[u8]) -> Vec<(Level, String)> {
        token_hygiene(file, "/etc/hostbeat/hostbeat.env")
            .into_iter()
            .map(|f| (f.level, f.summary))
            .collect()
    }

    const TOKEN: &str = "ct_0123456789abcdefXYZ";

    #[test]
    fn a_clean_token_is_ok() {
        let found = findings(format!("HOSTBEAT_CLIENT_TOKEN={TOKEN}\n").as_bytes());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, Level::Ok);
        assert!(found[0].1.starts_with("22 bytes"), "{found:?}");
    }

    #[test]
    fn each_blemish_is_named_with_its_position_never_the_content() {
        for (file, level, expected) in [
            (
                format!("\u{feff}HOSTBEAT_CLIENT_TOKEN={TOKEN}\n"),
                Level::Warn,
                "byte order mark (bytes 1-3)",
            ),
            (
                format!("HOSTBEAT_CLIENT_TOKEN={TOKEN}\r\n"),
                Level::Warn,
                "carriage return (byte 23 of the value)",
            ),
            (
                format!("HOSTBEAT_CLIENT_TOKEN=  {TOKEN} \n"),
                Level::Warn,
                "(2 bytes before, 1 after)",
            ),
            (
                format!("HOSTBEAT_CLIENT_TOKEN=\"{TOKEN}\n"),
                Level::Fail,
                "unmatched quote at byte 1",
            ),
            (
                "HOSTBEAT_CLIENT_TOKEN=ct_01234\u{7}56789abcdef\n".to_owned(),
                Level::Fail,
                "a control character at byte 9",
            ),
            (
                "HOSTBEAT_CLIENT_TOKEN=ct_0123\u{a0}456789abcdef\n".to_owned(),
                Level::Fail,
                "a non-ASCII byte at byte 8",
            ),
            (
                "HOSTBEAT_CLIENT_TOKEN=ct_short\n".to_owned(),
                Level::Warn,
                "only 8 bytes",
            ),
            (
                "HOSTBEAT_CLIENT_TOKEN=eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl\n".to_owned(),
                Level::Warn,
                "looks like a JWT",
            ),
        ] {
            let found = findings(file.as_bytes());
            assert!(
                found
                    .iter()
                    .any(|(l, s)| *l == level && s.contains(expected)),
                "{expected:?} not in {found:?}"
            );
            for (_, summary) in &found {
                assert!(!summary.contains("0123456789"), "content shown: {summary}");
            }
        }
    }

    #[test]
    fn matching_quotes_are_fine_and_the_last_line_counts() {
        let file = format!("HOSTBEAT_CLIENT_TOKEN=old\nexport HOSTBEAT_CLIENT_TOKEN='{TOKEN}'\n");
        let found = findings(file.as_bytes());
        assert!(found.iter().all(|(l, _)| *l == Level::Ok), "{found:?}");
        assert!(found.iter().any(|(_, s)| s.contains("quoted")), "{found:?}");
    }
}
