//! Injected Pods: their ServiceAccount, which names the identity their proxy holds. Watched
//! only with the identity service on; Pods without the `vane.io/injected` annotation are not
//! kept (their endpoints are called in plaintext).

use super::ObjectKey;
use crate::inject::overrides::INJECTED;
use k8s_openapi::api::core::v1::Pod;

/// What the tables need of an injected Pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    /// Namespace and name.
    pub key: ObjectKey,
    /// `spec.serviceAccountName`, `default` when unset (as the API server fills it in).
    pub service_account: String,
}

impl super::by_key::Keyed for PodInfo {
    fn key(&self) -> &ObjectKey {
        &self.key
    }
}

impl PodInfo {
    /// Reads a Pod; `None` for one that was not injected (or has no name).
    pub fn from_resource(pod: &Pod) -> Option<PodInfo> {
        let key = ObjectKey::of(&pod.metadata);
        let injected = pod.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(INJECTED));
        if key.name.is_empty() || !injected {
            return None;
        }
        let service_account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_string());
        Some(PodInfo { key, service_account })
    }
}

/// Injected Pods by key. The [`Dirty`](super::Dirty) set an index call fills holds **Pod** keys: the store
/// turns them into the Services whose EndpointSlices point at those Pods.
pub type PodIndex = super::by_key::ByKey<PodInfo>;
