//! Certificates for testing the agent's TLS against a real handshake: a private CA,
//! server certificates it issues (valid, expired, about to expire, or for another
//! name), and the rustls server configuration that presents one.
//!
//! Everything is generated in memory for one test; nothing here is fit for anything
//! but loopback.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A private certificate authority: what an operator would put in `ca_file`.
pub struct Authority {
    certificate: Certificate,
    issuer: Issuer<'static, KeyPair>,
}

/// When an issued certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From yesterday for a year.
    Current,
    /// Valid for a day, which ended `days` ago.
    ExpiredDaysAgo(i64),
    /// From yesterday until `days` from now.
    ExpiresInDays(i64),
}

impl Validity {
    fn window(self) -> (OffsetDateTime, OffsetDateTime) {
        let now = OffsetDateTime::now_utc();
        match self {
            Self::Current => (now - Duration::days(1), now + Duration::days(365)),
            Self::ExpiredDaysAgo(days) => {
                (now - Duration::days(days + 1), now - Duration::days(days))
            }
            Self::ExpiresInDays(days) => (now - Duration::days(1), now + Duration::days(days)),
        }
    }
}

/// A server's certificate chain and private key.
pub struct ServerIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Authority {
    /// A new CA whose certificate's common name is `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::new()).expect("no names, nothing to reject");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        (params.not_before, params.not_after) = Validity::Current.window();
        let key = KeyPair::generate().expect("a P-256 key");
        let certificate = params
            .self_signed(&key)
            .expect("self-signed CA certificate");
        Self {
            certificate,
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate as PEM, for `ca_file`.
    pub fn pem(&self) -> String {
        self.certificate.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses), signed by this
    /// CA and valid as `validity` says.
    pub fn issue(&self, names: &[&str], validity: Validity) -> ServerIdentity {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("valid names");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        (params.not_before, params.not_after) = validity.window();
        let key = KeyPair::generate().expect("a P-256 key");
        let certificate = params
            .signed_by(&key, &self.issuer)
            .expect("certificate signed by the CA");
        ServerIdentity {
            chain: vec![certificate.der().clone(), self.certificate.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        }
    }
}

impl ServerIdentity {
    /// The rustls configuration that presents this identity (HTTP/1.1 only, like the
    /// plane).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the provider supports the default versions")
            .with_no_client_auth()
            .with_single_cert(
                self.chain.clone(),
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )
            .expect("the key matches the certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}
