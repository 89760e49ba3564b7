//! Listeners: accept (within a connection limit), detect HTTP/1.1 or HTTP/2 prior knowledge,
//! serve the stack, close connections that are idle or never send a request, drain on shutdown;
//! in transparent mode, serve a captured connection by its original destination
//! ([`Transparent`]: HTTP or opaque TCP).

use crate::identity::Identity;
use crate::metrics::ListenerStats;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use vane_runtime::serve::{Accepted, Acceptor};
use vane_runtime::{CancellationToken, TaskTracker};

mod idle;
mod tls;
mod transparent;

use crate::capture::{Dispatch, detect};
pub use tls::{Peer, PeerIdentity};
pub use transparent::{Side, Transparent};

/// Connection-level settings of a listener.
#[derive(Clone, Copy, Debug)]
pub struct ConnSettings {
    /// Largest request head (h1 read buffer / h2 header list).
    pub max_header_bytes: usize,
    /// A connection with no bytes read or written for this long is shut down gracefully; also
    /// the time allowed for a head on a kept-alive HTTP/1.1 connection.
    pub idle_timeout: Duration,
    /// The time a new connection has to send its first complete request head.
    pub header_read_timeout: Duration,
    /// Open connections at most; the listener stops accepting while this many are open.
    pub max_connections: usize,
    /// The time an opaque TCP connection's destination has to accept.
    pub connect_timeout: Duration,
}

impl ConnSettings {
    /// The settings of a config.
    pub fn from_settings(s: &vane_route::table::Settings) -> ConnSettings {
        ConnSettings {
            max_header_bytes: s.max_header_bytes,
            idle_timeout: s.idle_timeout,
            header_read_timeout: s.header_read_timeout,
            max_connections: s.max_connections,
            connect_timeout: s.connect_timeout,
        }
    }
}

fn builder(s: ConnSettings) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // Internal: hyper's header-read timer also runs while a kept-alive connection waits for its
    // next request, so it is the idle timeout here; the first head has its own, shorter deadline
    // (see `serve`).
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(s.idle_timeout)
        .max_buf_size(s.max_header_bytes.max(8192))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(s.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(1024);
    b
}

/// Serves `svc` on `listener` until `stop` is cancelled. Then each open connection is shut down
/// gracefully (HTTP/1: closed after the request in progress; HTTP/2: GOAWAY, streams finish).
/// Every connection task runs on `tasks`, so that the caller can wait for all of them.
///
/// At most `max_connections` are open at once: while that many are, the listener accepts no more
/// (they wait in the kernel's queue), and each such wait is counted. A connection that has not
/// sent a complete first request head within `header_read_timeout` is closed and counted.
///
/// In [`Transparent`] mode a connection the capture rules redirected here is served by its
/// original destination: as HTTP (a known service outbound; the model server's port inbound,
/// when its first bytes are HTTP) or as opaque TCP to that destination.
///
/// With `identity` (the inbound listener of a proxy that has one), a connection that opens with
/// a TLS ClientHello is terminated with its certificate and its requests carry the caller's
/// [`PeerIdentity`]; plaintext is still served (see [`tls`]).
#[allow(clippy::too_many_arguments)]
pub async fn serve<S, B>(
    listener: TcpListener,
    svc: S,
    s: ConnSettings,
    stats: ListenerStats,
    transparent: Transparent,
    identity: Option<Arc<Identity>>,
    stop: CancellationToken,
    tasks: TaskTracker,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let http = Http { builder: Arc::new(builder(s)), svc, s, stats: stats.clone(), stop: stop.clone() };
    let limited = stats.limited.clone();
    let acceptor = Acceptor::new(listener).max_connections(Some(s.max_connections)).on_cap_wait(move || {
        limited.inc();
    });
    acceptor
        .run(stop.clone(), |accepted| {
            let Accepted { stream, guard, .. } = accepted;
            let (http, transparent, identity) = (http.clone(), transparent.clone(), identity.clone());
            tasks.spawn(async move {
                let plain = PeerIdentity::default();
                match (transparent.dispatch(&stream), identity) {
                    (Dispatch::Proxy, Some(id)) => match tls::peek(&stream, s.header_read_timeout).await {
                        tls::First::Tls { .. } => http.serve_tls(stream, &id).await,
                        tls::First::Other => http.serve(stream, None, plain).await,
                    },
                    (Dispatch::Proxy, None) => http.serve(stream, None, plain).await,
                    (Dispatch::Service(name), _) => http.serve(stream, transparent.rewrite(Some(name)), plain).await,
                    (Dispatch::Tcp(dst), _) => transparent.relay(stream, dst, s.connect_timeout).await,
                    (Dispatch::Detect(dst), identity) => match detect::peek(&stream, s.header_read_timeout).await {
                        detect::Detected::Http => http.serve(stream, None, plain).await,
                        // Meshed traffic names a Vane identity; an app's own TLS is passed through.
                        detect::Detected::Tls if identity.is_some() => match (
                            tls::peek(&stream, s.header_read_timeout).await,
                            identity,
                        ) {
                            (tls::First::Tls { mesh: true }, Some(id)) => http.serve_tls(stream, &id).await,
                            (first, _) => {
                                tracing::debug!(to = %dst, "TLS that is not meshed traffic ({first:?}): passed through");
                                transparent.relay(stream, dst, s.connect_timeout).await
                            }
                        },
                        other => {
                            tracing::debug!(to = %dst, meshed = identity.is_some(), "{other:?}: passed through");
                            transparent.relay(stream, dst, s.connect_timeout).await
                        }
                    },
                }
                drop(guard);
            });
        })
        .await;
}

/// What serving one connection as HTTP needs.
#[derive(Clone)]
struct Http<S> {
    builder: Arc<auto::Builder<TokioExecutor>>,
    svc: S,
    s: ConnSettings,
    stats: ListenerStats,
    stop: CancellationToken,
}

impl<S, B> Http<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Terminates TLS, then serves HTTP with the caller's identity on every request.
    async fn serve_tls(self, stream: TcpStream, identity: &Identity) {
        match tls::accept(identity, stream, self.s.header_read_timeout).await {
            Ok((tls, peer)) => {
                self.stats.tls_connections.inc();
                self.serve(tls, None, peer).await
            }
            Err(e) => {
                self.stats.tls_failures.inc();
                tracing::debug!("inbound TLS connection not served: {e}");
            }
        }
    }

    async fn serve<T>(
        self,
        stream: T,
        rewrite: Option<(Arc<str>, Arc<dyn crate::capture::Destinations>)>,
        peer: PeerIdentity,
    ) where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Http { builder, svc, s, stats, stop } = self;
        let io_ops = Arc::new(AtomicU64::new(0));
        let h2 = Arc::new(AtomicBool::new(false));
        let io = TokioIo::new(idle::IdleIo { inner: stream, ops: Arc::clone(&io_ops), h2: Some(Arc::clone(&h2)) });
        let first = Arc::new(AtomicBool::new(false));
        let marked =
            Marked { inner: transparent::Rewrite { inner: svc.clone(), to: rewrite }, seen: Arc::clone(&first), peer };
        let conn = builder.serve_connection(io, TowerToHyperService::new(marked));
        stats.open.inc();
        let mut conn = std::pin::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
            _ = idle::idle_for(&io_ops, s.idle_timeout) => {
                // HTTP/1: closes once a response in progress is done; HTTP/2: GOAWAY.
                conn.as_mut().graceful_shutdown();
                conn.await
            }
            _ = no_first_request(&first, &h2, s.header_read_timeout) => {
                // Dropped: nothing was asked, so nothing is lost.
                stats.header_timeouts.inc();
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::debug!("connection ended with an error: {e}");
        }
        stats.open.dec();
    }
}

/// Resolves after `timeout` if by then no request has come (never resolves once one has), unless
/// the connection opened with the HTTP/2 preface: an HTTP/2 client may connect ahead of its first
/// request and hold the connection idle (its heads come in frames that h2 bounds itself), so only
/// the idle timeout applies to it.
async fn no_first_request(seen: &AtomicBool, h2: &AtomicBool, timeout: Duration) {
    tokio::time::sleep(timeout).await;
    if seen.load(Ordering::Relaxed) || h2.load(Ordering::Relaxed) {
        std::future::pending::<()>().await;
    }
}

/// Marks that a connection has sent a complete request head, and gives each request its
/// caller's identity.
#[derive(Clone, Debug)]
struct Marked<S> {
    inner: S,
    seen: Arc<AtomicBool>,
    peer: PeerIdentity,
}

impl<S: tower::Service<Request<B>>, B> tower::Service<Request<B>> for Marked<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        self.seen.store(true, Ordering::Relaxed);
        if self.peer.0.is_some() {
            req.extensions_mut().insert(self.peer.clone());
        }
        self.inner.call(req)
    }
}
