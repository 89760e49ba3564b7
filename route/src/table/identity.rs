//! Identities in a config, checked: the SPIFFE IDs meshed endpoints must present, this proxy's
//! `identity:` section, and the inbound authorization rules.

use super::Validator;
use crate::config::{BackendConfig, Config};
use std::net::SocketAddr;
use std::sync::Arc;

/// Whether `s` has the shape of a workload SPIFFE ID (`spiffe://<td>/ns/<ns>/sa/<sa>`); the
/// proxy reads it fully when it connects.
fn looks_like_spiffe(s: &str) -> bool {
    s.strip_prefix("spiffe://").is_some_and(|rest| {
        let parts: Vec<&str> = rest.split('/').collect();
        parts.len() == 5
            && parts[1] == "ns"
            && parts[3] == "sa"
            && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_graphic()))
    })
}

impl Validator {
    fn spiffe(&mut self, field: String, s: &str) -> Option<Arc<str>> {
        if looks_like_spiffe(s) {
            Some(s.into())
        } else {
            self.err(field, format!("{s:?} is not a SPIFFE ID (spiffe://<trust-domain>/ns/<namespace>/sa/<name>)"));
            None
        }
    }

    /// The identity each endpoint must present, in the order of `endpoints`.
    pub(super) fn identities(
        &mut self,
        field: &str,
        b: &BackendConfig,
        endpoints: &[SocketAddr],
    ) -> Vec<Option<Arc<str>>> {
        let all = b.identity.as_deref().and_then(|s| self.spiffe(format!("{field}.identity"), s));
        let mut by_addr = std::collections::HashMap::new();
        for (e, id) in &b.identities {
            let efield = format!("{field}.identities[{e:?}]");
            let Some(addr) = self.addr(efield.clone(), e) else { continue };
            if !endpoints.contains(&addr) {
                self.err(efield, format!("{addr} is not one of the backend's endpoints"));
                continue;
            }
            if let Some(id) = self.spiffe(efield, id) {
                by_addr.insert(addr, id);
            }
        }
        endpoints.iter().map(|a| by_addr.get(a).cloned().or_else(|| all.clone())).collect()
    }

    /// `proxy.identity` and `proxy.authz`.
    pub(super) fn identity(&mut self, config: &Config) {
        if let Err(e) = config.proxy.authz.validate() {
            self.err("proxy.authz".into(), e.to_string());
        }
        let Some(id) = &config.proxy.identity else { return };
        let field = "proxy.identity";
        match (&id.cert, &id.key, &id.control) {
            (Some(_), Some(_), None) | (None, None, Some(_)) => {}
            _ => self.err(field.into(), "give either cert and key (files) or control (the identity service)"),
        }
        if let Some(c) = &id.control {
            self.spiffe(format!("{field}.control.identity"), &c.identity);
            if let Some(s) = &c.server_identity {
                self.spiffe(format!("{field}.control.server_identity"), s);
            }
        }
        if id.reload.0.is_zero() {
            self.err(format!("{field}.reload"), "must be greater than zero");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Table;

    #[test]
    fn meshed_endpoints_take_the_backend_identity_or_their_own() {
        let t = Table::from_yaml(
            r#"
backends:
  - name: llm
    endpoints: ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"]
    identity: spiffe://cluster.local/ns/models/sa/llm
    identities:
      "10.0.0.2:8000": spiffe://cluster.local/ns/models/sa/llm-canary
  - name: plain
    endpoints: ["10.0.1.1:8000"]
"#,
        )
        .unwrap();
        let ids: Vec<Option<&str>> = t.backends[0].identities.iter().map(|i| i.as_deref()).collect();
        assert_eq!(
            ids,
            [
                Some("spiffe://cluster.local/ns/models/sa/llm"),
                Some("spiffe://cluster.local/ns/models/sa/llm-canary"),
                Some("spiffe://cluster.local/ns/models/sa/llm")
            ]
        );
        assert_eq!(t.backends[1].identities, [None]);
    }

    #[test]
    fn bad_identities_are_refused_with_their_field() {
        let err = Table::from_yaml(
            r#"
proxy:
  identity:
    roots: /etc/vane/roots.pem
    cert: /etc/vane/cert.pem
  authz:
    rules:
      - name: everything
        allow: [{unauthenticated: true}]
backends:
  - name: llm
    endpoints: ["10.0.0.1:8000"]
    identity: llm.models
    identities:
      "10.0.0.9:8000": spiffe://cluster.local/ns/models/sa/llm
"#,
        )
        .unwrap_err()
        .to_string();
        for want in [
            "backends[0].identity",
            "is not one of the backend's endpoints",
            "proxy.identity: give either cert and key",
            "proxy.authz: rule \"everything\" has neither",
        ] {
            assert!(err.contains(want), "{want} in {err}");
        }
    }
}
