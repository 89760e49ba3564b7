//! Injected Pods: their ServiceAccount, which names the identity their proxy holds. Watched
//! only with the identity service on; Pods without the `vane.io/injected` annotation are not
//! kept (their endpoints are called in plaintext).

use super::{Dirty, Index, ObjectKey};
use crate::inject::overrides::INJECTED;
use k8s_openapi::api::core::v1::Pod;
use std::collections::HashMap;

/// What the tables need of an injected Pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    /// Namespace and name.
    pub key: ObjectKey,
    /// `spec.serviceAccountName`, `default` when unset (as the API server fills it in).
    pub service_account: String,
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

/// Injected Pods by key. The [`Dirty`] set an index call fills holds **Pod** keys: the store
/// turns them into the Services whose EndpointSlices point at those Pods.
#[derive(Debug, Default)]
pub struct PodIndex {
    by_key: HashMap<ObjectKey, PodInfo>,
}

impl PodIndex {
    /// An injected Pod by key.
    pub fn get(&self, key: &ObjectKey) -> Option<&PodInfo> {
        self.by_key.get(key)
    }

    /// How many injected Pods are held.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

impl Index<PodInfo> for PodIndex {
    fn apply(&mut self, obj: PodInfo, dirty: &mut Dirty) {
        if self.by_key.get(&obj.key) != Some(&obj) {
            dirty.insert(obj.key.clone());
            self.by_key.insert(obj.key.clone(), obj);
        }
    }

    fn delete(&mut self, key: &ObjectKey, dirty: &mut Dirty) {
        if self.by_key.remove(key).is_some() {
            dirty.insert(key.clone());
        }
    }

    fn reset(&mut self, objs: Vec<PodInfo>, dirty: &mut Dirty) {
        let mut fresh: HashMap<ObjectKey, PodInfo> = objs.into_iter().map(|p| (p.key.clone(), p)).collect();
        for (key, old) in &self.by_key {
            if fresh.get(key) != Some(old) {
                dirty.insert(key.clone());
            }
        }
        for key in fresh.keys() {
            if !self.by_key.contains_key(key) {
                dirty.insert(key.clone());
            }
        }
        std::mem::swap(&mut self.by_key, &mut fresh);
    }
}
