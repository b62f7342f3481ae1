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
}
