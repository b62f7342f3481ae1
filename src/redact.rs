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
/// after rotations, each in its raw, percent-encoded and base64 forms (up to 27).
const CLIENT_FORMS: usize = 160;

/// How many forms of the secrets read once at start and never replaced are kept
/// (proxy passwords): a list of their own, so that no rotation pushes them out.
const FIXED_FORMS: usize = 96;

/// How many access-token forms are kept: the one in use and its predecessors of
/// the last hours (a token outlives its replacement by its remaining lifetime at
/// most), each in its forms (a JWT has 4: nothing in it is percent-encoded).
const ACCESS_FORMS: usize = 48;

/// The shortest secret remembered at all: shorter ones are test fixtures or typos,
/// and redacting a two-letter string everywhere would garble every line.
const SHORTEST: usize = 6;

/// Which kind of secret a form belongs to (they are kept apart, so that access
/// tokens never push the client token out, nor rotations a proxy's password).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The long-lived client token (or OAuth client secret) and its forms.
    Client,
    /// An access token issued by the token endpoint.
    Access,
    /// A secret read once at start and never replaced (a proxy's password).
    Fixed,
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
    fixed: VecDeque<Form>,
    /// One bit for each pair of bytes that starts a run of some form: most
    /// positions of a text start none, and are passed over at the cost of one
    /// lookup (a status file is redacted at every heartbeat).
    starts: [u64; 1024],
}

impl Known {
    /// Every form of every kind.
    fn forms(&self) -> impl Iterator<Item = &Form> {
        self.client.iter().chain(&self.access).chain(&self.fixed)
    }

    /// The list of `kind` and how many forms it keeps.
    fn list(&mut self, kind: Kind) -> (&mut VecDeque<Form>, usize) {
        match kind {
            Kind::Client => (&mut self.client, CLIENT_FORMS),
            Kind::Access => (&mut self.access, ACCESS_FORMS),
            Kind::Fixed => (&mut self.fixed, FIXED_FORMS),
        }
    }

    fn rebuild_starts(&mut self) {
        let mut starts = [0; 1024];
        for form in self.forms() {
            add_starts(&mut starts, form);
        }
        self.starts = starts;
    }

    fn may_start_run(&self, first: u8, second: u8) -> bool {
        let pair = u16::from_be_bytes([first, second]);
        self.starts[usize::from(pair) / 64] & (1 << (pair % 64)) != 0
    }

    /// The byte ranges of `bytes` that are runs of [`PARTIAL`] bytes of a form.
    fn runs<'a>(&'a self, bytes: &'a [u8]) -> impl Iterator<Item = (usize, usize)> + 'a {
        (0..bytes.len().saturating_sub(PARTIAL - 1)).filter_map(move |start| {
            if !self.may_start_run(bytes[start], bytes[start + 1]) {
                return None;
            }
            let run = &bytes[start..start + PARTIAL];
            self.forms()
                .any(|form| form.holds_run(run))
                .then_some((start, start + PARTIAL))
        })
    }
}

/// Marks the pairs of bytes that start a run of `form`.
fn add_starts(starts: &mut [u64; 1024], form: &Form) {
    for (pair, _) in form.pairs.iter().flatten() {
        starts[usize::from(*pair) / 64] |= 1 << (pair % 64);
    }
}

/// A text with its escapes undone and its white space dropped, and for each byte
/// of it, the range of the original it came from.
struct Decoded {
    bytes: Vec<u8>,
    /// Where in the original each byte starts.
    from: Vec<usize>,
    /// Where in the original each byte ends.
    to: Vec<usize>,
    /// Whether anything was undone or dropped (else the runs are the original's).
    changed: bool,
    /// Whether an escape of anything but a space or a line break was undone (else
    /// the view with white space dropped only is this one).
    unescaped: bool,
}

impl Decoded {
    /// `text` decoded (`unescape`), or with its white space (written or escaped)
    /// dropped only: an escape that text around a secret happens to start (`%66`
    /// before `66...`) would otherwise hide the secret's own bytes from the decoded
    /// view.
    fn of(text: &[u8], unescape: bool) -> Self {
        let mut decoded = Self {
            bytes: Vec::with_capacity(text.len()),
            from: Vec::with_capacity(text.len()),
            to: Vec::with_capacity(text.len()),
            changed: false,
            unescaped: false,
        };
        let mut at = 0;
        while at < text.len() {
            let (byte, width) = match text[at] {
                b'%' => hex_byte(&text[at + 1..], 2).map_or((b'%', 1), |b| (b, 3)),
                b'&' => entity(&text[at..]).unwrap_or((b'&', 1)),
                b'\\' => backslash_escape(&text[at..]).unwrap_or((b'\\', 1)),
                b => (b, 1),
            };
            // Without `unescape`, only escapes of a space or a line break are undone.
            let white = matches!(byte, b' ' | b'\n' | b'\r' | b'\t');
            let (byte, width) = if unescape || white {
                (byte, width)
            } else {
                (text[at], 1)
            };
            decoded.unescaped |= width > 1 && !white;
            // White space and control characters are dropped, written as they are
            // or escaped (`%0A`, `&#10;`, `\n`): a secret broken over lines.
            let byte = (byte > b' ' && byte != 0x7f).then_some(byte);
            if let Some(byte) = byte {
                decoded.bytes.push(byte);
                decoded.from.push(at);
                decoded.to.push(at + width);
            }
            decoded.changed |= width > 1 || byte.is_none();
            at += width;
        }
        decoded
    }
}

/// The number that `digits` hex digits at the start of `text` spell (no sign).
fn hex(text: &[u8], digits: usize) -> Option<u32> {
    let hex = text.get(..digits)?;
    if !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// The ASCII byte that `digits` hex digits at the start of `text` spell.
fn hex_byte(text: &[u8], digits: usize) -> Option<u8> {
    u8::try_from(hex(text, digits)?).ok().filter(u8::is_ascii)
}

/// An HTML character reference at the start of `text` (`&amp;`, `&plus;`,
/// `&#43;`, `&#x002B;`, ...) for an ASCII character, and its width.
fn entity(text: &[u8]) -> Option<(u8, usize)> {
    let end = text.iter().take(16).position(|b| *b == b';')?;
    let name = std::str::from_utf8(&text[1..end]).ok()?;
    let byte = match name {
        "amp" => b'&',
        "lt" => b'<',
        "gt" => b'>',
        "quot" => b'"',
        "apos" => b'\'',
        "plus" => b'+',
        "sol" => b'/',
        "equals" => b'=',
        "colon" => b':',
        "percnt" => b'%',
        "num" => b'#',
        "excl" => b'!',
        "quest" => b'?',
        "lowbar" => b'_',
        "period" => b'.',
        "comma" => b',',
        "ast" => b'*',
        "commat" => b'@',
        "dollar" => b'$',
        "Tab" => b'\t',
        "NewLine" => b'\n',
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            u8::try_from(code).ok().filter(u8::is_ascii)?
        }
    };
    Some((byte, end + 1))
}

/// A backslash escape at the start of `text`, as JSON, JavaScript, Python or a
/// shell write one (`\u002b`, `\x2b`, `\/`, `\"`, `\n`, ...), for an ASCII
/// character, and its width.
fn backslash_escape(text: &[u8]) -> Option<(u8, usize)> {
    match text.get(1)? {
        b'u' => hex_byte(&text[2..], 4).map(|b| (b, 6)),
        b'x' => hex_byte(&text[2..], 2).map(|b| (b, 4)),
        b'n' => Some((b'\n', 2)),
        b'r' => Some((b'\r', 2)),
        b't' => Some((b'\t', 2)),
        b'b' => Some((0x08, 2)),
        b'f' => Some((0x0c, 2)),
        b @ (b'/' | b'"' | b'\'' | b'\\') => Some((*b, 2)),
        _ => None,
    }
}

/// `text` with its percent-escapes undone (as an HTTP client decodes the user and
/// password of a proxy URL); an escape that is not one stays as it is.
pub fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escaped = (bytes[at] == b'%')
            .then(|| hex(&bytes[at + 1..], 2))
            .flatten()
            .and_then(|byte| u8::try_from(byte).ok());
        if let Some(byte) = escaped {
            out.push(byte);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

static KNOWN: Mutex<Known> = Mutex::new(Known {
    client: VecDeque::new(),
    access: VecDeque::new(),
    fixed: VecDeque::new(),
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
    // The secret as the decoded scan sees it, when it holds text that looks like
    // an escape (`%41`, `&amp;`, `\x41`) or white space itself.
    let decoded = String::from_utf8_lossy(&Decoded::of(secret.as_bytes(), true).bytes).into_owned();
    if !forms.contains(&decoded) {
        forms.push(decoded);
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
    let (list, limit) = known.list(kind);
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
    // A new form only adds starts; only one that leaves takes some away.
    let form = Form::new(text, partial);
    add_starts(&mut known.starts, &form);
    known.list(kind).0.push_back(form);
    evicted
}

/// `text` with every known secret, and every run of [`PARTIAL`] bytes of one,
/// replaced by [`REDACTED`]. Borrowed when there is nothing to replace, which is
/// nearly always.
pub fn redact(text: &str) -> Cow<'_, str> {
    let known = known();
    if known.forms().next().is_none() {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    // Byte ranges of `text` to replace.
    let mut hits: Vec<(usize, usize)> = Vec::new();
    // Whole forms: only those the run scan below does not cover (a form with runs
    // is covered whole by its own runs), so that a status file's redaction at
    // every heartbeat is one pass over its bytes, not one per form.
    for form in known.forms().filter(|form| form.pairs.is_none()) {
        let secret = form.text.as_bytes();
        let mut from = 0;
        while let Some(at) = find(&bytes[from..], secret) {
            hits.push((from + at, from + at + secret.len()));
            from += at + secret.len();
        }
    }
    // Runs, in the text as it is; in the text decoded: every escape a server or
    // a file may write a secret's characters in (percent-encoding of any of them,
    // in either case; HTML's entities; JSON's `\u` escapes) undone, and white space
    // and control characters dropped (a secret broken over lines); and in the text
    // with its white space dropped only.
    for (start, end) in known.runs(bytes) {
        hits.push((start, end));
    }
    for unescape in [true, false] {
        let decoded = Decoded::of(bytes, unescape);
        if !decoded.changed {
            // Nothing undone or dropped: its runs are the text's.
            break;
        }
        for (start, end) in known.runs(&decoded.bytes) {
            hits.push((decoded.from[start], decoded.to[end - 1]));
        }
        if !decoded.unescaped {
            // Only white space dropped: the second view would be this one.
            break;
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

    /// An echo need not be accidental in one known encoding: a server may escape
    /// any of a secret's characters in its own way, or break it over lines.
    #[test]
    fn a_secret_escaped_any_way_or_broken_over_lines_is_redacted() {
        let secret = "Ab1+Cd2/Ef3=Gh4&Ij5<Kl6>Mn7+Op8/Qr9";
        remember(secret, Kind::Client);
        let chunks: Vec<&str> = secret
            .as_bytes()
            .chunks(9)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        for text in [
            // Broken every 9 bytes, by new lines or spaces.
            format!("error: {}", chunks.join("\n")),
            format!("error: {}", chunks.join(" ")),
            // HTML's entities.
            "token Ab1+Cd2/Ef3=Gh4&amp;Ij5&lt;Kl6&gt;Mn7+Op8/Qr9 refused".to_owned(),
            "&#65;b1&#x2B;Cd2/Ef3=Gh4&#38;Ij5<Kl6>Mn7+Op8/Qr9".to_owned(),
            // Python's quote (`/` left), Go's PathEscape (`+`, `=`, `&` left).
            "Location: /x/Ab1%2BCd2/Ef3%3DGh4%26Ij5%3CKl6%3EMn7%2BOp8/Qr9".to_owned(),
            "Location: /x/Ab1+Cd2%2FEf3=Gh4&Ij5%3CKl6%3EMn7+Op8%2FQr9".to_owned(),
            // JSON's escapes.
            r#"{"detail":"Ab1\u002bCd2\/Ef3\u003dGh4\u0026Ij5\u003cKl6\u003eMn7+Op8\/Qr9"}"#
                .to_owned(),
            // Broken by escaped white space, and other languages' escapes.
            format!("error: {}", chunks.join("%0A")),
            format!("error: {}", chunks.join("&#10;")),
            format!("error: {}", chunks.join("\\n")),
            format!("error: {}", chunks.join("\\u0020")),
            "Ab1\\x2bCd2&sol;Ef3&equals;Gh4&amp;Ij5&#x000003C;Kl6>Mn7+Op8/Qr9".to_owned(),
        ] {
            let out = redact(&text);
            assert!(out.contains(REDACTED), "{text} -> {out}");
            for chunk in &chunks {
                assert!(!out.contains(chunk), "{chunk:?} left in {out}");
            }
        }
        assert_eq!(redact("a & b < c"), "a & b < c");
    }

    /// A secret that holds what looks like an escape is found broken over lines
    /// too: its decoded form is remembered with it.
    #[test]
    fn a_secret_that_looks_escaped_is_found_broken_over_lines() {
        let secret = "aB3dE6gH9%41jK2mN5pQ8sT";
        remember(secret, Kind::Client);
        let out = redact("bad token: aB3dE6gH\n9%41jK2mN\n5pQ8sT");
        let squeezed: String = out.split_whitespace().collect();
        for run in secret.as_bytes().windows(PARTIAL) {
            let run = std::str::from_utf8(run).unwrap();
            assert!(!squeezed.contains(run), "{run:?} left in {out}");
        }
    }

    #[test]
    fn percent_decoding_undoes_escapes_and_keeps_what_is_not_one() {
        assert_eq!(percent_decoded("pa%24%24w0rd%21"), "pa$$w0rd!");
        assert_eq!(percent_decoded("100%+%zz%4"), "100%+%zz%4");
    }

    #[test]
    fn text_around_a_secret_keeps_its_characters() {
        remember("rd-ascii-neighbours-77", Kind::Access);
        let out = redact("é rd-ascii-neighbours-77 ü, ürd-ascii-nei");
        assert_eq!(out, "é [redacted] ü, ü[redacted]");
    }
}
