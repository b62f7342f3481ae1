//! The env file as the operator left it: there, owned and guarded as a file with a
//! secret should be, parseable, and its token line free of what editors and shells
//! leave behind. Positions are bytes (1-based) of the token's value; the content is
//! never shown.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{Finding, Report};
use crate::config::envfile::EnvFile;

const TOKEN_KEY: &[u8] = b"HOSTBEAT_CLIENT_TOKEN=";

/// The group the packaged env file belongs to, so that the service's user reads it.
const SERVICE_GROUP: &str = "hostbeat";

/// What the configuration's load already said about the env file, so that nothing
/// is reported twice.
pub(super) struct Context<'a> {
    /// Where the token in use came from, when that is not this file.
    pub token_elsewhere: Option<String>,
    /// The warnings of the load, which `check` reports in its config step.
    pub warnings: &'a [crate::config::Warning],
    /// Beside an installed service, the user it runs as (`User=`): the one whose
    /// access counts, since `run` reads the env file as that user.
    pub service_user: Option<String>,
    /// The setting whose error stopped the configuration from loading, which the
    /// config step reported already.
    pub config_error: Option<String>,
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
    // The load failed on the env file itself (unreadable, a relative name, a line
    // that does not parse): the config step said why, with the fix; anything said
    // here of the file would be about another file, or the same failure again.
    if context.config_error.as_deref() == Some("env_file") {
        return;
    }
    let shown = path.display();
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) if !metadata.is_file() => {
            report.push(Finding::fail(
                "env_file.not_a_file",
                format!("{shown} is not a regular file"),
                "`hostbeat run` exits 78: it reads its settings and the token from a file",
                "name the env file itself, like /etc/hostbeat/hostbeat.env",
            ));
            return;
        }
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if context.reported("env_file.missing", path) {
                return;
            }
            // The packaged default may be absent: the settings and the token then
            // come from elsewhere (or their absence is the load's failure).
            if path == Path::new(crate::config::DEFAULT_ENV_FILE) {
                report.push(Finding::ok(
                    "env_file.absent",
                    format!("{shown} (the default) does not exist"),
                ));
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
        Err(_) if context.config_error.as_deref() == Some("env_file") => return,
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
        // Said by the config step, with the fix.
        Err(_) if context.config_error.as_deref() == Some("env_file") => return,
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
    // A token that makes the load fail was said by the config step, with the fix.
    let refused = context.config_error.as_deref() == Some("client_token");
    for finding in token_hygiene(
        &bytes,
        &shown.to_string(),
        context.token_elsewhere.as_deref(),
    ) {
        if !(refused && finding.level == super::Level::Fail) {
            report.push(finding);
        }
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
    if let Some(user) = &context.service_user {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
        let file = (metadata.uid(), metadata.gid(), metadata.mode());
        // Every directory above it must let the user search it, too.
        let dirs: Vec<(u32, u32, u32)> = path
            .ancestors()
            .skip(1)
            .filter_map(|dir| std::fs::metadata(dir).ok())
            .map(|m| (m.uid(), m.gid(), m.mode()))
            .collect();
        if may_read(user, file, &dirs, &passwd, &groups) == Some(false) {
            report.push(Finding::fail(
                "env_file.service_cannot_read",
                summary,
                format!("the {user} user, which the unit runs hostbeat as, cannot read it or search a directory above it: `hostbeat run` exits 78 (env_file: cannot read {shown})"),
                format!("{fix}; and every directory above it searchable (chmod o+x, or g+x for group {SERVICE_GROUP})"),
            ));
            return;
        }
    }
    let mut problems = Vec::new();
    if holds_token && mode & 0o004 != 0 && !context.reported("env_file.token_world_readable", path)
    {
        problems.push("every user on this host can read the token".to_owned());
    }
    if holds_token && mode & 0o040 != 0 && group != "root" && group != SERVICE_GROUP {
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

/// Whether `user` may read a file of `(owner, group, mode)` inside directories of
/// `dirs` (each of which it must be allowed to search), by those alone (ACLs
/// aside), given the host's passwd and group files; `None` when it has no such user.
fn may_read(
    user: &str,
    file: (u32, u32, u32),
    dirs: &[(u32, u32, u32)],
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
    let member = |group: u32| {
        gid == group
            || groups.lines().any(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                fields.len() > 3
                    && fields[2].parse::<u32>().ok() == Some(group)
                    && fields[3].split(',').any(|name| name == user)
            })
    };
    // The owner's, the group's or the others' bit of `permission` (4 read, 1
    // search), whichever class the user is in.
    let allows = |(owner, group, mode): (u32, u32, u32), permission: u32| {
        let shift = if owner == uid {
            6
        } else if member(group) {
            3
        } else {
            0
        };
        mode >> shift & permission != 0
    };
    Some(dirs.iter().all(|dir| allows(*dir, 0o1)) && allows(file, 0o4))
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

/// What is around and inside the token's value in the env file's bytes, by byte
/// position, never the content. What hostbeat strips (a BOM, a CR, white space,
/// one pair of quotes) is said, not warned about: `run` copes with it, and what
/// `check` warns about, `run` warns about too. What hostbeat refuses (a stray
/// quote, a byte a token cannot hold) fails, as it makes `run` exit 78. The token's
/// shape (a JWT, too short) is judged by the load, for whichever source the token
/// came from.
pub(super) fn token_hygiene(file: &[u8], shown: &str, elsewhere: Option<&str>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut notes = Vec::new();
    if file.starts_with(b"\xef\xbb\xbf") {
        notes.push("the file starts with a UTF-8 byte order mark (a Windows editor)".to_owned());
    }
    let Some(value) = token_value(file) else {
        findings.push(Finding::ok(
            "token.no_line",
            match elsewhere {
                Some(origin) => format!(
                    "{shown} has no HOSTBEAT_CLIENT_TOKEN line; the token comes from {origin}"
                ),
                None => format!("{shown} has no HOSTBEAT_CLIENT_TOKEN line"),
            },
        ));
        return findings;
    };
    if value.ends_with(b"\r") {
        notes.push(format!(
            "the line ends in a carriage return (byte {} of the value; a file written on Windows: sed -i 's/\\r$//' {shown})",
            value.len()
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
        notes.push(format!(
            "white space around the token ({start} bytes before, {} after)",
            value.len() - end
        ));
    }
    let (mut inner_start, mut inner_end) = (start, end);
    // A quoted value ends at its closing quote, as the env file's reader reads
    // it; anything after (a comment) is not part of the token.
    let closing = matches!(value.get(start), Some(b'"' | b'\''))
        .then(|| {
            value[start + 1..end]
                .iter()
                .position(|&b| b == value[start])
        })
        .flatten()
        .map(|at| start + 1 + at);
    if let Some(close) = closing {
        inner_start += 1;
        inner_end = close;
        notes.push("the token is quoted".to_owned());
        if close + 1 < end {
            notes.push(format!(
                "{} bytes after the closing quote are not part of it",
                end - close - 1
            ));
        }
    }
    let token = &value[inner_start..inner_end];
    let refused = bad_byte(token, inner_start, shown);
    let clean = refused.is_none();
    findings.extend(refused);
    if clean {
        let stripped = if notes.is_empty() {
            String::new()
        } else {
            format!("; hostbeat strips what surrounds it: {}", notes.join("; "))
        };
        findings.push(Finding::ok(
            "token.clean",
            format!(
                "{} bytes, nothing inside it that a token cannot hold{stripped}",
                token.len()
            ),
        ));
    }
    findings
}

/// The first byte of `token` (at `offset` in the value) that hostbeat refuses, as
/// a failure: a quote not matched by another around the whole value, white space,
/// a control character, a non-ASCII byte (config::token::clean refuses the same).
fn bad_byte(token: &[u8], offset: usize, shown: &str) -> Option<Finding> {
    let (i, what) = token.iter().enumerate().find_map(|(i, &b)| {
        let what = match b {
            b'"' | b'\'' => "a quote that is not matched",
            b' ' | b'\t' => "white space",
            0..=0x1f | 0x7f => "a control character",
            0x80..=0xff => "a non-ASCII byte",
            _ => return None,
        };
        Some((i, what))
    })?;
    let position = offset + i + 1;
    Some(if what.starts_with("a quote") {
        Finding::fail(
            "token.unmatched_quote",
            format!("{what} at byte {position} of the value"),
            "hostbeat refuses a token with a stray quote (`hostbeat run` exits 78): an editing slip",
            format!(
                "remove it, or quote the whole value, on the HOSTBEAT_CLIENT_TOKEN line of {shown}"
            ),
        )
    } else {
        Finding::fail(
            "token.bad_byte",
            format!("{what} at byte {position} of the value"),
            "a token is visible ASCII only; hostbeat refuses this one (`hostbeat run` exits 78; a paste from a document or chat often brings such bytes)",
            format!(
                "paste the token again as plain text; see the bytes with: grep HOSTBEAT_CLIENT_TOKEN {shown} | od -c"
            ),
        )
    })
}

/// The raw bytes of the value of the (last) `HOSTBEAT_CLIENT_TOKEN=` line, CR
/// included, found as the env file's reader finds it (`export ` and spaces around
/// the key allowed).
fn token_value(file: &[u8]) -> Option<&[u8]> {
    let key = TOKEN_KEY.strip_suffix(b"=").unwrap_or(TOKEN_KEY);
    file.split(|&b| b == b'\n')
        .filter_map(|line| {
            let line = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line);
            let start = line.iter().position(|b| !b.is_ascii_whitespace())?;
            let line = &line[start..];
            let line = line.strip_prefix(b"export ").unwrap_or(line);
            let equals = line.iter().position(|&b| b == b'=')?;
            (line[..equals].trim_ascii() == key).then(|| &line[equals + 1..])
        })
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Level;

    const PASSWD: &str = "root:x:0:0::/root:/bin/sh\nhostbeat:x:998:997::/nonexistent:/usr/sbin/nologin\nops:x:1000:1000::/home/ops:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nhostbeat:x:997:\nadm:x:4:hostbeat,ops\nops:x:1000:\n";

    /// `check` as root judges as the unit's user, who `run` is.
    #[test]
    fn judges_the_service_user_by_owner_group_and_mode() {
        let judge = |file| may_read("hostbeat", file, &[(0, 0, 0o755)], PASSWD, GROUP);
        assert_eq!(judge((0, 997, 0o640)), Some(true), "root:hostbeat 0640");
        assert_eq!(judge((0, 0, 0o640)), Some(false), "root:root 0640");
        assert_eq!(judge((0, 0, 0o600)), Some(false), "root:root 0600");
        assert_eq!(judge((0, 0, 0o644)), Some(true), "world-readable");
        assert_eq!(judge((0, 4, 0o640)), Some(true), "a supplementary group");
        assert_eq!(judge((998, 0, 0o200)), Some(false), "owner without read");
        assert_eq!(
            may_read("nobody-here", (0, 0, 0o600), &[], PASSWD, GROUP),
            None
        );
        // A directory above that the user may not search hides a readable file.
        let hidden = may_read("hostbeat", (0, 997, 0o640), &[(0, 0, 0o700)], PASSWD, GROUP);
        assert_eq!(hidden, Some(false));
        let searchable = may_read(
            "hostbeat",
            (0, 997, 0o640),
            &[(0, 997, 0o710)],
            PASSWD,
            GROUP,
        );
        assert_eq!(searchable, Some(true));
    }

    fn findings(file: &[u8]) -> Vec<(Level, String)> {
        token_hygiene(file, "/etc/hostbeat/hostbeat.env", None)
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
                Level::Ok,
                "byte order mark",
            ),
            (
                format!("HOSTBEAT_CLIENT_TOKEN={TOKEN}\r\n"),
                Level::Ok,
                "carriage return (byte 23 of the value",
            ),
            (
                format!("HOSTBEAT_CLIENT_TOKEN=  {TOKEN} \n"),
                Level::Ok,
                "(2 bytes before, 1 after)",
            ),
            (
                format!("HOSTBEAT_CLIENT_TOKEN=\"{TOKEN}\n"),
                Level::Fail,
                "a quote that is not matched at byte 1",
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
                "  export HOSTBEAT_CLIENT_TOKEN = ct_0123 456789abcdef\n".to_owned(),
                Level::Fail,
                "white space at byte 9",
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
