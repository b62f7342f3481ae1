//! The way to the control plane and what it says of the credential: proxy, DNS,
//! TCP, HTTP and TLS, the clock against its `Date` header, the token exchange and the
//! validate call (protocol.md section 2), each with its elapsed time and, on failure,
//! the exact error or the server's own words.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use hyper_util::client::proxy::matcher::Matcher;
use tokio::time::Instant;
use url::Url;

use super::{Finding, Heartbeat, Report, heartbeat, tls};
use crate::api::{ApiClient, ApiError, FailureClass};
use crate::config::Settings;
use crate::connection::Connection;
use crate::credentials::{Bearer, Credentials};
use crate::duration::show;
use crate::heartbeat::CLOCK_SKEW_LIMIT;
use crate::reaction::{Failed, Mode, react};

pub(super) async fn check(settings: &Settings, send_heartbeat: Heartbeat, report: &mut Report) {
    proxy_environment(report);
    // The proxies the daemon's client is built with, so that this says what the
    // calls below do.
    let environment = crate::http::Proxies::from_env();
    let proxies = environment.matcher();
    let mut reachable = false;
    for server in &settings.servers {
        let proxy = proxy_for(&proxies, server);
        if server
            .as_str()
            .parse()
            .is_ok_and(|uri| environment.skips_loopback(&uri))
        {
            report.push(Finding::ok(
                "proxy.skipped",
                format!("{server} is on loopback: reached directly, never through a proxy (a proxy's loopback is not this host's)"),
            ));
        }
        if let Some(proxy) = &proxy {
            report.push(Finding::ok(
                "proxy.used",
                format!("{server} is reached through the proxy {proxy}; DNS and TCP below are to the proxy"),
            ));
        }
        let via_proxy = proxy.is_some();
        let target = proxy.unwrap_or_else(|| server.clone());
        if let Some(addresses) = resolve(&target, via_proxy, settings.connect_timeout, report).await
        {
            reachable |= connect(
                &target,
                via_proxy,
                &addresses,
                settings.connect_timeout,
                report,
            )
            .await;
        }
    }
    // Nothing answered on TCP: the credential, HTTP and TLS cannot be checked, and
    // trying would only report the same failure again in other words.
    if !reachable {
        report.push(Finding::warn(
            "validate.skipped",
            "the credential, HTTP and TLS were not checked: no control plane accepted a connection",
            "they need a connection to the control plane",
            "make server_url reachable from this host, then run hostbeat check again",
        ));
        return;
    }
    let (api, credentials) = match Connection::inspecting(settings) {
        Ok(connection) => connection.into_parts(),
        Err(e) => {
            report.push(Finding::fail(
                "http.client",
                format!("cannot build the HTTP client: {e}"),
                "hostbeat run exits 78 with this line",
                e.fix().to_owned(),
            ));
            return;
        }
    };
    let accepted = credential(settings, &api, &credentials, report).await;
    if send_heartbeat == Heartbeat::Send {
        match &accepted {
            Some(bearer) => heartbeat::send(settings, &api, bearer, report).await,
            None => report.push(Finding::warn(
                "heartbeat.skipped",
                "not sent: the control plane did not accept the credential",
                "a heartbeat needs a credential the control plane accepts",
                format!(
                    "make the control plane accept the client token (fingerprint {}), then run hostbeat check --heartbeat again",
                    settings.client_token.fingerprint()
                ),
            )),
        }
    }
    clock(&api, report);
}

/// The proxy variables of this process's environment (passwords hidden). The
/// daemon's come from its unit: the same only when check runs with them.
fn proxy_environment(report: &mut Report) {
    let found: Vec<String> = crate::http::PROXY_VARIABLES
        .iter()
        .filter_map(|name| {
            let value = std::env::var(name).ok().filter(|v| !v.is_empty())?;
            Some(format!("{name}={}", crate::http::without_password(&value)))
        })
        .collect();
    if found.is_empty() {
        report.push(Finding::ok("proxy.none", "none set (direct connections)"));
    } else {
        report.push(Finding::ok(
            "proxy.set",
            format!(
                "{} (this process's environment; `hostbeat run` uses its unit's)",
                found.join(", ")
            ),
        ));
    }
}

/// The proxy `server` is reached through, if any (NO_PROXY applied).
fn proxy_for(proxies: &Matcher, server: &Url) -> Option<Url> {
    let uri: http::Uri = server.as_str().parse().ok()?;
    let intercept = proxies.intercept(&uri)?;
    let mut proxy = Url::parse(&intercept.uri().to_string()).ok()?;
    // Whatever the matcher made of a user and password (one with an `@` in it is
    // split anywhere), none of it is shown.
    let _ = proxy.set_username("");
    let _ = proxy.set_password(None);
    Some(proxy)
}

/// `target` is the server, or the proxy it is reached through (`via_proxy`).
async fn resolve(
    target: &Url,
    via_proxy: bool,
    limit: Duration,
    report: &mut Report,
) -> Option<Vec<SocketAddr>> {
    let setting = if via_proxy {
        "the proxy variable"
    } else {
        "server_url"
    };
    let host = target.host_str()?.trim_matches(['[', ']']).to_owned();
    let port = target.port_or_known_default()?;
    let started = Instant::now();
    let lookup = tokio::time::timeout(limit, tokio::net::lookup_host((host.as_str(), port))).await;
    let took = show(started.elapsed());
    match lookup {
        Ok(Ok(addresses)) => {
            let addresses: Vec<SocketAddr> = addresses.collect();
            let shown: Vec<String> = addresses.iter().map(|a| a.ip().to_string()).collect();
            report.push(Finding::ok(
                "dns.resolves",
                format!("{host} resolves to {} ({took})", shown.join(", ")),
            ));
            Some(addresses)
        }
        Ok(Err(e)) => {
            report.push(Finding::fail(
                "dns.fails",
                format!("{host} does not resolve: {e} ({took})"),
                "no heartbeat can leave this host for this server",
                format!(
                    "check the name in {setting} and this host's resolver: resolvectl query {host}"
                ),
            ));
            None
        }
        Err(_) => {
            report.push(Finding::fail(
                "dns.timeout",
                format!("{host}: no answer from the resolver within connect_timeout ({took})"),
                "name resolution hangs; every heartbeat waits for it",
                "check the resolver: resolvectl status",
            ));
            None
        }
    }
}

/// Whether a TCP connection to one of `addresses` succeeds, said either way.
async fn connect(
    target: &Url,
    via_proxy: bool,
    addresses: &[SocketAddr],
    limit: Duration,
    report: &mut Report,
) -> bool {
    let mut errors = Vec::new();
    for address in addresses {
        let started = Instant::now();
        match tokio::time::timeout(limit, tokio::net::TcpStream::connect(address)).await {
            Ok(Ok(_)) => {
                report.push(Finding::ok(
                    "tcp.connects",
                    format!("connected to {address} in {}", show(started.elapsed())),
                ));
                return true;
            }
            Ok(Err(e)) => errors.push(format!(
                "{address}: {} ({})",
                crate::api::io_words(&e),
                show(started.elapsed())
            )),
            Err(_) => errors.push(format!(
                "{address}: no answer within connect_timeout ({})",
                show(started.elapsed())
            )),
        }
    }
    let (meaning, fix) = if via_proxy {
        (
            "the proxy is down, its port is wrong, or a firewall drops the connection",
            format!(
                "check the proxy {target} (HTTPS_PROXY, HTTP_PROXY or ALL_PROXY in this environment) and that it listens"
            ),
        )
    } else {
        (
            "the server is down, the port is wrong, or a firewall drops the connection",
            format!(
                "check server_url's port, and that the control plane listens: curl -sv {target}"
            ),
        )
    };
    report.push(Finding::fail(
        "tcp.fails",
        format!("cannot connect to {target}: {}", errors.join("; ")),
        meaning,
        fix,
    ));
    false
}

/// The token exchange (exchange mode), then validate with the bearer token; the
/// bearer when the control plane accepts it.
async fn credential(
    settings: &Settings,
    api: &ApiClient,
    credentials: &Credentials,
    report: &mut Report,
) -> Option<Bearer> {
    let started = Instant::now();
    let bearer = match credentials.bearer().await {
        Ok(bearer) => {
            if credentials.is_exchange() {
                report.push(Finding::ok(
                    "exchange.ok",
                    format!(
                        "the token endpoint issued an access token{} ({})",
                        bearer
                            .expires_at
                            .map(|at| format!(
                                " valid {}s",
                                at.saturating_duration_since(Instant::now()).as_secs()
                            ))
                            .unwrap_or_default(),
                        show(started.elapsed())
                    ),
                ));
            }
            bearer
        }
        Err(error) => {
            report.push(failure(settings, "exchange", &error, started.elapsed()));
            return None;
        }
    };
    let started = Instant::now();
    let validated = api.validate(&bearer.token).await;
    let took = started.elapsed();
    // Any HTTP answer, a refusal included, proves the way there (and TLS).
    if validated
        .as_ref()
        .map_or_else(|e| e.status.is_some(), |_| true)
    {
        report.push(Finding::ok(
            "http.answers",
            format!("{} answers over {}", api.server(), api.server().scheme()),
        ));
        if let Some(certificate) = api.peer_certificate() {
            report.push(tls::accepted(settings, &certificate, SystemTime::now()));
        }
    }
    match validated {
        Ok(answer) if answer.valid => {
            report.push(Finding::ok(
                "validate.ok",
                format!(
                    "the control plane accepts the credential (client {}{}) ({})",
                    answer.client_id.as_deref().unwrap_or("?"),
                    answer.name.map(|n| format!(", {n:?}")).unwrap_or_default(),
                    show(took)
                ),
            ));
            return Some(bearer);
        }
        Ok(_) => report.push(Finding::fail(
            "validate.invalid",
            "the control plane answered 200 but \"valid\": false",
            "the control plane does not accept this credential",
            rotate_fix(settings),
        )),
        Err(error) => report.push(failure(settings, "validate", &error, took)),
    }
    None
}

/// A failed call as a finding: the class decides the meaning and the fix; the
/// summary carries the status and the server's own words.
pub(super) fn failure(
    settings: &Settings,
    area: &'static str,
    error: &ApiError,
    took: Duration,
) -> Finding {
    let summary = format!("{error} ({})", show(took));
    let rotate = rotate_fix(settings);
    // What `hostbeat run` does about it, from the table the daemon follows.
    let run_does = react(Failed::from(error), Mode::of(settings)).describe();
    let (area, meaning, fix) = match error.class {
        FailureClass::CredentialRejected | FailureClass::TokenExpired => (
            area,
            "the control plane does not accept this token: rotated on one side only, a typo, or the client was deleted",
            rotate.as_str(),
        ),
        FailureClass::ClientInactive => (
            area,
            "the token is right but the client is deactivated on the control plane",
            "activate the client on the control plane; hostbeat recovers by itself, no restart needed",
        ),
        FailureClass::MissingToken => (
            area,
            "the server got no token although hostbeat sends one: something in between (a proxy, a load balancer) strips the Authorization header",
            "let the Authorization header through every proxy and load balancer in front of the control plane",
        ),
        FailureClass::Tls => {
            let (meaning, fix) = tls::refused(error);
            return Finding::fail(
                "tls.refused",
                summary,
                format!("{meaning}; {run_does}"),
                fix,
            );
        }
        FailureClass::Connect | FailureClass::Timeout | FailureClass::Dns => (
            "http",
            "no HTTP answer from the control plane",
            "check server_url and the proxy, and that the control plane listens (curl -sv on server_url shows the way)",
        ),
        FailureClass::RateLimited | FailureClass::ServerError => (
            area,
            "the control plane has a problem of its own",
            "nothing to fix on this host; ask the control plane's operators",
        ),
        FailureClass::UnknownAgent | FailureClass::Protocol => (
            area,
            "the answer is not what protocol.md describes: a wrong path, or not a hostbeat control plane",
            "check server_url and the *_path settings against the control plane's API",
        ),
    };
    Finding::fail(
        format!("{area}.{}", error.class.reason()),
        summary,
        format!("{meaning}; {run_does}"),
        fix,
    )
}

/// How to put the current client token in place, standing alone: the fingerprint
/// to compare, and where the token in use comes from, in that place's terms.
fn rotate_fix(settings: &Settings) -> String {
    use crate::config::token::TokenOrigin;
    let compare = format!(
        "compare the client token's fingerprint {} with the control plane's copy (printf %s \"$TOKEN\" | sha256sum | cut -c1-12)",
        settings.client_token.fingerprint()
    );
    let env_file = settings.token_source.env_file.display();
    let put = match &settings.token_source.origin {
        TokenOrigin::EnvFile(path) => format!(
            "put the current token in {} (HOSTBEAT_CLIENT_TOKEN=<token>); then: systemctl reload hostbeat",
            path.display()
        ),
        TokenOrigin::Environment => format!(
            "the token in use is set by an Environment= line, which wins over the env file and is read only at a start: remove it (systemctl edit hostbeat), put the current token in {env_file} (HOSTBEAT_CLIENT_TOKEN=<token>); then: systemctl restart hostbeat"
        ),
        TokenOrigin::ConfigFile(path) => format!(
            "put the current token in {env_file} (HOSTBEAT_CLIENT_TOKEN=<token>), which wins over client_token in {}; then: systemctl reload hostbeat",
            path.display()
        ),
        TokenOrigin::TokenFile(path) => format!(
            "put the current token in {}; then: systemctl reload hostbeat",
            path.display()
        ),
        // systemd copies a credential at the start: its source changes by a restart.
        TokenOrigin::Credential(_) => "put the current token in the file that LoadCredential=client-token: names (systemctl cat hostbeat); then: systemctl restart hostbeat".to_owned(),
    };
    format!("{compare}; {put}")
}

/// The offset from the server's `Date` header, seen on the calls above.
fn clock(api: &ApiClient, report: &mut Report) {
    match api.clock_offset() {
        None => report.push(Finding::ok(
            "clock.unknown",
            "not compared: no Date header was seen",
        )),
        Some(offset) if offset.unsigned_abs() <= CLOCK_SKEW_LIMIT.as_secs() => report.push(
            Finding::ok(
                "clock.ok",
                format!(
                    "within {} of the control plane's",
                    show(Duration::from_secs(offset.unsigned_abs()))
                ),
            ),
        ),
        Some(offset) => report.push(Finding::warn(
            "clock.skew",
            format!(
                "{} {} the control plane's (from its Date header)",
                show(Duration::from_secs(offset.unsigned_abs())),
                if offset > 0 { "behind" } else { "ahead of" }
            ),
            "token lifetimes are monotonic and unaffected, but sent_at and the server's view of this host are off, and TLS certificate checks may fail",
            "synchronise the clock: timedatectl status; timedatectl set-ntp true",
        )),
    }
}
