//! Watch → index: plain data kept from the watched objects, one index per kind.
//!
//! Each index keeps only what the routing tables need (a few fields per object, not the object),
//! and is driven through the [`Index`] trait: `apply` for an added or changed object, `delete`,
//! and `reset` with the full set after a (re)list — the watcher's `Init`, `InitApply`… `InitDone`
//! sequence, which also happens after a `410 Gone`. Every call records in a [`Dirty`] set the
//! Services whose tables may have changed, so that only those are recomputed.
//!
//! Nothing here does I/O; the tests call the indexes directly with fixture objects.

mod by_key;
mod endpoints;
pub mod namespaces;
mod pods;
mod routes;
mod services;

pub use self::endpoints::{EndpointIndex, SliceInfo, SlicePort};
pub use self::namespaces::{NamespaceIndex, NamespacePolicy, PolicyRule};
pub use self::pods::{PodIndex, PodInfo};
pub use self::routes::{RouteIndex, RouteInfo};
pub use self::services::{ServiceIndex, ServiceInfo, ServicePort};

use std::collections::BTreeSet;
use std::fmt;

/// Namespace and name of an object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// A key from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ObjectKey {
        ObjectKey { namespace: namespace.into(), name: name.into() }
    }

    /// The key of a Kubernetes object (empty strings where metadata lacks them).
    pub fn of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectKey {
        ObjectKey::new(meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Services (by key) whose tables may have changed.
pub type Dirty = BTreeSet<ObjectKey>;

/// One change to an index, as the watch tasks send it.
#[derive(Clone, Debug)]
pub enum IndexEvent<T> {
    /// An object was added or changed.
    Apply(T),
    /// An object was deleted.
    Delete(ObjectKey),
    /// The full set after a (re)list; anything not in it is gone.
    Reset(Vec<T>),
}

/// A watch-driven index (after kubert's `IndexNamespacedResource`).
pub trait Index<T> {
    /// An object was added or changed.
    fn apply(&mut self, obj: T, dirty: &mut Dirty);
    /// An object was deleted.
    fn delete(&mut self, key: &ObjectKey, dirty: &mut Dirty);
    /// Replace everything with a fresh list.
    fn reset(&mut self, objs: Vec<T>, dirty: &mut Dirty);

    /// Applies an [`IndexEvent`].
    fn handle(&mut self, event: IndexEvent<T>, dirty: &mut Dirty) {
        match event {
            IndexEvent::Apply(obj) => self.apply(obj, dirty),
            IndexEvent::Delete(key) => self.delete(&key, dirty),
            IndexEvent::Reset(objs) => self.reset(objs, dirty),
        }
    }
}

/// The indexes the tables are computed from.
#[derive(Debug, Default)]
pub struct Indexes {
    /// Services.
    pub services: ServiceIndex,
    /// EndpointSlices, grouped by Service.
    pub endpoints: EndpointIndex,
    /// HTTPRoutes, grouped by parent Service.
    pub routes: RouteIndex,
    /// Injected Pods (kept with the identity service on only).
    pub pods: PodIndex,
    /// Namespaces' inbound policies, from Namespaces and AuthorizationPolicies (kept with the
    /// identity service on only).
    pub namespaces: NamespaceIndex,
}

#[cfg(test)]
mod tests;
