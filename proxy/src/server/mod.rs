//! Listeners: accept (within a connection limit), detect HTTP/1.1 or HTTP/2 prior knowledge,
//! serve the stack, close connections that are idle or never send a request, drain on shutdown.

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
use tokio::net::TcpListener;
#[cfg(test)]
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, watch};

mod idle;

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
}

impl ConnSettings {
    /// The settings of a config.
    pub fn from_settings(s: &vane_route::table::Settings) -> ConnSettings {
        ConnSettings {
            max_header_bytes: s.max_header_bytes,
            idle_timeout: s.idle_timeout,
            header_read_timeout: s.header_read_timeout,
            max_connections: s.max_connections,
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

/// Pending connections a listener may queue before the kernel drops SYNs (capped by
/// `net.core.somaxconn`). The usual default of 128 overflows when hundreds of clients connect at
/// once, and a dropped SYN costs the client a one-second retransmission.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener with [`LISTEN_BACKLOG`] and `SO_REUSEADDR` (a restart does not wait for
/// the old sockets' `TIME_WAIT`).
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `svc` on `listener` until `stop` turns true. Then each open connection is shut down
/// gracefully (HTTP/1: closed after the request in progress; HTTP/2: GOAWAY, streams finish).
/// Every connection task holds a clone of `alive`, so that the caller can wait for all of them.
///
/// At most `max_connections` are open at once: while that many are, the listener accepts no more
/// (they wait in the kernel's queue), and each such wait is counted. A connection that has not
/// sent a complete first request head within `header_read_timeout` is closed and counted.
pub async fn serve<S, B>(
    listener: TcpListener,
    svc: S,
    s: ConnSettings,
    stats: ListenerStats,
    mut stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = builder(s);
    let slots = Arc::new(Semaphore::new(s.max_connections.clamp(1, Semaphore::MAX_PERMITS)));
    loop {
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                stats.limited.inc();
                tokio::select! {
                    biased;
                    _ = stop.changed() => break,
                    p = Arc::clone(&slots).acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                }
            }
        };
        let accepted = tokio::select! {
            biased;
            _ = stop.changed() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let io_ops = Arc::new(AtomicU64::new(0));
        let io = TokioIo::new(idle::IdleIo { inner: stream, ops: Arc::clone(&io_ops) });
        let first = Arc::new(AtomicBool::new(false));
        let marked = Marked { inner: svc.clone(), seen: Arc::clone(&first) };
        let conn = builder.serve_connection(io, TowerToHyperService::new(marked)).into_owned();
        let mut stop = stop.clone();
        let alive = alive.clone();
        let stats = stats.clone();
        stats.open.inc();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
                _ = idle::idle_for(&io_ops, s.idle_timeout) => {
                    // HTTP/1: closes once a response in progress is done; HTTP/2: GOAWAY.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
                _ = no_first_request(&first, s.header_read_timeout) => {
                    // Dropped: nothing was asked, so nothing is lost.
                    stats.header_timeouts.inc();
                    Ok(())
                }
            };
            if let Err(e) = result {
                tracing::debug!("connection ended with an error: {e}");
            }
            stats.open.dec();
            drop(permit);
            drop(alive);
        });
    }
}

/// Resolves after `timeout` if by then no request has come (never resolves once one has).
async fn no_first_request(seen: &AtomicBool, timeout: Duration) {
    tokio::time::sleep(timeout).await;
    if seen.load(Ordering::Relaxed) {
        std::future::pending::<()>().await;
    }
}

/// Marks that a connection has sent a complete request head.
#[derive(Clone, Debug)]
struct Marked<S> {
    inner: S,
    seen: Arc<AtomicBool>,
}

impl<S: tower::Service<R>, R> tower::Service<R> for Marked<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> S::Future {
        self.seen.store(true, Ordering::Relaxed);
        self.inner.call(req)
    }
}

/// Resolves once the stop flag is true (never, if its sender is gone without setting it).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_of_connects_waits_in_the_backlog_instead_of_being_dropped() {
        const BURST: usize = 400;
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if somaxconn <= BURST {
            eprintln!("skipped: net.core.somaxconn is {somaxconn}, the kernel would cap the backlog");
            return;
        }
        // Nobody accepts: every connection must fit in the listener's queue. With the usual
        // backlog of 128 the rest would have their SYNs dropped and time out.
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks: Vec<_> = (0..BURST)
            .map(|_| tokio::spawn(tokio::time::timeout(Duration::from_millis(800), TcpStream::connect(addr))))
            .collect();
        let mut ok = 0;
        let mut open = Vec::new();
        for t in tasks {
            if let Ok(Ok(Ok(stream))) = t.await {
                ok += 1;
                open.push(stream);
            }
        }
        assert_eq!(ok, BURST, "only {ok} of {BURST} connections were queued");
        drop(listener);
    }
}
