//! The mesh counters: inbound TLS connections and handshakes that failed, and authorization
//! decisions.

use super::route::Name;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AuthzLabels {
    decision: &'static str,
    /// The rule that decided, or `default`.
    rule: Name,
    /// Whether the caller had an identity.
    authenticated: &'static str,
}

/// `vane_inbound_tls_connections_total`, `vane_inbound_tls_failures_total`,
/// `vane_authz_decisions_total{decision, rule, authenticated}`.
#[derive(Debug, Default)]
pub struct MeshMetrics {
    /// Inbound connections served over TLS.
    pub tls_connections: Counter,
    /// Inbound TLS connections whose handshake failed (TLS 1.2, an untrusted or expired client
    /// certificate, no certificate of this proxy's own yet).
    pub tls_failures: Counter,
    authz: Family<AuthzLabels, Counter>,
}

impl MeshMetrics {
    pub(super) fn register(registry: &mut Registry) -> MeshMetrics {
        let m = MeshMetrics::default();
        registry.register("inbound_tls_connections", "Inbound connections served over mTLS", m.tls_connections.clone());
        registry.register(
            "inbound_tls_failures",
            "Inbound TLS connections whose handshake failed",
            m.tls_failures.clone(),
        );
        registry.register(
            "authz_decisions",
            "Inbound authorization decisions by the rule that decided (default: the default policy)",
            m.authz.clone(),
        );
        m
    }

    /// Counts one decision.
    pub fn decided(&self, allowed: bool, rule: Option<&str>, authenticated: bool) {
        let labels = AuthzLabels {
            decision: if allowed { "allow" } else { "deny" },
            rule: rule.unwrap_or("default").into(),
            authenticated: if authenticated { "true" } else { "false" },
        };
        self.authz.get_or_create(&labels).inc();
    }
}
