//! Listeners: accept, detect HTTP/1.1 or HTTP/2 prior knowledge, serve the stack, drain on shutdown.

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// Connection-level settings.
#[derive(Clone, Copy, Debug)]
pub struct ConnSettings {
    /// Largest request head (h1 read buffer / h2 header list).
    pub max_header_bytes: usize,
    /// A connection with no bytes read or written for this long is shut down gracefully; also
    /// the time allowed to read a request head.
    pub idle_timeout: Duration,
}

fn builder(s: ConnSettings) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
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
pub async fn serve<S, B>(
    listener: TcpListener,
    svc: S,
    s: ConnSettings,
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
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.changed() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                let io_ops = Arc::new(AtomicU64::new(0));
                let io = TokioIo::new(IdleIo { inner: stream, ops: Arc::clone(&io_ops) });
                let conn = builder.serve_connection(io, TowerToHyperService::new(svc.clone())).into_owned();
                let mut stop = stop.clone();
                let alive = alive.clone();
                let idle = s.idle_timeout;
                tokio::spawn(async move {
                    let mut conn = std::pin::pin!(conn);
                    let result = tokio::select! {
                        r = conn.as_mut() => r,
                        _ = stopped(&mut stop) => {
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                        _ = idle_for(&io_ops, idle) => {
                            // HTTP/1: closes once a response in progress is done; HTTP/2: GOAWAY.
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!("connection ended with an error: {e}");
                    }
                    drop(alive);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Resolves once no byte has been read or written for at least `idle` (at most 1.5 × `idle`).
async fn idle_for(ops: &AtomicU64, idle: Duration) {
    // Internal: counting I/O operations and sampling the count on a coarse tick costs one
    // relaxed increment per read or write, where a timestamp per operation would read the clock.
    let tick = idle / 2;
    let mut seen = ops.load(Ordering::Relaxed);
    let mut quiet_ticks = 0;
    loop {
        tokio::time::sleep(tick).await;
        let now = ops.load(Ordering::Relaxed);
        if now == seen {
            quiet_ticks += 1;
            if quiet_ticks >= 2 {
                return;
            }
        } else {
            seen = now;
            quiet_ticks = 0;
        }
    }
}

/// A socket that counts its completed reads and writes (for the idle timeout).
struct IdleIo {
    inner: TcpStream,
    ops: Arc<AtomicU64>,
}

impl IdleIo {
    fn touch<T>(&self, p: &Poll<std::io::Result<T>>) {
        if let Poll::Ready(Ok(_)) = p {
            self.ops.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl AsyncRead for IdleIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let p = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.touch(&p);
        p
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.touch(&p);
        p
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.touch(&p);
        p
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
