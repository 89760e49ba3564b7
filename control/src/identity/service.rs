//! `POST /v1/certificate`: a proxy's projected ServiceAccount token and certificate request in,
//! a certificate for exactly the identity the token proves out (protocol in
//! `vane_identity::protocol`).
//!
//! The token is checked by the Kubernetes `TokenReview` API with the audience
//! [`AUDIENCE`]; [`decide`] turns the review into an identity or a refusal, and the issuer signs
//! only a request for that identity. Every answer is counted
//! (`vane_control_certificates_issued_total`, `vane_control_certificate_refusals_total{reason}`)
//! and every refusal logged with its reason.

use super::SharedAuthority;
use super::review::{Refusal, decide};
use crate::metrics::Metrics;
use crate::server::Body;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};
use vane_identity::SpiffeId;
use vane_identity::protocol::{AUDIENCE, CertificateRequest, CertificateResponse, ErrorResponse, MAX_REQUEST_BYTES};
use vane_runtime::admin;

/// How long the API server gets to review a token.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// The certificate service. Cheap to clone.
#[derive(Clone)]
pub struct CertificateService {
    authority: SharedAuthority,
    client: kube::Client,
    lifetime: Duration,
    metrics: Metrics,
}

impl std::fmt::Debug for CertificateService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateService")
            .field("authority", &self.authority)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl CertificateService {
    /// Signs with `authority` certificates valid for `lifetime`, checking tokens with `client`.
    pub fn new(authority: SharedAuthority, client: kube::Client, lifetime: Duration, metrics: Metrics) -> Self {
        CertificateService { authority, client, lifetime, metrics }
    }

    /// Answers one request to [`vane_identity::protocol::PATH`].
    pub async fn handle<B>(&self, req: Request<B>, peer: SocketAddr) -> Response<Body>
    where
        B: http_body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if req.method() != Method::POST {
            let mut r = refusal_body(StatusCode::METHOD_NOT_ALLOWED, "POST only".into());
            r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("POST"));
            return r;
        }
        match self.issue(req).await {
            Ok((id, answer)) => {
                self.metrics.certificates_issued.inc();
                tracing::info!(%peer, identity = %id, not_after = answer.not_after, "certificate issued");
                admin::json(StatusCode::OK, &answer)
            }
            Err(refusal) => {
                let reason = refusal.reason();
                self.metrics.certificate_refused(reason);
                tracing::warn!(%peer, reason, "certificate refused: {refusal}");
                refusal_body(refusal.status(), refusal.to_string())
            }
        }
    }

    async fn issue<B>(&self, req: Request<B>) -> Result<(SpiffeId, CertificateResponse), Refusal>
    where
        B: http_body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let body = match Limited::new(req.into_body(), MAX_REQUEST_BYTES).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                return Err(Refusal::TooLarge(MAX_REQUEST_BYTES));
            }
            Err(e) => return Err(Refusal::BadRequest(format!("cannot read the body: {e}"))),
        };
        let request: CertificateRequest = serde_json::from_slice(&body)
            .map_err(|e| Refusal::BadRequest(format!("not a certificate request: {e}")))?;
        let csr =
            STANDARD.decode(request.csr.trim()).map_err(|e| Refusal::BadRequest(format!("csr is not base64: {e}")))?;
        if request.token.trim().is_empty() {
            return Err(Refusal::Unauthenticated("no token".into()));
        }
        let status = self.review(request.token.trim()).await?;
        // One issuer for the whole answer, even if it is rotated meanwhile.
        let authority = self.authority.load_full();
        let id = decide(authority.trust_domain(), status.as_ref())?;
        let issued = authority.issue(&csr, &id, self.lifetime).map_err(Refusal::Issue)?;
        let not_after = issued.not_after.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let answer =
            CertificateResponse { chain: issued.chain_pem, roots: authority.anchors_pem().to_string(), not_after };
        Ok((id, answer))
    }

    /// Asks the API server about `token`, for [`AUDIENCE`].
    async fn review(&self, token: &str) -> Result<Option<TokenReviewStatus>, Refusal> {
        let review = TokenReview {
            metadata: Default::default(),
            spec: TokenReviewSpec { token: token.to_string(), audiences: Some(vec![AUDIENCE.to_string()]) },
            status: None,
        };
        let api = Api::<TokenReview>::all(self.client.clone());
        match tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &review)).await {
            Ok(Ok(answer)) => Ok(answer.status),
            Ok(Err(e)) => Err(Refusal::Api(e.to_string())),
            Err(_) => Err(Refusal::Api(format!("no answer within {REVIEW_TIMEOUT:?}"))),
        }
    }
}

/// `{"error": ...}` with `status`.
pub fn refusal_body(status: StatusCode, error: String) -> Response<Body> {
    admin::json(status, &ErrorResponse { error })
}
