//! The inbound side of a meshed hop: a connection whose first bytes are a TLS ClientHello is
//! terminated with this proxy's certificate (TLS 1.3, the caller's certificate checked when it
//! sends one); any other is served in plaintext, so meshed and unmeshed callers share the port
//! during a rollout. Every request of a TLS connection carries its caller's identity
//! ([`PeerIdentity`]), or none.
//!
//! On a captured connection to the model server's own port, only a ClientHello that names a
//! Vane identity (see `vane_identity::tls::mesh_sni`) is terminated; an application's own TLS
//! names something else and is passed through as opaque TCP.

use crate::identity::Identity;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use vane_identity::SpiffeId;
use vane_identity::hello::{self, Hello};

/// The caller's identity, on every request of a connection (`None`: plaintext, or TLS without
/// a client certificate).
#[derive(Clone, Debug, Default)]
pub struct PeerIdentity(pub Option<Arc<Peer>>);

/// A caller's identity, and its SPIFFE ID as text (the `vane-client-id` header and the metrics'
/// caller label), formatted once per connection rather than per request.
#[derive(Debug)]
pub struct Peer {
    /// The identity.
    pub id: SpiffeId,
    /// `id` as a header value.
    pub text: http::HeaderValue,
}

impl Peer {
    /// The identity, formatted; `None` if its text is not a header value (never for a parsed ID).
    pub fn new(id: SpiffeId) -> Option<Peer> {
        let text = http::HeaderValue::from_str(&id.to_string()).ok()?;
        Some(Peer { id, text })
    }

    /// The SPIFFE ID as text.
    pub fn as_str(&self) -> &str {
        self.text.to_str().unwrap_or_default()
    }
}

/// What a connection's first bytes ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum First {
    /// A ClientHello; `mesh`: it names a Vane identity.
    Tls { mesh: bool },
    /// Anything else (HTTP, opaque bytes, or nothing within the timeout).
    Other,
}

/// Peeks until the first bytes tell whether they are a ClientHello, for at most `timeout`.
pub(super) async fn peek(stream: &TcpStream, timeout: Duration) -> First {
    let mut buf = vec![0u8; hello::MAX_RECORD];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return First::Other,
            Ok(Ok(n)) => n,
        };
        match hello::parse(&buf[..n]) {
            Hello::NotTls => return First::Other,
            Hello::ClientHello { sni } => {
                return First::Tls { mesh: sni.as_deref().is_some_and(vane_identity::tls::is_mesh_sni) };
            }
            Hello::Incomplete => {}
        }
        if tokio::time::Instant::now() + PEEK_PAUSE > deadline {
            return First::Other;
        }
        // Internal: a peek returns at once while any byte is buffered; a ClientHello nearly
        // always comes whole in its first segment, so this rarely turns.
        tokio::time::sleep(PEEK_PAUSE).await;
    }
}

const PEEK_PAUSE: Duration = Duration::from_millis(2);

/// Why a TLS connection was not served.
#[derive(Debug, thiserror::Error)]
pub(super) enum AcceptError {
    /// This proxy has no certificate yet.
    #[error("no certificate yet")]
    NoCertificate,
    /// The handshake failed (TLS 1.2 offered, a client certificate the anchors do not vouch
    /// for, an expired one, or a broken connection).
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] std::io::Error),
}

/// Terminates TLS on `stream`, within `timeout`; returns the stream and the caller's identity.
pub(super) async fn accept(
    identity: &Identity,
    stream: TcpStream,
    timeout: Duration,
) -> Result<(TlsStream<TcpStream>, PeerIdentity), AcceptError> {
    let loaded = identity.load().ok_or(AcceptError::NoCertificate)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&loaded.server));
    let tls = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(r) => r.map_err(AcceptError::Handshake)?,
        Err(_) => return Err(AcceptError::Handshake(std::io::ErrorKind::TimedOut.into())),
    };
    let peer = vane_identity::peer::id_of_chain(tls.get_ref().1.peer_certificates()).and_then(Peer::new).map(Arc::new);
    Ok((tls, PeerIdentity(peer)))
}
