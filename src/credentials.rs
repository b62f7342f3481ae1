//! The bearer token for each call: the client token itself (static mode), or an
//! access token obtained with the OAuth client-credentials grant and refreshed ahead
//! of its expiry (exchange mode, protocol.md section 1).
//!
//! Invariants:
//! - lifetimes are counted on the monotonic clock (`tokio::time::Instant`) from the
//!   moment the answer arrived; `expires_in` first, the JWT `exp` claim as fallback;
//!   a token with neither is used until a call answers 401;
//! - one exchange at a time: callers that need a token meanwhile wait for it and
//!   share its result ([`Credentials::refresh`] takes the generation it found stale);
//! - the background refresher works only while the current token is still valid;
//!   once it has expired, whoever needs a token asks for one, so that a failing
//!   token endpoint is never hit by two retry loops at once;
//! - a rotated client token replaces the old one and drops the access token it got.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiError};
use crate::config::token::TokenSource;
use crate::config::{AuthMode, ConfigError, Exchange};
use crate::retry::RetryPolicy;
use crate::secret::Token;

/// A token to send, and which generation it is (to report it stale).
#[derive(Debug, Clone)]
pub struct Bearer {
    /// The token.
    pub token: Arc<Token>,
    /// Increases with every token obtained; 0 for the client token in static mode.
    pub generation: u64,
    /// When it expires, if known.
    pub expires_at: Option<Instant>,
}

/// An access token and its schedule.
#[derive(Debug)]
struct Access {
    bearer: Bearer,
    refresh_at: Option<Instant>,
}

/// What re-reading the client token found.
#[derive(Debug)]
pub enum Reread {
    /// A different token, now in use.
    Changed(crate::secret::Fingerprint),
    /// The same token.
    Unchanged,
}

/// The agent's credentials.
#[derive(Debug)]
pub struct Credentials {
    api: Arc<ApiClient>,
    exchange: Option<Exchange>,
    source: TokenSource,
    client_token: Mutex<Arc<Token>>,
    access: watch::Sender<Option<Arc<Access>>>,
    /// Held while an exchange runs: the single flight.
    exchanging: tokio::sync::Mutex<()>,
    generation: std::sync::atomic::AtomicU64,
    /// Whether a lifetime under [`LIFETIME_FLOOR`] was reported (once a run).
    short_lifetime_said: std::sync::atomic::AtomicBool,

    refresh_margin: Duration,
    /// The longest `Retry-After` honoured.
    retry_after_max: Duration,
    /// The refresher's retries, paced by the heartbeat's cadence as it changes.
    retry: Mutex<RetryPolicy>,
}

impl Credentials {
    /// Credentials for `auth`, starting from `client_token`.
    pub fn new(
        api: Arc<ApiClient>,
        auth: &AuthMode,
        client_token: Arc<Token>,
        source: TokenSource,
        refresh_margin: Duration,
        retry_after_max: Duration,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            api,
            exchange: match auth {
                AuthMode::Static => None,
                AuthMode::Exchange(exchange) => Some(exchange.clone()),
            },
            source,
            client_token: Mutex::new(client_token),
            access: watch::Sender::new(None),
            exchanging: tokio::sync::Mutex::new(()),
            generation: std::sync::atomic::AtomicU64::new(0),
            short_lifetime_said: std::sync::atomic::AtomicBool::new(false),

            refresh_margin,
            retry_after_max,
            retry: Mutex::new(retry),
        }
    }

    /// Whether access tokens are obtained by exchange.
    pub fn is_exchange(&self) -> bool {
        self.exchange.is_some()
    }

    /// The client token in use.
    pub fn client_token(&self) -> Arc<Token> {
        self.client_token.lock().expect("not poisoned").clone()
    }

    /// The token for the next call: the current one while it is valid, else a new one.
    pub async fn bearer(&self) -> Result<Bearer, ApiError> {
        let Some(exchange) = &self.exchange else {
            return Ok(self.static_bearer());
        };
        let current = self.access.borrow().clone();
        match current {
            Some(access) if !expired(&access.bearer) => Ok(access.bearer.clone()),
            stale => {
                self.exchange_anew(exchange, stale.map(|a| a.bearer.generation))
                    .await
            }
        }
    }

    /// The client token as the bearer token (static mode).
    fn static_bearer(&self) -> Bearer {
        Bearer {
            token: self.client_token(),
            generation: 0,
            expires_at: None,
        }
    }

    /// When the access token in use expires, if known (for the status line).
    pub fn current_expiry(&self) -> Option<Instant> {
        self.access
            .borrow()
            .as_ref()
            .and_then(|a| a.bearer.expires_at)
    }

    /// Obtains a new access token, unless another caller already replaced the
    /// generation `stale` while this one waited: then that token is shared.
    /// In static mode there is nothing to obtain: the client token is the bearer.
    pub async fn refresh(&self, stale: Option<u64>) -> Result<Bearer, ApiError> {
        match &self.exchange {
            Some(exchange) => self.exchange_anew(exchange, stale).await,
            None => Ok(self.static_bearer()),
        }
    }

    async fn exchange_anew(
        &self,
        exchange: &Exchange,
        stale: Option<u64>,
    ) -> Result<Bearer, ApiError> {
        let _single_flight = self.exchanging.lock().await;
        if let Some(access) = self.access.borrow().as_ref()
            && Some(access.bearer.generation) != stale
            && !expired(&access.bearer)
        {
            return Ok(access.bearer.clone());
        }
        let client_token = self.client_token();
        let answer = self.api.exchange(exchange, &client_token).await?;
        let received = Instant::now();
        let said = token_lifetime(answer.expires_in, &answer.access_token, SystemTime::now());
        // A lifetime too short to use would drive an exchange per round trip: it is
        // believed to be the floor instead (a server that means it refuses the token
        // as expired, which the heartbeat's one retry and backoff then bound), and
        // said once.
        let lifetime = said.map(|l| l.max(LIFETIME_FLOOR));
        if let Some(l) = said
            && l < LIFETIME_FLOOR
            && !self
                .short_lifetime_said
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                event = "token_lifetime_short",
                lifetime_ms = u64::try_from(l.as_millis()).unwrap_or(u64::MAX),
                "the token endpoint gives access tokens a lifetime of {}, too short to use; treating it as {}, so that it is asked at most twice a minute",
                crate::duration::show(l),
                crate::duration::show(LIFETIME_FLOOR)
            );
        }
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let bearer = Bearer {
            token: Arc::new(Token::new(answer.access_token)),
            generation,
            expires_at: lifetime.map(|l| received + l),
        };
        let refresh_at = lifetime.map(|l| received + refresh_after(l, self.refresh_margin));
        // Routine: `systemctl status` and `hostbeat status` show the time left; a
        // refresh that fails is what the journal reports.
        tracing::debug!(
            event = "token_refreshed",
            access_token_fp = %bearer.token.fingerprint(),
            lifetime_s = lifetime.map(|l| l.as_secs()),
            refresh_in_s = refresh_at.map(|at| at.duration_since(received).as_secs()),
            "access token obtained{}",
            lifetime.map_or_else(
                || " (no lifetime given: used until the server rejects it)".to_owned(),
                |l| format!(", valid {}", crate::duration::show(l))
            ),
        );
        self.access.send_replace(Some(Arc::new(Access {
            bearer: bearer.clone(),
            refresh_at,
        })));
        Ok(bearer)
    }

    /// Where the client token is read again from.
    pub fn token_source(&self) -> &TokenSource {
        &self.source
    }

    /// Reads the client token again (after a rejection, on SIGHUP). A changed token
    /// replaces the old one and invalidates the access token obtained with it.
    pub fn reread_client_token(&self) -> Result<Reread, ConfigError> {
        let fresh = self.source.reread()?;
        let mut current = self.client_token.lock().expect("not poisoned");
        if **current == fresh {
            return Ok(Reread::Unchanged);
        }
        let fingerprint = fresh.fingerprint().clone();
        *current = Arc::new(fresh);
        drop(current);
        self.access.send_replace(None);
        Ok(Reread::Changed(fingerprint))
    }

    /// The refresher's retries follow the heartbeat's cadence in effect.
    pub fn pace(&self, cadence: Duration) {
        let mut retry = self.retry.lock().expect("not poisoned");
        *retry = retry.at_cadence(cadence);
    }

    fn retry_policy(&self) -> RetryPolicy {
        *self.retry.lock().expect("not poisoned")
    }

    /// Refreshes each access token ahead of its expiry until `shutdown`; a failed
    /// refresh is retried on the transient schedule while the old token is still
    /// valid. Before every try it looks at the control plane's view: while the
    /// heartbeat path finds the plane down, the refresher stands aside (the next
    /// heartbeat attempt is the probe, and the refresh follows once the plane
    /// answers). Its deadline is not put on the timer grid ([`crate::wheel`]): a
    /// refresh comes minutes apart, and would save one wake-up each.
    pub async fn run_refresher(self: Arc<Self>, shutdown: CancellationToken) {
        let mut changes = self.access.subscribe();
        let mut backoff = self.retry_policy().backoff();
        loop {
            let current = changes.borrow_and_update().clone();
            let Some((generation, refresh_at, expires_at)) = current
                .and_then(|a| Some((a.bearer.generation, a.refresh_at?, a.bearer.expires_at?)))
                .filter(|(_, _, expires_at)| *expires_at > Instant::now())
            else {
                // No token, one without a lifetime, or one that has expired (whoever
                // needs a token now asks for it, on its own backoff): nothing to
                // schedule until a new token arrives.
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    result = changes.changed() => if result.is_err() { return },
                }
                continue;
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                result = changes.changed() => { if result.is_err() { return } continue }
                () = tokio::time::sleep_until(refresh_at) => {}
            }
            loop {
                // One view of the plane (protocol.md section 3): not while the
                // heartbeat path finds it down. The budget holds the request
                // itself, as it holds every other (src/plane_view.rs).
                if let Some(exchange) = &self.exchange {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = self.api.until_plane_answers(&exchange.token_url) => {}
                        () = tokio::time::sleep_until(expires_at) => {
                            backoff.reset();
                            break;
                        }
                    }
                }
                let refreshed = tokio::select! {
                    // A reload's new refresher takes over at once.
                    () = shutdown.cancelled() => return,
                    refreshed = self.refresh(Some(generation)) => refreshed,
                };
                match refreshed {
                    Ok(_) => {
                        backoff.reset();
                        break;
                    }
                    Err(error) => {
                        backoff.adopt(self.retry_policy());
                        // What a token endpoint asks for (429, 503 with
                        // Retry-After) is honoured, within retry_after_max.
                        let drawn = backoff.next_delay();
                        let delay = error
                            .retry_after
                            .map_or(drawn, |asked| drawn.max(asked.min(self.retry_after_max)));
                        let give_up = Instant::now() + delay >= expires_at;
                        // No flooding: the first failure for this token and the
                        // giving up are worth a line; the retries between, debug.
                        if backoff.failures() > 1 && !give_up {
                            tracing::debug!(
                                reason = error.class.reason(),
                                "token refresh failed again: {error}; next attempt in {}",
                                crate::duration::show(delay)
                            );
                        } else {
                            tracing::warn!(
                                event = "token_refresh_failed",
                                reason = error.class.reason(),
                                endpoint = error.endpoint.name(),
                                http_status = error.status,
                                consecutive_failures = backoff.failures(),
                                next_attempt_s =
                                    (!give_up).then_some(crate::duration::seconds(delay)),
                                "token refresh failed: {error}{}",
                                if give_up {
                                    "; the next call will ask for a new token"
                                } else {
                                    ""
                                }
                            );
                        }
                        if give_up {
                            // The token expires before the next try would: let it run
                            // out, then leave the next one to the heartbeat loop,
                            // which asks (on its own backoff) when it needs one.
                            backoff.reset();
                            tokio::select! {
                                () = shutdown.cancelled() => return,
                                () = tokio::time::sleep_until(expires_at) => {}
                            }
                            break;
                        }
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
        }
    }
}

fn expired(bearer: &Bearer) -> bool {
    bearer.expires_at.is_some_and(|at| Instant::now() >= at)
}

/// When to refresh a token of lifetime `l` (protocol.md section 1): when the time
/// left falls under `min(max(margin, 0.2 l), 0.5 l)`, less a jitter of up to 25% of
/// `l`. The jitter is wide so that a fleet started at once, whose tokens were all
/// issued within one interval, does not exchange them in step ever after: at 5% of
/// a 15-minute token, 10,000 agents refreshed within 45 s, half again the plane's
/// steady load (the herd benchmark, docs/reliability.md); at 25%, within 225 s.
pub fn refresh_after(lifetime: Duration, margin: Duration) -> Duration {
    let ahead = margin.max(lifetime.mul_f64(0.2)).min(lifetime.mul_f64(0.5));
    let jitter = lifetime.mul_f64(0.25 * fastrand::f64());
    lifetime.saturating_sub(ahead).saturating_sub(jitter)
}

/// The shortest lifetime believed: with the refresh a fraction of it ahead, at most
/// two exchanges a minute, whatever the token endpoint says (`expires_in: 0.05`
/// drove 142 exchanges in 9.3 s).
pub const LIFETIME_FLOOR: Duration = Duration::from_secs(60);

/// The longest lifetime believed. A server may answer anything (`expires_in:
/// 1e300`), and the refresh point is an `Instant` that must not overflow; a token
/// that truly lives longer is only refreshed earlier than it needs to be.
pub const LIFETIME_CEILING: Duration = Duration::from_secs(30 * 24 * 3600);

/// An access token's lifetime from the token answer: `expires_in` first, the JWT
/// `exp` claim as fallback, at most [`LIFETIME_CEILING`]; `None` when neither says.
pub fn token_lifetime(
    expires_in: Option<f64>,
    access_token: &str,
    now: SystemTime,
) -> Option<Duration> {
    expires_in
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| Duration::try_from_secs_f64(s).unwrap_or(LIFETIME_CEILING))
        .or_else(|| jwt_remaining_lifetime(access_token, now))
        .map(|lifetime| lifetime.min(LIFETIME_CEILING))
}

/// The time left before a JWT's `exp`, read without verifying the signature (the
/// agent cannot, and need not: the server verifies). `None` when the token is not a
/// JWT or has no `exp`.
pub fn jwt_remaining_lifetime(token: &str, now: SystemTime) -> Option<Duration> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    if !exp.is_finite() || exp <= 0.0 {
        return None;
    }
    // Checked: an `exp` past what a Duration or a SystemTime holds (found by the
    // jwt_payload fuzz target, `1e300`) is no lifetime, not a panic.
    let expires = SystemTime::UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(exp).ok()?)?;
    Some(expires.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the same for `expires_in`, which aborted the agent in
    /// `Duration::from_secs_f64`, then in `Instant + lifetime`.
    #[test]
    fn any_expires_in_gives_a_lifetime_within_the_ceiling() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        for (expires_in, expected) in [
            (Some(1e300), Some(LIFETIME_CEILING)),
            (Some(f64::MAX), Some(LIFETIME_CEILING)),
            (Some(900.0), Some(Duration::from_secs(900))),
            (Some(f64::NAN), None),
            (Some(-1.0), None),
            (None, None),
        ] {
            assert_eq!(
                token_lifetime(expires_in, "opaque", now),
                expected,
                "{expires_in:?}"
            );
        }
    }

    /// Regression: fuzz/artifacts/jwt_payload crash, an `exp` too large for a
    /// Duration, which aborted the agent.
    #[test]
    fn an_exp_beyond_any_clock_is_no_lifetime_not_a_panic() {
        use base64::Engine;
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        for exp in ["1e300", "18446744073709551615", "1.8e19", "9e18"] {
            let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(format!(r#"{{"exp":{exp}}}"#));
            let lifetime = jwt_remaining_lifetime(&format!("eyJhbGciOiJub25lIn0.{payload}."), now);
            assert!(
                lifetime.is_none_or(|l| l > Duration::from_secs(3600)),
                "{exp}: {lifetime:?}"
            );
        }
    }

    #[test]
    fn refresh_point_follows_the_protocol_examples() {
        let margin = Duration::from_secs(60);
        for _ in 0..200 {
            let fifteen = refresh_after(Duration::from_secs(900), margin);
            assert!(
                fifteen >= Duration::from_secs(495) && fifteen <= Duration::from_secs(720),
                "{fifteen:?}"
            );
            let ten = refresh_after(Duration::from_secs(10), margin);
            assert!(
                ten >= Duration::from_millis(2500) && ten <= Duration::from_secs(5),
                "{ten:?}"
            );
            let hour = refresh_after(Duration::from_secs(3600), margin);
            assert!(
                hour >= Duration::from_secs(1980) && hour <= Duration::from_secs(2880),
                "{hour:?}"
            );
        }
    }

    #[test]
    fn jwt_exp_is_read_without_verification() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"x","exp":1000300}"#);
        let token = format!("eyJhbGciOiJIUzI1NiJ9.{claims}.c2ln");
        assert_eq!(
            jwt_remaining_lifetime(&token, now),
            Some(Duration::from_secs(300))
        );
        assert_eq!(jwt_remaining_lifetime("opaque-token", now), None);
        let no_exp = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"x"}"#);
        assert_eq!(jwt_remaining_lifetime(&format!("a.{no_exp}.b"), now), None);
    }
}
