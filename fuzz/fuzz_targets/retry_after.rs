//! `Retry-After`, as delay-seconds or an HTTP date: any header value gives a delay
//! or none, never a panic.
#![no_main]

use std::time::{Duration, SystemTime};

use hostbeat::api::classify::parse_retry_after;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let _ = parse_retry_after(&text, now);
});
