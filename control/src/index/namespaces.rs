//! Namespaces' inbound policies. The annotation `vane.io/default-inbound-policy` on a Namespace
//! sets the default policy (`proxy.authz.default`, see `vane_route::authz`), and each Vane
//! `AuthorizationPolicy` in it ([`crate::api::AuthorizationPolicy`]) adds one rule; the control
//! service pushes the result to every proxy whose identity is in that namespace. Watched only
//! with the identity service on (only then is a subscriber's namespace known).
//!
//! A namespace with neither gets no policy pushed (its proxies keep their own). One with rules
//! but no annotation gets Vane's default, `all-unauthenticated`, with its rules. An annotation
//! whose value Vane does not know counts as absent (logged).
//!
//! A policy that fails closed where it is malformed: a principal that names nothing (or two
//! kinds at once, or a ServiceAccount without its namespace) is dropped, so it admits nobody;
//! a policy with neither `pathPrefix` nor `model` covers every request (`pathPrefix: /`).

use super::{Dirty, Index, ObjectKey};
use crate::api::{AuthorizationPolicy, PolicyPrincipal};
use bytes::Bytes;
use k8s_openapi::api::core::v1::Namespace;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use vane_route::authz::{AuthzConfig, AuthzRule, DefaultPolicy, Principal};

/// The Namespace annotation that sets its proxies' default inbound policy.
pub const DEFAULT_INBOUND_POLICY: &str = "vane.io/default-inbound-policy";

/// The annotation's value is not one of the policies' names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{DEFAULT_INBOUND_POLICY}: {0:?} is not all-unauthenticated, all-authenticated, cluster-authenticated or deny; no policy is pushed"
)]
pub struct UnknownPolicy(pub String);

/// The default policy a Namespace's annotations ask for: `Ok(None)` without the annotation. Pure.
pub fn inbound_policy(annotations: Option<&BTreeMap<String, String>>) -> Result<Option<DefaultPolicy>, UnknownPolicy> {
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
    .map(Some)
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

/// What is kept of a Namespace: its name and its default policy.
#[derive(Clone, Debug, PartialEq)]
pub struct NamespacePolicy {
    /// The Namespace (namespace part empty: Namespaces are cluster-scoped).
    pub key: ObjectKey,
    /// Its proxies' default policy.
    pub default: DefaultPolicy,
}

impl NamespacePolicy {
    /// Reads a Namespace; `None` for one without a policy (an unknown value is logged).
    pub fn from_resource(ns: &Namespace) -> Option<NamespacePolicy> {
        let key = ObjectKey::of(&ns.metadata);
        if key.name.is_empty() {
            return None;
        }
        match inbound_policy(ns.metadata.annotations.as_ref()) {
            Ok(default) => default.map(|default| NamespacePolicy { key, default }),
            Err(e) => {
                tracing::warn!(namespace = %key.name, "{e}");
                None
            }
        }
    }
}

/// What is kept of an `AuthorizationPolicy`: its key and the rule it makes.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyRule {
    /// Namespace and name of the policy.
    pub key: ObjectKey,
    /// The rule, named after the policy.
    pub rule: AuthzRule,
    /// Principals dropped as malformed (their index in `spec.allow`), to log.
    pub dropped: Vec<usize>,
}

impl PolicyRule {
    /// Reads a policy (`None` without a namespace or name). Pure.
    pub fn from_resource(p: &AuthorizationPolicy) -> Option<PolicyRule> {
        let key = ObjectKey::of(&p.metadata);
        if key.name.is_empty() || key.namespace.is_empty() {
            return None;
        }
        let spec = &p.spec;
        let path_prefix = match (&spec.path_prefix, &spec.model) {
            (None, None) => Some("/".to_string()),
            (prefix, _) => prefix.clone(),
        };
        let mut dropped = vec![];
        let allow = spec
            .allow
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                let p = principal(a);
                if p.is_none() {
                    dropped.push(i);
                }
                p
            })
            .collect();
        let rule = AuthzRule { name: key.name.clone(), path_prefix, model: spec.model.clone(), allow };
        Some(PolicyRule { key, rule, dropped })
    }
}

/// A principal as the rules take it, or `None` for one that names nothing, two kinds at once,
/// or a ServiceAccount without its namespace.
fn principal(a: &PolicyPrincipal) -> Option<Principal> {
    let kinds = usize::from(a.identity.is_some()) + usize::from(a.namespace.is_some()) + usize::from(a.unauthenticated);
    if kinds != 1 || (a.service_account.is_some() && a.namespace.is_none()) {
        return None;
    }
    Some(Principal {
        identity: a.identity.clone(),
        namespace: a.namespace.clone(),
        service_account: a.service_account.clone(),
        unauthenticated: a.unauthenticated,
    })
}

/// The policy pushed to a namespace's proxies, from its default and its rules (in the order
/// given; they add up, so order changes only which rule a decision names). `None` without
/// either. Pure.
pub fn compose<'a>(
    default: Option<DefaultPolicy>,
    rules: impl IntoIterator<Item = &'a AuthzRule>,
) -> Option<AuthzConfig> {
    let rules: Vec<AuthzRule> = rules.into_iter().cloned().collect();
    if default.is_none() && rules.is_empty() {
        return None;
    }
    Some(AuthzConfig { default: default.unwrap_or_default(), rules })
}

/// Policies by namespace name, from Namespaces' defaults and `AuthorizationPolicy` rules. An
/// index call records the namespaces whose pushed policy changed in its [`Dirty`] set (as
/// Namespace keys); an unchanged policy keeps its `Arc`, so subscribers compare by pointer.
#[derive(Debug, Default)]
pub struct NamespaceIndex {
    defaults: HashMap<String, DefaultPolicy>,
    /// Rules by namespace, then by policy name (so in name order).
    rules: HashMap<String, BTreeMap<String, AuthzRule>>,
    by_name: HashMap<String, Arc<PolicyEntry>>,
}

impl NamespaceIndex {
    /// The policies, by namespace name.
    pub fn policies(&self) -> BTreeMap<String, Arc<PolicyEntry>> {
        self.by_name.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Recomputes `ns`'s policy; marks it dirty when it changed.
    fn refresh(&mut self, ns: &str, dirty: &mut Dirty) {
        let config = compose(self.defaults.get(ns).copied(), self.rules.get(ns).into_iter().flat_map(|r| r.values()));
        let changed = match config {
            None => self.by_name.remove(ns).is_some(),
            Some(config) => {
                let changed = self.by_name.get(ns).is_none_or(|old| old.config != config);
                if changed {
                    self.by_name.insert(ns.to_string(), Arc::new(PolicyEntry::new(config)));
                }
                changed
            }
        };
        if changed {
            dirty.insert(ObjectKey::new("", ns));
        }
    }
}

impl Index<NamespacePolicy> for NamespaceIndex {
    fn apply(&mut self, obj: NamespacePolicy, dirty: &mut Dirty) {
        self.defaults.insert(obj.key.name.clone(), obj.default);
        self.refresh(&obj.key.name, dirty);
    }

    fn delete(&mut self, key: &ObjectKey, dirty: &mut Dirty) {
        if self.defaults.remove(&key.name).is_some() {
            self.refresh(&key.name, dirty);
        }
    }

    fn reset(&mut self, objs: Vec<NamespacePolicy>, dirty: &mut Dirty) {
        let old = std::mem::take(&mut self.defaults);
        self.defaults = objs.into_iter().map(|n| (n.key.name, n.default)).collect();
        let touched: Vec<String> = old.into_keys().chain(self.defaults.keys().cloned()).collect();
        for ns in touched {
            self.refresh(&ns, dirty);
        }
    }
}

impl Index<PolicyRule> for NamespaceIndex {
    fn apply(&mut self, obj: PolicyRule, dirty: &mut Dirty) {
        let ns = obj.key.namespace;
        self.rules.entry(ns.clone()).or_default().insert(obj.key.name, obj.rule);
        self.refresh(&ns, dirty);
    }

    fn delete(&mut self, key: &ObjectKey, dirty: &mut Dirty) {
        let Some(rules) = self.rules.get_mut(&key.namespace) else { return };
        if rules.remove(&key.name).is_some() {
            if rules.is_empty() {
                self.rules.remove(&key.namespace);
            }
            self.refresh(&key.namespace, dirty);
        }
    }

    fn reset(&mut self, objs: Vec<PolicyRule>, dirty: &mut Dirty) {
        let old = std::mem::take(&mut self.rules);
        for obj in objs {
            self.rules.entry(obj.key.namespace).or_default().insert(obj.key.name, obj.rule);
        }
        let touched: Vec<String> = old.into_keys().chain(self.rules.keys().cloned()).collect();
        for ns in touched {
            self.refresh(&ns, dirty);
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
        let policy = |default| Ok(Some(default));
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
        let ns = |name: &str, default| NamespacePolicy { key: ObjectKey::new("", name), default };
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

    fn policy(ns: &str, name: &str, spec: serde_json::Value) -> AuthorizationPolicy {
        serde_json::from_value(serde_json::json!({"metadata": {"namespace": ns, "name": name}, "spec": spec})).unwrap()
    }

    #[test]
    fn a_policy_is_one_rule_and_fails_closed_where_malformed() {
        let rule = |spec| PolicyRule::from_resource(&policy("models", "p", spec)).unwrap();
        let ns = |n: &str| Principal { namespace: Some(n.into()), ..Principal::default() };

        let r = rule(serde_json::json!({"model": "llama", "allow": [
            {"namespace": "apps", "serviceAccount": "chat"},
            {"identity": "spiffe://cluster.local/ns/x/sa/y"},
            {"unauthenticated": true},
        ]}));
        assert_eq!(
            (r.rule.name.as_str(), r.rule.model.as_deref(), r.rule.path_prefix.as_deref()),
            ("p", Some("llama"), None)
        );
        assert_eq!(r.rule.allow.len(), 3);
        assert_eq!(r.rule.allow[0].service_account.as_deref(), Some("chat"));
        assert!(r.dropped.is_empty());

        let r = rule(serde_json::json!({"allow": [{"namespace": "ops"}]}));
        assert_eq!(r.rule.path_prefix.as_deref(), Some("/"), "no match fields: every request");
        assert_eq!(r.rule.allow, [ns("ops")]);

        let r = rule(serde_json::json!({"pathPrefix": "/admin", "allow": [
            {},
            {"serviceAccount": "x"},
            {"namespace": "a", "unauthenticated": true},
            {"namespace": "ok"},
        ]}));
        assert_eq!(r.rule.allow, [ns("ok")], "malformed principals admit nobody");
        assert_eq!(r.dropped, [0, 1, 2]);

        assert!(rule(serde_json::json!({"pathPrefix": "/x"})).rule.allow.is_empty(), "no allow: nobody");
        assert!(PolicyRule::from_resource(&policy("", "p", serde_json::json!({}))).is_none());
        let composed = compose(None, [&r.rule]).unwrap();
        composed.validate().unwrap();
        assert_eq!(composed.default, DefaultPolicy::AllUnauthenticated);
        assert_eq!(compose(None, []), None);
        assert_eq!(compose(Some(DefaultPolicy::Deny), []).unwrap().rules, []);
    }

    #[test]
    fn rules_and_defaults_make_one_policy_per_namespace() {
        let mut index = NamespaceIndex::default();
        let mut dirty = Dirty::new();
        let rule = |ns: &str, name: &str, prefix: &str| {
            PolicyRule::from_resource(&policy(ns, name, serde_json::json!({"pathPrefix": prefix}))).unwrap()
        };
        index.reset(vec![rule("models", "b", "/b"), rule("models", "a", "/a"), rule("apps", "x", "/x")], &mut dirty);
        Index::<NamespacePolicy>::reset(&mut index, vec![], &mut dirty);
        let names = |d: &Dirty| d.iter().map(|k| k.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&dirty), ["apps", "models"]);
        let p = index.policies();
        assert_eq!(p["models"].config.default, DefaultPolicy::AllUnauthenticated);
        let rules: Vec<&str> = p["models"].config.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(rules, ["a", "b"], "in name order");

        let mut dirty = Dirty::new();
        let ns = NamespacePolicy { key: ObjectKey::new("", "models"), default: DefaultPolicy::Deny };
        index.apply(ns, &mut dirty);
        assert_eq!(names(&dirty), ["models"]);
        assert_eq!(index.policies()["models"].config.default, DefaultPolicy::Deny);
        assert_eq!(index.policies()["models"].config.rules.len(), 2, "the rules stay");
        let apps = index.policies()["apps"].clone();

        let mut dirty = Dirty::new();
        Index::<PolicyRule>::delete(&mut index, &ObjectKey::new("apps", "x"), &mut dirty);
        Index::<PolicyRule>::delete(&mut index, &ObjectKey::new("apps", "never"), &mut dirty);
        assert_eq!(names(&dirty), ["apps"]);
        assert!(!index.policies().contains_key("apps"), "nothing left: nothing pushed");
        drop(apps);

        let mut dirty = Dirty::new();
        let before = index.policies()["models"].clone();
        index.apply(rule("models", "a", "/a"), &mut dirty);
        assert!(dirty.is_empty(), "the same rule again changes nothing");
        assert!(Arc::ptr_eq(&before, &index.policies()["models"]));
        index.apply(rule("models", "a", "/other"), &mut dirty);
        assert_eq!(names(&dirty), ["models"]);
        assert_eq!(index.policies()["models"].config.rules[0].path_prefix.as_deref(), Some("/other"));
    }
}
