//! A TLS client of the control service, as a proxy's: tokio-rustls with `vane_identity`'s client
//! configurations (TLS 1.3, the server checked against the trust anchors), HTTP/2 by ALPN.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::CertificateDer;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use vane_identity::ca::{self, Authority};
use vane_identity::tls::{self, Credentials};
use vane_identity::{SpiffeId, csr};

/// One HTTP/2 connection over TLS.
#[derive(Debug)]
pub struct Conn {
    pub send: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    /// What the server presented, leaf first.
    pub server_chain: Vec<CertificateDer<'static>>,
}

/// Connects and handshakes (TLS, then HTTP/2, which the server must pick by ALPN).
pub async fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<Conn> {
    let tcp = TcpStream::connect(addr).await?;
    let stream = tokio_rustls::TlsConnector::from(config).connect(tls::server_name(addr), tcp).await?;
    let session = stream.get_ref().1;
    assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]), "HTTP/2 by ALPN");
    assert_eq!(session.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    let server_chain = session.peer_certificates().map(|c| c.iter().map(|c| c.clone().into_owned()).collect());
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(Conn { send, server_chain: server_chain.unwrap_or_default() })
}

impl Conn {
    /// A request; (status, body).
    pub async fn request(&mut self, method: &str, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("https://control{path}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = self.send.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
        (status, body)
    }

    /// `POST /v1/certificate` with `token` and `csr` (DER); (status, JSON answer).
    pub async fn certificate(&mut self, token: &str, csr: &[u8]) -> (u16, Value) {
        use base64::Engine;
        let body = serde_json::to_vec(&vane_identity::protocol::CertificateRequest {
            token: token.to_string(),
            csr: base64::engine::general_purpose::STANDARD.encode(csr),
        })
        .unwrap();
        let (status, body) = self.request("POST", vane_identity::protocol::PATH, body).await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

/// A trust anchor and issuer for tests, with the control service's identity settings.
#[derive(Debug)]
pub struct TestCa {
    pub generated: ca::Generated,
    pub authority: Authority,
}

impl TestCa {
    pub fn new() -> TestCa {
        let generated = ca::generate("cluster.local", 30, 10).unwrap();
        let authority = Authority::from_pem(
            "cluster.local",
            &generated.issuer_pem,
            &generated.issuer_key_pem,
            &generated.anchor_pem,
        )
        .unwrap();
        TestCa { generated, authority }
    }

    /// The identity service's settings with this issuer (certificates for an hour).
    pub fn settings(&self) -> vane_control::identity::IdentitySettings {
        vane_control::identity::IdentitySettings {
            issuer: vane_control::identity::IssuerPem {
                anchors: self.generated.anchor_pem.clone(),
                cert: self.generated.issuer_pem.clone(),
                key: self.generated.issuer_key_pem.clone(),
            },
            trust_domain: "cluster.local".into(),
            lifetime: Duration::from_secs(3600),
            namespace: "vane-system".into(),
            service_account: "vane-control".into(),
            reload: None,
        }
    }

    /// The trust anchors.
    pub fn roots(&self) -> Arc<rustls::RootCertStore> {
        tls::roots(&self.generated.anchor_pem).unwrap()
    }

    /// A client without a certificate.
    pub fn anonymous(&self) -> Arc<rustls::ClientConfig> {
        tls::anonymous_client_config(&self.roots(), &[b"h2"]).unwrap()
    }

    /// A chain for `id` (whose trust domain may differ from the issuer's) and its key.
    pub fn issue(&self, id: &str) -> (String, csr::Request) {
        let id = SpiffeId::parse(id).unwrap();
        let authority = Authority::from_pem(
            id.trust_domain(),
            &self.generated.issuer_pem,
            &self.generated.issuer_key_pem,
            &self.generated.anchor_pem,
        )
        .unwrap();
        let request = csr::Request::new(&id).unwrap();
        let issued = authority.issue(&request.der, &id, Duration::from_secs(600)).unwrap();
        (issued.chain_pem, request)
    }

    /// Credentials for `id` signed by this issuer directly (the trust domain may differ: the
    /// issuer then signs for it as another control service with the same anchor would).
    pub fn credentials(&self, id: &str) -> Credentials {
        let (chain, request) = self.issue(id);
        Credentials::new(&chain, request.key(), &self.generated.anchor_pem).unwrap()
    }

    /// The control service's own identity.
    pub fn control_id() -> SpiffeId {
        SpiffeId::parse("spiffe://cluster.local/ns/vane-system/sa/vane-control").unwrap()
    }
}
