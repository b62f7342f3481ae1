//! TLS in `check`: what the server's certificate says when the handshake succeeded
//! (who it names, who issued it, when it expires), and what a refused handshake
//! means, told apart from rustls' own words: an unknown CA, an expired
//! certificate, a certificate for another name.
//!
//! The verdict itself is the real client's (system roots plus `ca_file`), taken
//! from the calls `check` makes anyway; nothing here verifies a certificate again.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_cert::Certificate;
use x509_cert::der::Decode;
use x509_cert::name::Name;

use url::Url;

use super::Finding;
use crate::api::ApiError;
use crate::config::Settings;
use crate::report::timestamp::rfc3339;

/// A certificate that expires sooner than this is a warning: time to renew it
/// before every heartbeat fails.
pub(super) const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// What `check` shows of the server's certificate.
#[derive(Debug, PartialEq, Eq)]
struct PeerCertificate {
    subject: String,
    issuer: String,
    not_after: SystemTime,
}

impl PeerCertificate {
    /// Reads a DER certificate; `None` when it is not one (the handshake passed, so
    /// only a parser limit could cause that).
    fn parse(der: &[u8]) -> Option<Self> {
        let certificate = Certificate::from_der(der).ok()?;
        let tbs = certificate.tbs_certificate();
        Some(Self {
            subject: common_name(tbs.subject()),
            issuer: common_name(tbs.issuer()),
            not_after: UNIX_EPOCH + tbs.validity().not_after.to_unix_duration(),
        })
    }
}

/// `CN=...` of a name, which is what an operator compares; the whole name would
/// need an OID table that weighs more than the rest of this check.
fn common_name(name: &Name) -> String {
    match name.common_name() {
        Ok(Some(cn)) => format!("CN={}", cn.value()),
        _ => "(no common name)".to_owned(),
    }
}

/// The finding for a handshake that succeeded with `der`, the server's certificate.
pub(super) fn accepted(settings: &Settings, der: &[u8], now: SystemTime) -> Finding {
    let roots = match &settings.ca_file {
        Some(path) => format!("the system roots and ca_file {}", path.display()),
        None => "the system roots".to_owned(),
    };
    let Some(certificate) = PeerCertificate::parse(der) else {
        return Finding::ok(
            "tls.verified",
            format!("certificate verified against {roots}"),
        );
    };
    let summary = format!(
        "certificate {:?} from {:?} verified against {roots}; expires {}",
        certificate.subject,
        certificate.issuer,
        rfc3339(certificate.not_after),
    );
    let left = certificate
        .not_after
        .duration_since(now)
        .unwrap_or_default();
    if left >= EXPIRY_WARNING {
        return Finding::ok("tls.valid", format!("{summary} (in {} days)", days(left)));
    }
    Finding::warn(
        "tls.expiring",
        format!("{summary}, in {} days", days(left)),
        "when it expires, every heartbeat fails with a TLS error until it is renewed",
        "renew the control plane's certificate before it expires",
    )
}

/// What a refused handshake means and how to fix it, from the error's text
/// (rustls names the reason: UnknownIssuer, certificate expired, not valid for
/// name, not valid yet); the fix names the server's host and port.
pub(super) fn refused(error: &ApiError) -> (&'static str, String) {
    let (host, address) = Url::parse(&error.server)
        .ok()
        .and_then(|url| {
            let host = url.host_str()?.to_owned();
            let port = url.port_or_known_default()?;
            Some((host.clone(), format!("{host}:{port}")))
        })
        .unwrap_or_else(|| ("HOST".to_owned(), "HOST:PORT".to_owned()));
    let show_names = format!(
        "openssl s_client -connect {address} -servername {host} </dev/null | openssl x509 -noout -subject -issuer -dates -ext subjectAltName"
    );
    let reason = error.detail.to_ascii_lowercase();
    if reason.contains("unknownissuer") || reason.contains("unknown issuer") {
        (
            "the server's certificate is signed by a CA this host does not trust: a private CA, or a proxy that intercepts TLS",
            format!(
                "see who issued it: {show_names}; put that CA's certificate (PEM) in a file and set HOSTBEAT_CA_FILE to it in /etc/hostbeat/hostbeat.env; then: systemctl reload hostbeat"
            ),
        )
    } else if reason.contains("expired") {
        (
            "the server's certificate has expired, or this host's clock is ahead (see the clock line)",
            format!(
                "renew the control plane's certificate ({show_names}); check this host's clock: timedatectl status"
            ),
        )
    } else if reason.contains("notvalidyet") || reason.contains("not valid yet") {
        (
            "the server's certificate is not valid yet: this host's clock is behind, or the certificate was issued for the future",
            "synchronise the clock: timedatectl set-ntp true; timedatectl status".to_owned(),
        )
    } else if reason.contains("notvalidforname") || reason.contains("not valid for name") {
        (
            "the server's certificate does not name the host in server_url",
            format!(
                "use in server_url a name the certificate holds ({show_names}), or reissue the certificate for {host}"
            ),
        )
    } else {
        (
            "the TLS handshake failed",
            format!("look at what the server presents: {show_names}"),
        )
    }
}

fn days(left: Duration) -> u64 {
    left.as_secs() / (24 * 3600)
}
