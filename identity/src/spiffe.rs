//! Workload identities: SPIFFE IDs of the form `spiffe://<trust-domain>/ns/<namespace>/sa/<name>`,
//! one per Kubernetes ServiceAccount, as Linkerd and Istio name them.
//!
//! Parsing follows the SPIFFE ID specification (a lowercase trust domain of letters, digits,
//! `.`, `-` and `_`; no query, fragment, port or user info) and then Kubernetes' naming rules for
//! the two names. Nothing here panics on any input (see the property test below).

use std::fmt;
use std::str::FromStr;

/// The URI scheme of a SPIFFE ID.
pub const SCHEME: &str = "spiffe://";

/// The longest SPIFFE ID the specification allows (2048 bytes).
pub const MAX_LEN: usize = 2048;

/// The username the Kubernetes API gives a ServiceAccount token (`TokenReview` status).
pub const SERVICE_ACCOUNT_USER: &str = "system:serviceaccount:";

/// A workload's identity: a ServiceAccount of a namespace, in a trust domain.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// Why a string is not a workload identity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// It does not start with `spiffe://`.
    #[error("not a SPIFFE ID: it must start with spiffe://")]
    Scheme,
    /// Longer than [`MAX_LEN`].
    #[error("a SPIFFE ID is at most {MAX_LEN} bytes")]
    TooLong,
    /// The trust domain is empty or holds a character SPIFFE does not allow there.
    #[error("bad trust domain {0:?}: lowercase letters, digits, '.', '-' and '_' only")]
    TrustDomain(String),
    /// The path is not `/ns/<namespace>/sa/<name>`.
    #[error("bad path {0:?}: a workload identity is /ns/<namespace>/sa/<serviceaccount>")]
    Path(String),
    /// The namespace is not a Kubernetes namespace name (a DNS label).
    #[error("bad namespace {0:?}: lowercase letters, digits and '-', at most 63")]
    Namespace(String),
    /// The ServiceAccount name is not a Kubernetes object name (a DNS subdomain).
    #[error("bad service account {0:?}: lowercase letters, digits, '-' and '.', at most 253")]
    ServiceAccount(String),
    /// A `TokenReview` username that is not a ServiceAccount's.
    #[error("not a service account: {0:?}")]
    NotServiceAccount(String),
}

fn trust_domain_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_'))
}

/// A DNS label (RFC 1123), as Kubernetes names namespaces.
fn label_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'-'))
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A DNS subdomain (RFC 1123), as Kubernetes names most objects: labels joined by `.`.
fn subdomain_ok(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(label_ok)
}

impl SpiffeId {
    /// The identity of ServiceAccount `service_account` of `namespace` in `trust_domain`.
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Result<SpiffeId, IdError> {
        if !trust_domain_ok(trust_domain) {
            return Err(IdError::TrustDomain(trust_domain.to_string()));
        }
        if !label_ok(namespace) {
            return Err(IdError::Namespace(namespace.to_string()));
        }
        if !subdomain_ok(service_account) {
            return Err(IdError::ServiceAccount(service_account.to_string()));
        }
        Ok(SpiffeId {
            trust_domain: trust_domain.to_string(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        })
    }

    /// Reads `spiffe://<trust-domain>/ns/<namespace>/sa/<name>`.
    pub fn parse(s: &str) -> Result<SpiffeId, IdError> {
        if s.len() > MAX_LEN {
            return Err(IdError::TooLong);
        }
        let rest = s.strip_prefix(SCHEME).ok_or(IdError::Scheme)?;
        let (td, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if !trust_domain_ok(td) {
            return Err(IdError::TrustDomain(td.to_string()));
        }
        let mut parts = path.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(""), Some("ns"), Some(ns), Some("sa"), Some(sa), None) => SpiffeId::new(td, ns, sa),
            _ => Err(IdError::Path(path.to_string())),
        }
    }

    /// The identity a `TokenReview` proves: its username `system:serviceaccount:<ns>:<name>`.
    pub fn from_token_user(trust_domain: &str, username: &str) -> Result<SpiffeId, IdError> {
        let rest = username
            .strip_prefix(SERVICE_ACCOUNT_USER)
            .ok_or_else(|| IdError::NotServiceAccount(username.to_string()))?;
        let (ns, sa) = rest.split_once(':').ok_or_else(|| IdError::NotServiceAccount(username.to_string()))?;
        SpiffeId::new(trust_domain, ns, sa)
    }

    /// The trust domain (`cluster.local` by default in Vane).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The namespace of the ServiceAccount.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The ServiceAccount's name.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

impl FromStr for SpiffeId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<SpiffeId, IdError> {
        SpiffeId::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_ids_read_and_print_the_same() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/models/sa/llm-server").unwrap();
        assert_eq!(
            (id.trust_domain(), id.namespace(), id.service_account()),
            ("cluster.local", "models", "llm-server")
        );
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/models/sa/llm-server");
        assert_eq!(SpiffeId::parse("spiffe://td/ns/a/sa/b.c").unwrap().service_account(), "b.c");
    }

    #[test]
    fn what_is_not_a_workload_id_is_refused_with_its_reason() {
        for (s, want) in [
            ("https://cluster.local/ns/a/sa/b", IdError::Scheme),
            ("spiffe://Cluster.local/ns/a/sa/b", IdError::TrustDomain("Cluster.local".into())),
            ("spiffe://td:8080/ns/a/sa/b", IdError::TrustDomain("td:8080".into())),
            ("spiffe://user@td/ns/a/sa/b", IdError::TrustDomain("user@td".into())),
            ("spiffe:///ns/a/sa/b", IdError::TrustDomain(String::new())),
            ("spiffe://td", IdError::Path(String::new())),
            ("spiffe://td/ns/a/sa/b/extra", IdError::Path("/ns/a/sa/b/extra".into())),
            ("spiffe://td/ns/a/sa/", IdError::ServiceAccount(String::new())),
            ("spiffe://td/ns/a/sa/b?x=1", IdError::ServiceAccount("b?x=1".into())),
            ("spiffe://td/ns/-a/sa/b", IdError::Namespace("-a".into())),
            ("spiffe://td/ns/A/sa/b", IdError::Namespace("A".into())),
            ("spiffe://td/sa/b/ns/a", IdError::Path("/sa/b/ns/a".into())),
        ] {
            assert_eq!(SpiffeId::parse(s), Err(want), "{s}");
        }
        assert_eq!(SpiffeId::parse(&format!("spiffe://td/ns/a/sa/{}", "b".repeat(3000))), Err(IdError::TooLong));
    }

    #[test]
    fn a_token_review_username_names_the_service_account() {
        let id = SpiffeId::from_token_user("cluster.local", "system:serviceaccount:models:llm").unwrap();
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/models/sa/llm");
        for user in ["system:node:n1", "system:serviceaccount:models", "alice", "system:serviceaccount::x"] {
            assert!(SpiffeId::from_token_user("cluster.local", user).is_err(), "{user}");
        }
    }

    /// Property: no input panics, and whatever parses prints back to the same string.
    #[test]
    fn no_input_panics_and_every_parsed_id_round_trips() {
        let mut rng = fastrand::Rng::with_seed(9);
        let alphabet = b"spiffe:/nsa.-_Zz09?#@%\xff\x00";
        let seeds = ["spiffe://cluster.local/ns/models/sa/llm", "spiffe://td/ns/a/sa/b", "spiffe://"];
        let mut parsed = 0;
        for i in 0..50_000 {
            let mut bytes: Vec<u8> = seeds[i % seeds.len()].as_bytes().to_vec();
            for _ in 0..rng.usize(0..6) {
                let at = rng.usize(0..=bytes.len());
                match rng.u8(0..3) {
                    0 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    1 if at < bytes.len() => bytes[at] = alphabet[rng.usize(0..alphabet.len())],
                    _ => bytes.insert(at, alphabet[rng.usize(0..alphabet.len())]),
                }
            }
            let s = String::from_utf8_lossy(&bytes);
            if let Ok(id) = SpiffeId::parse(&s) {
                assert_eq!(id.to_string(), s, "round trip");
                parsed += 1;
            }
            let _ = SpiffeId::from_token_user("td", &s);
        }
        assert!(parsed > 100, "the mutations kept some valid IDs: {parsed}");
    }
}
