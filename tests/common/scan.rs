//! The scan for the token, shared by the integration tests (tests/it) and the
//! system tests (tests/system): every byte the daemon wrote, searched for its bytes.

use std::path::{Path, PathBuf};

/// Every regular file under `dir` with its content; a directory that cannot be read
/// fails the test (a scan of nothing would pass).
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot scan {}: {e}", dir.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => stack.push(path),
                Ok(kind) if kind.is_file() => {
                    found.push((path.clone(), std::fs::read(&path).unwrap_or_default()));
                }
                _ => {}
            }
        }
    }
    found
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Fails naming the first place that holds one of `tokens`.
pub fn assert_no_token(written: &[(PathBuf, Vec<u8>)], tokens: &[&str]) {
    for (place, bytes) in written {
        for token in tokens {
            assert!(
                !contains(bytes, token),
                "the token is in {}",
                place.display()
            );
        }
    }
}
