//! The front door: records each request, applies the fault in force, then hands the
//! request to the protocol routes.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::{Request, StatusCode};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

use crate::{ControlPlane, PlaneEvent, RecordedRequest};

/// A misbehaviour on demand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// The connection is closed without an answer.
    Outage,
    /// A fixed answer.
    Status {
        /// The status code.
        status: u16,
        /// The body.
        #[serde(default)]
        body: String,
        /// A `Retry-After` header value.
        #[serde(default)]
        retry_after: Option<String>,
        /// A `WWW-Authenticate` header value.
        #[serde(default)]
        www_authenticate: Option<String>,
    },
    /// The normal answer, after a delay.
    Slow {
        /// The delay in milliseconds.
        delay_ms: u64,
    },
    /// `200` with a body that is not JSON.
    Garbage,
    /// `200` announcing a 4 KiB body, of which the connection carries 16 bytes
    /// before it is closed: a reset in the middle of the body.
    CutMidBody,
    /// `200` with a body of this many bytes.
    Oversized {
        /// The size.
        bytes: usize,
    },
    /// `307` to another location.
    Redirect {
        /// Where to.
        location: String,
    },
}

impl Fault {
    /// A fixed answer with `status` and `body`, no extra headers.
    pub fn status(status: u16, body: impl Into<String>) -> Self {
        Self::Status {
            status,
            body: body.into(),
            retry_after: None,
            www_authenticate: None,
        }
    }

    /// A fixed answer with `status` and a `Retry-After` header (seconds or a date).
    pub fn retry_after(status: u16, value: impl Into<String>) -> Self {
        Self::Status {
            status,
            body: String::new(),
            retry_after: Some(value.into()),
            www_authenticate: None,
        }
    }
}

/// A plane of fixed capacity: what it serves in a second, and what it does with
/// the requests beyond.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    /// Requests served in each second of the plane's clock.
    pub per_second: f64,
    /// What a request beyond them gets.
    pub overload: Overload,
}

/// What an overloaded plane does with a request beyond its capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Overload {
    /// `503` at once, without `Retry-After` (a load balancer's answer), costing
    /// the plane nothing.
    Refuse,
    /// `429` at once with a `Retry-After` spread over `min_s..=max_s` seconds
    /// (protocol.md section 3, "Shedding load across a fleet"), costing the plane
    /// nothing. The values go round the range in steps of 37 s, so that
    /// consecutive refusals ask for different waits.
    Shed {
        /// The shortest wait asked for, in seconds.
        min_s: u64,
        /// The longest.
        max_s: u64,
    },
    /// The normal answer, after this many milliseconds (longer than a client's
    /// timeout: the client gives up first), costing the plane nothing.
    Stall {
        /// The delay in milliseconds.
        delay_ms: u64,
    },
    /// One queue, first come first served at the capacity's rate, with no
    /// admission control: a request waits its turn and is answered then, however
    /// long its client has waited, and the plane spends the work on it all the
    /// same. One that would wait longer than `queue_ms` is dropped (the
    /// connection closed, no work spent). Past the clients' timeout, everything
    /// the plane serves is already abandoned: the metastable failure.
    Queue {
        /// The longest wait before a request is dropped, in milliseconds.
        queue_ms: u64,
    },
}

/// The plane's load against a [`Capacity`].
#[derive(Debug, Clone)]
pub(crate) struct Load {
    capacity: Capacity,
    /// [`Overload::Refuse`] and [`Overload::Stall`]: the current second, and how
    /// much of it is used.
    second: u64,
    served: u64,
    allowance: f64,
    /// [`Overload::Queue`]: when the plane is done with the requests it holds.
    free_at_ms: f64,
    /// [`Overload::Shed`]: refusals so far, which pick the next `Retry-After`.
    shed: u64,
}

impl Load {
    pub(crate) fn new(capacity: Capacity) -> Self {
        Self {
            capacity,
            second: u64::MAX,
            served: 0,
            allowance: 0.0,
            free_at_ms: 0.0,
            shed: 0,
        }
    }

    /// The same load (what it holds, its queue) at another capacity.
    pub(crate) fn retarget(&mut self, capacity: Capacity) {
        self.capacity = capacity;
    }

    /// Counts a request at `at_ms`: the fault it gets, or `None` if served at once.
    #[allow(
        clippy::cast_precision_loss,
        reason = "requests in a second, far below 2^52"
    )]
    pub(crate) fn admit(&mut self, at_ms: u64) -> Option<Fault> {
        let per_second = self.capacity.per_second.max(f64::MIN_POSITIVE);
        let beyond = match self.capacity.overload {
            Overload::Refuse => Fault::status(503, r#"{"error":"overloaded"}"#),
            Overload::Shed { min_s, max_s } => {
                let span = max_s.saturating_sub(min_s).saturating_add(1);
                let wait = min_s + self.shed.wrapping_mul(37) % span;
                Fault::retry_after(429, wait.to_string())
            }
            Overload::Stall { delay_ms } => Fault::Slow { delay_ms },
            Overload::Queue { queue_ms } => return self.queue(at_ms, per_second, queue_ms),
        };
        // Whole seconds; a fraction of a request per second is carried to the next,
        // so that 333.3 a second serves 1,000 in 3 seconds. What a second did not
        // use is not carried.
        let second = at_ms / 1000;
        if second != self.second {
            self.allowance = self.allowance.fract() + per_second;
            self.second = second;
            self.served = 0;
        }
        if (self.served as f64) < self.allowance.floor() {
            self.served += 1;
            None
        } else {
            self.shed += 1;
            Some(beyond)
        }
    }

    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "milliseconds, far below 2^52"
    )]
    fn queue(&mut self, at_ms: u64, per_second: f64, queue_ms: u64) -> Option<Fault> {
        let at = at_ms as f64;
        let start = self.free_at_ms.max(at);
        if start - at > queue_ms as f64 {
            return Some(Fault::Outage);
        }
        self.free_at_ms = start + 1000.0 / per_second;
        let wait_ms = (self.free_at_ms - at).round() as u64;
        (start > at).then_some(Fault::Slow { delay_ms: wait_ms })
    }
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every protocol request.
    #[default]
    All,
    /// The token endpoint only.
    Token,
    /// Everything but the token endpoint.
    Agents,
}

#[derive(Debug, Clone)]
pub(crate) struct FaultRule {
    pub fault: Fault,
    pub scope: Scope,
    pub remaining: Option<u32>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) async fn handle(
    plane: ControlPlane,
    router: axum::Router,
    request: Request<Incoming>,
) -> Result<Response, BoxError> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let path = parts.uri.path().to_owned();
    if path.starts_with("/admin/") {
        let request = Request::from_parts(parts, Body::from(body));
        return Ok(route(router, request).await);
    }
    let fault = take_fault_and_record(&plane, &parts, &body);
    if let Some(fault) = &fault {
        plane.emit(PlaneEvent::Faulted {
            path,
            fault: describe(fault),
        });
    }
    let request = Request::from_parts(parts, Body::from(body));
    let date_offset = plane.shared.config.date_offset;
    answer(router, request, fault).await.map(|mut response| {
        if date_offset != 0 {
            let now = std::time::SystemTime::now();
            let shifted = if date_offset > 0 {
                now + Duration::from_secs(date_offset.unsigned_abs())
            } else {
                now - Duration::from_secs(date_offset.unsigned_abs())
            };
            if let Ok(value) = httpdate::fmt_http_date(shifted).parse() {
                response.headers_mut().insert(hyper::header::DATE, value);
            }
        }
        response
    })
}

/// The answer to a request: the protocol's, or the fault's.
async fn answer(
    router: axum::Router,
    request: Request<Body>,
    fault: Option<Fault>,
) -> Result<Response, BoxError> {
    match fault {
        None => Ok(route(router, request).await),
        Some(Fault::Outage) => Err("simulated outage: connection closed".into()),
        Some(Fault::Slow { delay_ms }) => {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            Ok(route(router, request).await)
        }
        Some(fault) => Ok(fixed_answer(fault)),
    }
}

async fn route(router: axum::Router, request: Request<Body>) -> Response {
    router
        .oneshot(request)
        .await
        .unwrap_or_else(|e: Infallible| match e {})
}

/// Records the request and returns the fault to apply to it, if any (counting it
/// against the rule's remaining uses).
fn take_fault_and_record(
    plane: &ControlPlane,
    parts: &hyper::http::request::Parts,
    body: &[u8],
) -> Option<Fault> {
    let is_token = parts.uri.path() == plane.shared.config.paths.token;
    let mut state = plane.state();
    let fault = match &mut state.fault {
        Some(rule)
            if match rule.scope {
                Scope::All => true,
                Scope::Token => is_token,
                Scope::Agents => !is_token,
            } && rule.remaining != Some(0) =>
        {
            if let Some(n) = &mut rule.remaining {
                *n -= 1;
            }
            Some(rule.fault.clone())
        }
        _ => None,
    };
    let at_ms = plane.now_ms();
    // A fault in force answers first; the capacity sees every other request.
    let fault = fault.or_else(|| state.capacity.as_mut()?.admit(at_ms));
    state.requests.push(RecordedRequest {
        at_ms,
        method: parts.method.to_string(),
        path: parts.uri.to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(body).into_owned(),
        fault: fault.as_ref().map(|f| format!("{f:?}")),
    });
    fault
}

/// The answer of a fault that answers by itself.
fn fixed_answer(fault: Fault) -> Response {
    match fault {
        Fault::Status {
            status,
            body,
            retry_after,
            www_authenticate,
        } => {
            let mut response = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                [(hyper::header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
            let headers = response.headers_mut();
            if let Some(value) = retry_after.and_then(|v| v.parse().ok()) {
                headers.insert(hyper::header::RETRY_AFTER, value);
            }
            if let Some(value) = www_authenticate.and_then(|v| v.parse().ok()) {
                headers.insert(hyper::header::WWW_AUTHENTICATE, value);
            }
            response
        }
        Fault::Garbage => (
            StatusCode::OK,
            "<html><body>502 Bad Gateway (not JSON)</body></html>",
        )
            .into_response(),
        Fault::Oversized { bytes } => (StatusCode::OK, "x".repeat(bytes)).into_response(),
        Fault::CutMidBody => (
            StatusCode::OK,
            [(hyper::header::CONTENT_TYPE, "application/json")],
            Body::new(CutShort {
                head: Some(Bytes::from_static(br#"{"agent_id":"agt"#)),
            }),
        )
            .into_response(),
        Fault::Redirect { location } => (
            StatusCode::TEMPORARY_REDIRECT,
            [(hyper::header::LOCATION, location)],
        )
            .into_response(),
        Fault::Outage | Fault::Slow { .. } => {
            unreachable!("outage and slow are handled by the caller")
        }
    }
}

/// A body that sends its head, then fails: hyper closes the connection short of
/// the length it announced.
struct CutShort {
    head: Option<Bytes>,
}

impl hyper::body::Body for CutShort {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(Some(match self.head.take() {
            Some(head) => Ok(Frame::data(head)),
            None => Err("simulated reset in the middle of the body".into()),
        }))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(4096)
    }
}

fn describe(fault: &Fault) -> String {
    match fault {
        Fault::Outage => "outage (connection closed)".into(),
        Fault::Status {
            status,
            retry_after: Some(after),
            ..
        } => format!("HTTP {status}, Retry-After {after}"),
        Fault::Status { status, .. } => format!("HTTP {status}"),
        Fault::Slow { delay_ms } => format!("answer delayed {delay_ms} ms"),
        Fault::Garbage => "garbage body".into(),
        Fault::CutMidBody => "connection closed in the middle of the body".into(),
        Fault::Oversized { bytes } => format!("{bytes}-byte body"),
        Fault::Redirect { location } => format!("redirect to {location}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusing_plane_serves_its_capacity_each_second_and_refuses_the_rest() {
        let mut load = Load::new(Capacity {
            per_second: 2.5,
            overload: Overload::Refuse,
        });
        let served = |load: &mut Load, second: u64| {
            (0..10)
                .filter(|i| load.admit(second * 1000 + i).is_none())
                .count()
        };
        // 2.5 a second: 2, then 3 (the half carried), then 2.
        assert_eq!(served(&mut load, 0), 2);
        assert_eq!(served(&mut load, 1), 3);
        assert_eq!(served(&mut load, 2), 2);
        assert_eq!(
            load.admit(2500),
            Some(Fault::status(503, r#"{"error":"overloaded"}"#))
        );
    }

    #[test]
    fn a_shedding_plane_spreads_the_waits_it_asks_for() {
        let mut load = Load::new(Capacity {
            per_second: 1.0,
            overload: Overload::Shed {
                min_s: 60,
                max_s: 180,
            },
        });
        assert_eq!(load.admit(0), None);
        let asked: Vec<Option<Fault>> = (1..4).map(|i| load.admit(i)).collect();
        assert_eq!(
            asked,
            [60, 97, 134].map(|s| Some(Fault::retry_after(429, s.to_string())))
        );
    }

    #[test]
    fn a_stalling_plane_answers_late_beyond_its_capacity() {
        let mut load = Load::new(Capacity {
            per_second: 1.0,
            overload: Overload::Stall { delay_ms: 15_000 },
        });
        assert_eq!(load.admit(0), None);
        assert_eq!(load.admit(10), Some(Fault::Slow { delay_ms: 15_000 }));
        assert_eq!(load.admit(1000), None);
    }

    #[test]
    fn a_queueing_plane_answers_late_and_drops_beyond_its_queue() {
        let mut load = Load::new(Capacity {
            per_second: 10.0,
            overload: Overload::Queue { queue_ms: 1000 },
        });
        // 100 ms of work each: the first at once, then ever later.
        assert_eq!(load.admit(0), None);
        assert_eq!(load.admit(0), Some(Fault::Slow { delay_ms: 200 }));
        for _ in 0..8 {
            load.admit(0);
        }
        // Ten held: the next would wait a second, the queue's limit.
        assert_eq!(load.admit(0), Some(Fault::Slow { delay_ms: 1100 }));
        assert_eq!(load.admit(0), Some(Fault::Outage));
        // Idle again once the work is done.
        assert_eq!(load.admit(5000), None);
        // At half the capacity, the queue drains at the old pace's work.
        load.retarget(Capacity {
            per_second: 5.0,
            overload: Overload::Queue { queue_ms: 1000 },
        });
        assert_eq!(load.admit(5000), Some(Fault::Slow { delay_ms: 300 }));
    }
}
