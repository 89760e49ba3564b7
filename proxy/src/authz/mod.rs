//! Inbound authorization, and the caller's identity for the application.
//!
//! Every inbound request first loses any `vane-client-id` header it came with (nobody may claim
//! an identity by header) and, when it came over mTLS, gets one with the caller's SPIFFE ID, so
//! that the application behind the proxy can read who called it. Then the proxy's policy
//! (`proxy.authz`, decided by the pure `vane_route::authz::decide`) allows it or answers
//! `403 vane-proxy-error: unauthorized` (gRPC `PERMISSION_DENIED`). Each decision is counted by
//! the rule that made it (`vane_authz_decisions_total`), except under the default open policy
//! with no rules, where there is nothing to decide.
//!
//! The model a rule matches is read from the request itself (its JSON body's prefix or the
//! KServe v2 path), never from a header a caller could set.

use crate::config::Store;
use crate::error::{Error, ProxyError};
use crate::metrics::Metrics;
use crate::server::PeerIdentity;
use futures_util::future::{Either, Ready, ready};
use http::{HeaderName, Request};
use std::sync::Arc;
use std::task::{Context, Poll};
use vane_route::authz::{self, AuthzConfig, Caller, DefaultPolicy};

/// The header that tells the application its caller's identity.
pub const CLIENT_ID_HEADER: HeaderName = HeaderName::from_static("vane-client-id");

/// The inbound authorization layer.
#[derive(Clone, Debug)]
pub struct AuthzLayer {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
}

impl AuthzLayer {
    /// Authorizes against the active config of `store`.
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>) -> AuthzLayer {
        AuthzLayer { store, metrics }
    }
}

impl<S> tower::Layer<S> for AuthzLayer {
    type Service = AuthzService<S>;
    fn layer(&self, inner: S) -> AuthzService<S> {
        AuthzService { inner, store: Arc::clone(&self.store), metrics: Arc::clone(&self.metrics) }
    }
}

/// See [`AuthzLayer`].
#[derive(Clone, Debug)]
pub struct AuthzService<S> {
    inner: S,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
}

fn open(c: &AuthzConfig) -> bool {
    c.default == DefaultPolicy::AllUnauthenticated && c.rules.is_empty()
}

/// The model a request is for, from its own content.
fn model_of(req: &Request<crate::body::ReqBody>) -> Option<String> {
    use crate::body::ReqBody;
    let body = match req.body() {
        ReqBody::Full(Some(b)) | ReqBody::Stream { prefix: Some(b), .. } => {
            vane_route::model::model_from_json_prefix(b)
        }
        _ => None,
    };
    body.or_else(|| vane_route::model::model_from_kserve_path(req.uri().path()).map(String::from))
}

impl<S, R> tower::Service<Request<crate::body::ReqBody>> for AuthzService<S>
where
    S: tower::Service<Request<crate::body::ReqBody>, Response = R, Error = Error>,
{
    type Response = R;
    type Error = Error;
    type Future = Either<Ready<Result<R, Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<crate::body::ReqBody>) -> Self::Future {
        let peer = req.extensions().get::<PeerIdentity>().and_then(|p| p.0.clone());
        req.headers_mut().remove(&CLIENT_ID_HEADER);
        if let Some(p) = &peer {
            req.headers_mut().insert(CLIENT_ID_HEADER, p.text.clone());
        }
        let snap = self.store.load();
        let policy = &*snap.table.authz;
        if open(policy) {
            return Either::Right(self.inner.call(req));
        }
        let caller = peer.as_ref().map(|p| Caller {
            id: p.as_str(),
            trust_domain: p.id.trust_domain(),
            namespace: p.id.namespace(),
            service_account: p.id.service_account(),
        });
        let model = model_of(&req);
        let facts = authz::Request { path: req.uri().path(), model: model.as_deref() };
        let decision = authz::decide(policy, &snap.table.trust_domain, caller.as_ref(), &facts);
        let (allowed, rule) = match decision {
            authz::Decision::Allow(r) => (true, r),
            authz::Decision::Deny(r) => (false, r),
        };
        self.metrics.mesh.decided(allowed, rule, caller.is_some());
        if allowed {
            return Either::Right(self.inner.call(req));
        }
        let who = peer.as_ref().map_or("an unauthenticated caller", |p| p.as_str());
        let why = match rule {
            Some(r) => format!("{who} is not allowed by rule {r:?}"),
            None => format!("{who} is not allowed by the default policy {}", policy.default.as_str()),
        };
        tracing::info!(path = facts.path, "denied: {why}");
        let (parts, _) = req.into_parts();
        Either::Left(ready(Err(Error::with_extensions(ProxyError::Unauthorized(why), parts.extensions))))
    }
}
