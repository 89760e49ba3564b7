//! Connections to meshed endpoints: TCP, TLS 1.3 with this proxy's certificate, the peer's
//! identity checked against the one the discovery stream gave, then HTTP/2 (sidecars always
//! speak HTTP/2 to each other, whatever the model server behind speaks).
//!
//! A peer whose certificate the trust anchors vouch for but that names another identity is
//! refused before anything is sent, like one the anchors do not know, an expired one, or one
//! that does not speak TLS 1.3: all are connect failures, so the request may go to another
//! endpoint and the endpoint is ejected as an unreachable one would be.

use super::SendError;
use super::connect::{handshake_h2, tcp};
use hyper::client::conn::http2;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::TlsConnector;
use vane_identity::SpiffeId;

/// Where the client side of this proxy's current certificate comes from (the proxy's
/// identity), read at each new connection.
pub trait ClientCertificate: Send + Sync + std::fmt::Debug {
    /// The TLS client configuration with the current certificate (`None` before the first).
    fn client_config(&self) -> Option<Arc<rustls::ClientConfig>>;
}

/// What calling one meshed endpoint needs: this proxy's identity and whom the peer must be.
#[derive(Debug)]
pub struct Mesh {
    /// This proxy's certificate (current at each new connection).
    pub identity: Arc<dyn ClientCertificate>,
    /// The identity the endpoint must present.
    pub expected: SpiffeId,
    /// The server name sent (it tells the peer's inbound proxy the connection is meshed).
    pub name: ServerName<'static>,
}

impl Mesh {
    /// The mesh settings of an endpoint that must be `expected`.
    pub fn new(identity: Arc<dyn ClientCertificate>, expected: SpiffeId, addr: SocketAddr) -> Mesh {
        let name = vane_identity::tls::mesh_server_name(&expected, addr);
        Mesh { identity, expected, name }
    }
}

/// Opens an HTTP/2 connection over mTLS to `addr`, within `timeout` for TCP and TLS together.
pub async fn open_h2_mesh<B>(
    addr: SocketAddr,
    timeout: Duration,
    mesh: &Mesh,
) -> Result<http2::SendRequest<B>, SendError>
where
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let client = mesh.identity.client_config().ok_or(SendError::NoCertificate)?;
    let connect = async {
        let stream = tcp(addr, timeout).await?;
        TlsConnector::from(client).connect(mesh.name.clone(), stream).await.map_err(SendError::Tls)
    };
    let tls = match tokio::time::timeout(timeout, connect).await {
        Ok(r) => r?,
        Err(_) => return Err(SendError::ConnectTimeout(timeout)),
    };
    vane_identity::tls::check_peer(tls.get_ref().1.peer_certificates(), &mesh.expected)?;
    handshake_h2(TokioIo::new(tls), addr).await
}
