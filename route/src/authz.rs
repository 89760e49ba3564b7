//! Inbound authorization: who may call the workload behind this proxy.
//!
//! A proxy has a **default policy**, named as Linkerd names them, and **rules** that list who
//! may call some requests (by path prefix or model):
//!
//! | default | who is allowed when no rule matches |
//! |---|---|
//! | `all-unauthenticated` (the default) | everyone, meshed or not |
//! | `all-authenticated` | callers with a certificate the trust anchors vouch for |
//! | `cluster-authenticated` | such callers whose identity is in this proxy's trust domain |
//! | `deny` | nobody |
//!
//! Every rule whose match fits the request counts, and only those rules' `allow` lists: a
//! request that some rule matches is allowed when the caller is a principal of any of them and
//! denied otherwise, whatever the default (so rules add up, in any order, as Kubernetes
//! authorization policies do). Only a request no rule matches goes to the default. A principal is a whole SPIFFE ID, a namespace (every ServiceAccount of it), a
//! namespace's ServiceAccount, or `unauthenticated: true` (callers without an identity).
//!
//! ```yaml
//! proxy:
//!   authz:
//!     default: all-authenticated
//!     rules:
//!       - name: embeddings-for-search
//!         model: text-embedding-3
//!         allow:
//!           - namespace: search
//!           - identity: spiffe://cluster.local/ns/apps/sa/indexer
//! ```
//!
//! [`decide`] is pure: the caller's identity (or none), what the request is for, out comes a
//! decision.

use serde::{Deserialize, Serialize};

/// The policy when no rule matches.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DefaultPolicy {
    /// Everyone.
    #[default]
    AllUnauthenticated,
    /// Any caller with a certificate the trust anchors vouch for.
    AllAuthenticated,
    /// Callers with an identity in this proxy's trust domain.
    ClusterAuthenticated,
    /// Nobody.
    Deny,
}

impl DefaultPolicy {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultPolicy::AllUnauthenticated => "all-unauthenticated",
            DefaultPolicy::AllAuthenticated => "all-authenticated",
            DefaultPolicy::ClusterAuthenticated => "cluster-authenticated",
            DefaultPolicy::Deny => "deny",
        }
    }
}

/// `proxy.authz`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthzConfig {
    /// When no rule matches.
    #[serde(default)]
    pub default: DefaultPolicy,
    /// Rules: a request that some match is allowed only to their principals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<AuthzRule>,
}

/// Who may make the requests a rule matches.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthzRule {
    /// Name, in metrics and in the denial's log line.
    pub name: String,
    /// Requests whose path starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Requests for this model (as the model layer reads it from the body or path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Who may.
    #[serde(default)]
    pub allow: Vec<Principal>,
}

/// One caller or a set of callers.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    /// A whole SPIFFE ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Every ServiceAccount of a namespace, or with `service_account` one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A ServiceAccount of `namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Callers without an identity.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unauthenticated: bool,
}

/// A caller's identity as the TLS layer established it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller<'a> {
    /// The whole SPIFFE ID.
    pub id: &'a str,
    /// Its trust domain.
    pub trust_domain: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
    /// Its ServiceAccount.
    pub service_account: &'a str,
}

/// What a request is for, as far as the rules look.
#[derive(Clone, Copy, Debug, Default)]
pub struct Request<'a> {
    /// The path.
    pub path: &'a str,
    /// The model, when known.
    pub model: Option<&'a str>,
}

/// A decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Allowed, by the rule named (or by the default policy).
    Allow(Option<&'a str>),
    /// Denied, by the rule named (or by the default policy).
    Deny(Option<&'a str>),
}

impl Decision<'_> {
    /// Whether it allows.
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// Why an authorization section is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthzError {
    /// A principal names nothing, or a ServiceAccount without its namespace.
    #[error(
        "rule {rule:?}: a principal is an identity, a namespace (with or without a service_account), or unauthenticated: true"
    )]
    Principal {
        /// The rule.
        rule: String,
    },
    /// A rule matches everything; the default policy is the place for that.
    #[error("rule {rule:?} has neither path_prefix nor model")]
    MatchesEverything {
        /// The rule.
        rule: String,
    },
}

impl AuthzConfig {
    /// Checks every rule.
    pub fn validate(&self) -> Result<(), AuthzError> {
        for r in &self.rules {
            if r.path_prefix.is_none() && r.model.is_none() {
                return Err(AuthzError::MatchesEverything { rule: r.name.clone() });
            }
            for p in &r.allow {
                let kinds = usize::from(p.identity.is_some())
                    + usize::from(p.namespace.is_some())
                    + usize::from(p.unauthenticated);
                if kinds != 1 || (p.service_account.is_some() && p.namespace.is_none()) {
                    return Err(AuthzError::Principal { rule: r.name.clone() });
                }
            }
        }
        Ok(())
    }
}

impl AuthzRule {
    fn matches(&self, req: &Request<'_>) -> bool {
        self.path_prefix.as_deref().is_none_or(|p| req.path.starts_with(p))
            && self.model.as_deref().is_none_or(|m| req.model == Some(m))
    }
}

impl Principal {
    fn admits(&self, caller: Option<&Caller<'_>>) -> bool {
        match caller {
            None => self.unauthenticated,
            Some(c) => {
                if let Some(id) = &self.identity {
                    return id == c.id;
                }
                match (&self.namespace, &self.service_account) {
                    (Some(ns), None) => ns == c.namespace,
                    (Some(ns), Some(sa)) => ns == c.namespace && sa == c.service_account,
                    _ => false,
                }
            }
        }
    }
}

/// Whether `caller` (or an unauthenticated caller, `None`) may make `req` at a proxy of
/// `trust_domain` under `config`. The decision names the first matching rule that allows it,
/// or, denied, the first matching rule.
pub fn decide<'c>(
    config: &'c AuthzConfig,
    trust_domain: &str,
    caller: Option<&Caller<'_>>,
    req: &Request<'_>,
) -> Decision<'c> {
    let mut matched = None;
    for rule in config.rules.iter().filter(|r| r.matches(req)) {
        if rule.allow.iter().any(|p| p.admits(caller)) {
            return Decision::Allow(Some(rule.name.as_str()));
        }
        matched.get_or_insert(rule.name.as_str());
    }
    if let Some(name) = matched {
        return Decision::Deny(Some(name));
    }
    let allowed = match config.default {
        DefaultPolicy::AllUnauthenticated => true,
        DefaultPolicy::AllAuthenticated => caller.is_some(),
        DefaultPolicy::ClusterAuthenticated => caller.is_some_and(|c| c.trust_domain == trust_domain),
        DefaultPolicy::Deny => false,
    };
    if allowed { Decision::Allow(None) } else { Decision::Deny(None) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller<'a>(id: &'a str, td: &'a str, ns: &'a str, sa: &'a str) -> Caller<'a> {
        Caller { id, trust_domain: td, namespace: ns, service_account: sa }
    }

    #[test]
    fn default_policies_as_linkerd_names_them() {
        let local = caller("spiffe://cluster.local/ns/apps/sa/chat", "cluster.local", "apps", "chat");
        let foreign = caller("spiffe://east.example/ns/apps/sa/chat", "east.example", "apps", "chat");
        let req = Request { path: "/v1/chat/completions", model: Some("llama") };
        for (default, anon, local_ok, foreign_ok) in [
            (DefaultPolicy::AllUnauthenticated, true, true, true),
            (DefaultPolicy::AllAuthenticated, false, true, true),
            (DefaultPolicy::ClusterAuthenticated, false, true, false),
            (DefaultPolicy::Deny, false, false, false),
        ] {
            let cfg = AuthzConfig { default, rules: vec![] };
            assert_eq!(decide(&cfg, "cluster.local", None, &req).allowed(), anon, "{default:?} anonymous");
            assert_eq!(decide(&cfg, "cluster.local", Some(&local), &req).allowed(), local_ok, "{default:?} local");
            assert_eq!(
                decide(&cfg, "cluster.local", Some(&foreign), &req).allowed(),
                foreign_ok,
                "{default:?} foreign"
            );
        }
    }

    #[test]
    fn the_first_matching_rule_decides_whatever_the_default() {
        let yaml = r#"
default: all-unauthenticated
rules:
  - name: embed
    model: embed-v1
    allow:
      - namespace: search
      - identity: spiffe://cluster.local/ns/apps/sa/indexer
  - name: admin
    path_prefix: /admin
    allow:
      - namespace: ops
        service_account: oncall
  - name: health
    path_prefix: /health
    allow:
      - unauthenticated: true
"#;
        let cfg: AuthzConfig = serde_saphyr::from_str(yaml).unwrap();
        cfg.validate().unwrap();
        let search = caller("spiffe://cluster.local/ns/search/sa/any", "cluster.local", "search", "any");
        let indexer = caller("spiffe://cluster.local/ns/apps/sa/indexer", "cluster.local", "apps", "indexer");
        let chat = caller("spiffe://cluster.local/ns/apps/sa/chat", "cluster.local", "apps", "chat");
        let oncall = caller("spiffe://cluster.local/ns/ops/sa/oncall", "cluster.local", "ops", "oncall");
        let other_ops = caller("spiffe://cluster.local/ns/ops/sa/ci", "cluster.local", "ops", "ci");
        let embed = Request { path: "/v1/embeddings", model: Some("embed-v1") };
        let chat_req = Request { path: "/v1/chat/completions", model: Some("llama") };
        let admin = Request { path: "/admin/drain", model: None };
        let health = Request { path: "/health", model: None };
        let d = |c: Option<&Caller<'_>>, r: &Request<'_>| decide(&cfg, "cluster.local", c, r);
        assert_eq!(d(Some(&search), &embed), Decision::Allow(Some("embed")));
        assert_eq!(d(Some(&indexer), &embed), Decision::Allow(Some("embed")));
        assert_eq!(d(Some(&chat), &embed), Decision::Deny(Some("embed")));
        assert_eq!(d(None, &embed), Decision::Deny(Some("embed")), "a rule overrides the open default");
        assert_eq!(d(None, &chat_req), Decision::Allow(None));
        assert_eq!(d(Some(&oncall), &admin), Decision::Allow(Some("admin")));
        assert_eq!(d(Some(&other_ops), &admin), Decision::Deny(Some("admin")));
        assert_eq!(d(None, &health), Decision::Allow(Some("health")));
        assert_eq!(d(Some(&chat), &health), Decision::Deny(Some("health")), "unauthenticated means without identity");
    }

    #[test]
    fn overlapping_rules_add_up_in_any_order() {
        let ns = |n: &str| Principal { namespace: Some(n.into()), ..Principal::default() };
        let by_model =
            AuthzRule { name: "llama".into(), path_prefix: None, model: Some("llama".into()), allow: vec![ns("a")] };
        let by_path =
            AuthzRule { name: "v1".into(), path_prefix: Some("/v1/".into()), model: None, allow: vec![ns("b")] };
        let a = caller("spiffe://td/ns/a/sa/x", "td", "a", "x");
        let b = caller("spiffe://td/ns/b/sa/x", "td", "b", "x");
        let c = caller("spiffe://td/ns/c/sa/x", "td", "c", "x");
        let both = Request { path: "/v1/chat/completions", model: Some("llama") };
        let path_only = Request { path: "/v1/chat/completions", model: Some("qwen") };
        for rules in [vec![by_model.clone(), by_path.clone()], vec![by_path, by_model]] {
            let cfg = AuthzConfig { default: DefaultPolicy::AllUnauthenticated, rules };
            let d = |c: &Caller<'_>, r: &Request<'_>| decide(&cfg, "td", Some(c), r);
            assert_eq!(d(&a, &both), Decision::Allow(Some("llama")));
            assert_eq!(d(&b, &both), Decision::Allow(Some("v1")));
            assert!(!d(&c, &both).allowed(), "matched by both, admitted by neither");
            assert_eq!(d(&a, &path_only), Decision::Deny(Some("v1")));
            assert_eq!(d(&b, &path_only), Decision::Allow(Some("v1")));
        }
    }

    #[test]
    fn rules_that_name_nobody_or_match_everything_are_refused() {
        let rule = |allow: Vec<Principal>, prefix: Option<&str>| AuthzConfig {
            default: DefaultPolicy::Deny,
            rules: vec![AuthzRule { name: "r".into(), path_prefix: prefix.map(Into::into), model: None, allow }],
        };
        assert!(rule(vec![Principal::default()], Some("/")).validate().is_err());
        let sa_only = Principal { service_account: Some("x".into()), ..Principal::default() };
        assert!(rule(vec![sa_only], Some("/")).validate().is_err());
        let both =
            Principal { identity: Some("spiffe://td/ns/a/sa/b".into()), unauthenticated: true, ..Principal::default() };
        assert!(rule(vec![both], Some("/")).validate().is_err());
        let ns = Principal { namespace: Some("a".into()), ..Principal::default() };
        assert!(rule(vec![ns.clone()], None).validate().is_err());
        assert!(rule(vec![ns], Some("/v1")).validate().is_ok());
    }
}
