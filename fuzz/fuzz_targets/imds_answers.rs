//! Every cloud's metadata answers (EC2's spot/instance-action and rebalance
//! recommendation, Google Cloud's preempted and maintenance-event values, Azure's
//! instance document and Scheduled Events): a notice, an identity or an error,
//! never a panic; what is kept and every error stays short.
#![no_main]

use std::time::Duration;

use hostbeat::cloud::{azure, ec2, gcp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    let short = |shown: String| assert!(shown.chars().count() < 1024, "{shown}");
    for parsed in [
        ec2::parse_instance_action(&text),
        ec2::parse_rebalance(&text),
    ] {
        match parsed {
            Ok(notice) => short(format!("{notice:?}")),
            Err(e) => short(e.to_string()),
        }
    }
    for parsed in [
        gcp::read_preempted(&text, Duration::from_secs(30)),
        gcp::read_maintenance(&text),
    ] {
        match parsed {
            Ok(notice) => short(format!("{notice:?}")),
            Err(e) => short(e.to_string()),
        }
    }
    match azure::parse_instance(&text) {
        Ok(instance) => short(format!("{instance:?}")),
        Err(e) => short(e.to_string()),
    }
    match azure::parse_events(&text, "vmss_3") {
        // An event id is kept clipped; the notices are the parser's own words.
        Ok(document) => {
            for (id, notice) in document.ours {
                short(id);
                short(format!("{notice:?}"));
            }
        }
        Err(e) => short(e.to_string()),
    }
});
