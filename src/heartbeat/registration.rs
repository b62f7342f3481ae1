//! Who this agent is to the control plane: its logical id (from the machine, the
//! instance, or generated and kept), the agent id the control plane gave it, and the
//! state file that keeps both across restarts.
//!
//! Invariant: an agent id, once registered, is in the state file, or the save
//! failed and is tried again after every accepted heartbeat (a full or read-only
//! disk at registration must not cost the agent id for good).

use crate::config::Settings;
use crate::identity;
use crate::state::{LoadNote, PersistedState, StateStore};

pub(super) struct Registration {
    store: StateStore,
    state: PersistedState,
    /// Whether saving the state failed (warned once, not at every beat).
    unwritable: bool,
    logical_id: String,
    hostname: String,
    agent_id: Option<String>,
}

impl Registration {
    /// The state loaded (a corrupt file set aside), the ids resolved.
    pub(super) fn load(settings: &Settings) -> Self {
        let store = StateStore::new(&settings.state_dir);
        let (mut state, note) = store.load();
        match note {
            LoadNote::Fine => {}
            LoadNote::SetAside(aside, why) => tracing::warn!(
                event = "state_corrupt",
                "the state file {} could not be parsed ({why}); it was moved to {} and the agent starts afresh",
                store.path().display(),
                aside.display()
            ),
            LoadNote::Unreadable(why) => tracing::warn!(
                event = "state_unreadable",
                "the state file {} cannot be read ({why}); the agent starts afresh",
                store.path().display()
            ),
        }
        let mut unwritable = false;
        let logical_id = identity::known_logical_id(
            &settings.machine_id_file,
            state.generated_logical_id.as_deref(),
        )
        .unwrap_or_else(|| {
            let id =
                identity::generate().unwrap_or_else(|_| format!("{:032x}", fastrand::u128(..)));
            state.generated_logical_id = Some(id.clone());
            if let Err(e) = store.save(&state) {
                unwritable = true;
                tracing::warn!(
                    event = "state_unwritable",
                    "cannot save the state file {} ({e}); {}",
                    store.path().display(),
                    "this host's generated id will change at the next start"
                );
            }
            id
        });
        let agent_id = settings.agent_id.clone().or_else(|| state.agent_id.clone());
        Self {
            store,
            state,
            unwritable,
            logical_id,
            hostname: identity::hostname(),
            agent_id,
        }
    }

    pub(super) fn agent_id(&self) -> Option<&str> {
        self.agent_id.as_deref()
    }

    pub(super) fn logical_id(&self) -> &str {
        &self.logical_id
    }

    pub(super) fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The control plane gave this agent `agent_id`: kept, and saved.
    pub(super) fn registered(&mut self, agent_id: &str) {
        self.agent_id = Some(agent_id.to_owned());
        self.state.agent_id = Some(agent_id.to_owned());
        self.state.registered_logical_id = Some(self.logical_id.clone());
        self.save();
    }

    /// The control plane does not know the agent id: the next beat registers.
    pub(super) fn forget(&mut self) {
        self.agent_id = None;
    }

    /// A reload configured `agent_id`: it is used from now on.
    pub(super) fn configured(&mut self, agent_id: Option<&str>) {
        if let Some(id) = agent_id {
            self.agent_id = Some(id.to_owned());
        }
    }

    /// The logical id becomes `id` (the instance id). An agent id registered under
    /// another logical id is forgotten, so that the next beat registers again (never
    /// a configured one, `fixed`); the one forgotten is returned.
    pub(super) fn adopt_logical_id(&mut self, id: &str, fixed: bool) -> Option<String> {
        if self.logical_id == id {
            return None;
        }
        id.clone_into(&mut self.logical_id);
        if fixed || self.state.registered_logical_id.as_deref() == Some(id) {
            return None;
        }
        self.agent_id.take()
    }

    /// After an accepted heartbeat: a state that could not be saved is tried again.
    pub(super) fn save_if_unsaved(&mut self) {
        if self.unwritable {
            self.save();
        }
    }

    fn save(&mut self) {
        match self.store.save(&self.state) {
            Ok(()) if self.unwritable => {
                self.unwritable = false;
                tracing::info!(
                    event = "state_saved",
                    agent_id = self.agent_id.as_deref(),
                    "the state file {} is written again; the agent id will survive a restart",
                    self.store.path().display()
                );
            }
            Err(e) if !self.unwritable => {
                self.unwritable = true;
                tracing::warn!(
                    event = "state_unwritable",
                    "cannot save the state file {} ({e}); the agent id is kept in memory and the save is tried again after each heartbeat",
                    self.store.path().display()
                );
            }
            // Saved as before, or failing as before: said already.
            Ok(()) | Err(_) => {}
        }
    }
}
