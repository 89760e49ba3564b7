//! What a proxy may see of the discovery stream, decided by pure functions.
//!
//! The rule, when the identity service is on:
//!
//! 1. Discovery needs a client certificate that the trust anchors vouch for and that names a
//!    workload (`spiffe://<trust-domain>/ns/<ns>/sa/<sa>`) of this control service's trust
//!    domain. Anonymous clients (which may still ask for a certificate on the same port) and
//!    identities of another trust domain get 403.
//! 2. A Service annotated `vane.io/visible-to: ns1,ns2` is served only to proxies whose
//!    identity's namespace is listed or is the Service's own namespace. Every other Service is
//!    served to every authenticated proxy of the trust domain.
//!
//! The backends a visible Service routes to are sent with it: its HTTPRoutes (in its own
//! namespace) chose them. Without the identity service no proxy is authenticated, so every
//! proxy sees every Service, as before.

use std::collections::BTreeSet;
use std::sync::Arc;
use vane_identity::SpiffeId;

/// The Service annotation that limits which namespaces' proxies are served the Service.
pub const VISIBLE_TO: &str = "vane.io/visible-to";

/// Who asks for discovery.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Viewer {
    /// Nobody is authenticated (the identity service is off): everything is visible.
    #[default]
    Anyone,
    /// A proxy whose identity is in this namespace.
    Namespace(Arc<str>),
}

/// What a TLS client presented.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    /// Whether it presented a certificate at all (the handshake checked it against the anchors).
    pub presented: bool,
    /// The workload the certificate names, if it names exactly one.
    pub id: Option<SpiffeId>,
}

/// Why a client may not subscribe.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryRefusal {
    /// No client certificate.
    #[error("discovery needs a client certificate: ask for one at POST /v1/certificate first")]
    Anonymous,
    /// A certificate that names no workload.
    #[error("the client certificate names no workload (one spiffe://<trust-domain>/ns/<ns>/sa/<sa> URI)")]
    NoIdentity,
    /// A workload of another trust domain.
    #[error("{id} is not in trust domain {trust_domain}")]
    TrustDomain {
        /// The client's identity.
        id: String,
        /// This control service's trust domain.
        trust_domain: String,
    },
}

/// Whether `peer` may subscribe, and as whom.
pub fn viewer(trust_domain: &str, peer: &Peer) -> Result<Viewer, DiscoveryRefusal> {
    match (&peer.id, peer.presented) {
        (_, false) => Err(DiscoveryRefusal::Anonymous),
        (None, true) => Err(DiscoveryRefusal::NoIdentity),
        (Some(id), true) if id.trust_domain() != trust_domain => {
            Err(DiscoveryRefusal::TrustDomain { id: id.to_string(), trust_domain: trust_domain.to_string() })
        }
        (Some(id), true) => Ok(Viewer::Namespace(id.namespace().into())),
    }
}

/// Whether `viewer` is served a Service of `namespace` with these `visible_to` namespaces
/// (`None`: not annotated).
pub fn visible(viewer: &Viewer, namespace: &str, visible_to: Option<&BTreeSet<String>>) -> bool {
    match (viewer, visible_to) {
        (Viewer::Anyone, _) | (_, None) => true,
        (Viewer::Namespace(ns), Some(allowed)) => &**ns == namespace || allowed.contains(&**ns),
    }
}

/// The namespaces of a `vane.io/visible-to` value: comma-separated, blanks trimmed, empty
/// entries dropped (an empty value leaves only the Service's own namespace).
pub fn parse_visible_to(value: &str) -> BTreeSet<String> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Option<SpiffeId> {
        Some(SpiffeId::parse(s).unwrap())
    }

    #[test]
    fn only_workloads_of_the_trust_domain_may_subscribe() {
        let ns = |n: &str| Ok(Viewer::Namespace(n.into()));
        for (peer, want) in [
            (Peer { presented: false, id: None }, Err(DiscoveryRefusal::Anonymous)),
            (Peer { presented: true, id: None }, Err(DiscoveryRefusal::NoIdentity)),
            (
                Peer { presented: true, id: id("spiffe://other.td/ns/models/sa/llm") },
                Err(DiscoveryRefusal::TrustDomain {
                    id: "spiffe://other.td/ns/models/sa/llm".into(),
                    trust_domain: "cluster.local".into(),
                }),
            ),
            (Peer { presented: true, id: id("spiffe://cluster.local/ns/models/sa/llm") }, ns("models")),
            (Peer { presented: true, id: id("spiffe://cluster.local/ns/team-a/sa/default") }, ns("team-a")),
        ] {
            assert_eq!(viewer("cluster.local", &peer), want, "{peer:?}");
        }
    }

    #[test]
    fn visible_to_lists_the_namespaces_besides_the_services_own() {
        let limited = parse_visible_to(" team-a, team-b ,,");
        assert_eq!(limited.iter().collect::<Vec<_>>(), ["team-a", "team-b"]);
        let own_only = parse_visible_to("");
        let v = |n: &str| Viewer::Namespace(n.into());
        for (viewer, visible_to, want) in [
            (Viewer::Anyone, Some(&limited), true),
            (v("team-a"), Some(&limited), true),
            (v("team-b"), Some(&limited), true),
            (v("models"), Some(&limited), true), // the Service's own namespace
            (v("team-c"), Some(&limited), false),
            (v("team-c"), None, true),
            (v("models"), Some(&own_only), true),
            (v("team-a"), Some(&own_only), false),
        ] {
            assert_eq!(visible(&viewer, "models", visible_to), want, "{viewer:?} {visible_to:?}");
        }
    }
}
