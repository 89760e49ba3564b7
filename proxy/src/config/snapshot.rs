//! One immutable snapshot of everything a request needs: the routing table, each backend's live
//! endpoint state (reused from the previous snapshot where the endpoint is the same) and the
//! metric handles of every route.

use crate::balance::{Backend, Endpoint, Policy, Typical};
use crate::metrics::{Direction, Metrics, RouteStats};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use tower::retry::budget::TpsBudget;
use vane_route::Table;
use vane_route::config::Protocol;

/// What makes two endpoints the same one across snapshots: address, protocol and identity.
type EndpointKey = (SocketAddr, Protocol, Option<Arc<str>>);

/// How to call an endpoint that must be `id`: over mTLS when this proxy has an identity; in
/// plaintext (HTTP/2 to its sidecar, which serves both during a rollout) when it has none.
fn mesh(identity: &Arc<crate::identity::Identity>, id: &str, addr: SocketAddr) -> Option<crate::client::Mesh> {
    if !identity.enabled() {
        return None;
    }
    match vane_identity::SpiffeId::parse(id) {
        Ok(expected) => Some(crate::client::Mesh::new(Arc::clone(identity) as _, expected, addr)),
        Err(e) => {
            tracing::warn!(endpoint = %addr, "not a workload identity, called without TLS: {e}");
            None
        }
    }
}

/// Metric handles of one route: `(backend index, stats)` for each backend of its split.
pub type BackendStats = Vec<(usize, Arc<RouteStats>)>;

/// Everything a request needs, immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    /// The validated routing table.
    pub table: Table,
    /// Runtime backends, index-aligned with `table.backends`.
    pub backends: Vec<Arc<Backend>>,
    /// The inbound target.
    pub inbound: Option<Arc<Backend>>,
    /// Increases with each applied config.
    pub version: u64,
    /// Metric handles: `[service][route]` → `(backend index, stats)` for each backend of the split.
    pub route_stats: Vec<Vec<BackendStats>>,
    /// Metric handles for the inbound target.
    pub inbound_stats: Arc<RouteStats>,
}

impl Snapshot {
    /// Builds a snapshot, reusing endpoint state and clients from `prev` where they still apply.
    pub fn build(
        table: Table,
        prev: Option<&Snapshot>,
        version: u64,
        metrics: &Metrics,
        identity: &Arc<crate::identity::Identity>,
    ) -> Snapshot {
        let mut known: HashMap<EndpointKey, Arc<Endpoint>> = HashMap::new();
        // A backend's typical figures carry over by name, like its endpoints' state by address.
        let mut typical: HashMap<Arc<str>, Arc<Typical>> = HashMap::new();
        // So do retry budgets, while their settings stay the same.
        let mut budgets: HashMap<Arc<str>, Arc<TpsBudget>> = HashMap::new();
        let same_budget = prev.is_some_and(|p| p.table.settings.retry_budget == table.settings.retry_budget);
        if let Some(p) = prev {
            for b in p.backends.iter().chain(p.inbound.iter()) {
                for e in &b.endpoints {
                    known.insert((e.addr, e.protocol, e.peer_identity()), Arc::clone(e));
                }
                typical.insert(Arc::clone(&b.name), Arc::clone(&b.typical));
                if same_budget {
                    budgets.insert(Arc::clone(&b.name), Arc::clone(&b.retry_budget));
                }
            }
        }
        let s = &table.settings;
        let settings = Arc::new(s.clone());
        // Endpoints of the first config were there from the start; later ones join (slow start).
        let joined_ns = if prev.is_some() { crate::now_ns() } else { 0 };
        let load_age = &metrics.load_age;
        let backend = |name: Arc<str>,
                       endpoints: Vec<Arc<Endpoint>>,
                       policy: Policy,
                       ask_load_reports: bool,
                       shed: Option<vane_route::table::Shed>| {
            Arc::new(Backend {
                endpoints,
                policy,
                rr: AtomicUsize::new(0),
                settings: Arc::clone(&settings),
                load_age: load_age.clone(),
                typical: typical.get(&name).cloned().unwrap_or_default(),
                retry_budget: budgets
                    .get(&name)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(crate::retry::budget(&settings.retry_budget))),
                name,
                ask_load_reports,
                shed,
            })
        };
        let mut endpoint = |addr: SocketAddr, proto: Protocol, peer: Option<&Arc<str>>| {
            // A meshed endpoint is its sidecar, which speaks HTTP/2 whatever the model server does.
            let proto = if peer.is_some() { Protocol::Http2 } else { proto };
            let key = (addr, proto, peer.cloned());
            Arc::clone(known.entry(key).or_insert_with(|| {
                let mesh = peer.and_then(|id| mesh(identity, id, addr));
                Arc::new(Endpoint::new(addr, proto, joined_ns).meshed(mesh, peer.cloned()))
            }))
        };
        let backends: Vec<Arc<Backend>> = table
            .backends
            .iter()
            .map(|b| {
                let endpoints = b
                    .endpoints
                    .iter()
                    .zip(&b.identities)
                    .map(|(a, id)| endpoint(*a, b.protocol, id.as_ref()))
                    .collect();
                let policy = Policy { algorithm: b.algorithm, weights: b.cost, slow_start: b.slow_start };
                backend(Arc::clone(&b.name), endpoints, policy, b.ask_load_reports, b.shed)
            })
            .collect();
        let inbound = table.inbound.as_ref().map(|ib| {
            let endpoints = vec![endpoint(ib.forward_to, ib.protocol, None)];
            let policy = Policy { algorithm: s.algorithm, weights: s.cost, slow_start: s.slow_start };
            backend("inbound".into(), endpoints, policy, s.ask_load_reports, s.shed)
        });
        for (b, rt) in table.backends.iter().zip(backends.iter()) {
            if b.load_stream {
                rt.endpoints.iter().for_each(follow_load_stream);
            }
        }
        let route_stats = table
            .services
            .iter()
            .map(|svc| {
                svc.routes
                    .iter()
                    .map(|r| {
                        r.split
                            .entries()
                            .map(|(b, _)| {
                                (
                                    b,
                                    metrics.route_stats(
                                        Direction::Outbound,
                                        &svc.name,
                                        &r.name,
                                        &table.backends[b].name,
                                    ),
                                )
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let inbound_name: Arc<str> = "inbound".into();
        let inbound_stats = metrics.route_stats(Direction::Inbound, &inbound_name, &"-".into(), &inbound_name);
        Snapshot { table, backends, inbound, version, route_stats, inbound_stats }
    }

    /// Metric handles for a routed request.
    pub fn stats(&self, service: usize, route: usize, backend: usize) -> Option<&Arc<RouteStats>> {
        self.route_stats.get(service)?.get(route)?.iter().find(|(b, _)| *b == backend).map(|(_, s)| s)
    }
}

/// Starts following an endpoint's load stream, once per endpoint (the task ends when the endpoint
/// is dropped from the config). Needs a running tokio runtime; does nothing without one.
fn follow_load_stream(ep: &Arc<Endpoint>) {
    if ep.claim_load_stream()
        && let Ok(rt) = tokio::runtime::Handle::try_current()
    {
        rt.spawn(crate::load::peer::follow(Arc::downgrade(ep)));
    }
}
