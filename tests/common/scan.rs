//! The scan for the token, shared by the integration tests (tests/it) and the
//! system tests (tests/system): every byte the daemon wrote, searched for its bytes.

use std::path::{Path, PathBuf};

/// Every regular file under `dir` with its content; a directory that cannot be read
/// fails the test (a scan of nothing would pass).
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot scan {}: {e}", dir.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => stack.push(path),
                Ok(kind) if kind.is_file() => {
                    found.push((path.clone(), std::fs::read(&path).unwrap_or_default()));
                }
                _ => {}
            }
        }
    }
    found
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The forms of `token` that must never be written: the token itself, its first
/// and last 10 bytes (a token cut short in a message), URL-encoded (a form body or
/// a query), and the base64 of HTTP Basic's `client_id:token` for the tests'
/// client id. Encoded here, not by the code under test, so that a mistake there
/// is not repeated here.
pub fn forms(token: &str) -> Vec<(String, String)> {
    let encoded = url_encoded(token);
    let mut forms = vec![
        ("the token".to_owned(), token.to_owned()),
        (
            "its first 10 bytes".to_owned(),
            token[..10.min(token.len())].to_owned(),
        ),
        (
            "its last 10 bytes".to_owned(),
            token[token.len().saturating_sub(10)..].to_owned(),
        ),
        (
            "its Basic form".to_owned(),
            base64(format!("hostbeat:{encoded}").as_bytes()),
        ),
    ];
    if encoded != token {
        forms.push(("it URL-encoded".to_owned(), encoded));
    }
    forms
}

/// application/x-www-form-urlencoded, as RFC 6749 asks of Basic's parts (written
/// here, not taken from the crate, for the tests and the fuzz targets to check it).
pub fn url_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                char::from(b).to_string()
            }
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    encode(
        bytes,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        true,
    )
}

/// Base64url without padding, as in a JWT.
pub fn base64_url(bytes: &[u8]) -> String {
    encode(
        bytes,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        false,
    )
}

fn encode(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(alphabet[(n >> (18 - 6 * i) & 63) as usize]));
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Fails naming the first place that holds one of `tokens` in any of its
/// [`forms`].
pub fn assert_no_token(written: &[(PathBuf, Vec<u8>)], tokens: &[&str]) {
    for (place, bytes) in written {
        for token in tokens {
            for (what, form) in forms(token) {
                assert!(!contains(bytes, &form), "{what} is in {}", place.display());
            }
        }
    }
}
