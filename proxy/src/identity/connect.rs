//! TLS connections of the proxy's own clients to the control service (its identity service
//! and its discovery stream): TCP, a TLS 1.3 handshake, then the server's identity checked
//! against the one expected (`vane_identity::tls::check_peer`), and only then HTTP.
//!
//! Internal: these are written here rather than in `client/` (the connector of the request
//! path), because the proxy's own connections need none of its pooling and are few.

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use vane_identity::SpiffeId;
use vane_identity::tls::{self, PeerError};

/// Why a connection to the control service could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The name could not be resolved, or has no address.
    #[error("cannot resolve {addr}: {why}")]
    Resolve {
        /// The `host:port` given.
        addr: String,
        /// Why.
        why: String,
    },
    /// The TCP connection failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TCP and the TLS handshake took longer than allowed.
    #[error("connecting to {addr} timed out after {after:?}")]
    Timeout {
        /// Where.
        addr: SocketAddr,
        /// The limit.
        after: Duration,
    },
    /// The TLS handshake failed (the server's chain does not lead to a trust anchor, it is
    /// expired, or the server refused this client).
    #[error("TLS handshake with {addr} failed: {source}")]
    Handshake {
        /// Where.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server is not the one expected.
    #[error("{addr}: {source}")]
    Peer {
        /// Where.
        addr: SocketAddr,
        /// Who it is.
        #[source]
        source: PeerError,
    },
    /// The HTTP handshake on the TLS connection failed.
    #[error("HTTP handshake with {addr} failed: {source}")]
    Http {
        /// Where.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: hyper::Error,
    },
}

/// The first address `host:port` resolves to.
pub async fn resolve(addr: &str) -> Result<SocketAddr, ConnectError> {
    let err = |why: String| ConnectError::Resolve { addr: addr.to_string(), why };
    match tokio::net::lookup_host(addr).await {
        Ok(mut found) => found.next().ok_or_else(|| err("no address".into())),
        Err(e) => Err(err(e.to_string())),
    }
}

/// TCP then TLS to `addr` within `timeout`, the server checked to be `expected`.
pub async fn tls(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    expected: &SpiffeId,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, ConnectError> {
    let handshake = async {
        let tcp = TcpStream::connect(addr).await.map_err(|source| ConnectError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        TlsConnector::from(config)
            .connect(tls::server_name(addr), tcp)
            .await
            .map_err(|source| ConnectError::Handshake { addr, source })
    };
    let stream = tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| ConnectError::Timeout { addr, after: timeout })??;
    tls::check_peer(stream.get_ref().1.peer_certificates(), expected)
        .map_err(|source| ConnectError::Peer { addr, source })?;
    Ok(stream)
}

/// The protocol the server chose by ALPN.
fn is_h2(stream: &TlsStream<TcpStream>) -> bool {
    stream.get_ref().1.alpn_protocol() == Some(b"h2")
}

/// Either side of a connection, as ALPN chose.
#[derive(Debug)]
pub enum Sender<B> {
    /// HTTP/2.
    H2(http2::SendRequest<B>),
    /// HTTP/1.1.
    H1(http1::SendRequest<B>),
}

impl<B> Sender<B>
where
    B: http_body::Body + Send + 'static,
{
    /// Sends one request (an HTTP/1.1 one in origin form with a `host` header, an HTTP/2 one
    /// with its authority in the URI).
    pub async fn send(&mut self, req: http::Request<B>) -> Result<http::Response<hyper::body::Incoming>, hyper::Error> {
        match self {
            Sender::H2(tx) => tx.send_request(req).await,
            Sender::H1(tx) => {
                let (mut parts, body) = req.into_parts();
                if let Some(a) = parts.uri.authority().and_then(|a| http::HeaderValue::from_str(a.as_str()).ok()) {
                    parts.headers.insert(http::header::HOST, a);
                }
                if let Some(pq) = parts.uri.path_and_query().cloned() {
                    parts.uri = http::Uri::from(pq);
                }
                tx.send_request(http::Request::from_parts(parts, body)).await
            }
        }
    }
}

/// A TLS connection to `addr`, HTTP/2 or HTTP/1.1 as the server chose, driven by its own task.
pub async fn open<B>(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    expected: &SpiffeId,
    timeout: Duration,
) -> Result<Sender<B>, ConnectError>
where
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tls(addr, config, expected, timeout).await?;
    if is_h2(&stream) {
        return Ok(Sender::H2(h2_on(addr, stream).await?));
    }
    let (tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ConnectError::Http { addr, source })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(control = %addr, "connection ended: {e}");
        }
    });
    Ok(Sender::H1(tx))
}

/// An HTTP/2 connection over TLS to `addr` (the discovery stream), with keep-alive pings every
/// 10 s so that a server that vanished is noticed.
pub async fn open_h2<B>(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    expected: &SpiffeId,
    timeout: Duration,
) -> Result<http2::SendRequest<B>, ConnectError>
where
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tls(addr, config, expected, timeout).await?;
    h2_on(addr, stream).await
}

async fn h2_on<B>(addr: SocketAddr, stream: TlsStream<TcpStream>) -> Result<http2::SendRequest<B>, ConnectError>
where
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (tx, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(10))
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ConnectError::Http { addr, source })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(control = %addr, "h2 connection ended: {e}");
        }
    });
    Ok(tx)
}
