//! Who this host is: the logical agent id, stable across restarts and reinstalls
//! (protocol.md section 2), the hostname, and the start-up splay derived from the id.
//!
//! The logical id is, in order: the cloud instance id (when the metadata service is
//! wired in), an application-specific id derived from `/etc/machine-id` (the machine
//! id itself is meant to stay private, so it is hashed with a fixed application key,
//! as `sd_id128_get_machine_app_specific` does), or a random id generated once and
//! kept in the state file.

use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Mixed into the machine id so that hostbeat's id reveals nothing about it.
const APP_KEY: &[u8] = b"hostbeat logical agent id v1";

/// The id derived from the machine id, or `None` when there is no usable machine id.
pub fn from_machine_id(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let machine_id = text.trim();
    if machine_id.len() != 32 || !machine_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let digest = Sha256::new()
        .chain_update(APP_KEY)
        .chain_update(machine_id.to_ascii_lowercase())
        .finalize();
    Some(hex(&digest[..16]))
}

/// The logical id this host already has: derived from the machine id, else the one
/// generated earlier and kept in the state file. `None` means one must be generated.
pub fn known_logical_id(machine_id_file: &Path, generated: Option<&str>) -> Option<String> {
    from_machine_id(machine_id_file).or_else(|| generated.map(str::to_owned))
}

/// A new random id (128 bits from the kernel's generator).
pub fn generate() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex(&bytes))
}

/// The host name, for registration.
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// Agent ids and logical ids go into URL paths and logs: a conservative alphabet.
pub fn is_valid_agent_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The start-up splay: a stable fraction of one interval derived from the id, so that
/// a fleet rebooted at once spreads its first heartbeats and a host always gets the
/// same offset (protocol.md section 6).
pub fn splay(logical_id: &str, interval: Duration) -> Duration {
    let digest = Sha256::digest(logical_id.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    #[allow(clippy::cast_precision_loss)]
    let fraction = u64::from_be_bytes(head) as f64 / u64::MAX as f64;
    interval.mul_f64(fraction)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_id_is_hashed_stably() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("machine-id");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
        let id = from_machine_id(&path).unwrap();
        assert_eq!(id.len(), 32);
        assert!(!id.contains("0123456789abcdef"));
        assert_eq!(from_machine_id(&path).unwrap(), id);
        std::fs::write(&path, "uninitialized\n").unwrap();
        assert_eq!(from_machine_id(&path), None);
    }

    #[test]
    fn generated_ids_differ_and_are_valid() {
        let (a, b) = (generate().unwrap(), generate().unwrap());
        assert_ne!(a, b);
        assert!(is_valid_agent_id(&a));
    }

    #[test]
    fn splay_is_stable_within_the_interval_and_spread() {
        let interval = Duration::from_secs(30);
        assert_eq!(splay("host-a", interval), splay("host-a", interval));
        let offsets: Vec<Duration> = (0..200)
            .map(|i| splay(&format!("host-{i}"), interval))
            .collect();
        assert!(offsets.iter().all(|d| *d < interval));
        // 200 hosts over 30 s: every 10-second third of the interval gets some.
        for third in 0..3u32 {
            let (lo, hi) = (
                Duration::from_secs(10) * third,
                Duration::from_secs(10) * (third + 1),
            );
            assert!(offsets.iter().any(|d| *d >= lo && *d < hi));
        }
    }

    #[test]
    fn agent_id_alphabet() {
        assert!(is_valid_agent_id("agt-42_a.b:c"));
        for bad in ["", "a/b", "a b", "x?y", &"a".repeat(129)] {
            assert!(!is_valid_agent_id(bad), "{bad}");
        }
    }
}
