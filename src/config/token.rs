//! Where the client token comes from, how it is cleaned, and how it is read again
//! after a rotation.
//!
//! Sources, first match wins: the `client_token` setting (`HOSTBEAT_CLIENT_TOKEN` in
//! the environment or the env file, or `client_token` in the config file), then
//! `client_token_file`, then the systemd credential `client-token`
//! (`$CREDENTIALS_DIRECTORY/client-token`).
//!
//! Cleaning strips what editors and shells leave around a token (a UTF-8 BOM, white
//! space, CR/LF, one pair of matching quotes) and refuses anything else that cannot be
//! part of a bearer token (control characters, white space, non-ASCII bytes inside),
//! naming the source and the byte position, never the content.

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

use super::ConfigError;
use super::envfile::EnvFile;
use crate::secret::Token;

/// The environment variable that carries the token.
pub const CLIENT_TOKEN_VAR: &str = "HOSTBEAT_CLIENT_TOKEN";
/// The systemd credential name (`LoadCredential=client-token:/path`).
pub const CREDENTIAL_NAME: &str = "client-token";

/// A token as read, before cleaning: already secret, so that nothing prints it.
pub struct RawToken(SecretString);

impl RawToken {
    /// Wraps the text read from a source; the `String` is moved, not copied. The
    /// redactor learns it at once, before anything could quote it (an error about
    /// another setting that holds the same text, say).
    pub fn new(value: String) -> Self {
        let trimmed = value.trim().trim_matches(['"', '\'']).trim();
        if !trimmed.is_empty() {
            crate::redact::remember(trimmed, crate::redact::Kind::Client);
        }
        Self(SecretString::from(value))
    }

    /// Whether it is empty or white space only (a variable set to nothing).
    pub fn is_blank(&self) -> bool {
        self.0.expose_secret().trim().is_empty()
    }

    /// The fingerprint of the text as read (before cleaning), to tell whether two
    /// sources hold the same thing.
    pub fn fingerprint(&self) -> crate::secret::Fingerprint {
        crate::secret::Fingerprint::of(self.0.expose_secret().as_bytes())
    }
}

impl fmt::Debug for RawToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawToken([redacted])")
    }
}

/// Where the token in use was found; kept so that it can be read again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenOrigin {
    /// `HOSTBEAT_CLIENT_TOKEN` in the process environment.
    Environment,
    /// `HOSTBEAT_CLIENT_TOKEN` in the env file.
    EnvFile(PathBuf),
    /// `client_token` in the config file.
    ConfigFile(PathBuf),
    /// The file named by `client_token_file`.
    TokenFile(PathBuf),
    /// The systemd credential.
    Credential(PathBuf),
}

impl fmt::Display for TokenOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Environment => write!(f, "environment variable {CLIENT_TOKEN_VAR}"),
            Self::EnvFile(p) => write!(f, "{CLIENT_TOKEN_VAR} in {}", p.display()),
            Self::ConfigFile(p) => write!(f, "client_token in {}", p.display()),
            Self::TokenFile(p) => write!(f, "client_token_file {}", p.display()),
            Self::Credential(p) => write!(f, "systemd credential {}", p.display()),
        }
    }
}

/// How to read the token again: after a rejected credential and on SIGHUP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSource {
    /// Where the token in use came from.
    pub origin: TokenOrigin,
    /// The env file, which an operator edits to rotate the token.
    pub env_file: PathBuf,
}

impl TokenSource {
    /// Reads the token again, by the rule a restart would follow. A token from the
    /// process environment (the unit's or a drop-in's `Environment=`) wins over the
    /// env file and cannot change under a running process: that is an error, so
    /// that the caller says why a rotation was not picked up. Otherwise the env
    /// file comes first, because it is where a rotated token lands, then the file
    /// the token came from.
    pub fn reread(&self) -> Result<Token, ConfigError> {
        if self.origin == TokenOrigin::Environment {
            return Err(ConfigError::new(
                "client_token",
                Some(self.origin.to_string()),
                "a token from the process environment (under systemd, an Environment= line of the unit or a drop-in) cannot be re-read by a running process, and it wins over the env file".to_owned(),
                format!(
                    "remove the Environment=HOSTBEAT_CLIENT_TOKEN line (systemctl edit hostbeat), put {CLIENT_TOKEN_VAR}=<token> in {}, then systemctl restart hostbeat",
                    self.env_file.display()
                ),
            ));
        }
        let env_file = EnvFile::read(&self.env_file)?;
        if let Some(raw) = env_file.client_token {
            return clean(&raw, &TokenOrigin::EnvFile(self.env_file.clone()));
        }
        match &self.origin {
            TokenOrigin::TokenFile(path) | TokenOrigin::Credential(path) => {
                read_token_file(path, &self.origin)
            }
            // The config file is read again by a reload, not here; the env file has
            // no token: nothing new to read.
            other => Err(ConfigError::new(
                "client_token",
                Some(other.to_string()),
                format!(
                    "{} has no {CLIENT_TOKEN_VAR} to re-read",
                    self.env_file.display()
                ),
                format!(
                    "put {CLIENT_TOKEN_VAR}=<token> in {}, then systemctl reload hostbeat",
                    self.env_file.display()
                ),
            )),
        }
    }
}

/// Reads a token from a file (`client_token_file` or a systemd credential).
pub fn read_token_file(path: &Path, origin: &TokenOrigin) -> Result<Token, ConfigError> {
    // Not a regular file (a FIFO would block the read for good): refused.
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return Err(ConfigError::new(
            "client_token_file",
            Some(origin.to_string()),
            format!("{} is not a regular file", path.display()),
            "name the file that holds the token",
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| {
        ConfigError::new(
            "client_token_file",
            Some(origin.to_string()),
            format!("cannot read {}: {e}", path.display()),
            "check the path and that the hostbeat user may read the file",
        )
    })?;
    // Non-UTF-8 bytes are replaced, then refused by cleaning with their position.
    let text = String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    clean(&RawToken::new(text), origin)
}

/// Cleans a raw token (see module doc) into a [`Token`], or explains what is wrong
/// with it without showing it.
pub fn clean(raw: &RawToken, origin: &TokenOrigin) -> Result<Token, ConfigError> {
    let text = raw.0.expose_secret();
    let mut start = 0;
    let mut end = text.len();
    let bytes = text.as_bytes();
    if bytes.starts_with("\u{feff}".as_bytes()) {
        start += 3;
    }
    let trim = |start: &mut usize, end: &mut usize| {
        while *start < *end && bytes[*start].is_ascii_whitespace() {
            *start += 1;
        }
        while *end > *start && bytes[*end - 1].is_ascii_whitespace() {
            *end -= 1;
        }
    };
    trim(&mut start, &mut end);
    if end - start >= 2 {
        let (first, last) = (bytes[start], bytes[end - 1]);
        if (first == b'"' || first == b'\'') && first == last {
            start += 1;
            end -= 1;
            trim(&mut start, &mut end);
        }
    }
    let fix = "remove it: a token is visible ASCII only (check with `od -c` on the file)";
    if start == end {
        let fix = match origin {
            TokenOrigin::EnvFile(path) => format!(
                "put the client token the control plane issued after {CLIENT_TOKEN_VAR}= in {}",
                path.display()
            ),
            TokenOrigin::ConfigFile(path) => format!(
                "set client_token = \"<token>\" in {} (or, better, in the env file, which only root and hostbeat read)",
                path.display()
            ),
            TokenOrigin::TokenFile(path) | TokenOrigin::Credential(path) => {
                format!(
                    "put the client token the control plane issued in {}",
                    path.display()
                )
            }
            TokenOrigin::Environment => {
                format!("set {CLIENT_TOKEN_VAR} to the client token the control plane issued")
            }
        };
        return Err(ConfigError::new(
            "client_token",
            Some(origin.to_string()),
            "the token is empty".to_owned(),
            fix,
        ));
    }
    let quote_fix = "remove the stray quote, or quote the whole value";
    for (position, &byte) in bytes[start..end].iter().enumerate() {
        let what = match byte {
            // An unmatched quote is an editing slip (a bearer token has none).
            b'"' | b'\'' => "a quote that is not matched",
            b'\t' => "a tab",
            b'\r' => "a carriage return",
            b'\n' => "a line feed",
            b' ' => "a space",
            0..=0x1f | 0x7f => "a control character",
            0x80..=0xff => "a non-ASCII byte",
            _ => continue,
        };
        return Err(ConfigError::new(
            "client_token",
            Some(origin.to_string()),
            format!(
                "the token has {what} at byte {} (of {})",
                position + 1,
                end - start
            ),
            if matches!(byte, b'"' | b'\'') {
                quote_fix
            } else {
                fix
            },
        ));
    }
    Ok(Token::client(text[start..end].to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cleaned(text: &str) -> Result<Token, ConfigError> {
        clean(&RawToken::new(text.to_owned()), &TokenOrigin::Environment)
    }

    #[test]
    fn strips_surroundings() {
        let plain = Token::new("abc.DEF-123_x".to_owned());
        for wrapped in [
            "abc.DEF-123_x",
            "  abc.DEF-123_x\n",
            "abc.DEF-123_x\r\n",
            "\"abc.DEF-123_x\"",
            "'abc.DEF-123_x'",
            "\u{feff}abc.DEF-123_x",
            " \" abc.DEF-123_x \" \r\n",
        ] {
            let token = cleaned(wrapped).unwrap();
            assert!(token == plain, "{wrapped:?}");
        }
    }

    #[test]
    fn refuses_inner_bytes_with_position_not_content() {
        for (text, what, position) in [
            ("abc\tdef", "a tab", 4),
            ("ab\rcd", "a carriage return", 3),
            ("abc def", "a space", 4),
            ("abc\u{1}", "a control character", 4),
            ("abcé", "a non-ASCII byte", 4),
        ] {
            let err = cleaned(text).unwrap_err().to_string();
            assert!(err.contains(what), "{err}");
            assert!(err.contains(&format!("at byte {position}")), "{err}");
            assert!(err.contains("HOSTBEAT_CLIENT_TOKEN"), "{err}");
            assert!(!err.contains("abc") && !err.contains("ab\r"), "{err}");
        }
    }

    #[test]
    fn refuses_empty_and_lone_quotes() {
        assert!(cleaned("  \r\n").is_err());
        assert!(cleaned("\"\"").is_err());
        // A single quote is not a pair: an editing slip, refused by position.
        let err = cleaned("\"abc").unwrap_err().to_string();
        assert!(
            err.contains("a quote that is not matched at byte 1"),
            "{err}"
        );
    }
}
