//! Asking the identity service for a certificate: a new key made in memory (never written
//! anywhere), a request for exactly this proxy's identity, proved by the pod's projected
//! ServiceAccount token, sent as JSON over TLS 1.3 to the control service (protocol in
//! `vane_identity::protocol`).
//!
//! The proxy has no certificate to present yet, so the connection is made without one
//! (`anonymous_client_config`); the server must still prove that it is the control service:
//! its chain must lead to the configured trust anchors and name the expected identity.
//!
//! The trust anchors of the new credentials are the configured roots file, read again for each
//! request (so a rotated trust bundle is picked up at the next renewal), never the `roots` of
//! the answer: what to trust is not the answering server's choice.

use super::connect::{self, ConnectError};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use vane_identity::protocol::{CertificateRequest, CertificateResponse, ErrorResponse, PATH};
use vane_identity::tls::{self, Credentials, TlsError};
use vane_identity::{SpiffeId, csr};

/// How long one exchange (connect, TLS, request and answer) may take.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer read. Internal: a chain and the anchors are a few KiB of PEM.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// Why no certificate came from the identity service.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A file (the token or the roots) could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The roots file holds no usable trust anchor.
    #[error("trust anchors: {0}")]
    Roots(#[source] TlsError),
    /// No key or request could be made.
    #[error("cannot make a key and request: {0}")]
    Key(#[from] rcgen::Error),
    /// No connection.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The exchange failed after the connection was made.
    #[error("request to the identity service failed: {0}")]
    Http(#[from] hyper::Error),
    /// The exchange took longer than [`EXCHANGE_TIMEOUT`].
    #[error("the identity service did not answer within {0:?}")]
    Timeout(Duration),
    /// The request could not be built.
    #[error("cannot build the certificate request: {0}")]
    Request(String),
    /// The service refused (its `error` text, or the body).
    #[error("the identity service answered {status}: {error}")]
    Refused {
        /// The HTTP status.
        status: http::StatusCode,
        /// Why, as it said.
        error: String,
    },
    /// The answer could not be read.
    #[error("unreadable answer from the identity service: {0}")]
    Answer(String),
    /// The answer's chain or the key cannot be used.
    #[error("the issued certificate cannot be used: {0}")]
    Credentials(#[source] TlsError),
    /// The issued certificate names someone else.
    #[error("the issued certificate names {got}, not {asked}")]
    WrongIdentity {
        /// The identity asked for.
        asked: String,
        /// The one the certificate names.
        got: String,
    },
}

/// A certificate the identity service signed, and when it arrived.
#[derive(Debug)]
pub struct Issued {
    /// The chain, the key it was made for, and the trust anchors.
    pub credentials: Credentials,
    /// When the answer arrived (the start of the certificate's life as this proxy counts it:
    /// the issuer backdates `not_before` for clocks a little behind).
    pub received: SystemTime,
}

/// What to ask the identity service, and how to reach it.
#[derive(Clone, Debug)]
pub struct Client {
    /// `host:port` of the identity service (resolved at each request).
    pub addr: String,
    /// The identity the service must present.
    pub server: SpiffeId,
    /// The identity asked for.
    pub id: SpiffeId,
    /// The projected ServiceAccount token file.
    pub token: PathBuf,
    /// The PEM trust anchors file.
    pub roots: PathBuf,
}

fn read(path: &PathBuf) -> Result<String, RequestError> {
    std::fs::read_to_string(path).map_err(|source| RequestError::Read { path: path.clone(), source })
}

impl Client {
    /// One request: a new key, a certificate for it.
    pub async fn request(&self) -> Result<Issued, RequestError> {
        match tokio::time::timeout(EXCHANGE_TIMEOUT, self.exchange()).await {
            Ok(r) => r,
            Err(_) => Err(RequestError::Timeout(EXCHANGE_TIMEOUT)),
        }
    }

    async fn exchange(&self) -> Result<Issued, RequestError> {
        let roots_pem = read(&self.roots)?;
        let roots = tls::roots(&roots_pem).map_err(RequestError::Roots)?;
        let token = read(&self.token)?.trim().to_string();
        let request = csr::Request::new(&self.id)?;
        let body = CertificateRequest { token, csr: base64::engine::general_purpose::STANDARD.encode(&request.der) };
        let body = serde_json::to_vec(&body).map_err(|e| RequestError::Request(e.to_string()))?;

        let addr = connect::resolve(&self.addr).await?;
        let config = tls::anonymous_client_config(&roots, &[b"h2", b"http/1.1"]).map_err(RequestError::Roots)?;
        let mut tx = connect::open::<Full<Bytes>>(addr, config, &self.server, EXCHANGE_TIMEOUT).await?;
        let req = http::Request::post(format!("https://{}{PATH}", self.addr))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| RequestError::Request(e.to_string()))?;
        let resp = tx.send(req).await?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| RequestError::Answer(e.to_string()))?
            .to_bytes();
        let received = SystemTime::now();
        if !status.is_success() {
            let error = match serde_json::from_slice::<ErrorResponse>(&bytes) {
                Ok(e) => e.error,
                Err(_) => String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned(),
            };
            return Err(RequestError::Refused { status, error });
        }
        let answer: CertificateResponse =
            serde_json::from_slice(&bytes).map_err(|e| RequestError::Answer(e.to_string()))?;
        let credentials =
            Credentials::new(&answer.chain, request.key(), &roots_pem).map_err(RequestError::Credentials)?;
        if credentials.id != self.id {
            return Err(RequestError::WrongIdentity { asked: self.id.to_string(), got: credentials.id.to_string() });
        }
        Ok(Issued { credentials, received })
    }
}
