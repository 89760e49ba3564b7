//! Opening connections to endpoints: TCP, then the HTTP/1.1 or HTTP/2 handshake. This is where a
//! TLS connector plugs in, once, for the pool and for the proxy's own clients (load streams,
//! the control service).

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The TCP connection could not be made (refused, unreachable). Nothing was sent.
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    /// The TCP connection was not made within the connect timeout. Nothing was sent.
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The HTTP handshake on a new connection failed. Nothing was sent.
    #[error("HTTP handshake failed: {0}")]
    Handshake(#[source] hyper::Error),
    /// The TLS handshake with a meshed endpoint failed (its certificate is not one the trust
    /// anchors vouch for, expired, or it does not speak TLS 1.3). Nothing was sent.
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] std::io::Error),
    /// The meshed endpoint is someone else than the discovery stream said. Nothing was sent.
    #[error(transparent)]
    Identity(#[from] vane_identity::tls::PeerError),
    /// This proxy has no certificate yet, and the endpoint is meshed. Nothing was sent.
    #[error("no certificate yet for a meshed endpoint")]
    NoCertificate,
    /// The request was sent (or may have been) and the exchange failed.
    #[error(transparent)]
    Upstream(#[from] hyper::Error),
}

impl SendError {
    /// Whether nothing reached the endpoint (so another endpoint may be tried).
    pub fn is_connect(&self) -> bool {
        !matches!(self, SendError::Upstream(_))
    }
}

pub(super) async fn tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, SendError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(SendError::Connect(e)),
        Err(_) => return Err(SendError::ConnectTimeout(timeout)),
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TokioIo<TcpStream>, SendError> {
    tcp(addr, timeout).await.map(TokioIo::new)
}

/// Opens an HTTP/1.1 connection to `addr`, driven by its own task.
pub async fn open_h1<B>(addr: SocketAddr, timeout: Duration) -> Result<http1::SendRequest<B>, SendError>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = connect(addr, timeout).await?;
    let (tx, conn) = http1::Builder::new().handshake(io).await.map_err(SendError::Handshake)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(endpoint = %addr, "connection ended: {e}");
        }
    });
    Ok(tx)
}

/// Opens an HTTP/2 (h2c) connection to `addr`, driven by its own task, with keep-alive pings
/// every 10 s so that a peer that vanished is noticed.
pub async fn open_h2<B>(addr: SocketAddr, timeout: Duration) -> Result<http2::SendRequest<B>, SendError>
where
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    handshake_h2(connect(addr, timeout).await?, addr).await
}

/// The HTTP/2 handshake over a connection already made (TCP, or TLS to a meshed endpoint).
pub(super) async fn handshake_h2<B, T>(io: TokioIo<T>, addr: SocketAddr) -> Result<http2::SendRequest<B>, SendError>
where
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(10))
        .handshake(io)
        .await
        .map_err(SendError::Handshake)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(endpoint = %addr, "h2 connection ended: {e}");
        }
    });
    Ok(tx)
}
