//! The last line of defence (`hostbeat::redact`): whatever text surrounds a secret,
//! and whatever part of it a text holds (raw, percent-encoded, HTML-escaped or
//! broken over lines), no run of `PARTIAL` bytes of the secret (raw or
//! percent-encoded) is left in what comes out, white space aside.
#![no_main]

use hostbeat::redact::{Kind, PARTIAL, redact, remember};
use libfuzzer_sys::fuzz_target;

// The tests' own encoder, independent of the crate's.
#[allow(dead_code)]
#[path = "../../tests/common/scan.rs"]
mod scan;
use scan::url_encoded;

/// Visible ASCII a bearer token may hold (no brackets: `[redacted]` stays apart).
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=";

fuzz_target!(|bytes: &[u8]| {
    let [length, cut_from, cut_to, at, rest @ ..] = bytes else {
        return;
    };
    let length = 16 + usize::from(*length % 48);
    if rest.len() < length {
        return;
    }
    let (seed, text) = rest.split_at(length);
    let secret: String = seed
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    remember(&secret, Kind::Access);
    let encoded: String = url_encoded(&secret);
    let text = String::from_utf8_lossy(text);
    // A piece of the secret, in one of its forms, somewhere in the text: raw,
    // percent-encoded, HTML-escaped, or broken every 9 bytes by a line break,
    // written as it is or escaped.
    let html = secret
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let broken = secret
        .as_bytes()
        .chunks(9)
        .map(|c| std::str::from_utf8(c).expect("ASCII"))
        .collect::<Vec<_>>()
        .join(["\n", "%0A", "&#10;", "\\n"][usize::from(cut_from / 4) % 4]);
    let form = match cut_from % 4 {
        0 => &secret,
        1 => &encoded,
        2 => &html,
        _ => &broken,
    };
    let from = usize::from(*cut_from) % form.len();
    let to = (from + usize::from(*cut_to)).min(form.len());
    let mut at = usize::from(*at) % (text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let composed = format!("{}{}{}", &text[..at], &form[from..to], &text[at..]);
    let out = redact(&composed);
    // Where the text around the piece holds no `%`, `&` or `\`, no escape can
    // form across its edge (`%0` before a secret's `9` reads as the escape `%09`),
    // and the squeezed text below is exactly what the redactor's views see.
    let escape_like = text.contains(['%', '&', '\\']);
    // Line breaks dropped, written or escaped, as the redactor drops them.
    let squeezed: String = out
        .replace("%0A", "")
        .replace("&#10;", "")
        .replace("\\n", "")
        .chars()
        .filter(|c| !(c.is_ascii_control() || *c == ' '))
        .collect();
    // No run of the secret's bytes, raw or encoded, as the text stands; and none
    // of its raw bytes once line breaks are dropped. (Broken by a line break, an
    // encoded run is judged by the secret bytes it spells: "A%7E%7E%7E" is four.)
    for form in [&secret, &encoded] {
        for run in form.as_bytes().windows(PARTIAL) {
            let run = std::str::from_utf8(run).expect("ASCII");
            assert!(!out.contains(run), "{run:?} left in {out:?}");
            if form == &secret && !escape_like {
                assert!(!squeezed.contains(run), "{run:?} left in {out:?}");
            }
        }
    }
});

