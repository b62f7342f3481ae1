//! The TOML config file (`/etc/hostbeat/hostbeat.toml`), error path included:
//! whatever text surrounds a `client_token` line, in whichever of its spellings
//! (quoted or not, a quote left open, a multi-line string), no error quotes a
//! piece of the token and no other setting (which is logged) carries one.
#![no_main]

use std::path::Path;

use hostbeat::config::parse_config_file;
use hostbeat::redact::PARTIAL;
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "ct_FuZzCoNfIg-Hq4Wd8Kx2Ns6Lp9Vz";

fuzz_target!(|bytes: &[u8]| {
    let [spelling, split, rest @ ..] = bytes else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let runs: Vec<&str> = SECRET
        .as_bytes()
        .windows(PARTIAL)
        .map(|run| std::str::from_utf8(run).expect("ASCII"))
        .collect();
    // The fuzzer may copy the secret into the text it writes: then the text, not
    // the parser, holds it.
    if runs.iter().any(|run| text.contains(run)) {
        return;
    }
    let line = match spelling % 8 {
        0 => format!("client_token = \"{SECRET}\""),
        1 => format!("client_token = {SECRET}"),
        2 => format!("client_token = \"{SECRET}"),
        3 => format!("client_token = '{SECRET}'"),
        4 => format!("client_token = \"\"\"{SECRET}"),
        5 => format!("\"client_token\" = \"{SECRET}\""),
        6 => format!("CLIENT_TOKEN = '{SECRET}'"),
        _ => format!("  client_token='''{SECRET}'''  # rotated"),
    };
    let mut at = usize::from(*split) % (text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let file = format!("{}\n{line}\n{}", &text[..at], &text[at..]);
    let holds_secret = |said: &str| runs.iter().find(|run| said.contains(*run)).copied();
    match parse_config_file(Path::new("/etc/hostbeat/hostbeat.toml"), &file) {
        Ok(pairs) => {
            for (key, value) in pairs {
                // An unknown key is refused by the loader, naming the key only.
                if key != "client_token" && key != "CLIENT_TOKEN" {
                    assert_eq!(holds_secret(&key), None, "in the key {key:?}");
                    assert_eq!(holds_secret(&value), None, "in {key} = {value:?}");
                }
            }
        }
        Err(e) => {
            let said = format!("{e} {e:?}");
            assert_eq!(holds_secret(&said), None, "{said}");
        }
    }
});
