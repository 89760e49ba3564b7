//! HTTP servers: the discovery stream and the admin endpoints, on hyper-util's automatic
//! HTTP/1.1 + HTTP/2 (prior knowledge, h2c) connection builder, with graceful shutdown.

pub mod admin;
pub mod discovery;

use crate::shutdown::Shutdown;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{debug, warn};

/// Response body of both servers.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// How long open connections get to finish after shutdown. Discovery streams end at once on
/// shutdown (their proxies reconnect to another replica), so this only bounds slow peers.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// HTTP/2 keep-alive pings on idle connections find dead peers that never closed.
const H2_KEEPALIVE: Duration = Duration::from_secs(20);

/// A small fixed response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// Serves `handler` on `listener` until `shutdown`, then drains for at most [`SHUTDOWN_GRACE`].
pub async fn serve<H, F>(listener: TcpListener, handler: H, mut shutdown: Shutdown)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(H2_KEEPALIVE).max_concurrent_streams(64);
    let graceful = GracefulShutdown::new();
    loop {
        let (io, peer) = tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, most likely: wait instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = io.set_nodelay(true);
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |req| {
            let fut = handler(req);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let conn = builder.serve_connection(TokioIo::new(io), service).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => debug!("connections still open after the grace period"),
    }
}
