//! Indexes → routing tables: for one Service, the proxy's [`ServiceConfig`] and the
//! [`BackendConfig`]s it uses, validated with the proxy's own [`Table::from_config`].
//!
//! - The service is called `<name>.<namespace>.svc.<cluster domain>`, with hosts `<name>.<namespace>`
//!   and `<name>.<namespace>.svc`, the names a pod's resolver accepts, and `<cluster IP>:<port>` of
//!   its first TCP port, so that a captured connection to the Service's address is routed (other
//!   ports of a Service with several pass through as opaque TCP).
//! - Without an HTTPRoute, the service has one route, `default`, to its own first TCP port.
//! - With HTTPRoutes (`parentRefs` naming the Service), each rule's match becomes a route, ordered
//!   by Gateway API precedence (exact path, longest prefix, method, most headers, oldest route,
//!   name, rule order), and each `backendRef` (a Service and port) becomes a backend named
//!   `<name>.<namespace>.svc.<cluster domain>:<port>`.
//! - A backend's endpoints are the usable addresses of its Service's EndpointSlices with the
//!   slice port named like the Service port; the protocol is HTTP/2 when the port's
//!   `appProtocol` is `kubernetes.io/h2c` or `grpc`, else HTTP/1.1.
//! - With the identity service on (a trust domain in the settings), an endpoint whose Pod was
//!   injected (`vane.io/injected`) gets the SPIFFE ID of the Pod's ServiceAccount,
//!   `spiffe://<td>/ns/<pod namespace>/sa/<serviceAccountName or default>`: as the backend's
//!   `identity` when every endpoint has the same one, else per endpoint in `identities` (the
//!   others are called in plaintext).
//! - A route the proxy would refuse (or that uses a feature Vane cannot honour, which would
//!   otherwise match more traffic than asked) makes the service fall back to its default route,
//!   with the reason kept in [`ServiceTable::error`]. Other services are not affected.
//!
//! Everything here is a pure function of the indexes.

use crate::api::is_core_service;
use crate::index::{Indexes, ObjectKey, RouteInfo, ServiceInfo};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use vane_route::config::{
    BackendConfig, Config, HeaderMatch, MatchConfig, PathMatch, Protocol, RouteConfig, ServiceConfig, WeightedBackend,
};
use vane_route::{ConfigError, Table};

/// Settings of the table computation.
#[derive(Clone, Debug)]
pub struct TableSettings {
    /// The cluster's DNS domain, `cluster.local` by default.
    pub cluster_domain: String,
    /// The trust domain of endpoint identities; `None` (the identity service is off): no
    /// endpoint has one.
    pub trust_domain: Option<String>,
}

impl Default for TableSettings {
    fn default() -> Self {
        TableSettings { cluster_domain: "cluster.local".into(), trust_domain: None }
    }
}

/// The computed table of one Service.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceTable {
    /// The Service.
    pub key: ObjectKey,
    /// The service as the proxy reads it; `None` when nothing can be routed (no TCP port and no
    /// valid route).
    pub config: Option<ServiceConfig>,
    /// The backends `config` uses, sorted by name.
    pub backends: Vec<BackendConfig>,
    /// Services whose changes can change this table: itself and every backend's Service.
    pub deps: BTreeSet<ObjectKey>,
    /// HTTPRoutes in effect (empty when the default route is used).
    pub routes: Vec<ObjectKey>,
    /// Why the HTTPRoutes were refused, when they were.
    pub error: Option<String>,
    /// Parts of the HTTPRoutes that Vane does not apply.
    pub notes: Vec<String>,
    /// The Service's `vane.io/visible-to` namespaces, when annotated.
    pub visible_to: Option<BTreeSet<String>>,
}

/// `<name>.<namespace>.svc.<domain>`.
pub fn service_name(key: &ObjectKey, settings: &TableSettings) -> String {
    format!("{}.{}.svc.{}", key.name, key.namespace, settings.cluster_domain)
}

/// `<name>.<namespace>.svc.<domain>:<port>`.
pub fn backend_name(key: &ObjectKey, port: u16, settings: &TableSettings) -> String {
    format!("{}:{port}", service_name(key, settings))
}

/// Computes one Service's table; `None` when the Service is not in the index.
pub fn compute(idx: &Indexes, key: &ObjectKey, settings: &TableSettings) -> Option<ServiceTable> {
    let svc = idx.services.get(key)?;
    let name = service_name(key, settings);
    let mut hosts = vec![format!("{}.{}", key.name, key.namespace), format!("{}.{}.svc", key.name, key.namespace)];
    if let Some(port) = svc.ports.first() {
        hosts.extend(svc.cluster_ips.iter().map(|ip| SocketAddr::new(*ip, port.port).to_string()));
    }
    let attached = idx.routes.for_parent(key);
    let notes: Vec<String> =
        attached.iter().flat_map(|r| r.notes.iter().map(move |n| format!("HTTPRoute {}: {n}", r.key))).collect();

    let mut error = None;
    if !attached.is_empty() {
        match from_routes(&attached, settings) {
            Ok((routes, refs)) => {
                let config = ServiceConfig { name: name.clone(), hosts: hosts.clone(), routes };
                let backends = backends(idx, &refs, settings);
                match validate(&config, &backends, &attached) {
                    Ok(()) => {
                        return Some(ServiceTable {
                            key: key.clone(),
                            config: Some(config),
                            deps: deps(key, &refs),
                            backends,
                            routes: attached.iter().map(|r| r.key.clone()).collect(),
                            error: None,
                            notes,
                            visible_to: svc.visible_to.clone(),
                        });
                    }
                    Err(e) => error = Some(e),
                }
            }
            Err(e) => error = Some(e),
        }
    }

    // No HTTPRoute, or none usable: one route to the Service itself.
    let (config, refs) = match default_route(svc) {
        Some(refs) => {
            let config = ServiceConfig {
                name,
                hosts,
                routes: vec![RouteConfig {
                    name: "default".into(),
                    matches: MatchConfig::default(),
                    backends: vec![WeightedBackend {
                        backend: backend_name(&refs[0].0, refs[0].1, settings),
                        weight: 1,
                    }],
                    sticky: None,
                    timeout: None,
                    retries: None,
                    coalesce: None,
                    hedge: None,
                }],
            };
            (Some(config), refs)
        }
        None => (None, vec![]),
    };
    let mut backends = backends(idx, &refs, settings);
    let config = match config {
        Some(c) => match validate(&c, &backends, &[]) {
            Ok(()) => Some(c),
            Err(e) => {
                // Cannot happen with addresses parsed from the API, but never serve what the proxy
                // would refuse.
                error.get_or_insert(e);
                backends.clear();
                None
            }
        },
        None => None,
    };
    Some(ServiceTable {
        key: key.clone(),
        config,
        deps: deps(key, &refs),
        backends,
        routes: vec![],
        error,
        notes,
        visible_to: svc.visible_to.clone(),
    })
}

/// The backend for a Service port: its usable endpoints, deduplicated and sorted, with the
/// identities of the meshed ones.
pub fn backend(idx: &Indexes, key: &ObjectKey, port: u16, settings: &TableSettings) -> BackendConfig {
    let svc_port = idx.services.get(key).and_then(|s| s.port(port));
    let mut app_protocol = svc_port.and_then(|p| p.app_protocol.clone());
    let mut endpoints: BTreeMap<SocketAddr, Option<String>> = BTreeMap::new();
    if let Some(sp) = svc_port {
        for slice in idx.endpoints.for_service(key) {
            let Some(slice_port) = slice.port(&sp.name) else {
                continue;
            };
            if app_protocol.is_none() {
                app_protocol.clone_from(&slice_port.app_protocol);
            }
            for ip in &slice.addresses {
                let slot = endpoints.entry(SocketAddr::new(*ip, slice_port.port)).or_default();
                if slot.is_none() {
                    *slot = identities::of_endpoint(idx, slice.pods.get(ip), settings);
                }
            }
        }
    }
    let (identity, identities) = identities::of_backend(&endpoints);
    let protocol = match app_protocol.as_deref() {
        Some("kubernetes.io/h2c" | "grpc") => Protocol::Http2,
        _ => Protocol::Http1,
    };
    BackendConfig {
        name: backend_name(key, port, settings),
        protocol,
        endpoints: endpoints.keys().map(ToString::to_string).collect(),
        balancer: None,
        identity,
        identities,
    }
}

/// A backend reference: Service and port.
type BackendRef = (ObjectKey, u16);

fn default_route(svc: &ServiceInfo) -> Option<Vec<BackendRef>> {
    let port = svc.ports.first()?;
    Some(vec![(svc.key.clone(), port.port)])
}

fn backends(idx: &Indexes, refs: &[BackendRef], settings: &TableSettings) -> Vec<BackendConfig> {
    let unique: BTreeSet<&BackendRef> = refs.iter().collect();
    let mut out: Vec<BackendConfig> = unique.into_iter().map(|(k, p)| backend(idx, k, *p, settings)).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn deps(key: &ObjectKey, refs: &[BackendRef]) -> BTreeSet<ObjectKey> {
    std::iter::once(key.clone()).chain(refs.iter().map(|(k, _)| k.clone())).collect()
}

/// Validates one service and its backends with the proxy's own validation. Field paths of the
/// generated config are replaced by the HTTPRoute rule they came from.
fn validate(service: &ServiceConfig, backends: &[BackendConfig], attached: &[&RouteInfo]) -> Result<(), String> {
    let config = Config { services: vec![service.clone()], backends: backends.to_vec(), ..Config::default() };
    match Table::from_config(config) {
        Ok(_) => Ok(()),
        Err(ConfigError::Invalid(errors)) => Err(errors
            .iter()
            .map(|e| {
                let field = describe_field(&e.field, service, attached);
                format!("{field}: {}", e.reason)
            })
            .collect::<Vec<_>>()
            .join("; ")),
        Err(e) => Err(e.to_string()),
    }
}

fn describe_field(field: &str, service: &ServiceConfig, attached: &[&RouteInfo]) -> String {
    let Some(rest) = field.strip_prefix("services[0].routes[") else {
        return field.to_string();
    };
    let Some((index, tail)) = rest.split_once(']') else {
        return field.to_string();
    };
    let Some(route) = index.parse::<usize>().ok().and_then(|i| service.routes.get(i)) else {
        return field.to_string();
    };
    // Generated route names are `<httproute>/<rule>[/<match>]`.
    let mut parts = route.name.split('/');
    let (Some(name), Some(rule)) = (parts.next(), parts.next()) else {
        return field.to_string();
    };
    let owner =
        attached.iter().find(|r| r.key.name == name).map(|r| r.key.to_string()).unwrap_or_else(|| name.to_string());
    let tail = tail.trim_start_matches('.');
    format!("HTTPRoute {owner} rules[{rule}] (route {:?}) {tail}", route.name)
}

/// One generated route with its Gateway API precedence.
struct Candidate {
    rank: (u8, std::cmp::Reverse<usize>, u8, std::cmp::Reverse<usize>, usize, usize, usize),
    route: RouteConfig,
}

/// Turns the HTTPRoutes attached to a Service into routes, or says why it cannot.
fn from_routes(
    attached: &[&RouteInfo],
    settings: &TableSettings,
) -> Result<(Vec<RouteConfig>, Vec<BackendRef>), String> {
    let mut problems = Vec::new();
    let mut candidates = Vec::new();
    let mut refs = Vec::new();
    for (order, route) in attached.iter().enumerate() {
        let ns = &route.key.namespace;
        let mut problem = |field: String, why: &str| {
            problems.push(format!("HTTPRoute {}: {field}: {why}", route.key));
        };
        for (i, rule) in route.spec.rules.iter().enumerate() {
            let mut weighted = Vec::new();
            for (j, b) in rule.backend_refs.iter().enumerate() {
                let field = format!("rules[{i}].backendRefs[{j}]");
                if !is_core_service(b.group.as_deref(), b.kind.as_deref(), true) {
                    problem(
                        field,
                        &format!(
                            "only Service backends are supported, not {}/{}",
                            b.group.as_deref().unwrap_or(""),
                            b.kind.as_deref().unwrap_or("Service")
                        ),
                    );
                    continue;
                }
                if b.namespace.as_ref().is_some_and(|n| n != ns) {
                    problem(
                        field,
                        "a backend in another namespace needs a ReferenceGrant, which Vane does not support",
                    );
                    continue;
                }
                let Some(port) = b.port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0) else {
                    problem(format!("{field}.port"), "a Service backend needs a port (1-65535)");
                    continue;
                };
                let weight = match b.weight {
                    None => 1,
                    Some(w) if w >= 0 => w as u32,
                    Some(_) => {
                        problem(format!("{field}.weight"), "must not be negative");
                        continue;
                    }
                };
                let key = ObjectKey::new(ns.clone(), b.name.clone());
                weighted.push(WeightedBackend { backend: backend_name(&key, port, settings), weight });
                refs.push((key, port));
            }
            let default_match = [crate::api::HttpRouteMatch::default()];
            let matches = if rule.matches.is_empty() { &default_match[..] } else { &rule.matches[..] };
            for (j, m) in matches.iter().enumerate() {
                let field = format!("rules[{i}].matches[{j}]");
                let value = m.path.as_ref().and_then(|p| p.value.clone()).unwrap_or_else(|| "/".into());
                let (exact, path) = match m.path.as_ref().and_then(|p| p.type_.as_deref()) {
                    None | Some("PathPrefix") => (false, PathMatch { exact: None, prefix: Some(value.clone()) }),
                    Some("Exact") => (true, PathMatch { exact: Some(value.clone()), prefix: None }),
                    Some(other) => {
                        problem(format!("{field}.path.type"), &format!("{other} is not supported"));
                        continue;
                    }
                };
                let mut headers = Vec::new();
                for (k, h) in m.headers.iter().enumerate() {
                    match h.type_.as_deref() {
                        None | Some("Exact") => {
                            headers.push(HeaderMatch { name: h.name.clone(), value: Some(h.value.clone()) })
                        }
                        Some(other) => {
                            problem(format!("{field}.headers[{k}].type"), &format!("{other} is not supported"))
                        }
                    }
                }
                if !m.query_params.is_empty() {
                    problem(format!("{field}.queryParams"), "query parameter matches are not supported");
                    continue;
                }
                let name = if matches.len() > 1 {
                    format!("{}/{i}/{j}", route.key.name)
                } else {
                    format!("{}/{i}", route.key.name)
                };
                let rank = (
                    u8::from(!exact),
                    std::cmp::Reverse(value.len()),
                    u8::from(m.method.is_none()),
                    std::cmp::Reverse(headers.len()),
                    order,
                    i,
                    j,
                );
                candidates.push(Candidate {
                    rank,
                    route: RouteConfig {
                        name,
                        matches: MatchConfig { path: Some(path), method: m.method.clone(), headers, model: None },
                        backends: weighted.clone(),
                        sticky: None,
                        timeout: None,
                        retries: None,
                        coalesce: None,
                        hedge: None,
                    },
                });
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    if candidates.is_empty() {
        return Err(format!(
            "HTTPRoute {}: no rules",
            attached.iter().map(|r| r.key.to_string()).collect::<Vec<_>>().join(", ")
        ));
    }
    candidates.sort_by_key(|c| c.rank);
    Ok((candidates.into_iter().map(|c| c.route).collect(), refs))
}

mod identities;
#[cfg(test)]
mod tests;
