//! Failure classification (protocol.md section 3): every failed call becomes one
//! [`FailureClass`], from the HTTP status, the RFC 6750 `WWW-Authenticate: Bearer
//! error="..."` challenge and the JSON `error` fields, matched case-insensitively
//! against what real backends send.
//!
//! Pure functions of their inputs, so that every string in the protocol's table is a
//! unit test. Invariant: nothing here returns a body whole; details are the server's
//! short error fields, cleaned and truncated.

use std::time::{Duration, SystemTime};

/// What went wrong, as far as the agent's reaction is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// The server says no token was sent.
    MissingToken,
    /// The access token expired: refresh and retry once.
    TokenExpired,
    /// The credential is not accepted: re-read the env file, then the auth schedule.
    CredentialRejected,
    /// The client is disabled on the server: the auth schedule until it is enabled.
    ClientInactive,
    /// The server does not know this agent: register again.
    UnknownAgent,
    /// 429, or 503 with `Retry-After`: wait as asked.
    RateLimited,
    /// Other 5xx.
    ServerError,
    /// No answer in time.
    Timeout,
    /// Connection refused, reset or closed.
    Connect,
    /// TLS handshake or certificate failure.
    Tls,
    /// The name did not resolve.
    Dns,
    /// An answer the agent cannot use (wrong shape, too large, unexpected status).
    Protocol,
}

impl FailureClass {
    /// The reason name used in logs (`HOSTBEAT_REASON`).
    pub fn reason(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::TokenExpired => "token_expired",
            Self::CredentialRejected => "credential_rejected",
            Self::ClientInactive => "client_inactive",
            Self::UnknownAgent => "unknown_agent",
            Self::RateLimited => "rate_limited",
            Self::ServerError => "server_error",
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::Dns => "dns",
            Self::Protocol => "protocol",
        }
    }

    /// Every class, in the order of the declaration.
    pub fn all() -> impl Iterator<Item = Self> + Clone {
        std::iter::successors(Some(Self::MissingToken), |class| class.next())
    }

    /// The class declared after this one. The compiler asks for an arm for a new
    /// class here; the class before it must then point at it, or [`all`](Self::all)
    /// (and with it the metrics' auth reasons and the failure table's test, which
    /// checks that every class has a row) will not see it.
    fn next(self) -> Option<Self> {
        match self {
            Self::MissingToken => Some(Self::TokenExpired),
            Self::TokenExpired => Some(Self::CredentialRejected),
            Self::CredentialRejected => Some(Self::ClientInactive),
            Self::ClientInactive => Some(Self::UnknownAgent),
            Self::UnknownAgent => Some(Self::RateLimited),
            Self::RateLimited => Some(Self::ServerError),
            Self::ServerError => Some(Self::Timeout),
            Self::Timeout => Some(Self::Connect),
            Self::Connect => Some(Self::Tls),
            Self::Tls => Some(Self::Dns),
            Self::Dns => Some(Self::Protocol),
            Self::Protocol => None,
        }
    }

    /// What it means, for a person.
    pub fn describe(self) -> &'static str {
        match self {
            Self::MissingToken => "the server says no token was sent",
            Self::TokenExpired => "the access token expired",
            Self::CredentialRejected => "the client token was rejected",
            Self::ClientInactive => "the client is not active on the control plane",
            Self::UnknownAgent => "the control plane does not know this agent",
            Self::RateLimited => "the control plane asked for a pause",
            Self::ServerError => "the control plane failed",
            Self::Timeout => "no answer in time",
            Self::Connect => "could not connect",
            Self::Tls => "TLS failed",
            Self::Dns => "the name did not resolve",
            Self::Protocol => "the answer could not be used",
        }
    }
}

/// The call that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// The OAuth token endpoint.
    Token,
    /// Registration.
    Register,
    /// Heartbeat.
    Heartbeat,
    /// Credential validation.
    Validate,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Self; 4] = [Self::Token, Self::Register, Self::Heartbeat, Self::Validate];

    /// Its name in logs (`HOSTBEAT_ENDPOINT`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Register => "register",
            Self::Heartbeat => "heartbeat",
            Self::Validate => "validate",
        }
    }
}

/// A non-success answer, as received.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// The HTTP status code.
    pub status: u16,
    /// The `WWW-Authenticate` header, if any.
    pub www_authenticate: Option<&'a str>,
    /// The body (already bounded by the body limit).
    pub body: &'a [u8],
    /// The parsed `Retry-After`, if any.
    pub retry_after: Option<Duration>,
}

/// Classifies a non-success answer; returns the class and the server's own words.
pub fn classify_answer(endpoint: Endpoint, answer: &Answer<'_>) -> (FailureClass, String) {
    let challenge = answer.www_authenticate.map(parse_bearer_challenge);
    let body = ErrorFields::parse(answer.body);
    let code = body
        .error
        .clone()
        .or_else(|| challenge.as_ref().and_then(|c| c.error.clone()))
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut words = body.text();
    if let Some(c) = &challenge {
        for part in [&c.error, &c.description].into_iter().flatten() {
            words.push(' ');
            words.push_str(part);
        }
    }
    let words = words.to_ascii_lowercase();
    let says = |needles: &[&str]| needles.iter().any(|n| words.contains(n));
    let inactive = || says(&["inactive", "not active", "deactivated", "disabled"]);

    let class = match (endpoint, answer.status) {
        (_, 429) => FailureClass::RateLimited,
        (_, 503) if answer.retry_after.is_some() => FailureClass::RateLimited,
        (_, 500..=599) => FailureClass::ServerError,
        (Endpoint::Token, 400 | 401) if inactive() => FailureClass::ClientInactive,
        (Endpoint::Token, 400 | 401)
            if matches!(
                code.as_str(),
                "invalid_request" | "unsupported_grant_type" | "invalid_scope"
            ) && !says(&["client"]) =>
        {
            FailureClass::Protocol
        }
        (Endpoint::Token, 400 | 401) => FailureClass::CredentialRejected,
        (_, 401) => {
            let expired = code == "token_expired"
                || says(&[
                    "token_expired",
                    "tokenexpired",
                    "token expired",
                    "jwt expired",
                ])
                || (code == "invalid_token" && says(&["expired"]));
            let no_error_code =
                body.error.is_none() && challenge.as_ref().is_some_and(|c| c.error.is_none());
            if expired {
                FailureClass::TokenExpired
            } else if code == "missing_token"
                || says(&["no token provided", "missing token", "missing_token", "token missing"])
                // RFC 6750 3.1: a challenge without an error code answers a request
                // that carried no credentials at all.
                || no_error_code
            {
                FailureClass::MissingToken
            } else if inactive() {
                FailureClass::ClientInactive
            } else {
                FailureClass::CredentialRejected
            }
        }
        (_, 403) => FailureClass::ClientInactive,
        (Endpoint::Heartbeat, 404 | 410) => FailureClass::UnknownAgent,
        _ => FailureClass::Protocol,
    };
    let detail = body.summary().unwrap_or_else(|| match answer.body.len() {
        0 => "empty body".to_owned(),
        n => format!("{n}-byte body that is not a JSON error"),
    });
    (class, detail)
}

/// Classifies a failure to get any answer at all.
pub fn classify_transport(error: &reqwest::Error) -> FailureClass {
    let chain = error_chain(error).to_ascii_lowercase();
    if error.is_timeout() || chain.contains("timed out") {
        FailureClass::Timeout
    } else if chain.contains("dns error")
        || chain.contains("failed to lookup address")
        || chain.contains("name or service not known")
        || chain.contains("no address associated")
    {
        FailureClass::Dns
    } else if chain.contains("certificate")
        || chain.contains("tls")
        || chain.contains("handshake")
        || chain.contains("alert")
    {
        FailureClass::Tls
    } else {
        FailureClass::Connect
    }
}

/// A failure to get any answer, in the few words an operator needs ("connection
/// refused", "no route to host", "timed out after 10s (request_timeout)"), for the
/// classes where the library's chain of wrappers ("error sending request: client
/// error (Connect): tcp connect error: ...") says nothing more. A name that did not
/// resolve and a refused TLS handshake keep the chain: their inner words are the
/// diagnosis (and `check` reads rustls' words from it).
pub fn transport_detail(
    error: &reqwest::Error,
    class: FailureClass,
    connect_timeout: Duration,
    request_timeout: Duration,
) -> String {
    let shown = crate::duration::show;
    match class {
        FailureClass::Timeout if error.is_connect() => format!(
            "no connection within {} (connect_timeout)",
            shown(connect_timeout)
        ),
        FailureClass::Timeout => format!(
            "timed out after {} (request_timeout)",
            shown(request_timeout)
        ),
        FailureClass::Connect => innermost_io(error).unwrap_or_else(|| error_chain(error)),
        _ => error_chain(error),
    }
}

/// The innermost I/O error of `error`'s sources, in words.
fn innermost_io(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut found = None;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(inner) = source {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            found = Some(io);
        }
        source = inner.source();
    }
    Some(io_words(found?))
}

/// An I/O error in the few words an operator needs ("connection refused"), the
/// OS's own words without the errno otherwise.
pub fn io_words(io: &std::io::Error) -> String {
    match io.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        std::io::ErrorKind::ConnectionReset => "connection reset by the server".to_owned(),
        std::io::ErrorKind::ConnectionAborted => "connection aborted".to_owned(),
        std::io::ErrorKind::HostUnreachable => "no route to host".to_owned(),
        std::io::ErrorKind::NetworkUnreachable => "network unreachable".to_owned(),
        std::io::ErrorKind::UnexpectedEof => "the server closed the connection".to_owned(),
        std::io::ErrorKind::BrokenPipe => "the connection was closed while sending".to_owned(),
        _ => {
            let text = io.to_string();
            text.split(" (os error").next().unwrap_or(&text).to_owned()
        }
    }
}

/// The error and its sources, "outer: inner: innermost", without repeats.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 10.2.3), from `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The parts of an RFC 6750 challenge that classification needs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BearerChallenge {
    /// `error="..."`.
    pub error: Option<String>,
    /// `error_description="..."`.
    pub description: Option<String>,
}

/// Parses `Bearer realm="x", error="invalid_token", error_description="..."`.
pub fn parse_bearer_challenge(header: &str) -> BearerChallenge {
    let mut challenge = BearerChallenge::default();
    let Some(params) = header
        .trim()
        .get(..6)
        .filter(|s| s.eq_ignore_ascii_case("bearer"))
        .map(|_| &header.trim()[6..])
    else {
        return challenge;
    };
    let mut rest = params;
    while let Some(eq) = rest.find('=') {
        let name = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = rest[eq + 1..].trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim(), &after[end..])
        };
        match name.as_str() {
            "error" => challenge.error = Some(value.to_owned()),
            "error_description" => challenge.description = Some(value.to_owned()),
            _ => {}
        }
        rest = next;
    }
    challenge
}

/// The short text fields of a JSON error body.
#[derive(Debug, Default)]
struct ErrorFields {
    error: Option<String>,
    others: Vec<String>,
}

impl ErrorFields {
    fn parse(body: &[u8]) -> Self {
        let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(body) else {
            return Self::default();
        };
        let text = |key: &str| match map.get(key) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        Self {
            error: text("error"),
            others: ["error_description", "detail", "message", "msg"]
                .iter()
                .filter_map(|k| text(k))
                .collect(),
        }
    }

    fn text(&self) -> String {
        self.error
            .iter()
            .chain(&self.others)
            .cloned()
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `error: description`, cleaned for a log line and truncated.
    fn summary(&self) -> Option<String> {
        let joined = self
            .error
            .iter()
            .chain(&self.others)
            .cloned()
            .collect::<Vec<_>>()
            .join(": ");
        (!joined.is_empty()).then(|| clean_for_log(&joined, 200))
    }
}

/// Printable, single-line, at most `max` characters.
pub fn clean_for_log(text: &str, max: usize) -> String {
    // Secrets out before cutting: a secret cut in half no longer matches whole.
    let text = crate::redact::redact(text);
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(endpoint: Endpoint, status: u16, www: Option<&str>, body: &str) -> FailureClass {
        classify_answer(
            endpoint,
            &Answer {
                status,
                www_authenticate: www,
                body: body.as_bytes(),
                retry_after: None,
            },
        )
        .0
    }

    use Endpoint::{Heartbeat, Register, Token};
    use FailureClass as C;

    #[test]
    fn expired_access_tokens() {
        for (www, body) in [
            (None, r#"{"error":"token_expired"}"#),
            (None, r#"{"error":"TOKEN_EXPIRED"}"#),
            (
                Some(
                    r#"Bearer error="invalid_token", error_description="The access token expired""#,
                ),
                "",
            ),
            (
                None,
                r#"{"error":"invalid_token","error_description":"Token has expired"}"#,
            ),
            (
                None,
                r#"{"error":"TokenExpiredError","message":"jwt expired"}"#,
            ),
        ] {
            assert_eq!(
                classify(Heartbeat, 401, www, body),
                C::TokenExpired,
                "{www:?} {body}"
            );
        }
    }

    #[test]
    fn rejected_credentials() {
        for (www, body) in [
            (Some(r#"Bearer error="invalid_token""#), ""),
            (None, r#"{"error":"Invalid client token"}"#),
            (None, r#"{"error":"Invalid token"}"#),
            (None, r#"{"detail":"Invalid token"}"#),
            (None, ""),
        ] {
            assert_eq!(
                classify(Heartbeat, 401, www, body),
                C::CredentialRejected,
                "{www:?} {body}"
            );
        }
        assert_eq!(
            classify(Token, 401, None, r#"{"error":"invalid_client"}"#),
            C::CredentialRejected
        );
        assert_eq!(
            classify(Token, 400, None, r#"{"error":"invalid_grant"}"#),
            C::CredentialRejected
        );
    }

    #[test]
    fn missing_tokens() {
        for (www, body) in [
            (None, r#"{"error":"missing_token"}"#),
            (None, r#"{"message":"No token provided"}"#),
            (Some(r#"Bearer realm="api""#), ""),
        ] {
            assert_eq!(
                classify(Register, 401, www, body),
                C::MissingToken,
                "{www:?} {body}"
            );
        }
    }

    #[test]
    fn inactive_clients() {
        for body in [
            r#"{"error":"client_inactive"}"#,
            r#"{"valid":false,"error":"Client account is not active"}"#,
            r#"{"error":"Inactive client"}"#,
        ] {
            assert_eq!(
                classify(Heartbeat, 403, None, body),
                C::ClientInactive,
                "{body}"
            );
        }
        assert_eq!(
            classify(Token, 403, None, r#"{"error":"invalid_client"}"#),
            C::ClientInactive
        );
        assert_eq!(
            classify(
                Token,
                401,
                None,
                r#"{"error":"invalid_client","error_description":"Client account is not active"}"#
            ),
            C::ClientInactive
        );
    }

    #[test]
    fn unknown_agent_rate_limits_and_server_errors() {
        assert_eq!(
            classify(Heartbeat, 404, None, r#"{"error":"unknown_agent"}"#),
            C::UnknownAgent
        );
        assert_eq!(classify(Register, 404, None, ""), C::Protocol);
        assert_eq!(classify(Heartbeat, 429, None, ""), C::RateLimited);
        let limited = classify_answer(
            Heartbeat,
            &Answer {
                status: 503,
                www_authenticate: None,
                body: b"",
                retry_after: Some(Duration::from_secs(3)),
            },
        );
        assert_eq!(limited.0, C::RateLimited);
        assert_eq!(classify(Heartbeat, 503, None, ""), C::ServerError);
        assert_eq!(
            classify(Heartbeat, 502, None, "<html>bad gateway</html>"),
            C::ServerError
        );
        assert_eq!(classify(Heartbeat, 400, None, ""), C::Protocol);
        assert_eq!(
            classify(Token, 400, None, r#"{"error":"unsupported_grant_type"}"#),
            C::Protocol
        );
    }

    #[test]
    fn details_are_the_servers_short_words_never_the_body() {
        let (_, detail) = classify_answer(
            Heartbeat,
            &Answer {
                status: 401,
                www_authenticate: None,
                body: br#"{"error":"Invalid client token","x":"y"}"#,
                retry_after: None,
            },
        );
        assert_eq!(detail, "Invalid client token");
        let (_, detail) = classify_answer(
            Heartbeat,
            &Answer {
                status: 502,
                www_authenticate: None,
                body: b"<html>secret stack trace</html>",
                retry_after: None,
            },
        );
        assert!(!detail.contains("secret"), "{detail}");
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(90)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn challenge_parsing() {
        assert_eq!(
            parse_bearer_challenge(
                r#"Bearer realm="x", error="invalid_token", error_description="it, expired""#
            ),
            BearerChallenge {
                error: Some("invalid_token".into()),
                description: Some("it, expired".into())
            }
        );
        assert_eq!(
            parse_bearer_challenge("Basic realm=x"),
            BearerChallenge::default()
        );
        assert_eq!(
            parse_bearer_challenge("bearer error=invalid_token")
                .error
                .as_deref(),
            Some("invalid_token")
        );
    }
}
