//! What the agent does about a failed call: docs/protocol.md section 3 as one
//! table, one arm per [`FailureClass`]. The heartbeat loop acts on it, the metrics
//! take their auth reasons from it, and `hostbeat check` says what `run` would do
//! with it; a new class is one more arm, which the compiler asks for.

use std::time::Duration;

use crate::api::{ApiError, Endpoint, FailureClass};
use crate::config::{AuthMode, Settings};

/// What a failed call is, for the table: its class and what surrounds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed {
    /// What the answer was.
    pub class: FailureClass,
    /// Where the answer came from.
    pub endpoint: Endpoint,
    /// The server's `Retry-After`, if it gave one.
    pub retry_after: Option<Duration>,
}

impl From<&ApiError> for Failed {
    fn from(error: &ApiError) -> Self {
        Self {
            class: error.class,
            endpoint: error.endpoint,
            retry_after: error.retry_after,
        }
    }
}

/// How the agent holds its credential and identity: the table's other inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// Access tokens by exchange (OAuth client credentials); else the client
    /// token is the bearer token.
    pub exchange: bool,
    /// `agent_id` is configured: the agent never registers.
    pub fixed_agent_id: bool,
}

impl Mode {
    /// The mode `settings` give.
    pub fn of(settings: &Settings) -> Self {
        Self {
            exchange: matches!(settings.auth, AuthMode::Exchange(_)),
            fixed_agent_id: settings.agent_id.is_some(),
        }
    }
}

/// The agent's reaction to a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaction {
    /// Something to do at once, and then the same call again, once.
    pub retry: Option<Retry>,
    /// Re-read the client token (env file, credential) before waiting; if it
    /// changed, the next attempt goes at once with it.
    pub reread_token: bool,
    /// The wait before the next attempt, when the call failed for good.
    pub wait: Wait,
}

/// A step that may settle a failure at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Get a new access token: the one sent expired early or was lost.
    NewAccessToken,
    /// Forget the agent id and register again.
    Register,
}

/// Which schedule the wait follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// An authentication failure: the auth schedule (`auth_backoff_cap`), the same
    /// server (every server shares the accounts), counted and logged as one.
    Auth,
    /// What the server asked for, within one cadence and `retry_after_max`; the
    /// transient schedule still counts the failure. The same server.
    AsAsked(Duration),
    /// The transient schedule (`backoff_cap`); `failover` moves the next attempt to
    /// the next server.
    Transient {
        /// Whether the next attempt goes to the next server.
        failover: bool,
    },
}

/// The table (protocol.md section 3).
pub fn react(failed: Failed, mode: Mode) -> Reaction {
    use FailureClass as C;
    let reaction = |retry, reread_token, wait| Reaction {
        retry,
        reread_token,
        wait,
    };
    // Another control-plane server is tried after a transient failure there; the
    // token endpoint is one URL, which no control-plane server replaces.
    let transient = Wait::Transient {
        failover: failed.endpoint != Endpoint::Token,
    };
    match failed.class {
        // Every request carries the token: something in between lost it. Re-reading
        // it would not help.
        C::MissingToken => reaction(None, false, Wait::Auth),
        // A new access token settles it.
        C::TokenExpired if mode.exchange => reaction(Some(Retry::NewAccessToken), false, transient),
        // On a control-plane call in exchange mode, it is the access token that was
        // refused (a server that lost its token store, a new signing key): a new
        // one first. Refused again, re-reading the client token would not help: the
        // token endpoint just accepted it.
        C::CredentialRejected if mode.exchange && failed.endpoint != Endpoint::Token => {
            reaction(Some(Retry::NewAccessToken), false, Wait::Auth)
        }
        // The client token itself is refused (as the bearer token in static mode,
        // or by the token endpoint): it may have been rotated in the env file.
        C::TokenExpired | C::CredentialRejected | C::ClientInactive => {
            reaction(None, true, Wait::Auth)
        }
        C::UnknownAgent if mode.fixed_agent_id => reaction(None, false, transient),
        C::UnknownAgent => reaction(Some(Retry::Register), false, transient),
        C::RateLimited => reaction(
            None,
            false,
            failed
                .retry_after
                .map_or(Wait::Transient { failover: false }, Wait::AsAsked),
        ),
        C::ServerError | C::Timeout | C::Connect | C::Tls | C::Dns | C::Protocol => {
            reaction(None, false, transient)
        }
    }
}

/// Whether a failure of `class` says its host is down (no answer, a 5xx, a 429: it
/// cannot or will not serve) rather than up and refusing: what the host's view
/// remembers (src/plane_view.rs), so that the token refresher stands aside while
/// the heartbeat path finds the host back.
pub fn host_down(class: FailureClass) -> bool {
    use FailureClass as C;
    match class {
        C::Timeout | C::Connect | C::Dns | C::Tls | C::ServerError | C::RateLimited => true,
        C::MissingToken
        | C::TokenExpired
        | C::CredentialRejected
        | C::ClientInactive
        | C::UnknownAgent
        | C::Protocol => false,
    }
}

impl Reaction {
    /// Whether it is an authentication failure (logged as `auth_failure`, counted
    /// in `hostbeat_auth_failures_total`, the `auth_failure` state).
    pub fn is_auth(&self) -> bool {
        self.wait == Wait::Auth
    }

    /// What `hostbeat run` does, for a person (`hostbeat check`).
    pub fn describe(&self) -> String {
        let first = match self.retry {
            Some(Retry::NewAccessToken) => "gets a new access token and retries once; then ",
            Some(Retry::Register) => "registers again and retries once; then ",
            None => "",
        };
        let reread = if self.reread_token {
            "re-reads the client token (a changed one is tried at once), else "
        } else {
            ""
        };
        let wait = match self.wait {
            Wait::Auth => "backs off on the auth schedule (auth_backoff_cap)",
            Wait::AsAsked(_) => "waits as the server asked (at most retry_after_max)",
            Wait::Transient { failover: true } => {
                "backs off (backoff_cap), trying the next server if there are several"
            }
            Wait::Transient { failover: false } => "backs off (backoff_cap)",
        };
        format!("hostbeat run {first}{reread}{wait}")
    }
}

/// The reasons that can be authentication failures, sorted: the series
/// `hostbeat_auth_failures_total` has from the start. A class is one when its
/// answer is one in some mode from some endpoint.
pub fn auth_reasons() -> Vec<&'static str> {
    let modes = [(false, false), (false, true), (true, false), (true, true)]
        .into_iter()
        .map(|(exchange, fixed_agent_id)| Mode {
            exchange,
            fixed_agent_id,
        });
    let mut reasons: Vec<&'static str> = FailureClass::all()
        .filter(|class| {
            modes.clone().any(|mode| {
                Endpoint::ALL.iter().any(|endpoint| {
                    react(
                        Failed {
                            class: *class,
                            endpoint: *endpoint,
                            retry_after: None,
                        },
                        mode,
                    )
                    .is_auth()
                })
            })
        })
        .map(FailureClass::reason)
        .collect();
    reasons.sort_unstable();
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The class of each `reason` (the first column of protocol.md's table is the
    /// answer, the second the reason).
    fn class(reason: &str) -> FailureClass {
        FailureClass::all()
            .find(|c| c.reason() == reason)
            .unwrap_or_else(|| panic!("no class {reason}"))
    }

    fn reaction(reason: &str, exchange: bool, endpoint: Endpoint) -> Reaction {
        react(
            Failed {
                class: class(reason),
                endpoint,
                retry_after: None,
            },
            Mode {
                exchange,
                fixed_agent_id: false,
            },
        )
    }

    /// reason, exchange mode, endpoint; then the reaction's retry, re-read, wait.
    type Row = (&'static str, bool, Endpoint, Option<Retry>, bool, Wait);

    const STATIC: bool = false;
    const EXCHANGE: bool = true;
    const TRANSIENT: Wait = Wait::Transient { failover: true };

    /// Row by row, protocol.md section 3.
    #[test]
    fn the_table_is_protocol_md_section_3() {
        use Endpoint::{Heartbeat, Token};
        let rows: &[Row] = &[
            // token_expired: exchange mode, a new access token and one retry;
            // static mode, as credential_rejected.
            (
                "token_expired",
                EXCHANGE,
                Heartbeat,
                Some(Retry::NewAccessToken),
                false,
                TRANSIENT,
            ),
            ("token_expired", STATIC, Heartbeat, None, true, Wait::Auth),
            // credential_rejected: on a control-plane call in exchange mode, a new
            // access token first; otherwise re-read, then the auth schedule.
            (
                "credential_rejected",
                EXCHANGE,
                Heartbeat,
                Some(Retry::NewAccessToken),
                false,
                Wait::Auth,
            ),
            (
                "credential_rejected",
                EXCHANGE,
                Token,
                None,
                true,
                Wait::Auth,
            ),
            (
                "credential_rejected",
                STATIC,
                Heartbeat,
                None,
                true,
                Wait::Auth,
            ),
            ("missing_token", STATIC, Heartbeat, None, false, Wait::Auth),
            (
                "missing_token",
                EXCHANGE,
                Heartbeat,
                None,
                false,
                Wait::Auth,
            ),
            ("client_inactive", STATIC, Heartbeat, None, true, Wait::Auth),
            ("client_inactive", EXCHANGE, Token, None, true, Wait::Auth),
            (
                "unknown_agent",
                STATIC,
                Heartbeat,
                Some(Retry::Register),
                false,
                TRANSIENT,
            ),
            (
                "rate_limited",
                STATIC,
                Heartbeat,
                None,
                false,
                Wait::Transient { failover: false },
            ),
            ("server_error", STATIC, Heartbeat, None, false, TRANSIENT),
            (
                "timeout",
                EXCHANGE,
                Token,
                None,
                false,
                Wait::Transient { failover: false },
            ),
            ("connect", STATIC, Heartbeat, None, false, TRANSIENT),
            ("dns", STATIC, Heartbeat, None, false, TRANSIENT),
            ("tls", STATIC, Heartbeat, None, false, TRANSIENT),
            ("protocol", STATIC, Heartbeat, None, false, TRANSIENT),
        ];
        for (reason, exchange, endpoint, retry, reread_token, wait) in rows {
            assert_eq!(
                reaction(reason, *exchange, *endpoint),
                Reaction {
                    retry: *retry,
                    reread_token: *reread_token,
                    wait: *wait,
                },
                "{reason}, exchange {exchange}, {endpoint:?}"
            );
        }
        // Every class has a row.
        for class in FailureClass::all() {
            assert!(
                rows.iter().any(|row| row.0 == class.reason()),
                "{class:?} has no row"
            );
        }
    }

    /// protocol.md's table names exactly the classes.
    #[test]
    fn protocol_md_names_every_class() {
        let protocol = include_str!("../docs/protocol.md");
        let section = &protocol[protocol.find("## 3.").expect("section 3")..];
        let mut documented: Vec<&str> = section
            .lines()
            .take_while(|line| !line.starts_with("## 4."))
            .filter_map(|line| line.strip_prefix("| ")?.split(" | ").nth(1))
            .filter_map(|reason| reason.strip_prefix('`')?.strip_suffix('`'))
            .collect();
        let mut classes: Vec<&str> = FailureClass::all().map(FailureClass::reason).collect();
        documented.sort_unstable();
        classes.sort_unstable();
        assert_eq!(documented, classes, "protocol.md section 3's reasons");
    }

    #[test]
    fn a_retry_after_is_waited_on_the_same_server_and_a_fixed_id_never_registers() {
        let asked = Duration::from_secs(42);
        let rate_limited = Failed {
            class: FailureClass::RateLimited,
            endpoint: Endpoint::Heartbeat,
            retry_after: Some(asked),
        };
        let plain = Mode {
            exchange: false,
            fixed_agent_id: false,
        };
        assert_eq!(react(rate_limited, plain).wait, Wait::AsAsked(asked));
        let unknown = Failed {
            class: FailureClass::UnknownAgent,
            ..rate_limited
        };
        let fixed = Mode {
            fixed_agent_id: true,
            ..plain
        };
        assert_eq!(react(unknown, fixed).retry, None);
        assert_eq!(
            react(unknown, fixed).wait,
            Wait::Transient { failover: true }
        );
    }

    #[test]
    fn the_auth_reasons_are_those_of_any_mode() {
        assert_eq!(
            auth_reasons(),
            [
                "client_inactive",
                "credential_rejected",
                "missing_token",
                "token_expired"
            ]
        );
    }
}
