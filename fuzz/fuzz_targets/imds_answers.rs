//! The EC2 metadata service's answers (spot/instance-action, events/recommendations/
//! rebalance): a notice or an error, never a panic; an accepted notice's time is a
//! short RFC 3339 string.
#![no_main]

use hostbeat::imds::{parse_instance_action, parse_rebalance};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    for parsed in [parse_instance_action(&text), parse_rebalance(&text)] {
        match parsed {
            Ok(notice) => {
                let shown = format!("{notice:?}");
                assert!(shown.len() < 1024, "{shown}");
            }
            Err(e) => {
                assert!(e.to_string().chars().count() < 1024);
            }
        }
    }
});
