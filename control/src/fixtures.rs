//! Test fixtures: objects in the exact JSON shapes the API server serves.

use crate::api::HttpRoute;
use crate::index::{Dirty, Index, Indexes, PodInfo, RouteInfo, ServiceInfo, SliceInfo};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

/// A Service with `(name, port, appProtocol)` ports.
pub(crate) fn service(ns: &str, name: &str, ports: &[(&str, u16, Option<&str>)]) -> Service {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p, ap)| {
            let mut v = json!({"name": n, "port": p, "protocol": "TCP", "targetPort": p + 8000});
            if let Some(ap) = ap {
                v["appProtocol"] = json!(ap);
            }
            v
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": "1", "uid": format!("uid-{ns}-{name}")},
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ip(ns, name), "ports": ports, "selector": {"app": name}}
    }))
    .expect("service fixture")
}

/// A cluster IP of its own for each Service fixture, as the API server allocates them.
pub(crate) fn cluster_ip(ns: &str, name: &str) -> String {
    let h = format!("{ns}/{name}").bytes().fold(2166136261u32, |h, b| (h ^ u32::from(b)).wrapping_mul(16777619));
    format!("10.96.{}.{}", (h >> 8) & 0xff, (h & 0xfe) | 1)
}

/// `(ip, ready, serving, terminating)`.
pub(crate) type Ep<'a> = (&'a str, Option<bool>, Option<bool>, Option<bool>);

/// An EndpointSlice of `svc` with one port and `(ip, ready, serving, terminating)` endpoints.
pub(crate) fn slice(ns: &str, name: &str, svc: &str, port: (&str, u16), endpoints: &[Ep<'_>]) -> EndpointSlice {
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|(ip, ready, serving, terminating)| {
            let mut c = serde_json::Map::new();
            if let Some(r) = ready {
                c.insert("ready".into(), json!(r));
            }
            if let Some(s) = serving {
                c.insert("serving".into(), json!(s));
            }
            if let Some(t) = terminating {
                c.insert("terminating".into(), json!(t));
            }
            json!({"addresses": [ip], "conditions": c, "nodeName": "node-1",
                   "targetRef": {"kind": "Pod", "namespace": ns, "name": format!("pod-{ip}")}})
        })
        .collect();
    let addr_type = if endpoints.iter().any(|e| e.0.contains(':')) { "IPv6" } else { "IPv4" };
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": "1",
                     "labels": {"kubernetes.io/service-name": svc, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": addr_type,
        "endpoints": eps,
        "ports": [{"name": port.0, "port": port.1, "protocol": "TCP"}]
    }))
    .expect("endpointslice fixture")
}

/// A ready endpoint.
pub(crate) fn ready(ip: &str) -> Ep<'_> {
    (ip, Some(true), Some(true), Some(false))
}

/// An HTTPRoute with this spec, created at `created` (RFC 3339).
pub(crate) fn route(ns: &str, name: &str, created: &str, spec: Value) -> HttpRoute {
    serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": "1", "creationTimestamp": created},
        "spec": spec
    }))
    .expect("httproute fixture")
}

/// A GAMMA split of `parent` between `(service, port, weight)` backends.
pub(crate) fn split(ns: &str, name: &str, parent: &str, backends: &[(&str, u16, i32)]) -> HttpRoute {
    let refs: Vec<Value> = backends.iter().map(|(s, p, w)| json!({"name": s, "port": p, "weight": w})).collect();
    route(
        ns,
        name,
        "2026-01-01T00:00:00Z",
        json!({"parentRefs": [{"group": "", "kind": "Service", "name": parent}],
               "rules": [{"backendRefs": refs}]}),
    )
}

/// Indexes holding these objects.
pub(crate) fn indexes(services: &[Service], slices: &[EndpointSlice], routes: &[HttpRoute]) -> Indexes {
    let mut idx = Indexes::default();
    let mut dirty = Dirty::new();
    idx.services.reset(services.iter().filter_map(ServiceInfo::from_resource).collect(), &mut dirty);
    idx.endpoints.reset(slices.iter().filter_map(SliceInfo::from_resource).collect(), &mut dirty);
    idx.routes.reset(routes.iter().filter_map(RouteInfo::from_resource).collect(), &mut dirty);
    idx
}

/// The Pod behind endpoint `ip` of a [`slice`] (named `pod-<ip>`), of ServiceAccount `sa`
/// (unset: none given), with the `vane.io/injected` annotation or not.
pub(crate) fn pod(ns: &str, ip: &str, sa: Option<&str>, injected: bool) -> Pod {
    let mut meta = json!({"name": format!("pod-{ip}"), "namespace": ns, "resourceVersion": "1"});
    if injected {
        meta["annotations"] = json!({"vane.io/injected": "0.1.0", "other": "x"});
    }
    let mut spec = json!({"containers": [{"name": "app", "image": "app:1"}]});
    if let Some(sa) = sa {
        spec["serviceAccountName"] = json!(sa);
    }
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
                                  "status": {"podIP": ip}}))
    .expect("pod fixture")
}

/// `idx` with these Pods (those injected) in its Pod index.
pub(crate) fn with_pods(mut idx: Indexes, pods: &[Pod]) -> Indexes {
    idx.pods.reset(pods.iter().filter_map(PodInfo::from_resource).collect(), &mut Dirty::new());
    idx
}

/// `svc` with a `vane.io/visible-to` annotation.
pub(crate) fn visible_to(mut svc: Service, namespaces: &str) -> Service {
    svc.metadata.annotations =
        Some([(crate::identity::visibility::VISIBLE_TO.to_string(), namespaces.to_string())].into());
    svc
}
