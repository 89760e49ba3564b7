//! Where the certificate comes from, from the environment and the config file.
//!
//! In a pod the injector sets `VANE_CONTROL`, `VANE_IDENTITY_ROOTS`, `VANE_IDENTITY_TOKEN`,
//! `VANE_POD_NAMESPACE` and `VANE_SERVICE_ACCOUNT` (and may set `VANE_IDENTITY_TRUST_DOMAIN`,
//! default `cluster.local`): then the proxy asks the control service's identity service for a
//! certificate of `spiffe://<td>/ns/<ns>/sa/<sa>`, whatever the file's `proxy.identity` says.
//! Without the roots and the token, the file's `proxy.identity` (or none). Setting only some of
//! them is an error that names the missing ones, rather than a proxy that quietly runs without
//! the identity its pod was given.

use std::time::Duration;
use vane_identity::SpiffeId;
use vane_identity::spiffe::IdError;
use vane_route::config::{IdentityConfig, IdentityServiceConfig};
use vane_route::duration::HumanDuration;

/// Why the environment's identity cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityArgsError {
    /// Identity-service mode was asked for (roots or token set) without all it needs.
    #[error("identity-service mode needs {} too (VANE_IDENTITY_ROOTS, VANE_IDENTITY_TOKEN, VANE_CONTROL, VANE_POD_NAMESPACE and VANE_SERVICE_ACCOUNT go together)", .0.join(", "))]
    Missing(Vec<&'static str>),
    /// The namespace, ServiceAccount or trust domain cannot form a SPIFFE ID.
    #[error("identity-service mode: {0}")]
    Id(#[from] IdError),
}

/// What the environment (or the matching flags) says about the identity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentityEnv {
    /// `VANE_IDENTITY_ROOTS`: the PEM trust anchors file.
    pub identity_roots: Option<String>,
    /// `VANE_IDENTITY_TOKEN`: the projected ServiceAccount token file.
    pub identity_token: Option<String>,
    /// `VANE_CONTROL`: the control service (discovery and certificates).
    pub control: Option<String>,
    /// `VANE_POD_NAMESPACE`.
    pub pod_namespace: Option<String>,
    /// `VANE_SERVICE_ACCOUNT`.
    pub service_account: Option<String>,
    /// `VANE_IDENTITY_TRUST_DOMAIN` (`cluster.local` unless set).
    pub identity_trust_domain: String,
}

/// The identity the proxy runs with: the environment's identity-service mode, else `file`.
pub fn identity(
    args: &IdentityEnv,
    file: Option<&IdentityConfig>,
) -> Result<Option<IdentityConfig>, IdentityArgsError> {
    if args.identity_roots.is_none() && args.identity_token.is_none() {
        return Ok(file.cloned());
    }
    let missing: Vec<&'static str> = [
        ("VANE_IDENTITY_ROOTS", args.identity_roots.is_none()),
        ("VANE_IDENTITY_TOKEN", args.identity_token.is_none()),
        ("VANE_CONTROL", args.control.is_none()),
        ("VANE_POD_NAMESPACE", args.pod_namespace.is_none()),
        ("VANE_SERVICE_ACCOUNT", args.service_account.is_none()),
    ]
    .into_iter()
    .filter_map(|(name, absent)| absent.then_some(name))
    .collect();
    let (Some(roots), Some(token), Some(addr), Some(ns), Some(sa)) =
        (&args.identity_roots, &args.identity_token, &args.control, &args.pod_namespace, &args.service_account)
    else {
        return Err(IdentityArgsError::Missing(missing));
    };
    let id = SpiffeId::new(&args.identity_trust_domain, ns, sa)?;
    if file.is_some() {
        tracing::warn!(identity = %id, "the environment's identity-service mode overrides the config file's proxy.identity");
    }
    Ok(Some(IdentityConfig {
        trust_domain: args.identity_trust_domain.clone(),
        roots: roots.clone(),
        cert: None,
        key: None,
        control: Some(IdentityServiceConfig {
            addr: addr.clone(),
            server_identity: None,
            identity: id.to_string(),
            token: token.clone(),
        }),
        reload: HumanDuration(Duration::from_secs(10)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> IdentityEnv {
        IdentityEnv {
            identity_roots: Some("/var/run/vane/roots.pem".into()),
            identity_token: Some("/var/run/secrets/vane/token".into()),
            control: Some("vane-control.vane-system.svc:4180".into()),
            pod_namespace: Some("apps".into()),
            service_account: Some("chat".into()),
            identity_trust_domain: "cluster.local".into(),
        }
    }

    fn files() -> IdentityConfig {
        IdentityConfig {
            trust_domain: "cluster.local".into(),
            roots: "/etc/vane/roots.pem".into(),
            cert: Some("/etc/vane/cert.pem".into()),
            key: Some("/etc/vane/key.pem".into()),
            control: None,
            reload: HumanDuration(Duration::from_secs(10)),
        }
    }

    #[test]
    fn a_pods_environment_asks_the_identity_service_for_its_service_account() {
        let c = identity(&pod(), None).unwrap().unwrap();
        assert_eq!(
            (c.trust_domain.as_str(), c.roots.as_str(), c.cert, c.key),
            ("cluster.local", "/var/run/vane/roots.pem", None, None)
        );
        let svc = c.control.unwrap();
        assert_eq!(svc.addr, "vane-control.vane-system.svc:4180", "certificates on the discovery port");
        assert_eq!(svc.identity, "spiffe://cluster.local/ns/apps/sa/chat");
        assert_eq!((svc.token.as_str(), svc.server_identity), ("/var/run/secrets/vane/token", None));

        let other = IdentityEnv { identity_trust_domain: "prod.example".into(), ..pod() };
        let c = identity(&other, Some(&files())).unwrap().unwrap();
        assert_eq!(c.control.unwrap().identity, "spiffe://prod.example/ns/apps/sa/chat", "over the file's files mode");
    }

    #[test]
    fn without_the_environment_the_files_identity_is_used() {
        let none = IdentityEnv { identity_trust_domain: "cluster.local".into(), ..IdentityEnv::default() };
        assert_eq!(identity(&none, None).unwrap(), None);
        let discovery_only = IdentityEnv { control: pod().control, ..none };
        assert_eq!(identity(&discovery_only, Some(&files())).unwrap(), Some(files()), "VANE_CONTROL alone");
    }

    #[test]
    fn a_partial_environment_names_what_is_missing() {
        let roots_only = IdentityEnv { identity_roots: pod().identity_roots, ..IdentityEnv::default() };
        let e = identity(&roots_only, None).unwrap_err();
        let IdentityArgsError::Missing(m) = &e else { panic!("{e}") };
        assert_eq!(m, &["VANE_IDENTITY_TOKEN", "VANE_CONTROL", "VANE_POD_NAMESPACE", "VANE_SERVICE_ACCOUNT"]);
        assert!(e.to_string().contains("needs VANE_IDENTITY_TOKEN, VANE_CONTROL,"), "{e}");
        let no_sa = IdentityEnv { service_account: None, ..pod() };
        let e = identity(&no_sa, None).unwrap_err();
        assert!(matches!(&e, IdentityArgsError::Missing(m) if m == &["VANE_SERVICE_ACCOUNT"]), "{e}");
        let bad = IdentityEnv { service_account: Some("Not_A_Name".into()), ..pod() };
        assert!(matches!(identity(&bad, None), Err(IdentityArgsError::Id(IdError::ServiceAccount(_)))));
        let bad_td = IdentityEnv { identity_trust_domain: "Cluster".into(), ..pod() };
        assert!(matches!(identity(&bad_td, None), Err(IdentityArgsError::Id(IdError::TrustDomain(_)))));
    }
}
