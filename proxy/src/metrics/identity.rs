//! The workload identity's metrics: how long the certificate in use has left, and how getting
//! new certificates goes.
//!
//! | metric | labels |
//! |---|---|
//! | `vane_identity_cert_expiry_seconds` (seconds until the certificate in use expires, negative once past; absent without one) | |
//! | `vane_identity_renewals_total` (certificates asked for or read, each first one included) | outcome (`ok`, `error`) |

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// No labels: a family of one series, so that the gauge is absent until there is a value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct NoLabels;

impl EncodeLabelSet for NoLabels {
    fn encode(&self, _encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        Ok(())
    }
}

/// The identity metrics' handles.
#[derive(Clone, Debug)]
pub struct IdentityMetrics {
    renewals: Family<OutcomeLabels, Counter>,
    expiry: Family<NoLabels, Gauge<f64, AtomicU64>>,
}

impl IdentityMetrics {
    /// Registers the identity metrics in `registry` (prefixed `vane`).
    pub(super) fn register(registry: &mut Registry) -> IdentityMetrics {
        let expiry = Family::<NoLabels, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "identity_cert_expiry",
            "Time until this proxy's certificate expires (negative once past; absent without a certificate)",
            Unit::Seconds,
            expiry.clone(),
        );
        let renewals = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "identity_renewals",
            "Certificates asked of the identity service or read from files, by outcome (the first included)",
            renewals.clone(),
        );
        IdentityMetrics { renewals, expiry }
    }

    /// Counts one attempt at a new certificate.
    pub fn renewal(&self, ok: bool) {
        self.renewals.get_or_create(&OutcomeLabels { outcome: if ok { "ok" } else { "error" } }).inc();
    }

    /// Sets the expiry gauge (at render time), or removes it when there is no certificate.
    pub fn expires_in(&self, seconds: Option<f64>) {
        match seconds {
            Some(s) => {
                self.expiry.get_or_create(&NoLabels).set(s);
            }
            None => self.expiry.clear(),
        }
    }
}
