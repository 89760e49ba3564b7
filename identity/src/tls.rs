//! The TLS configurations of a meshed hop: TLS 1.3 only, ECDSA/Ed25519/RSA signatures as ring
//! verifies them, client certificates, and ALPN `h2` then `http/1.1`.
//!
//! - The **server** side asks every client for a certificate but also serves those without
//!   one, so that meshed and unmeshed callers coexist during a rollout; whoever presents a
//!   certificate must present one the trust anchors vouch for. Authorization then decides what
//!   an identity (or its absence) may do.
//! - The **client** side checks that the server's chain leads to a trust anchor and is valid
//!   now; it does not check DNS names, because meshed peers are named by SPIFFE ID. Which
//!   identity the server must have is checked after the handshake by [`check_peer`], against the
//!   identity the discovery stream gave for that endpoint, so that one configuration (and one
//!   session cache, for resumption) serves every endpoint.

use crate::peer;
use crate::pem::{self, PemError};
use crate::spiffe::SpiffeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::sync::Arc;
use std::time::SystemTime;

/// ALPN, most preferred first: HTTP/2 between sidecars.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// TLS sessions a client keeps for resumption.
const SESSION_CACHE: usize = 4096;

/// Why credentials cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// PEM text could not be read.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// The certificate names no workload identity (exactly one SPIFFE URI SAN).
    #[error("the certificate names no workload identity (one spiffe:// URI SAN)")]
    NoIdentity,
    /// No trust anchor could be read.
    #[error("no usable trust anchor: {0}")]
    Roots(String),
    /// rustls refused the key, the certificate or the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(String),
    /// The chain does not lead to one of the trust anchors, or is not valid now.
    #[error("the certificate is not trusted by the anchors: {0}")]
    Untrusted(String),
}

/// The ring provider, TLS 1.3 cipher suites only.
pub fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.retain(|s| s.version() == &rustls::version::TLS13);
    Arc::new(p)
}

/// Trust anchors from PEM.
pub fn roots(pem_text: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(pem::certs(pem_text)?);
    if added == 0 {
        return Err(TlsError::Roots("none of the certificates is a usable trust anchor".into()));
    }
    Ok(Arc::new(store))
}

/// A workload's certificate chain, its key and the trust anchors.
#[derive(Debug)]
pub struct Credentials {
    /// Whom the certificate names.
    pub id: SpiffeId,
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// The trust anchors.
    pub roots: Arc<RootCertStore>,
    /// When the leaf expires.
    pub not_after: SystemTime,
}

impl Credentials {
    /// From a PEM chain, a key and PEM trust anchors.
    pub fn new(chain_pem: &str, key: PrivateKeyDer<'static>, roots_pem: &str) -> Result<Credentials, TlsError> {
        let chain = pem::certs(chain_pem)?;
        let leaf = chain[0].as_ref();
        let id = peer::id_of(leaf).ok_or(TlsError::NoIdentity)?;
        let not_after = peer::not_after(leaf).ok_or(TlsError::NoIdentity)?;
        Ok(Credentials { id, chain, key, roots: roots(roots_pem)?, not_after })
    }

    /// From PEM texts of a chain, a key and trust anchors (files, in standalone mode).
    pub fn from_pem(chain_pem: &str, key_pem: &str, roots_pem: &str) -> Result<Credentials, TlsError> {
        Credentials::new(chain_pem, pem::key(key_pem)?, roots_pem)
    }

    /// Checks the chain as a peer would: it leads to one of the trust anchors and is valid now.
    pub fn verify(&self) -> Result<(), TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&self.roots), provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        verifier
            .verify_client_cert(&self.chain[0], &self.chain[1..], UnixTime::now())
            .map(|_| ())
            .map_err(|e| TlsError::Untrusted(e.to_string()))
    }

    /// The server side: TLS 1.3, client certificates asked for and checked when given.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = provider();
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&self.roots), Arc::clone(&provider))
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        // Resumption by stateless tickets (encrypted under a key rustls rotates every 6 h): the
        // server keeps nothing per session, where a stateful cache held each session's client
        // chain, about 4 KiB per connection for the two tickets sent. Each configuration has its
        // own ticket key, so a session never resumes under other trust anchors than it was
        // made with.
        config.ticketer = rustls::crypto::ring::Ticketer::new()?;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(Arc::new(config))
    }

    /// The client side: TLS 1.3, this workload's certificate, servers checked against the
    /// trust anchors (their identity is checked by [`check_peer`]). `alpn` is what to offer.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, TlsError> {
        let mut config =
            client_builder(&self.roots)?.with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.resumption = rustls::client::Resumption::in_memory_sessions(SESSION_CACHE);
        Ok(Arc::new(config))
    }
}

/// A client that presents no certificate (a proxy asking for its first one), servers checked
/// against `roots` as [`Credentials::client_config`] does.
pub fn anonymous_client_config(roots: &Arc<RootCertStore>, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = client_builder(roots)?.with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn client_builder(
    roots: &Arc<RootCertStore>,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, TlsError> {
    let provider = provider();
    let verifier = AnchorVerifier { roots: Arc::clone(roots), algs: provider.signature_verification_algorithms };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier)))
}

/// The name a client gives rustls for a meshed endpoint: its IP (it keys session resumption;
/// no name is checked against it).
pub fn server_name(addr: std::net::SocketAddr) -> ServerName<'static> {
    ServerName::IpAddress(addr.ip().into())
}

/// The last labels of every server name (SNI) a Vane proxy sends to a meshed peer.
pub const MESH_SNI_SUFFIX: &str = "identity.vane";

/// The server name (SNI) a client sends to a peer that must be `id`:
/// `<serviceaccount>.<namespace>.<trust-domain>.identity.vane`, so that the peer's inbound proxy
/// knows from the ClientHello that the connection is meshed traffic for it to terminate (an
/// application's own TLS names something else and is passed through). Falls back to the IP when
/// the name would not be a DNS name (over 253 bytes, or a trust domain with `_`).
pub fn mesh_server_name(id: &SpiffeId, addr: std::net::SocketAddr) -> ServerName<'static> {
    let name = mesh_sni(id);
    ServerName::try_from(name).unwrap_or_else(|_| server_name(addr))
}

/// The SNI of [`mesh_server_name`], as text.
pub fn mesh_sni(id: &SpiffeId) -> String {
    format!("{}.{}.{}.{MESH_SNI_SUFFIX}", id.service_account(), id.namespace(), id.trust_domain())
}

/// Whether a ClientHello's server name is one a Vane proxy sends (any meshed identity).
pub fn is_mesh_sni(sni: &str) -> bool {
    sni.strip_suffix(MESH_SNI_SUFFIX).is_some_and(|rest| rest.ends_with('.'))
}

/// Why a peer is not the one expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// The peer presented no certificate naming a workload.
    #[error("the peer presented no workload identity (expected {expected})")]
    Anonymous {
        /// Whom the peer should have been.
        expected: String,
    },
    /// The peer is someone else, even if the trust anchor vouches for it.
    #[error("the peer is {found}, expected {expected}")]
    Wrong {
        /// Whom the peer should have been.
        expected: String,
        /// Whom it is.
        found: String,
    },
}

/// Checks, after a handshake, that the server is `expected`.
pub fn check_peer(chain: Option<&[CertificateDer<'_>]>, expected: &SpiffeId) -> Result<SpiffeId, PeerError> {
    match peer::id_of_chain(chain) {
        Some(id) if &id == expected => Ok(id),
        Some(id) => Err(PeerError::Wrong { expected: expected.to_string(), found: id.to_string() }),
        None => Err(PeerError::Anonymous { expected: expected.to_string() }),
    }
}

/// A server verifier that checks the chain up to a trust anchor, validity and the signature of
/// the handshake, and no DNS name.
///
/// Internal: rustls' `WebPkiServerVerifier` always checks the server name against DNS/IP SANs,
/// which workload certificates do not carry; this one does what it does otherwise, through
/// rustls' own `verify_server_cert_signed_by_trust_anchor`.
#[derive(Debug)]
struct AnchorVerifier {
    roots: Arc<RootCertStore>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnchorVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is offered, so a TLS 1.2 signature is never valid here.
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
