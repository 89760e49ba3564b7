//! The certificate service's wire protocol, one type for the proxy that asks and the control
//! service that answers.
//!
//! ```text
//! POST /v1/certificate            (over TLS; the proxy has no certificate yet)
//! content-type: application/json
//! {"token": "<projected ServiceAccount token>", "csr": "<base64 DER PKCS#10>"}
//!
//! 200 {"chain": "<PEM leaf then issuer>", "roots": "<PEM trust anchors>", "not_after": 1796170982}
//! 403 {"error": "the request asks for ..., the token proves ..."}   (token refused, wrong identity)
//! 400 {"error": "..."}                                              (unreadable request)
//! 503 {"error": "..."}                                              (the API server could not be asked)
//! ```
//!
//! The token's audience must be [`AUDIENCE`]; the service checks it with the Kubernetes
//! `TokenReview` API, and signs only a request for exactly the identity the token proves.

use serde::{Deserialize, Serialize};

/// Path of the certificate service.
pub const PATH: &str = "/v1/certificate";

/// The audience a proxy's projected ServiceAccount token is bound to.
pub const AUDIENCE: &str = "vane-identity";

/// The largest request body the service reads (a token and a request are a few KiB).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// A certificate request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertificateRequest {
    /// The projected ServiceAccount token.
    pub token: String,
    /// The PKCS#10 request, DER, base64 (standard alphabet, padded).
    pub csr: String,
}

/// A signed certificate.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertificateResponse {
    /// The certificate then the issuer's, PEM.
    pub chain: String,
    /// The trust anchors, PEM.
    pub roots: String,
    /// When the certificate expires, seconds since the Unix epoch.
    pub not_after: u64,
}

/// A refusal.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorResponse {
    /// Why.
    pub error: String,
}
