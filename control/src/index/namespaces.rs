//! Namespaces' inbound policies: the annotation `vane.io/default-inbound-policy` on a Namespace
//! sets the default policy (`proxy.authz.default`, see `vane_route::authz`) that the control
//! service pushes to every proxy whose identity is in that namespace. Watched only with the
//! identity service on (only then is a subscriber's namespace known). Namespaces without the
//! annotation, or with a value Vane does not know, are not kept: their proxies get no policy.

use super::{Dirty, Index, ObjectKey};
use bytes::Bytes;
use k8s_openapi::api::core::v1::Namespace;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use vane_route::authz::{AuthzConfig, DefaultPolicy};

/// The Namespace annotation that sets its proxies' default inbound policy.
pub const DEFAULT_INBOUND_POLICY: &str = "vane.io/default-inbound-policy";

/// The annotation's value is not one of the policies' names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{DEFAULT_INBOUND_POLICY}: {0:?} is not all-unauthenticated, all-authenticated, cluster-authenticated or deny; no policy is pushed"
)]
pub struct UnknownPolicy(pub String);

/// The policy a Namespace's annotations ask for: `Ok(None)` without the annotation. Pure.
pub fn inbound_policy(annotations: Option<&BTreeMap<String, String>>) -> Result<Option<AuthzConfig>, UnknownPolicy> {
    let Some(value) = annotations.and_then(|a| a.get(DEFAULT_INBOUND_POLICY)) else {
        return Ok(None);
    };
    let value = value.trim();
    [
        DefaultPolicy::AllUnauthenticated,
        DefaultPolicy::AllAuthenticated,
        DefaultPolicy::ClusterAuthenticated,
        DefaultPolicy::Deny,
    ]
    .into_iter()
    .find(|p| p.as_str() == value)
    .map(|default| Some(AuthzConfig { default, rules: vec![] }))
    .ok_or_else(|| UnknownPolicy(value.to_string()))
}

/// A policy as published: its config and that config's JSON, serialized once.
#[derive(Debug, PartialEq)]
pub struct PolicyEntry {
    /// The policy.
    pub config: AuthzConfig,
    /// `serde_json` of `config`.
    pub json: Bytes,
}

impl PolicyEntry {
    /// An entry for `config`.
    pub fn new(config: AuthzConfig) -> PolicyEntry {
        let json = Bytes::from(serde_json::to_vec(&config).expect("an authz config serializes"));
        PolicyEntry { config, json }
    }
}

/// What is kept of a Namespace: its name and its policy.
#[derive(Clone, Debug, PartialEq)]
pub struct NamespacePolicy {
    /// The Namespace (namespace part empty: Namespaces are cluster-scoped).
    pub key: ObjectKey,
    /// Its proxies' policy.
    pub config: AuthzConfig,
}

impl NamespacePolicy {
    /// Reads a Namespace; `None` for one without a policy (an unknown value is logged).
    pub fn from_resource(ns: &Namespace) -> Option<NamespacePolicy> {
        let key = ObjectKey::of(&ns.metadata);
        if key.name.is_empty() {
            return None;
        }
        match inbound_policy(ns.metadata.annotations.as_ref()) {
            Ok(config) => config.map(|config| NamespacePolicy { key, config }),
            Err(e) => {
                tracing::warn!(namespace = %key.name, "{e}");
                None
            }
        }
    }
}

/// Policies by namespace name. An index call records the namespaces whose policy changed in
/// its [`Dirty`] set (as Namespace keys); an unchanged policy keeps its `Arc`, so subscribers
/// compare by pointer.
#[derive(Debug, Default)]
pub struct NamespaceIndex {
    by_name: HashMap<String, Arc<PolicyEntry>>,
}

impl NamespaceIndex {
    /// The policies, by namespace name.
    pub fn policies(&self) -> BTreeMap<String, Arc<PolicyEntry>> {
        self.by_name.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl Index<NamespacePolicy> for NamespaceIndex {
    fn apply(&mut self, obj: NamespacePolicy, dirty: &mut Dirty) {
        if self.by_name.get(&obj.key.name).is_none_or(|old| old.config != obj.config) {
            self.by_name.insert(obj.key.name.clone(), Arc::new(PolicyEntry::new(obj.config)));
            dirty.insert(obj.key);
        }
    }

    fn delete(&mut self, key: &ObjectKey, dirty: &mut Dirty) {
        if self.by_name.remove(&key.name).is_some() {
            dirty.insert(key.clone());
        }
    }

    fn reset(&mut self, objs: Vec<NamespacePolicy>, dirty: &mut Dirty) {
        let fresh: HashMap<String, NamespacePolicy> = objs.into_iter().map(|n| (n.key.name.clone(), n)).collect();
        let gone: Vec<String> = self.by_name.keys().filter(|k| !fresh.contains_key(*k)).cloned().collect();
        for name in gone {
            self.delete(&ObjectKey::new("", name), dirty);
        }
        for obj in fresh.into_values() {
            self.apply(obj, dirty);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotated(value: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(DEFAULT_INBOUND_POLICY.to_string(), value.to_string())])
    }

    #[test]
    fn the_annotation_names_a_default_policy() {
        let policy = |default| Ok(Some(AuthzConfig { default, rules: vec![] }));
        let other = BTreeMap::from([("vane.io/inject".to_string(), "enabled".to_string())]);
        for (annotations, want) in [
            (None, Ok(None)),
            (Some(other), Ok(None)),
            (Some(annotated("all-unauthenticated")), policy(DefaultPolicy::AllUnauthenticated)),
            (Some(annotated("all-authenticated")), policy(DefaultPolicy::AllAuthenticated)),
            (Some(annotated(" cluster-authenticated ")), policy(DefaultPolicy::ClusterAuthenticated)),
            (Some(annotated("deny")), policy(DefaultPolicy::Deny)),
            (Some(annotated("Deny")), Err(UnknownPolicy("Deny".into()))),
            (Some(annotated("all")), Err(UnknownPolicy("all".into()))),
            (Some(annotated("")), Err(UnknownPolicy("".into()))),
        ] {
            assert_eq!(inbound_policy(annotations.as_ref()), want, "{annotations:?}");
        }
    }

    #[test]
    fn the_index_keeps_unchanged_policies_and_marks_changed_ones() {
        let ns = |name: &str, default| NamespacePolicy {
            key: ObjectKey::new("", name),
            config: AuthzConfig { default, rules: vec![] },
        };
        let mut index = NamespaceIndex::default();
        let mut dirty = Dirty::new();
        index.reset(vec![ns("a", DefaultPolicy::Deny), ns("b", DefaultPolicy::AllAuthenticated)], &mut dirty);
        assert_eq!(dirty.len(), 2);
        let before = index.policies();
        assert_eq!(before["b"].json, &br#"{"default":"all-authenticated"}"#[..]);

        let mut dirty = Dirty::new();
        index.apply(ns("a", DefaultPolicy::Deny), &mut dirty);
        index.reset(vec![ns("a", DefaultPolicy::Deny), ns("b", DefaultPolicy::AllAuthenticated)], &mut dirty);
        assert!(dirty.is_empty(), "nothing changed");
        assert!(Arc::ptr_eq(&before["a"], &index.policies()["a"]));

        index.reset(vec![ns("b", DefaultPolicy::ClusterAuthenticated)], &mut dirty);
        assert_eq!(dirty.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let after = index.policies();
        assert_eq!(after.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(after["b"].config.default, DefaultPolicy::ClusterAuthenticated);
    }
}
