//! HTTP servers: the discovery stream and the admin endpoints, served by
//! `vane_runtime::serve::serve_http` (HTTP/1.1 + h2c, graceful drain); with the identity
//! service on, the discovery listener speaks TLS instead ([`tls`]).

pub mod admin;
pub mod discovery;
pub mod tls;

use hyper::body::Incoming;
use hyper::{Request, Response};
use std::convert::Infallible;
use std::time::Duration;
use tokio::net::TcpListener;
use vane_runtime::CancellationToken;
use vane_runtime::serve::{HttpOptions, serve_http};

pub use vane_runtime::admin::{AdminBody as Body, text};

/// How long open connections get to finish after shutdown. Discovery streams end at once on
/// shutdown (their proxies reconnect to another replica), so this only bounds slow peers.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// HTTP/2 keep-alive pings on idle connections find dead peers that never closed.
const H2_KEEPALIVE: Duration = Duration::from_secs(20);

/// The server settings of both listeners.
pub fn http_options() -> HttpOptions {
    HttpOptions {
        grace: SHUTDOWN_GRACE,
        h2_keepalive: Some(H2_KEEPALIVE),
        max_concurrent_streams: 64,
        max_connections: None,
    }
}

/// Serves `handler` on `listener` until `shutdown`, then drains for at most [`SHUTDOWN_GRACE`].
pub async fn serve<H>(listener: TcpListener, handler: H, shutdown: CancellationToken)
where
    H: Fn(Request<Incoming>) -> Response<Body> + Clone + Send + Sync + 'static,
{
    let service = hyper::service::service_fn(move |req| std::future::ready(Ok::<_, Infallible>(handler(req))));
    serve_http(listener, service, http_options(), shutdown).await;
}
