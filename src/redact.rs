//! The last line of defence for secrets: every text the process puts out (journal
//! and stderr lines, the status file, the metrics, `check`'s report, a panic's
//! message) passes through [`redact`], which knows every form of every client and
//! access token this process has held: raw, URL-encoded (as in a form body or a
//! query), and the base64 of HTTP Basic's `client_id:secret`. The causes are fixed
//! where they are (a server's echo is scrubbed before it is cut short, a parser's
//! error is not quoted); this catches what a new cause would let through.
//!
//! Besides whole forms, any run of [`PARTIAL`] or more bytes of a raw or
//! URL-encoded secret is redacted: a secret cut in the middle of a log line is
//! still a secret.
//!
//! Invariants: this is the one piece of process-wide state in the crate, because an
//! output anywhere must know secrets learnt anywhere; it only grows by
//! [`remember`], holds a bounded number of forms of each kind (`CLIENT_FORMS`,
//! `ACCESS_FORMS`; the oldest go first, and the kinds are kept apart so that
//! refreshes never push the client token out), and never hands a form out.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Mutex;

use zeroize::Zeroizing;

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// The shortest run of a secret's bytes that is redacted on its own. Shorter runs
/// occur by chance in ordinary text; a secret shorter than this is matched whole.
pub const PARTIAL: usize = 10;

/// How many client-token forms are kept: the token in use and a few predecessors
/// after rotations, each in its raw, percent-encoded and base64 forms (up to 27),
/// and proxy passwords.
const CLIENT_FORMS: usize = 160;

/// How many access-token forms are kept: the one in use and its predecessors of
/// the last hours (a token outlives its replacement by its remaining lifetime at
/// most), each in its forms (a JWT has 4: nothing in it is percent-encoded).
const ACCESS_FORMS: usize = 48;

/// The shortest secret remembered at all: shorter ones are test fixtures or typos,
/// and redacting a two-letter string everywhere would garble every line.
const SHORTEST: usize = 6;

/// Which kind of secret a form belongs to (they are kept apart, so that access
/// tokens never push the client token out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The long-lived client token (or OAuth client secret) and its forms.
    Client,
    /// An access token issued by the token endpoint.
    Access,
}

/// One form of a secret and, when runs of it are redacted too, where each pair of
/// bytes occurs in it (sorted), so that a run is found without scanning the form
/// for every position of a text.
struct Form {
    text: Zeroizing<String>,
    pairs: Option<Vec<(u16, u32)>>,
}

impl Form {
    fn new(text: &str, partial: bool) -> Self {
        let pairs = (partial && text.len() > PARTIAL).then(|| {
            let mut pairs: Vec<(u16, u32)> = text
                .as_bytes()
                .windows(2)
                .enumerate()
                .map(|(at, w)| {
                    (
                        u16::from_be_bytes([w[0], w[1]]),
                        u32::try_from(at).unwrap_or(u32::MAX),
                    )
                })
                .collect();
            pairs.sort_unstable();
            pairs
        });
        Self {
            text: Zeroizing::new(text.to_owned()),
            pairs,
        }
    }

    /// Whether `run` (of [`PARTIAL`] bytes) occurs in this form.
    fn holds_run(&self, run: &[u8]) -> bool {
        let Some(pairs) = &self.pairs else {
            return false;
        };
        let secret = self.text.as_bytes();
        let first = u16::from_be_bytes([run[0], run[1]]);
        let from = pairs.partition_point(|(pair, _)| *pair < first);
        pairs[from..]
            .iter()
            .take_while(|(pair, _)| *pair == first)
            .any(|(_, at)| {
                let at = *at as usize;
                secret.get(at..at + run.len()) == Some(run)
            })
    }
}

struct Known {
    client: VecDeque<Form>,
    access: VecDeque<Form>,
    /// One bit for each pair of bytes that starts a run of some form: most
    /// positions of a text start none, and are passed over at the cost of one
    /// lookup (a status file is redacted at every heartbeat).
    starts: [u64; 1024],
}

impl Known {
    fn rebuild_starts(&mut self) {
        self.starts = [0; 1024];
        for form in self.client.iter().chain(&self.access) {
            for (pair, _) in form.pairs.iter().flatten() {
                self.starts[usize::from(*pair) / 64] |= 1 << (pair % 64);
            }
        }
    }

    fn may_start_run(&self, first: u8, second: u8) -> bool {
        let pair = u16::from_be_bytes([first, second]);
        self.starts[usize::from(pair) / 64] & (1 << (pair % 64)) != 0
    }
}

static KNOWN: Mutex<Known> = Mutex::new(Known {
    client: VecDeque::new(),
    access: VecDeque::new(),
    starts: [0; 1024],
});

fn known() -> std::sync::MutexGuard<'static, Known> {
    // A panic while holding the lock cannot leave the lists inconsistent.
    KNOWN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Learns `secret` of `kind` in every form a server or a file could write it in,
/// whole and in runs: raw; percent-encoded as a form (space as `+`) or a path
/// (`%20`), with upper- or lower-case hex, with or without `~` encoded; and the
/// base64 of each, at each of the three alignments a prefix (like Basic's
/// `client_id:`) can give it, so that a base64 text holding it is found whatever
/// came before.
pub fn remember(secret: &str, kind: Kind) {
    let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let mut forms = vec![secret.to_owned()];
    for encoded in [form.clone(), form.replace('+', "%20")] {
        let tilde = encoded.replace("%7E", "~");
        for variant in [
            encoded.clone(),
            lower_hex(&encoded),
            tilde.clone(),
            lower_hex(&tilde),
        ] {
            if !forms.contains(&variant) {
                forms.push(variant);
            }
        }
    }
    for text in forms.clone() {
        for shift in 0..3 {
            let core = base64_core(text.as_bytes(), shift);
            if !core.is_empty() && !forms.contains(&core) {
                forms.push(core);
            }
        }
    }
    let mut known = known();
    let mut evicted = false;
    for text in forms {
        evicted |= remember_form(&mut known, &text, kind, true);
    }
    if evicted {
        known.rebuild_starts();
    }
}

/// `%2B` -> `%2b`.
fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut chars = encoded.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            out.extend(chars.by_ref().take(2).map(|h| h.to_ascii_lowercase()));
        }
    }
    out
}

/// The base64 characters that encode `bytes` and nothing else when `shift` bytes
/// of anything come before them (and anything after).
fn base64_core(bytes: &[u8], shift: usize) -> String {
    use base64::Engine as _;
    let mut padded = vec![0u8; shift];
    padded.extend_from_slice(bytes);
    let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&padded);
    // The first characters carry bits of the bytes before; the last may carry
    // bits of the bytes after.
    let skip = (shift * 8).div_ceil(6);
    let whole = padded.len() * 8 / 6;
    encoded.get(skip..whole).unwrap_or_default().to_owned()
}

/// Learns one more form of a secret of `kind` (like HTTP Basic's base64 of
/// `client_id:secret`), redacted whole only: runs of an encoding can encode bytes
/// that are not secret (the client id).
pub fn remember_encoded(form: &str, kind: Kind) {
    let mut known = known();
    if remember_form(&mut known, form, kind, false) {
        known.rebuild_starts();
    }
}

/// Adds one form; whether an older one had to leave (the caller then rebuilds the
/// starts, once for all the forms it adds).
fn remember_form(known: &mut Known, text: &str, kind: Kind, partial: bool) -> bool {
    if text.len() < SHORTEST {
        return false;
    }
    let (list, limit) = match kind {
        Kind::Client => (&mut known.client, CLIENT_FORMS),
        Kind::Access => (&mut known.access, ACCESS_FORMS),
    };
    if let Some(at) = list.iter().position(|f| *f.text == text) {
        // Known already: it moves to the young end, so the one in use stays.
        let form = list.remove(at).expect("found");
        list.push_back(form);
        return false;
    }
    let evicted = list.len() == limit;
    if evicted {
        list.pop_front();
    }
    let form = Form::new(text, partial);
    // A new form only adds starts; only one that leaves takes some away.
    for (pair, _) in form.pairs.iter().flatten() {
        known.starts[usize::from(*pair) / 64] |= 1 << (pair % 64);
    }
    match kind {
        Kind::Client => known.client.push_back(form),
        Kind::Access => known.access.push_back(form),
    }
    evicted
}

/// `text` with every known secret, and every run of [`PARTIAL`] bytes of one,
/// replaced by [`REDACTED`]. Borrowed when there is nothing to replace, which is
/// nearly always.
pub fn redact(text: &str) -> Cow<'_, str> {
    let known = known();
    let bytes = text.as_bytes();
    // Byte ranges of `text` to replace.
    let mut hits: Vec<(usize, usize)> = Vec::new();
    // Whole forms: only those the run scan below does not cover (a form with runs
    // is covered whole by its own runs), so that a status file's redaction at
    // every heartbeat is one pass over its bytes, not one per form.
    for form in known
        .client
        .iter()
        .chain(&known.access)
        .filter(|form| form.pairs.is_none())
    {
        let secret = form.text.as_bytes();
        let mut from = 0;
        while let Some(at) = find(&bytes[from..], secret) {
            hits.push((from + at, from + at + secret.len()));
            from += at + secret.len();
        }
    }
    for start in 0..bytes.len().saturating_sub(PARTIAL - 1) {
        if !known.may_start_run(bytes[start], bytes[start + 1]) {
            continue;
        }
        let run = &bytes[start..start + PARTIAL];
        if known
            .client
            .iter()
            .chain(&known.access)
            .any(|form| form.holds_run(run))
        {
            hits.push((start, start + PARTIAL));
        }
    }
    drop(known);
    if hits.is_empty() {
        return Cow::Borrowed(text);
    }
    hits.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut iter = hits.into_iter().peekable();
    while let Some((start, mut end)) = iter.next() {
        // Overlapping and adjacent runs are one redaction.
        while let Some(&(next_start, next_end)) = iter.peek() {
            if next_start > end {
                break;
            }
            end = end.max(next_end);
            iter.next();
        }
        if start >= at {
            out.push_str(lossless(text, at, start));
            out.push_str(REDACTED);
            at = end;
        } else if end > at {
            at = end;
        }
    }
    out.push_str(lossless(text, at, text.len()));
    Cow::Owned(out)
}

/// `text[start..end]`, widened to whole characters: a secret is ASCII, but the text
/// around it need not be, and a run may end inside a character of it.
fn lossless(text: &str, mut start: usize, mut end: usize) -> &str {
    while start < text.len() && !text.is_char_boundary(start) {
        start += 1;
    }
    while end < text.len() && !text.is_char_boundary(end) {
        end += 1;
    }
    &text[start.min(end)..end]
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_and_every_long_run_is_redacted() {
        let secret = "rd-T0k+en/Secr=et~ABCDEF12345";
        remember(secret, Kind::Client);
        let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        for text in [
            format!("echo: {secret}"),
            format!("client_secret={encoded}&grant_type=client_credentials"),
            format!("cut short: {}", &secret[..15]),
            format!("the tail: {}...", &secret[12..]),
        ] {
            let out = redact(&text);
            assert!(out.contains(REDACTED), "{text} -> {out}");
            for run in secret.as_bytes().windows(PARTIAL) {
                let run = std::str::from_utf8(run).unwrap();
                assert!(!out.contains(run), "{run:?} left in {out}");
            }
        }
        assert_eq!(redact("nothing to see"), "nothing to see");
    }

    #[test]
    fn a_basic_form_is_redacted_whole_and_its_client_id_part_left() {
        remember_encoded("aG9zdGJlYXQ6cmQtYmFzaWMtc2VjcmV0LTk5", Kind::Client);
        let out = redact("Authorization: Basic aG9zdGJlYXQ6cmQtYmFzaWMtc2VjcmV0LTk5 seen");
        assert_eq!(out, "Authorization: Basic [redacted] seen");
        assert_eq!(redact("aG9zdGJlYXQ6 alone"), "aG9zdGJlYXQ6 alone");
    }

    #[test]
    fn any_encoding_of_a_secret_is_found_after_any_prefix() {
        use base64::Engine as _;
        let secret = "rd-Enc+od/ed=tok~en0987";
        remember(secret, Kind::Client);
        let lower = "rd-Enc%2bod%2fed%3dtok~en0987";
        let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        for text in [
            format!("lower {lower}"),
            format!("Basic {}", b64(&format!("hostbeat:{lower}"))),
            format!("Basic {}", b64(&format!("an-id:{secret}"))),
            format!("b64 {}", b64(secret)),
            format!("x{}", b64(&format!("ab{secret}"))),
        ] {
            let out = redact(&text);
            assert!(out.contains(REDACTED), "{text} -> {out}");
        }
    }

    #[test]
    fn text_around_a_secret_keeps_its_characters() {
        remember("rd-ascii-neighbours-77", Kind::Access);
        let out = redact("é rd-ascii-neighbours-77 ü, ürd-ascii-nei");
        assert_eq!(out, "é [redacted] ü, ü[redacted]");
    }
}
