//! The one way the agent builds an HTTP client, for the control plane and the
//! metadata service alike: reqwest over rustls, with ring as rustls's crypto and
//! the roots that [`crate::trust`] read.
//!
//! Why ring and not reqwest's default, aws-lc-rs: the same TLS (1.2 and 1.3,
//! ECDHE, AES-GCM and ChaCha20-Poly1305, ECDSA, RSA and Ed25519 certificates) in
//! about 0.7 MiB less program, and the program's pages are most of the agent's
//! resident memory (docs/performance.md). The TLS configuration is built here and
//! handed to reqwest whole, so reqwest loads no roots of its own.

use std::sync::Arc;

use rustls::RootCertStore;

/// `reqwest::Client::builder()` with TLS verified against `trusted` only.
pub fn client_builder(trusted: RootCertStore) -> reqwest::ClientBuilder {
    // reqwest recognises the configuration by its type: a rustls of another version
    // than reqwest's would make `build()` fail ("unknown TLS backend"), which the
    // tests below would see.
    reqwest::Client::builder().tls_backend_preconfigured(tls_config(trusted))
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
/// which are secrets like the token (a proxy's error could quote its URL).
pub fn remember_proxy_passwords() {
    for name in PROXY_VARIABLES {
        let Ok(value) = std::env::var(name) else {
            continue;
        };
        let rest = value
            .split_once("://")
            .map_or(value.as_str(), |(_, rest)| rest);
        if let Some((userinfo, _)) = rest.rsplit_once('@')
            && let Some((_, password)) = userinfo.split_once(':')
        {
            crate::redact::remember(password, crate::redact::Kind::Client);
        }
    }
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
