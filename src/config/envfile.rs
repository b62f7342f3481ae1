//! Reader for env files in systemd's `EnvironmentFile=` syntax
//! (`/etc/hostbeat/hostbeat.env`), which hostbeat reads itself (the unit does not
//! hand it to systemd, so that a drop-in's `Environment=` wins over it).
//!
//! It follows what systemd accepts, leniently: `KEY=VALUE` lines, `#` and `;`
//! comments, blank lines, an optional `export ` prefix, values in single or double
//! quotes (double quotes understand `\"` and `\\`), CRLF line ends and a UTF-8 BOM
//! at the start of the file (both are what an editor on another system leaves behind).
//!
//! Invariant: the client token's value is moved straight into a secret type ([`RawToken`]); it is never
//! kept in the plain map of other settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ConfigError;
use super::token::{CLIENT_TOKEN_VAR, RawToken};

/// The parsed file: the `HOSTBEAT_*` settings it holds, and the token apart from them.
#[derive(Debug, Default)]
pub struct EnvFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Whether the file exists (a missing file reads as an empty one).
    pub found: bool,
    /// Every `HOSTBEAT_*` variable except the client token.
    pub vars: BTreeMap<String, String>,
    /// `HOSTBEAT_CLIENT_TOKEN`, uncleaned (cleaning names this file in its errors);
    /// an empty value counts as absent.
    pub client_token: Option<RawToken>,
    /// The other variables it sets (`HTTPS_PROXY`, ...), by name only: hostbeat
    /// applies none of them, which a warning says.
    pub others: Vec<String>,
}

/// The permission bits of `path` when every user may read it.
pub fn world_readable(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o004 != 0).then_some(mode)
}

impl EnvFile {
    /// Reads `path`; a file that does not exist is an empty file (like systemd's
    /// `EnvironmentFile=-path`), any other read error is reported.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        // Not a regular file (a FIFO would block the read for good): refused.
        if let Ok(metadata) = std::fs::metadata(path)
            && !metadata.is_file()
            && !metadata.is_dir()
        {
            return Err(ConfigError::new(
                "env_file",
                None,
                format!("{} is not a regular file", path.display()),
                "name the env file itself, like /etc/hostbeat/hostbeat.env",
            ));
        }
        match std::fs::read(path) {
            Ok(bytes) => Self::parse(path, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                path: path.to_owned(),
                ..Self::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => Err(ConfigError::new(
                "env_file",
                None,
                format!("{} is a directory", path.display()),
                "name the env file itself, like /etc/hostbeat/hostbeat.env",
            )),
            Err(e) => Err(ConfigError::new(
                "env_file",
                None,
                format!("cannot read {}: {e}", path.display()),
                format!(
                    "let the hostbeat user read it: chown root:hostbeat {0} && chmod 0640 {0} (and every directory above it searchable)",
                    path.display()
                ),
            )),
        }
    }

    /// Parses the bytes of an env file read from `path`.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, ConfigError> {
        let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
        let text = String::from_utf8_lossy(bytes);
        let mut file = Self {
            path: path.to_owned(),
            found: true,
            ..Self::default()
        };
        let mut lines = text.split('\n').enumerate();
        while let Some((index, line)) = lines.next() {
            let line = line.strip_suffix('\r').unwrap_or(line).trim_start();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((key, rest)) = line.split_once('=') else {
                return Err(ConfigError::new(
                    "env_file",
                    None,
                    format!("{} line {}: expected KEY=VALUE", path.display(), index + 1),
                    "write each setting as KEY=VALUE, or start the line with # to comment it out",
                ));
            };
            let key = key.trim();
            let mut value = unquote(rest.trim_start());
            // A backslash at the end of an unquoted value continues it on the next
            // line, as systemd reads it. Refused where that cannot be meant: on the
            // token's line, and where the next line is a setting of its own, which
            // would be swallowed (a token among them, then printed as part of
            // another setting's value). Errors name lines and keys, never values.
            let mut last = index;
            while value.ends_with('\\') && !rest.trim_start().starts_with(['"', '\'']) {
                value.pop();
                let Some((next_index, next)) = lines.next() else {
                    break;
                };
                let joined = format!(
                    "{} lines {} and {}",
                    path.display(),
                    last + 1,
                    next_index + 1
                );
                if key == CLIENT_TOKEN_VAR {
                    return Err(ConfigError::new(
                        "env_file",
                        None,
                        format!(
                            "{joined}: the {CLIENT_TOKEN_VAR} line ends in a backslash, which joins the next line into the token"
                        ),
                        "remove the backslash at the end of the token's line",
                    ));
                }
                if next.trim_start().starts_with(['#', ';']) {
                    return Err(ConfigError::new(
                        "env_file",
                        None,
                        format!(
                            "{joined}: {key}'s line ends in a backslash, which joins the comment below it into {key}'s value"
                        ),
                        format!("remove the backslash at the end of {key}'s line"),
                    ));
                }
                if let Some(swallowed) = assignment_key(next) {
                    return Err(ConfigError::new(
                        "env_file",
                        None,
                        format!(
                            "{joined}: {key}'s line ends in a backslash, which joins the {swallowed} line into {key}'s value"
                        ),
                        format!("remove the backslash at the end of {key}'s line"),
                    ));
                }
                value.push_str(next.strip_suffix('\r').unwrap_or(next));
                last = next_index;
            }
            if key == CLIENT_TOKEN_VAR {
                file.client_token = (!value.trim().is_empty()).then(|| RawToken::new(value));
            } else if key.starts_with("HOSTBEAT_") {
                file.vars.insert(key.to_owned(), value);
            } else if assignment_key(line).is_some() {
                file.others.push(key.to_owned());
            }
        }
        Ok(file)
    }
}

/// The key of a line that reads `KEY=...` with a shell-like name (`export ` allowed).
fn assignment_key(line: &str) -> Option<&str> {
    let line = line.trim_start();
    let line = line.strip_prefix("export ").unwrap_or(line);
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let mut chars = key.chars();
    (chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_'))
    .then_some(key)
}

/// The value part of a line: quoted values lose their quotes (and, in double quotes,
/// their escapes); unquoted values lose trailing white space.
fn unquote(raw: &str) -> String {
    let mut chars = raw.chars();
    match chars.next() {
        Some(quote @ ('"' | '\'')) => {
            let mut value = String::new();
            let mut escaped = false;
            for c in chars {
                if escaped {
                    value.push(c);
                    escaped = false;
                } else if c == '\\' && quote == '"' {
                    escaped = true;
                } else if c == quote {
                    return value;
                } else {
                    value.push(c);
                }
            }
            // No closing quote: keep the opening one, so that token cleaning sees
            // (and reports) exactly what the file holds.
            raw.trim_end().to_owned()
        }
        _ => raw.trim_end().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> EnvFile {
        EnvFile::parse(Path::new("/test.env"), text.as_bytes()).unwrap()
    }

    #[test]
    fn reads_settings_and_keeps_token_apart() {
        let file = parse(
            "# comment\n; other comment\n\nHOSTBEAT_SERVER_URL=https://cp.example\nexport HOSTBEAT_HEARTBEAT_INTERVAL=10s\nOTHER=x\nHOSTBEAT_CLIENT_TOKEN=abc\n",
        );
        assert_eq!(file.vars["HOSTBEAT_SERVER_URL"], "https://cp.example");
        assert_eq!(file.vars["HOSTBEAT_HEARTBEAT_INTERVAL"], "10s");
        assert!(!file.vars.contains_key("OTHER"));
        assert!(!file.vars.contains_key(CLIENT_TOKEN_VAR));
        assert!(file.client_token.is_some());
    }

    #[test]
    fn handles_quotes_crlf_and_bom() {
        let file = EnvFile::parse(
            Path::new("/t"),
            b"\xef\xbb\xbfHOSTBEAT_A=\"x \\\"y\\\"\"\r\nHOSTBEAT_B='z'\r\nHOSTBEAT_C=plain  \r\n",
        )
        .unwrap();
        assert_eq!(file.vars["HOSTBEAT_A"], "x \"y\"");
        assert_eq!(file.vars["HOSTBEAT_B"], "z");
        assert_eq!(file.vars["HOSTBEAT_C"], "plain");
    }

    #[test]
    fn rejects_a_line_without_equals_naming_the_line() {
        let err = EnvFile::parse(Path::new("/etc/x.env"), b"HOSTBEAT_A=1\nnonsense\n").unwrap_err();
        assert!(err.to_string().contains("/etc/x.env line 2"), "{err}");
    }

    #[test]
    fn a_continuation_never_swallows_a_setting_or_continues_the_token() {
        let err = EnvFile::parse(
            Path::new("/e.env"),
            b"HOSTBEAT_SERVER_URL=https://cp.example\\\nHOSTBEAT_CLIENT_TOKEN=s3cr3t-tok\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/e.env lines 1 and 2"), "{err}");
        assert!(
            err.contains("joins the HOSTBEAT_CLIENT_TOKEN line into HOSTBEAT_SERVER_URL's value"),
            "{err}"
        );
        assert!(!err.contains("s3cr3t"), "{err}");
        let err = EnvFile::parse(
            Path::new("/e.env"),
            b"HOSTBEAT_CLIENT_TOKEN=s3cr3t\\\n-tok\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("joins the next line into the token"), "{err}");
        assert!(!err.contains("s3cr3t") && !err.contains("-tok"), "{err}");
        // A continuation of plain text still works, as in systemd.
        let file = parse("HOSTBEAT_SCOPE=read \\\n write\n");
        assert_eq!(file.vars["HOSTBEAT_SCOPE"], "read  write");
    }

    #[test]
    fn an_empty_token_is_absent_and_other_variables_are_named() {
        let file = parse("HOSTBEAT_CLIENT_TOKEN=\nHTTPS_PROXY=http://u:p@proxy:3128\n");
        assert!(file.client_token.is_none());
        assert_eq!(file.others, ["HTTPS_PROXY"]);
    }

    #[test]
    fn missing_file_is_empty() {
        let file = EnvFile::read(Path::new("/nonexistent/hostbeat.env")).unwrap();
        assert!(file.vars.is_empty() && file.client_token.is_none());
    }
}
