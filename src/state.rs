//! The state file (`state_dir/state.json`): what the agent must remember across
//! restarts, the agent id above all.
//!
//! Invariants: writes are atomic (a temporary file in the same directory, fsync,
//! rename, fsync of the directory), so a crash leaves the old file or the new one,
//! never half of one. A file that cannot be parsed is renamed aside with a warning,
//! never overwritten. The file holds no secret. A state directory that cannot be
//! written is logged and tolerated: the agent keeps its ids in memory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic_file::{self, Directory, Durability};

const FILE_NAME: &str = "state.json";

/// What is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedState {
    /// The logical agent id, when it had to be generated (no machine id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_logical_id: Option<String>,
    /// The agent id the control plane assigned at registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The logical id `agent_id` was registered under: when the logical id changes
    /// (the instance id becomes known), the host registers again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_logical_id: Option<String>,
}

/// The state file of one state directory.
#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
}

/// What opening the store found, for the caller to log.
#[derive(Debug)]
pub enum LoadNote {
    /// Nothing to say.
    Fine,
    /// The file could not be parsed and was moved to the given path.
    SetAside(PathBuf, String),
    /// The file could not be read.
    Unreadable(String),
}

impl StateStore {
    /// The store in `dir` (created if missing, where permitted).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    /// The state file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Reads the state; a corrupt file is set aside (see module doc).
    pub fn load(&self) -> (PersistedState, LoadNote) {
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return (PersistedState::default(), LoadNote::Fine);
            }
            Err(e) => {
                return (
                    PersistedState::default(),
                    LoadNote::Unreadable(e.to_string()),
                );
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(state) => (state, LoadNote::Fine),
            Err(parse_error) => {
                let aside = self.dir.join(format!(
                    "{FILE_NAME}.corrupt-{}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                ));
                let note = match std::fs::rename(&path, &aside) {
                    Ok(()) => LoadNote::SetAside(aside, parse_error.to_string()),
                    Err(e) => LoadNote::Unreadable(format!(
                        "cannot parse it ({parse_error}) nor move it aside ({e})"
                    )),
                };
                (PersistedState::default(), note)
            }
        }
    }

    /// Reads the state and changes nothing, a corrupt file included (for `check`,
    /// which must not touch what the daemon owns): `None` when there is no file.
    pub fn peek(&self) -> Result<Option<PersistedState>, String> {
        match std::fs::read(self.path()) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("cannot parse it: {e}")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read it: {e}")),
        }
    }

    /// Writes the state atomically and durably.
    pub fn save(&self, state: &PersistedState) -> std::io::Result<()> {
        let mut json = serde_json::to_vec_pretty(state)?;
        json.push(b'\n');
        atomic_file::replace(
            &self.path(),
            &json,
            0o600,
            Durability::Durable,
            Directory::Create,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let state = PersistedState {
            generated_logical_id: None,
            agent_id: Some("agt-1".into()),
            registered_logical_id: Some("i-0123456789abcdef0".into()),
        };
        store.save(&state).unwrap();
        assert_eq!(store.load().0, state);
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn corrupt_file_is_set_aside_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        std::fs::write(store.path(), b"{not json").unwrap();
        let (state, note) = store.load();
        assert_eq!(state, PersistedState::default());
        let LoadNote::SetAside(aside, _) = note else {
            panic!("{note:?}")
        };
        assert_eq!(std::fs::read(aside).unwrap(), b"{not json");
        assert!(!store.path().exists());
    }
}
