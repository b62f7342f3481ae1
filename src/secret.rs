//! The secrets the agent holds (the client token, access tokens) and the only thing
//! about them that may ever be printed: a fingerprint.
//!
//! Invariants: a [`Token`] has no `Display`, no `Serialize`, and a `Debug` that shows
//! only the fingerprint. Its bytes leave this module in exactly two places: the
//! `Authorization` header built by `Token::bearer_header`, and the OAuth client
//! secret handed to the HTTP client by the token exchange. Every token tells
//! [`crate::redact`] its forms when it is made, so that no output carries it.

use std::fmt;

use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// A bearer credential: the client token or an access token.
pub struct Token {
    secret: SecretString,
    fingerprint: Fingerprint,
}

impl Token {
    /// An access token (or any bearer credential that is not the client token):
    /// takes ownership of the text, which is moved, not copied, and tells
    /// [`crate::redact`] its forms.
    pub fn new(value: String) -> Self {
        Self::of_kind(value, crate::redact::Kind::Access)
    }

    /// The client token, kept in [`crate::redact`] apart from access tokens, so
    /// that a day of refreshes never makes it forget the client token.
    pub fn client(value: String) -> Self {
        Self::of_kind(value, crate::redact::Kind::Client)
    }

    fn of_kind(value: String, kind: crate::redact::Kind) -> Self {
        crate::redact::remember(&value, kind);
        let fingerprint = Fingerprint::of(value.as_bytes());
        Self {
            secret: SecretString::from(value),
            fingerprint,
        }
    }

    /// What logs, errors and the status show instead of the token.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// Length in bytes: safe to show, and useful to spot a truncated token.
    pub fn len(&self) -> usize {
        self.secret.expose_secret().len()
    }

    /// Whether the token is empty (never true for a token that passed cleaning).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `Authorization: Bearer <token>`, marked sensitive so that `http`'s own `Debug`
    /// never prints it. The intermediate buffer is wiped when dropped.
    pub(crate) fn bearer_header(&self) -> HeaderValue {
        let secret = self.secret.expose_secret().as_bytes();
        let mut bytes = Zeroizing::new(Vec::with_capacity(7 + secret.len()));
        bytes.extend_from_slice(b"Bearer ");
        bytes.extend_from_slice(secret);
        // Cleaning (config::token) guarantees visible ASCII, which is always a valid
        // header value; an access token from a server is checked the same way.
        let mut value = HeaderValue::from_bytes(&bytes).expect("token is visible ASCII");
        value.set_sensitive(true);
        value
    }

    /// The raw text, for the OAuth client secret only (see module doc).
    pub(crate) fn expose(&self) -> &str {
        self.secret.expose_secret()
    }

    /// Whether it has a JWT's shape (`eyJ...`, three dot-separated parts): an
    /// access token where the long-lived client token belongs.
    pub fn looks_like_jwt(&self) -> bool {
        let secret = self.secret.expose_secret();
        secret.starts_with("eyJ") && secret.split('.').count() == 3
    }
}

/// Marks the process not dumpable: no core dump of it (it holds the token), and
/// no `ptrace` attach or `/proc/PID/mem` read by another process of the same user.
/// The unit also sets `LimitCORE=0`. Failure is harmless and ignored: it only
/// happens where the kernel has no such setting.
pub fn forbid_core_dumps() {
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
}

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        // Comparing digests keeps the comparison's timing independent of the secret.
        self.fingerprint.digest == other.fingerprint.digest
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(fp={}, len={})", self.fingerprint, self.len())
    }
}

/// The first 12 hex digits of SHA-256 of the token's bytes, so that an operator can
/// compare with the server side: `printf %s "$TOKEN" | sha256sum | cut -c1-12`.
#[derive(Clone, PartialEq, Eq)]
pub struct Fingerprint {
    digest: [u8; 32],
}

impl Fingerprint {
    pub(crate) fn of(bytes: &[u8]) -> Self {
        Self {
            digest: Sha256::digest(bytes).into(),
        }
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.digest[..6] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_matches_sha256sum() {
        // printf %s secret-token | sha256sum | cut -c1-12
        let token = Token::new("secret-token".to_owned());
        assert_eq!(token.fingerprint().to_string(), "930bbdc51b6a");
    }

    #[test]
    fn debug_shows_fingerprint_not_token() {
        let token = Token::new("s3cr3t-value-123".to_owned());
        let debug = format!("{token:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert!(debug.contains(&token.fingerprint().to_string()));
    }

    #[test]
    fn bearer_header_is_sensitive() {
        let header = Token::new("abc".to_owned()).bearer_header();
        assert!(header.is_sensitive());
        assert_eq!(header.to_str().unwrap(), "Bearer abc");
        assert!(!format!("{header:?}").contains("abc"));
    }

    /// A server's echo of a token is redacted wherever it stands, every copy:
    /// [`crate::redact`] learnt the token when it was made.
    #[test]
    fn an_echo_of_a_token_is_redacted_every_copy() {
        let _token = Token::new("tok123-echoed".to_owned());
        assert_eq!(
            crate::redact::redact("bad tok123-echoed, tok123-echoed"),
            "bad [redacted], [redacted]"
        );
        assert_eq!(crate::redact::redact("fine"), "fine");
    }
}
