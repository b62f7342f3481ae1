//! The env file reader (`/etc/hostbeat/hostbeat.env`): any bytes parse or fail
//! with an error, never a panic; the token never lands among the other variables
//! (which are logged as settings), and an error never quotes it.
#![no_main]

use std::path::Path;

use hostbeat::config::envfile::EnvFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    match EnvFile::parse(Path::new("/etc/hostbeat/hostbeat.env"), bytes) {
        Ok(file) => {
            assert!(!file.vars.contains_key("HOSTBEAT_CLIENT_TOKEN"));
            if let Some(token) = &file.client_token {
                assert!(format!("{token:?}").contains("redacted"));
            }
        }
        Err(e) => {
            // A value given to the token once in the file, and nowhere else, must
            // not be in the error.
            let message = e.to_string();
            let text = String::from_utf8_lossy(bytes);
            for line in text.lines() {
                let Some((_, value)) = line.split_once("HOSTBEAT_CLIENT_TOKEN=") else {
                    continue;
                };
                let value = value.trim().trim_matches(['"', '\'']);
                if value.len() >= 12 && text.matches(value).count() == 1 {
                    assert!(!message.contains(value), "{message}");
                }
            }
        }
    }
});
