//! The accept loop the metadata mocks share: hyper on a loopback listener, one
//! task per connection, and a switch that closes every new connection unanswered
//! (a service that is down).

use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use tokio::net::TcpListener;

/// Serves `answer` on `127.0.0.1:0` until the runtime ends; while `down()`, a new
/// connection is closed at once, and a request on a kept-alive one (or one that was
/// waiting when the service went down) ends its connection unanswered. Returns the
/// address.
pub(crate) async fn serve<D, A, F>(down: D, answer: A) -> std::io::Result<SocketAddr>
where
    D: Fn() -> bool + Send + Sync + 'static,
    A: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let down = std::sync::Arc::new(down);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            if down() {
                drop(stream);
                continue;
            }
            let (answer, down) = (answer.clone(), down.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let refused = down();
                    let down = down.clone();
                    let answered = answer(request);
                    async move {
                        if refused {
                            return Err("down");
                        }
                        let answered = answered.await;
                        // Gone down while the request waited (a hanging request).
                        if down() {
                            return Err("down");
                        }
                        Ok(answered)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// A response with `status`, `headers` and `body`.
pub(crate) fn response(
    status: hyper::StatusCode,
    headers: &[(&str, String)],
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    builder
        .body(Full::new(body.into()))
        .expect("a valid response")
}
