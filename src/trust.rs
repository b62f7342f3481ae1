//! The certificate authorities the agent trusts: the system's, read once, and the
//! operator's `ca_file`.
//!
//! Why not reqwest's default (rustls-platform-verifier over rustls-native-certs):
//! on Linux it reads both the system's bundle file and its certificate directory,
//! which hold the same roots (Debian: `/etc/ssl/certs/ca-certificates.crt` and the
//! files in `/etc/ssl/certs`), so every root was parsed twice and kept twice, and
//! all of them were held as DER at once while being parsed: half of the agent's
//! heap at its peak, and heap pages once touched stay resident
//! (docs/performance.md). Here the roots are read from the bundle file when the
//! system has one (as curl and Go do), else from the certificate directories, one
//! certificate at a time into its trust anchor. The verifier is rustls's WebPKI
//! verifier, which is what the platform verifier uses on Linux too.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Why the agent has no usable set of certificate authorities.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// `ca_file` could not be read or parsed; the setting is named by the caller.
    #[error("{0}")]
    CaFile(String),
    /// Neither the system nor `ca_file` gave one certificate authority.
    #[error("no certificate authority to trust: {0}")]
    Nothing(String),
}

/// The roots to verify servers against: the system's, plus every certificate in
/// `ca_file`. A system store that cannot be read is not an error while `ca_file`
/// gives roots (a private CA is enough to reach a private control plane); a
/// `ca_file` that cannot be used always is.
pub fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, TrustError> {
    let mut store = RootCertStore::empty();
    let sources = system_sources();
    for path in &sources {
        // Unreadable or unparsable system roots are skipped, as rustls-native-certs
        // does: one bad file in a directory must not cost the others.
        if let Err(error) = add_pem_file(&mut store, path) {
            tracing::debug!(path = %path.display(), %error, "system CA certificates skipped");
        }
    }
    let from_system = store.len();
    tracing::debug!(
        roots = from_system,
        from = ?sources,
        "system certificate authorities read"
    );
    if let Some(path) = ca_file {
        let added = add_pem_file(&mut store, path).map_err(TrustError::CaFile)?;
        if added == 0 {
            return Err(TrustError::CaFile("it holds no certificate".to_owned()));
        }
    }
    if store.is_empty() {
        let looked = if sources.is_empty() {
            "the system has no CA bundle or certificate directory, and ca_file is not set"
                .to_owned()
        } else {
            format!(
                "no certificate could be read from {}, and ca_file is not set",
                list(&sources)
            )
        };
        return Err(TrustError::Nothing(looked));
    }
    Ok(store)
}

/// Where the system keeps its roots. `SSL_CERT_FILE` and `SSL_CERT_DIR`, when set,
/// as OpenSSL reads them; otherwise the distribution's bundle file, and only when
/// there is none its certificate directories (openssl-probe knows each
/// distribution's paths).
fn system_sources() -> Vec<PathBuf> {
    let from_env = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    let (file, dirs) = (from_env("SSL_CERT_FILE"), from_env("SSL_CERT_DIR"));
    if file.is_some() || dirs.is_some() {
        let mut paths: Vec<PathBuf> = file.map(PathBuf::from).into_iter().collect();
        for dir in dirs.iter().flat_map(std::env::split_paths) {
            paths.extend(files_in(&dir));
        }
        return paths;
    }
    let probe = openssl_probe::probe();
    match probe.cert_file {
        Some(file) => vec![file],
        None => probe.cert_dir.iter().flat_map(|d| files_in(d)).collect(),
    }
}

/// The files of a certificate directory, each once: the hash-named links that
/// `openssl rehash` makes point at files listed under their own names too.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let mut seen = HashSet::new();
    paths.retain(|path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && seen.insert((m.dev(), m.ino())))
    });
    paths
}

/// Adds every certificate of a PEM file to `store`, one at a time (only its trust
/// anchor is kept), and says how many. Parts of the file that are not
/// certificates (keys, comments) are passed over, as OpenSSL does.
fn add_pem_file(store: &mut RootCertStore, path: &Path) -> Result<usize, String> {
    let certificates =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("cannot read it: {e}"))?;
    let mut added = 0;
    for certificate in certificates {
        let certificate = certificate.map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
        store
            .add(certificate)
            .map_err(|e| format!("certificate {} cannot be trusted: {e}", added + 1))?;
        added += 1;
    }
    Ok(added)
}

fn list(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths
        .iter()
        .take(3)
        .map(|p| p.display().to_string())
        .collect();
    let more = paths.len().saturating_sub(shown.len());
    if more == 0 {
        shown.join(", ")
    } else {
        format!("{} and {more} more", shown.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A private CA's certificate, PEM.
    fn ca_pem() -> String {
        hostbeat_refplane::tls::Authority::new("hostbeat test CA").pem()
    }

    #[test]
    fn a_directory_lists_each_file_once_whatever_links_point_at_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.pem"), ca_pem()).expect("write");
        std::os::unix::fs::symlink("ca.pem", dir.path().join("0a1b2c3d.0")).expect("link");
        std::fs::create_dir(dir.path().join("sub")).expect("subdir");
        assert_eq!(files_in(dir.path()).len(), 1, "{:?}", files_in(dir.path()));
    }

    #[test]
    fn ca_file_roots_are_added_and_a_bad_ca_file_is_named_for_what_is_wrong() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("good.pem");
        std::fs::write(&good, format!("# a comment\n{}", ca_pem())).expect("write");
        let mut store = RootCertStore::empty();
        assert_eq!(add_pem_file(&mut store, &good), Ok(1));
        assert_eq!(store.len(), 1);

        let missing = add_pem_file(&mut store, &dir.path().join("missing.pem"));
        assert!(missing.unwrap_err().starts_with("cannot read it"));

        let torn = dir.path().join("torn.pem");
        let pem = ca_pem();
        std::fs::write(&torn, &pem[..pem.len() / 2]).expect("write");
        let error = add_pem_file(&mut store, &torn).unwrap_err();
        assert!(error.starts_with("not a PEM certificate bundle"), "{error}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").expect("write");
        let error = roots(Some(&empty)).unwrap_err().to_string();
        assert_eq!(error, "it holds no certificate");
    }
}
