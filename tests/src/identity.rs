//! A small identity service for the identity tests: a trust anchor and issuer made with
//! `vane_identity::ca`, a TLS 1.3 server presenting the control service's identity, answering
//! `POST /v1/certificate` (token `good` proves `spiffe://cluster.local/ns/apps/sa/chat`, any
//! other is refused with 403) and `GET /v1/discovery` (a snapshot line, then pings), and
//! recording what it saw.

use crate::{ChannelBody, TestBody, full};
use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateSigningRequestDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};
use vane_identity::SpiffeId;
use vane_identity::ca::{Authority, generate};
use vane_identity::protocol::{CertificateRequest, CertificateResponse, ErrorResponse, PATH};
use vane_identity::tls::Credentials;
use vane_route::discovery::Message;

/// The identity the token `good` proves.
pub const CHAT: &str = "spiffe://cluster.local/ns/apps/sa/chat";
/// The identity the proxy expects of the control service by default.
pub const CONTROL: &str = "spiffe://cluster.local/ns/vane-system/sa/vane-control";

/// A trust anchor and issuer.
pub struct Ca {
    pub authority: Arc<Authority>,
    pub anchors_pem: String,
}

impl Ca {
    /// In `cluster.local`.
    pub fn new() -> Ca {
        Ca::in_domain("cluster.local")
    }

    pub fn in_domain(trust_domain: &str) -> Ca {
        let g = generate(trust_domain, 1, 1).expect("a trust anchor and issuer");
        let authority = Authority::from_pem(trust_domain, &g.issuer_pem, &g.issuer_key_pem, &g.anchor_pem)
            .expect("the issuer reads back");
        Ca { authority: Arc::new(authority), anchors_pem: g.anchor_pem }
    }

    /// A chain and its key (PKCS#8 PEM) for `id`, valid for `lifetime` (a minute backdated).
    pub fn certify(&self, id: &str, lifetime: Duration) -> (String, String) {
        let id = SpiffeId::parse(id).expect("a SPIFFE ID");
        let (issued, key_der) = self.authority.certify(&id, lifetime).expect("certified");
        let key = rcgen::KeyPair::try_from(key_der.as_slice()).expect("the key reads back");
        (issued.chain_pem, key.serialize_pem())
    }

    /// A TLS server configuration presenting `id` (ALPN h2 and http/1.1, client certificates
    /// asked for and checked when given).
    pub fn server_config(&self, id: &str) -> Arc<rustls::ServerConfig> {
        let sid = SpiffeId::parse(id).expect("a SPIFFE ID");
        let (issued, key_der) = self.authority.certify(&sid, Duration::from_secs(3600)).expect("certified");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der));
        let creds = Credentials::new(&issued.chain_pem, key, &self.anchors_pem).expect("credentials");
        creds.server_config().expect("a server configuration")
    }
}

impl Default for Ca {
    fn default() -> Self {
        Ca::new()
    }
}

/// The fake identity (and discovery) service.
#[derive(Clone)]
pub struct FakeIdentity {
    pub addr: SocketAddr,
    /// Lifetime of the certificates it signs, in milliseconds.
    pub lifetime_ms: Arc<AtomicU64>,
    /// Certificates signed.
    pub issued: Arc<AtomicUsize>,
    /// Requests refused (wrong token).
    pub refused: Arc<AtomicUsize>,
    /// The public key (SubjectPublicKeyInfo DER) of each request signed, in order.
    pub keys: Arc<Mutex<Vec<Vec<u8>>>>,
    /// While true, certificate requests wait before they are answered.
    pub hold: watch::Sender<bool>,
    /// The client identity of each discovery connection (`None`: no certificate), in order.
    pub discovery_peers: Arc<Mutex<Vec<Option<String>>>>,
    /// The discovery stream's first message.
    pub snapshot: Arc<Mutex<Message>>,
}

impl FakeIdentity {
    /// Serves on a fresh loopback port, presenting `server_id`.
    pub async fn start(ca: &Ca, server_id: &str) -> FakeIdentity {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind identity service");
        let fake = FakeIdentity {
            addr: listener.local_addr().expect("addr"),
            lifetime_ms: Arc::new(AtomicU64::new(3_600_000)),
            issued: Arc::default(),
            refused: Arc::default(),
            keys: Arc::default(),
            hold: watch::Sender::new(false),
            discovery_peers: Arc::default(),
            snapshot: Arc::new(Mutex::new(Message::Snapshot {
                version: 1,
                services: vec![],
                backends: vec![],
                authz: None,
            })),
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(server_id));
        let (f, authority, anchors) = (fake.clone(), Arc::clone(&ca.authority), ca.anchors_pem.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, f, authority, anchors) =
                    (acceptor.clone(), f.clone(), Arc::clone(&authority), anchors.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let peer =
                        vane_identity::peer::id_of_chain(tls.get_ref().1.peer_certificates()).map(|i| i.to_string());
                    let svc = hyper::service::service_fn(move |req| {
                        let (f, authority, anchors, peer) =
                            (f.clone(), Arc::clone(&authority), anchors.clone(), peer.clone());
                        async move { Ok::<_, Infallible>(f.answer(req, &authority, &anchors, peer).await) }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                });
            }
        });
        fake
    }

    async fn answer(
        &self,
        req: Request<Incoming>,
        ca: &Authority,
        anchors: &str,
        peer: Option<String>,
    ) -> Response<TestBody> {
        if req.uri().path() == vane_route::discovery::PATH {
            self.discovery_peers.lock().unwrap().push(peer);
            let first = self.snapshot.lock().unwrap().to_line();
            let (tx, body) = mpsc::channel(4);
            tokio::spawn(async move {
                let mut line = first;
                while tx.send(Frame::data(Bytes::from(line))).await.is_ok() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    line = Message::Ping.to_line();
                }
            });
            return Response::new(http_body_util::Either::Right(ChannelBody(body)));
        }
        if req.uri().path() != PATH || req.method() != http::Method::POST {
            return status(StatusCode::NOT_FOUND, "no such path");
        }
        let mut hold = self.hold.subscribe();
        let _ = hold.wait_for(|h| !*h).await;
        let Ok(body) = Limited::new(req.into_body(), 64 * 1024).collect().await else {
            return status(StatusCode::BAD_REQUEST, "unreadable body");
        };
        let Ok(asked) = serde_json::from_slice::<CertificateRequest>(&body.to_bytes()) else {
            return status(StatusCode::BAD_REQUEST, "not a certificate request");
        };
        if asked.token != "good" {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return status(StatusCode::FORBIDDEN, "the token is not one the API server accepts");
        }
        let Ok(der) = base64::engine::general_purpose::STANDARD.decode(&asked.csr) else {
            return status(StatusCode::BAD_REQUEST, "csr is not base64");
        };
        let lifetime = Duration::from_millis(self.lifetime_ms.load(Ordering::Relaxed));
        let chat = SpiffeId::parse(CHAT).expect("CHAT is a SPIFFE ID");
        let issued = match ca.issue(&der, &chat, lifetime) {
            Ok(i) => i,
            Err(e) => return status(StatusCode::FORBIDDEN, &e.to_string()),
        };
        if let Ok(csr) = rcgen::CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(der)) {
            self.keys.lock().unwrap().push(rcgen::PublicKeyData::der_bytes(&csr.public_key).to_vec());
        }
        self.issued.fetch_add(1, Ordering::Relaxed);
        let not_after = issued.not_after.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let answer = CertificateResponse { chain: issued.chain_pem, roots: anchors.to_string(), not_after };
        json(StatusCode::OK, &serde_json::to_string(&answer).unwrap_or_default())
    }
}

fn json(code: StatusCode, body: &str) -> Response<TestBody> {
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = code;
    r.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
    r
}

fn status(code: StatusCode, why: &str) -> Response<TestBody> {
    json(code, &serde_json::to_string(&ErrorResponse { error: why.to_string() }).unwrap_or_default())
}
