//! Why a certificate request is answered the way it is: the pure decision on a `TokenReview`'s
//! status, and every refusal with its HTTP status and metric label.

use http::StatusCode;
use k8s_openapi::api::authentication::v1::TokenReviewStatus;
use vane_identity::ca::IssueError;
use vane_identity::protocol::AUDIENCE;
use vane_identity::{SpiffeId, spiffe::IdError};

/// Why no certificate was issued.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The body is larger than `protocol::MAX_REQUEST_BYTES`.
    #[error("the request is larger than {0} bytes")]
    TooLarge(usize),
    /// The body is not a certificate request (JSON, base64).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The API server says the token is not valid (or no status came back).
    #[error("the token is not valid: {0}")]
    Unauthenticated(String),
    /// The token is valid but not for this service's audience.
    #[error("the token is not bound to audience {AUDIENCE} (its audiences: {0:?})")]
    Audience(Vec<String>),
    /// The token is not a ServiceAccount's.
    #[error("the token does not prove a workload identity: {0}")]
    NotServiceAccount(IdError),
    /// The certificate request cannot be signed for the identity the token proves.
    #[error(transparent)]
    Issue(IssueError),
    /// The API server could not be asked.
    #[error("the Kubernetes API could not review the token: {0}")]
    Api(String),
}

impl Refusal {
    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BadRequest(_) | Refusal::Issue(IssueError::Unreadable(_)) => StatusCode::BAD_REQUEST,
            Refusal::Unauthenticated(_)
            | Refusal::Audience(_)
            | Refusal::NotServiceAccount(_)
            | Refusal::Issue(IssueError::WrongIdentity { .. } | IssueError::AsksForCa | IssueError::TrustDomain(..)) => {
                StatusCode::FORBIDDEN
            }
            Refusal::Issue(IssueError::Sign(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            Refusal::Api(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `reason` label of `vane_control_certificate_refusals_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::TooLarge(_) => "too-large",
            Refusal::BadRequest(_) => "bad-request",
            Refusal::Unauthenticated(_) => "unauthenticated",
            Refusal::Audience(_) => "audience",
            Refusal::NotServiceAccount(_) => "not-service-account",
            Refusal::Issue(IssueError::Unreadable(_)) => "unreadable-csr",
            Refusal::Issue(IssueError::WrongIdentity { .. }) => "wrong-identity",
            Refusal::Issue(IssueError::AsksForCa) => "asks-for-ca",
            Refusal::Issue(IssueError::TrustDomain(..)) => "trust-domain",
            Refusal::Issue(IssueError::Sign(_)) => "sign",
            Refusal::Api(_) => "api-unavailable",
        }
    }
}

/// The identity a `TokenReview` status proves in `trust_domain`: it must say `authenticated`,
/// list [`AUDIENCE`] among its audiences (a review server that ignores audiences returns none,
/// and then the token may be one meant for the API server itself), and name a ServiceAccount.
pub fn decide(trust_domain: &str, status: Option<&TokenReviewStatus>) -> Result<SpiffeId, Refusal> {
    let Some(status) = status else {
        return Err(Refusal::Unauthenticated("the review came back without a status".into()));
    };
    if status.authenticated != Some(true) {
        let why = status.error.clone().filter(|e| !e.is_empty()).unwrap_or_else(|| "not authenticated".into());
        return Err(Refusal::Unauthenticated(why));
    }
    let audiences = status.audiences.clone().unwrap_or_default();
    if !audiences.iter().any(|a| a == AUDIENCE) {
        return Err(Refusal::Audience(audiences));
    }
    let username = status.user.as_ref().and_then(|u| u.username.as_deref()).unwrap_or("");
    SpiffeId::from_token_user(trust_domain, username).map_err(Refusal::NotServiceAccount)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;

    fn status(authenticated: Option<bool>, user: Option<&str>, audiences: Option<&[&str]>) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated,
            user: user.map(|u| UserInfo { username: Some(u.to_string()), ..Default::default() }),
            audiences: audiences.map(|a| a.iter().map(|s| s.to_string()).collect()),
            error: None,
        }
    }

    #[test]
    fn only_an_authenticated_service_account_token_for_the_audience_proves_an_identity() {
        let sa = Some("system:serviceaccount:models:llm");
        let aud: Option<&[&str]> = Some(&[AUDIENCE]);
        for (st, want) in [
            (Some(status(Some(true), sa, aud)), Ok("spiffe://cluster.local/ns/models/sa/llm")),
            (Some(status(Some(true), sa, Some(&["api", AUDIENCE]))), Ok("spiffe://cluster.local/ns/models/sa/llm")),
            (Some(status(Some(false), sa, aud)), Err("unauthenticated")),
            (Some(status(None, sa, aud)), Err("unauthenticated")),
            (None, Err("unauthenticated")),
            (Some(status(Some(true), sa, None)), Err("audience")),
            (Some(status(Some(true), sa, Some(&[]))), Err("audience")),
            (Some(status(Some(true), sa, Some(&["https://kubernetes.default.svc"]))), Err("audience")),
            (Some(status(Some(true), Some("alice"), aud)), Err("not-service-account")),
            (Some(status(Some(true), Some("system:node:n1"), aud)), Err("not-service-account")),
            (Some(status(Some(true), None, aud)), Err("not-service-account")),
            (Some(status(Some(true), Some("system:serviceaccount:Models:llm"), aud)), Err("not-service-account")),
        ] {
            let got = decide("cluster.local", st.as_ref()).map(|id| id.to_string()).map_err(|r| r.reason());
            assert_eq!(got, want.map(String::from), "{st:?}");
        }
    }

    #[test]
    fn the_reason_for_an_invalid_token_is_the_api_servers() {
        let mut st = status(Some(false), None, None);
        st.error = Some("token has expired".into());
        let r = decide("cluster.local", Some(&st)).unwrap_err();
        assert_eq!(r.to_string(), "the token is not valid: token has expired");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn refusals_map_to_the_documented_statuses() {
        let wrong = IssueError::WrongIdentity { asked: vec![], proven: "x".into() };
        for (r, code) in [
            (Refusal::TooLarge(1), 413),
            (Refusal::BadRequest("x".into()), 400),
            (Refusal::Issue(IssueError::Unreadable("x".into())), 400),
            (Refusal::Issue(wrong), 403),
            (Refusal::Issue(IssueError::AsksForCa), 403),
            (Refusal::Issue(IssueError::TrustDomain("a".into(), "b".into())), 403),
            (Refusal::Audience(vec![]), 403),
            (Refusal::Api("down".into()), 503),
            (Refusal::Issue(IssueError::Sign("x".into())), 500),
        ] {
            assert_eq!(r.status().as_u16(), code, "{r:?}");
        }
    }
}
