//! The events hostbeat logs, each with a fixed journald `MESSAGE_ID` (chosen once,
//! never changed: fleets search and alert on them, and the message catalog is keyed
//! on them) and, where the level alone would be wrong, its syslog priority.
//!
//! Every log line that marks a state change carries an `event` field named in this
//! table; a test holds the code and the catalog to it.

/// syslog priority "notice": normal but significant (a recovery, a start).
pub const NOTICE: u8 = 5;

/// One kind of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The value of the `event` field (`HOSTBEAT_EVENT` in the journal).
    pub name: &'static str,
    /// The journald `MESSAGE_ID`, 128 bits in hex.
    pub message_id: &'static str,
    /// The syslog priority when it is not the level's.
    pub priority: Option<u8>,
    /// What it means, in one line.
    pub meaning: &'static str,
}

/// Every event.
pub const EVENTS: &[Event] = &[
    Event {
        name: "started",
        message_id: "2961b4abd78740f5a96f56d138dc89df",
        priority: Some(NOTICE),
        meaning: "the agent started",
    },
    Event {
        name: "online",
        message_id: "9d5d277e8af840b8b67120e4c186b4d5",
        priority: Some(NOTICE),
        meaning: "the first heartbeat was accepted",
    },
    Event {
        name: "registered",
        message_id: "56f0e006d43b4cea850390078702a931",
        priority: Some(NOTICE),
        meaning: "the agent registered with the control plane",
    },
    Event {
        name: "recovered",
        message_id: "f05407075fc74549bacf43feea53ad6f",
        priority: Some(NOTICE),
        meaning: "heartbeats are accepted again after failures",
    },
    Event {
        name: "heartbeat_failed",
        message_id: "9bae37179ea24cc1bd8a2ade90e7d587",
        priority: None,
        meaning: "a heartbeat failed for a reason other than authentication",
    },
    Event {
        name: "auth_failure",
        message_id: "9f99dff555864467be7ebda566e34a4b",
        priority: None,
        meaning: "the control plane refused the credential",
    },
    Event {
        name: "unknown_agent",
        message_id: "01bdb9c928e84d92938847054461aae3",
        priority: None,
        meaning: "the control plane did not know the agent; registering again",
    },
    Event {
        name: "token_refreshed",
        message_id: "e0d00317cb6a41028d7576563232c488",
        priority: None,
        meaning: "a new access token was obtained",
    },
    Event {
        name: "token_refresh_failed",
        message_id: "1834c55ffbe74692b0fa75abc9cc76ba",
        priority: None,
        meaning: "refreshing the access token ahead of expiry failed",
    },
    Event {
        name: "token_refused",
        message_id: "f5023ac8368f430783a0a5e330ab3c2b",
        priority: None,
        meaning: "the control plane refused the access token; getting a new one",
    },
    Event {
        name: "token_lifetime_short",
        message_id: "8b61f4ddcc3a4f5aa65bea18850b40af",
        priority: None,
        meaning: "the token endpoint gives access tokens too short a lifetime to use; a floor applies",
    },
    Event {
        name: "token_reloaded",
        message_id: "2b56365eba4644f096c976fd360b5e44",
        priority: Some(NOTICE),
        meaning: "a rotated client token was read and is in use",
    },
    Event {
        name: "token_reload_failed",
        message_id: "4fa01f2a2153459db82bf90c0f837cd1",
        priority: None,
        meaning: "the client token could not be read again",
    },
    Event {
        name: "shutdown",
        message_id: "ef1ab439ca4747fb9a1a88a840a92213",
        priority: Some(NOTICE),
        meaning: "the agent is stopping",
    },
    Event {
        name: "state_corrupt",
        message_id: "1fe0d3db26604f2483b29d4fa231540b",
        priority: None,
        meaning: "the state file could not be parsed and was set aside",
    },
    Event {
        name: "state_unreadable",
        message_id: "abd4669741564862bb8d287bb2a404b4",
        priority: None,
        meaning: "the state file could not be read",
    },
    Event {
        name: "state_unwritable",
        message_id: "91451c97491a4c32b1bd2c182e134365",
        priority: None,
        meaning: "the state file could not be written",
    },
    Event {
        name: "state_saved",
        message_id: "0ac12a208d5144d4a148841b87252b42",
        priority: Some(NOTICE),
        meaning: "the state file was written again after it could not be",
    },
    Event {
        name: "config_warning",
        message_id: "bfa32abad65c4a1aa9f019382e9d8352",
        priority: None,
        meaning: "a setting is probably not what was meant",
    },
    Event {
        name: "notify_failed",
        message_id: "6b23e0858c764e2d91a057a5ec070b9b",
        priority: None,
        meaning: "systemd could not be notified",
    },
    Event {
        name: "log_fallback",
        message_id: "8b86c75920b1409287f6360a955031f5",
        priority: None,
        meaning: "the journal could not be reached; logging to stderr",
    },
    Event {
        name: "config_reloaded",
        message_id: "4b8e2d6f1a3c4e5b9d7f0a2c4e6b8d1f",
        priority: Some(NOTICE),
        meaning: "the configuration was read again on a reload",
    },
    Event {
        name: "config_rejected",
        message_id: "c5a7e9b1d3f54a6c8e0b2d4f6a8c0e2b",
        priority: None,
        meaning: "a reloaded configuration was refused; the running one stays",
    },
    Event {
        name: "clock_skew",
        message_id: "7f3c1e9a2b5d4c6e8a0f1b2c3d4e5f60",
        priority: None,
        meaning: "the local clock is more than 30 s off the control plane's",
    },
    Event {
        name: "interruption",
        message_id: "bb24dad26ad9450386ec3d557c3f7064",
        priority: None,
        meaning: "the cloud will reclaim this spot instance: a notice was received and sent to the control plane",
    },
    Event {
        name: "rebalance_recommendation",
        message_id: "f8d908b45d6a4325966b96556be379e9",
        priority: None,
        meaning: "EC2 recommends moving work off this instance; sent to the control plane",
    },
    Event {
        name: "maintenance",
        message_id: "5c0e6f3d9a7b4e21b8d4f0a2c6e19b73",
        priority: None,
        meaning: "the cloud schedules maintenance the instance survives (a live migration, a reboot, a freeze); sent to the control plane",
    },
    Event {
        name: "cloud_detected",
        message_id: "e1a94c7f20d34b6f9c5e8a1d3b7f0c26",
        priority: None,
        meaning: "the cloud's metadata service confirmed which cloud and instance this is",
    },
    Event {
        name: "imds_absent",
        message_id: "a3e1d6a388094039a558b99ffc07f941",
        priority: None,
        meaning: "no cloud found at start (DMI names none, or its metadata service did not answer, with cloud = auto): spot awareness off",
    },
    Event {
        name: "imds_unavailable",
        message_id: "33db668890e44bbebd70a5d5d643855d",
        priority: None,
        meaning: "the cloud's metadata service cannot be read; heartbeats go on",
    },
    Event {
        name: "imds_recovered",
        message_id: "0dffdb26ace94406baca71e50676406b",
        priority: Some(NOTICE),
        meaning: "the cloud's metadata service answers again",
    },
];

/// The event called `name`.
pub fn lookup(name: &str) -> Option<&'static Event> {
    EVENTS.iter().find(|e| e.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_are_unique_and_well_formed() {
        for (i, a) in EVENTS.iter().enumerate() {
            assert_eq!(a.message_id.len(), 32, "{}", a.name);
            assert!(
                a.message_id
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            for b in &EVENTS[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.message_id, b.message_id);
            }
        }
    }

    #[test]
    fn every_event_the_code_logs_is_in_the_table() {
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut stack = vec![std::path::PathBuf::from(src)];
        let mut seen = 0;
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for part in text.split("event = \"").skip(1) {
                    let name = part.split('"').next().unwrap();
                    assert!(
                        lookup(name).is_some(),
                        "{name} (in {}) is not in EVENTS",
                        path.display()
                    );
                    seen += 1;
                }
            }
        }
        assert!(seen >= 15, "only {seen} events found");
    }
}
