//! The one way the agent builds an HTTP client, for the control plane and the
//! metadata service alike: reqwest over rustls, with ring as rustls's crypto.
//!
//! Why ring and not reqwest's default, aws-lc-rs: the same TLS (1.2 and 1.3,
//! ECDHE, AES-GCM and ChaCha20-Poly1305, ECDSA, RSA and Ed25519 certificates) in
//! about 0.7 MiB less program, and the program's pages are most of the agent's
//! resident memory (docs/performance.md). reqwest's `rustls-no-provider` feature
//! leaves the choice to the process, which must install a provider before it
//! builds a client; every client is built here, so nothing can come first.

use std::sync::Once;

/// `reqwest::Client::builder()`, once ring is rustls's provider for the process.
pub fn client_builder() -> reqwest::ClientBuilder {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Err only when a provider is installed already, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_builds_with_ring_as_the_provider() {
        client_builder().build().expect("a client");
        let provider = rustls::crypto::CryptoProvider::get_default().expect("installed");
        // ring's and aws-lc-rs's suites have the same names; their key exchange
        // groups differ (aws-lc-rs offers post-quantum X25519MLKEM768 first).
        let groups: Vec<String> = provider
            .kx_groups
            .iter()
            .map(|g| format!("{:?}", g.name()))
            .collect();
        assert_eq!(
            groups.first().map(String::as_str),
            Some("X25519"),
            "{groups:?}"
        );
    }
}
