//! The one way the agent builds an HTTP client, for the control plane and the
//! metadata service alike: reqwest over rustls, with ring as rustls's crypto and
//! the roots that `crate::trust` read.
//!
//! Why ring and not reqwest's default, aws-lc-rs: the same TLS (1.2 and 1.3,
//! ECDHE, AES-GCM and ChaCha20-Poly1305, ECDSA, RSA and Ed25519 certificates) in
//! about 0.7 MiB less program, and the program's pages are most of the agent's
//! resident memory (docs/performance.md). The TLS configuration is built here and
//! handed to reqwest whole, so reqwest loads no roots of its own.

use std::sync::Arc;

use hyper_util::client::proxy::matcher::Matcher;
use rustls::RootCertStore;

/// `reqwest::Client::builder()` with TLS verified against `trusted` only, and the
/// environment's proxies as [`Proxies`] reads them.
pub fn client_builder(trusted: RootCertStore) -> reqwest::ClientBuilder {
    // reqwest recognises the configuration by its type: a rustls of another version
    // than reqwest's would make `build()` fail ("unknown TLS backend"), which the
    // tests below would see.
    let builder = reqwest::Client::builder().tls_backend_preconfigured(tls_config(trusted));
    Proxies::from_env().apply(builder)
}

/// rustls's client configuration, as reqwest would make it: TLS 1.2 and 1.3, SNI,
/// HTTP/1.1 offered by ALPN, no client certificate.
fn tls_config(trusted: RootCertStore) -> rustls::ClientConfig {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring offers TLS 1.2 and 1.3")
    .with_root_certificates(trusted)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// The proxy variables the HTTP client reads from the environment (reqwest's, and
/// hyper-util's matcher that `check` uses), `NO_PROXY` last.
pub const PROXY_VARIABLES: [&str; 8] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// Destinations no proxy ever carries, added to every `NO_PROXY`: a proxy's
/// loopback is not this host's, and plain http is allowed to a loopback control
/// plane only because the token then never leaves the host. Through a proxy it
/// would, in clear text. Go's `net/http` has the same rule.
pub const NEVER_PROXIED: &str = "localhost,127.0.0.0/8,::1";

/// A constructor of reqwest's proxies for one kind of destination.
type ProxyFor = fn(String) -> reqwest::Result<reqwest::Proxy>;

/// The proxy variables of this process, read as reqwest and hyper-util read them
/// (the first of each upper/lower case pair that is set; `ALL_PROXY` where the
/// scheme's own is unset; none at all under CGI's `REQUEST_METHOD`), with one rule
/// more: [`NEVER_PROXIED`]. The daemon's client and `check`'s prediction of it are
/// both made from here, so the two cannot disagree.
#[derive(Debug, Clone, Default)]
pub struct Proxies {
    all: String,
    http: String,
    https: String,
    no: String,
}

impl Proxies {
    /// This process's proxy variables.
    pub fn from_env() -> Self {
        if std::env::var_os("REQUEST_METHOD").is_some() {
            return Self::default();
        }
        let first = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|name| std::env::var(name).ok())
                .unwrap_or_default()
        };
        Self {
            all: first(["ALL_PROXY", "all_proxy"]),
            http: first(["HTTP_PROXY", "http_proxy"]),
            https: first(["HTTPS_PROXY", "https_proxy"]),
            no: first(["NO_PROXY", "no_proxy"]),
        }
    }

    /// `NO_PROXY` with [`NEVER_PROXIED`] added.
    fn bypassed(&self) -> String {
        match self.no.trim() {
            "" => NEVER_PROXIED.to_owned(),
            no => format!("{no},{NEVER_PROXIED}"),
        }
    }

    /// What `check` asks which proxy, if any, a URL is reached through.
    pub fn matcher(&self) -> Matcher {
        self.matcher_bypassing(self.bypassed())
    }

    /// Whether a proxy would carry `uri` but for [`NEVER_PROXIED`].
    pub fn skips_loopback(&self, uri: &http::Uri) -> bool {
        self.matcher().intercept(uri).is_none()
            && self
                .matcher_bypassing(self.no.clone())
                .intercept(uri)
                .is_some()
    }

    fn matcher_bypassing(&self, no: String) -> Matcher {
        Matcher::builder()
            .all(self.all.clone())
            .http(self.http.clone())
            .https(self.https.clone())
            .no(no)
            .build()
    }

    /// `builder` with these proxies in place of reqwest's own reading of the
    /// environment. reqwest takes the first proxy that matches a destination: the
    /// scheme's own, then `ALL_PROXY`.
    fn apply(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        let mut builder = builder.no_proxy();
        let kinds: [(&str, ProxyFor); 3] = [
            (&self.http, reqwest::Proxy::http),
            (&self.https, reqwest::Proxy::https),
            (&self.all, reqwest::Proxy::all),
        ];
        for (value, proxy) in kinds {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            // A value without a scheme is an http proxy, as hyper-util reads it; a
            // URL parser would take `user:` of `user:pass@host:3128` for a scheme.
            let value = if value.contains("://") {
                value.to_owned()
            } else {
                format!("http://{value}")
            };
            // A value that is no URL is ignored, as reqwest's own reading does.
            if let Ok(proxy) = proxy(value) {
                builder =
                    builder.proxy(proxy.no_proxy(reqwest::NoProxy::from_string(&self.bypassed())));
            }
        }
        builder
    }
}

/// A proxy setting with its password replaced by `****`, whether or not it has a
/// scheme: `user:pass@host:3128` is used as a proxy with credentials, but a URL
/// parser reads `user:` as its scheme and finds no password to hide.
pub fn without_password(value: &str) -> String {
    let (scheme, rest) = match value.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), value),
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return value.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}{user}:****@{host}"),
        None => value.to_owned(),
    }
}

/// Tells [`crate::redact`] the passwords of the proxy variables of this process,
/// which are secrets like the token (a proxy's error could quote its URL, or the
/// `Proxy-Authorization` it was sent): as written, percent-decoded as the HTTP
/// client sends it, and whole as that header's base64 of `user:password`. They
/// are kept apart from the client token's forms, which rotations replace.
pub fn remember_proxy_passwords() {
    for name in PROXY_VARIABLES {
        if let Ok(value) = std::env::var(name) {
            remember_proxy_password(&value);
        }
    }
}

/// The password of one proxy setting, in its forms (see above); a user name
/// without a password is the credential itself (an API key as the user).
fn remember_proxy_password(value: &str) {
    use crate::redact::{Kind, percent_decoded, remember, remember_encoded};
    use base64::Engine as _;
    let rest = value.split_once("://").map_or(value, |(_, rest)| rest);
    let Some((userinfo, _)) = rest.rsplit_once('@') else {
        return;
    };
    let (user, secret) = match userinfo.split_once(':') {
        Some((user, password)) => (user, password),
        None => ("", userinfo),
    };
    remember(secret, Kind::Fixed);
    remember(&percent_decoded(secret), Kind::Fixed);
    let header = if user.is_empty() {
        format!("{}:", percent_decoded(secret))
    } else {
        format!("{}:{}", percent_decoded(user), percent_decoded(secret))
    };
    remember_encoded(
        &base64::engine::general_purpose::STANDARD.encode(header),
        Kind::Fixed,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_builds_with_ring_as_the_provider() {
        client_builder(RootCertStore::empty())
            .build()
            .expect("reqwest takes the configuration");
        let config = tls_config(RootCertStore::empty());
        // ring's and aws-lc-rs's suites have the same names; their key exchange
        // groups differ (aws-lc-rs offers post-quantum X25519MLKEM768 first).
        let groups: Vec<String> = config
            .crypto_provider()
            .kx_groups
            .iter()
            .map(|g| format!("{:?}", g.name()))
            .collect();
        assert_eq!(
            groups.first().map(String::as_str),
            Some("X25519"),
            "{groups:?}"
        );
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
    }

    /// A proxy that echoes the `Proxy-Authorization` it was sent, or the password
    /// as the client decoded it: both redacted, however many client tokens are
    /// learnt after it.
    #[test]
    fn a_proxy_password_is_known_in_the_forms_the_client_sends() {
        remember_proxy_password("http://user:pa%24%24w0rd%21@127.0.0.1:3128");
        remember_proxy_password("http://APIKEY-0123456789abcdef@127.0.0.1:3128");
        for rotation in 0..200 {
            crate::redact::remember(
                &format!("rotated-client-token-{rotation:04}"),
                crate::redact::Kind::Client,
            );
        }
        assert_eq!(
            crate::redact::redact("proxy saw Basic QVBJS0VZLTAxMjM0NTY3ODlhYmNkZWY6"),
            "proxy saw Basic [redacted]"
        );
        assert_eq!(
            crate::redact::redact("proxy saw Basic dXNlcjpwYSQkdzByZCE="),
            "proxy saw Basic [redacted]"
        );
        assert_eq!(
            crate::redact::redact("password pa$$w0rd! refused"),
            "password [redacted] refused"
        );
    }

    #[test]
    fn a_proxy_password_is_hidden_with_or_without_a_scheme() {
        for (value, shown) in [
            ("http://user:pa55@proxy:3128", "http://user:****@proxy:3128"),
            ("user:pa55@proxy:3128", "user:****@proxy:3128"),
            ("user@proxy:3128", "user@proxy:3128"),
            ("proxy:3128", "proxy:3128"),
            ("http://u:p@ss@proxy", "http://u:****@proxy"),
        ] {
            assert_eq!(super::without_password(value), shown, "{value}");
        }
    }
}
