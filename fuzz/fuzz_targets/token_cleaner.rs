//! The token cleaner: whatever the bytes, a clean token of visible ASCII no longer
//! than the input, or an error that names the position and never the token.
//!
//! "Never the token" is checked twice over: the text is in the message, and the same
//! text with its letters and digits rotated is in the message for the rotated input.
//! A message that quotes the token does both; a token that merely spells part of
//! the message's own words (the fuzzer learns them from the check itself, and once
//! offered "client_token (from environment variable HOSTBEAT_CLIENT_TOKEN): ") does
//! not, since rotating it does not rotate the words.
#![no_main]

use hostbeat::config::token::{RawToken, TokenOrigin, clean};
use libfuzzer_sys::fuzz_target;

/// What the cleaner says of `text`: the token's Debug output or the error.
fn said(text: &str) -> Result<String, String> {
    clean(&RawToken::new(text.to_owned()), &TokenOrigin::Environment)
        .map(|token| {
            assert!(!token.is_empty() && token.len() <= text.len());
            format!("{token:?}")
        })
        .map_err(|e| e.to_string())
}

/// Letters by 13, digits by 5; every other character as it is (so the cleaner
/// sees the same shape: quotes, whitespace, control and non-ASCII characters).
fn rotated(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'a'..='z' => char::from(b'a' + (c as u8 - b'a' + 13) % 26),
            'A'..='Z' => char::from(b'A' + (c as u8 - b'A' + 13) % 26),
            '0'..='9' => char::from(b'0' + (c as u8 - b'0' + 5) % 10),
            other => other,
        })
        .collect()
}

fn shows(text: &str) -> bool {
    let trimmed = text.trim();
    let (Ok(shown) | Err(shown)) = said(text);
    trimmed.len() >= 12 && shown.contains(trimmed)
}

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes).into_owned();
    if shows(&text) {
        let other = rotated(&text);
        assert!(
            !shows(&other),
            "the token is quoted: {:?}",
            said(&other)
        );
    }
});
