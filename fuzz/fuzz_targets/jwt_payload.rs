//! An access token's lifetime: the JWT payload decoder (the `exp` claim) and the
//! token answer's `expires_in`. Any token text and any number give a lifetime
//! within the ceiling or none, never a panic (a panic aborts the agent: the
//! release profile has `panic = "abort"`).
#![no_main]

use std::time::{Duration, SystemTime};

use hostbeat::credentials::{LIFETIME_CEILING, jwt_remaining_lifetime, token_lifetime};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Option<f64>, &[u8])| {
    let (expires_in, bytes) = input;
    let text = String::from_utf8_lossy(bytes);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let _ = jwt_remaining_lifetime(&text, now);
    if let Some(lifetime) = token_lifetime(expires_in, &text, now) {
        assert!(lifetime <= LIFETIME_CEILING);
        // The refresh point is computed on the monotonic clock: must not overflow.
        let _ = std::time::Instant::now() + lifetime;
    }
});
