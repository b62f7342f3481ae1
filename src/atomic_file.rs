//! Files replaced whole: written to a temporary file in the same directory and
//! renamed over the old one, so that a reader (or a crash) sees the old file or the
//! new one, never half of one.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// How much a replacement must survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file and the directory: survives a power cut (the agent id).
    Durable,
    /// The rename only: a file rewritten at every heartbeat, which a power cut may
    /// take back to its previous version (status, metrics). Spares the disk a flush
    /// every interval on every host.
    Replaceable,
}

/// What to do when the file's directory does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directory {
    /// Create it: the agent's own state directory (a run by hand, without systemd's
    /// `StateDirectory=`).
    Create,
    /// Fail: someone else's directory (node_exporter's), where a missing directory is
    /// a typo that creating it would hide.
    MustExist,
}

/// Replaces `path` with `contents`, with permission bits `mode`.
pub fn replace(
    path: &Path,
    contents: &[u8],
    mode: u32,
    durability: Durability,
    directory: Directory,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    match replace_in(dir, path, contents, mode, durability) {
        // Only a missing directory costs the extra call, never the steady state.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && directory == Directory::Create => {
            std::fs::create_dir_all(dir)?;
            replace_in(dir, path, contents, mode, durability)
        }
        result => result,
    }
}

fn replace_in(
    dir: &Path,
    path: &Path,
    contents: &[u8],
    mode: u32,
    durability: Durability,
) -> std::io::Result<()> {
    let mut file = tempfile::Builder::new()
        .prefix(".hostbeat-")
        .tempfile_in(dir)?;
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.write_all(contents)?;
    if durability == Durability::Durable {
        file.as_file().sync_all()?;
    }
    file.persist(path).map_err(|e| e.error)?;
    if durability == Durability::Durable {
        // The rename is durable only once the directory entry is.
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_with_the_mode_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"old").unwrap();
        for durability in [Durability::Durable, Durability::Replaceable] {
            replace(&path, b"new", 0o640, durability, Directory::MustExist).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"new");
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o640);
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        }
    }

    #[test]
    fn a_missing_directory_is_created_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new").join("f");
        let refused = replace(
            &path,
            b"x",
            0o600,
            Durability::Replaceable,
            Directory::MustExist,
        );
        assert_eq!(refused.unwrap_err().kind(), std::io::ErrorKind::NotFound);
        replace(&path, b"x", 0o600, Durability::Durable, Directory::Create).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
    }
}
