//! The discovery listener when the identity service is on: TLS 1.3 with the control service's
//! own certificate, HTTP/2 or HTTP/1.1 by ALPN, and on it `POST /v1/certificate` (any client)
//! and `GET /v1/discovery` (clients with a workload certificate of the trust domain, served
//! what their namespace may see).
//!
//! Client certificates are asked for and checked against the trust anchors during the
//! handshake, but not required (a proxy asks for its first certificate without one); the
//! handler is told what the client presented, and discovery refuses anonymous clients with 403.

use super::discovery::Discovery;
use super::{Body, SHUTDOWN_GRACE, http_options};
use crate::identity::ServingCert;
use crate::identity::service::{CertificateService, refusal_body};
use crate::identity::visibility::{self, Peer};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use vane_runtime::CancellationToken;
use vane_runtime::serve::{Accepted, Acceptor};

/// How long a client gets to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the TLS listener serves. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Secure {
    /// The discovery stream.
    pub discovery: Discovery,
    /// The certificate service.
    pub certificates: CertificateService,
    /// The trust domain discovery clients must belong to.
    pub trust_domain: Arc<str>,
}

impl Secure {
    /// Answers one request from `peer`, which presented `client`.
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr, client: &Peer) -> Response<Body> {
        match req.uri().path() {
            vane_identity::protocol::PATH => self.certificates.handle(req, peer).await,
            vane_route::discovery::PATH => match visibility::viewer(&self.trust_domain, client) {
                Ok(viewer) => self.discovery.handle_as(&req, viewer),
                Err(refusal) => {
                    tracing::info!(%peer, "discovery refused: {refusal}");
                    refusal_body(StatusCode::FORBIDDEN, refusal.to_string())
                }
            },
            _ => super::text(
                StatusCode::NOT_FOUND,
                format!(
                    "not found; try GET {}?services=* or POST {}\n",
                    vane_route::discovery::PATH,
                    vane_identity::protocol::PATH
                ),
            ),
        }
    }
}

/// Serves `secure` over TLS on `listener` until `shutdown`, then drains for at most
/// [`SHUTDOWN_GRACE`]. Each handshake takes the newest certificate from `cert`.
pub async fn serve(listener: TcpListener, cert: Arc<ServingCert>, secure: Secure, shutdown: CancellationToken) {
    let options = http_options();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    let mut h2 = builder.http2();
    h2.timer(TokioTimer::new()).max_concurrent_streams(options.max_concurrent_streams);
    if let Some(every) = options.h2_keepalive {
        h2.keep_alive_interval(every);
    }
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    Acceptor::new(listener)
        .max_connections(options.max_connections)
        .run(shutdown, |Accepted { stream, peer, guard }| {
            let acceptor = tokio_rustls::TlsAcceptor::from(cert.config());
            let (builder, secure, watcher) = (builder.clone(), secure.clone(), graceful.watcher());
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                };
                let chain = tls.get_ref().1.peer_certificates();
                let client = Arc::new(Peer {
                    presented: chain.is_some_and(|c| !c.is_empty()),
                    id: vane_identity::peer::id_of_chain(chain),
                });
                let service = hyper::service::service_fn(move |req| {
                    let (secure, client) = (secure.clone(), client.clone());
                    async move { Ok::<_, Infallible>(secure.handle(req, peer, &client).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(tls), service);
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                drop(guard);
            });
        })
        .await;
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::debug!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
    }
}
