//! The Kubernetes objects Vane reads that k8s-openapi does not type: the subset of Gateway API
//! `HTTPRoute` (`gateway.networking.k8s.io/v1`) routing needs, and Vane's own
//! `AuthorizationPolicy` (`policy.vane.io/v1alpha1`).
//!
//! Only what routing needs is typed. Everything else (`status`, `hostnames`, filters' contents,
//! fields added by later Gateway API versions) is ignored by serde, so that an object written
//! for a newer Gateway API never breaks the watch. Fields that Vane cannot honour but that
//! change where traffic goes (regular expressions, query parameter matches) are kept, so that
//! the route is reported as unsupported instead of silently matching more than asked.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// An `HTTPRoute`, typed down to what Vane reads.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct HttpRoute {
    /// Standard object metadata.
    pub metadata: ObjectMeta,
    /// The route's specification.
    #[serde(default)]
    pub spec: HttpRouteSpec,
}

/// `HTTPRoute.spec`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    /// What the route attaches to; for mesh (GAMMA) use, a Service (`group: ""`, `kind: Service`).
    #[serde(default)]
    pub parent_refs: Vec<ParentRef>,
    /// Rules; each has matches and backends.
    #[serde(default)]
    pub rules: Vec<HttpRouteRule>,
}

/// `spec.parentRefs[]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    /// API group; Gateway API's default is `gateway.networking.k8s.io` (a Gateway).
    #[serde(default)]
    pub group: Option<String>,
    /// Kind; Gateway API's default is `Gateway`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Namespace; defaults to the route's.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Name of the parent.
    pub name: String,
    /// Service port the route applies to (Vane applies it to the whole Service).
    #[serde(default)]
    pub port: Option<i32>,
}

/// `spec.rules[]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRule {
    /// Optional rule name (Gateway API v1.2+).
    #[serde(default)]
    pub name: Option<String>,
    /// Conditions; any one may match. None means "every request" (`PathPrefix /`).
    #[serde(default)]
    pub matches: Vec<HttpRouteMatch>,
    /// Where matching requests go, by weight.
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
    /// Filters (header changes, redirects, mirrors...): not applied by Vane; reported.
    #[serde(default)]
    pub filters: Vec<serde_json::Value>,
    /// Timeouts: not applied by Vane; reported.
    #[serde(default)]
    pub timeouts: Option<serde_json::Value>,
}

/// `spec.rules[].matches[]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteMatch {
    /// Path condition.
    #[serde(default)]
    pub path: Option<PathMatch>,
    /// Header conditions.
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
    /// Method condition.
    #[serde(default)]
    pub method: Option<String>,
    /// Query parameter conditions: not supported by Vane's matcher, so a route using them is refused.
    #[serde(default)]
    pub query_params: Vec<serde_json::Value>,
}

/// `matches[].path`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct PathMatch {
    /// `Exact`, `PathPrefix` (the default) or `RegularExpression`.
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    /// The path; defaults to `/`.
    #[serde(default)]
    pub value: Option<String>,
}

/// `matches[].headers[]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct HeaderMatch {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// `spec.rules[].backendRefs[]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    /// API group; defaults to the core group (`""`).
    #[serde(default)]
    pub group: Option<String>,
    /// Kind; defaults to `Service`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Service name.
    pub name: String,
    /// Namespace; defaults to the route's.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Service port; required for Services.
    #[serde(default)]
    pub port: Option<i32>,
    /// Relative weight, default 1.
    #[serde(default)]
    pub weight: Option<i32>,
    /// Per-backend filters: not applied by Vane; reported.
    #[serde(default)]
    pub filters: Vec<serde_json::Value>,
}

// === impl HttpRoute ===

impl Resource for HttpRoute {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "HTTPRoute".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "gateway.networking.k8s.io".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "httproutes".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Whether a group/kind pair names a core Service (`group` `""` or `core`, `kind` `Service`).
pub(crate) fn is_core_service(group: Option<&str>, kind: Option<&str>, default_is_service: bool) -> bool {
    let group_ok = match group {
        None => default_is_service,
        Some(g) => g.is_empty() || g == "core",
    };
    let kind_ok = match kind {
        None => default_is_service,
        Some(k) => k == "Service",
    };
    group_ok && kind_ok
}

/// A Vane `AuthorizationPolicy` (`policy.vane.io/v1alpha1`, namespaced): who may make some of
/// the requests to the workloads of its namespace. Each object is one rule of the inbound
/// policy the control service pushes to that namespace's proxies (`vane_route::authz`); the
/// CRD is `manifests/crds/authorizationpolicies.yaml`.
///
/// ```yaml
/// apiVersion: policy.vane.io/v1alpha1
/// kind: AuthorizationPolicy
/// metadata: {name: embeddings-for-search, namespace: models}
/// spec:
///   model: text-embedding-3
///   allow:
///     - namespace: search
///     - namespace: apps
///       serviceAccount: indexer
/// ```
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct AuthorizationPolicy {
    /// Standard object metadata.
    pub metadata: ObjectMeta,
    /// What the rule matches and who it allows.
    #[serde(default)]
    pub spec: AuthorizationPolicySpec,
}

/// `AuthorizationPolicy.spec`: requests matched by path prefix, model, or both.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// Requests whose path starts with this.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Requests for this model.
    #[serde(default)]
    pub model: Option<String>,
    /// Who may make them; everyone else is denied them. Empty: nobody may.
    #[serde(default)]
    pub allow: Vec<PolicyPrincipal>,
}

/// `spec.allow[]`: exactly one of a SPIFFE ID, a namespace (optionally one ServiceAccount of
/// it), or `unauthenticated: true`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyPrincipal {
    /// A whole SPIFFE ID.
    #[serde(default)]
    pub identity: Option<String>,
    /// Every ServiceAccount of this namespace (or, with `serviceAccount`, one).
    #[serde(default)]
    pub namespace: Option<String>,
    /// A ServiceAccount of `namespace`.
    #[serde(default)]
    pub service_account: Option<String>,
    /// Callers without an identity.
    #[serde(default)]
    pub unauthenticated: bool,
}

impl Resource for AuthorizationPolicy {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "AuthorizationPolicy".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "policy.vane.io".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1alpha1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "authorizationpolicies".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}
