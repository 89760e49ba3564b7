//! Listeners: accept, detect HTTP/1.1 or HTTP/2 prior knowledge, serve the stack, drain on shutdown.

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// Connection-level settings.
#[derive(Clone, Copy, Debug)]
pub struct ConnSettings {
    /// Largest request head (h1 read buffer / h2 header list).
    pub max_header_bytes: usize,
    /// Idle keep-alive timeout (h1: time to read the next request's head).
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

/// Serves `svc` on `listener` until `stop` turns true. Then each open connection is shut down
/// gracefully (HTTP/1: closed after the request in progress; HTTP/2: GOAWAY, streams finish).
/// Every connection task holds a clone of `alive`, so that the caller can wait for all of them.
pub async fn serve<S, B>(listener: TcpListener, svc: S, s: ConnSettings, mut stop: watch::Receiver<bool>, alive: mpsc::Sender<()>)
where
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
                let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc.clone())).into_owned();
                let mut stop = stop.clone();
                let alive = alive.clone();
                tokio::spawn(async move {
                    let mut conn = std::pin::pin!(conn);
                    let result = tokio::select! {
                        r = conn.as_mut() => r,
                        _ = stopped(&mut stop) => {
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

/// Resolves once the stop flag is true (never, if its sender is gone without setting it).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
