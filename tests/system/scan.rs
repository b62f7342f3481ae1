//! The scan for the token: every byte the daemon wrote, searched for its bytes.

use std::path::{Path, PathBuf};

/// Every regular file under `dir` with its content.
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
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

/// Fails naming the first place that holds one of `tokens`.
pub fn assert_no_token(written: &[(PathBuf, Vec<u8>)], tokens: &[&str]) {
    for (place, bytes) in written {
        for token in tokens {
            assert!(
                !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                "the token is in {}",
                place.display()
            );
        }
    }
}
