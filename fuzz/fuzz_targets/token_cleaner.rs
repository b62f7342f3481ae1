//! The token cleaner: whatever the bytes, a clean token of visible ASCII no longer
//! than the input, or an error that names the position and never the token.
#![no_main]

use hostbeat::config::token::{RawToken, TokenOrigin, clean};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let origin = TokenOrigin::Environment;
    match clean(&RawToken::new(text.clone()), &origin) {
        Ok(token) => {
            assert!(!token.is_empty() && token.len() <= text.len());
            // Debug shows a fingerprint, never the value.
            let shown = format!("{token:?}");
            let trimmed = text.trim();
            assert!(trimmed.len() < 12 || !shown.contains(trimmed), "{shown}");
        }
        Err(e) => {
            let message = e.to_string();
            let trimmed = text.trim();
            assert!(
                trimmed.len() < 12 || !message.contains(trimmed),
                "{message}"
            );
        }
    }
});
