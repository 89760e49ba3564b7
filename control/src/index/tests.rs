use super::*;
use crate::fixtures::{pod, ready, route, service, slice, split};
use serde_json::json;
use std::net::IpAddr;

fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(ns, name)
}

fn ips(s: &SliceInfo) -> Vec<String> {
    s.addresses.iter().map(IpAddr::to_string).collect()
}

#[test]
fn service_reads_tcp_ports_and_skips_external_names() {
    let svc = service("models", "llm", &[("http", 80, None), ("grpc", 9000, Some("kubernetes.io/h2c"))]);
    let info = ServiceInfo::from_resource(&svc).unwrap();
    assert_eq!(info.key, key("models", "llm"));
    assert_eq!(info.ports.len(), 2);
    assert_eq!(info.port(9000).unwrap().app_protocol.as_deref(), Some("kubernetes.io/h2c"));

    let ext: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"name": "x", "namespace": "models"},
        "spec": {"type": "ExternalName", "externalName": "example.com"}
    }))
    .unwrap();
    assert!(ServiceInfo::from_resource(&ext).is_none());

    let udp: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"name": "dns", "namespace": "kube-system"},
        "spec": {"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "tcp", "port": 53}]}
    }))
    .unwrap();
    assert_eq!(ServiceInfo::from_resource(&udp).unwrap().ports.len(), 1);
}

#[test]
fn slice_conditions_decide_usable_endpoints() {
    let s = slice(
        "models",
        "llm-abc",
        "llm",
        ("http", 8000),
        &[
            ready("10.0.0.1"),
            ("10.0.0.2", Some(false), Some(false), Some(false)), // not ready
            ("10.0.0.3", Some(false), Some(true), Some(true)),   // terminating, still serving
            ("10.0.0.4", Some(false), Some(true), Some(false)),  // serving and not terminating
            ("10.0.0.5", None, None, None),                      // no conditions: ready
        ],
    );
    let info = SliceInfo::from_resource(&s).unwrap();
    assert_eq!(info.service, Some(key("models", "llm")));
    assert_eq!(ips(&info), ["10.0.0.1", "10.0.0.4", "10.0.0.5"]);
    assert_eq!(info.port("http").unwrap().port, 8000);

    let fqdn: k8s_openapi::api::discovery::v1::EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "f", "namespace": "models", "labels": {"kubernetes.io/service-name": "llm"}},
        "addressType": "FQDN",
        "endpoints": [{"addresses": ["a.example.com"]}],
        "ports": [{"name": "http", "port": 80}]
    }))
    .unwrap();
    assert!(SliceInfo::from_resource(&fqdn).unwrap().addresses.is_empty());
}

#[test]
fn service_index_apply_delete_reset_mark_dirty() {
    let mut idx = ServiceIndex::default();
    let mut dirty = Dirty::new();
    let a = ServiceInfo::from_resource(&service("ns", "a", &[("http", 80, None)])).unwrap();
    let b = ServiceInfo::from_resource(&service("ns", "b", &[("http", 80, None)])).unwrap();
    idx.apply(a.clone(), &mut dirty);
    assert_eq!(dirty.iter().collect::<Vec<_>>(), [&key("ns", "a")]);

    dirty.clear();
    idx.apply(a.clone(), &mut dirty);
    assert!(dirty.is_empty(), "an unchanged object marks nothing");

    idx.reset(vec![b.clone()], &mut dirty);
    assert_eq!(dirty.len(), 2, "a is gone, b is new");
    assert!(idx.get(&key("ns", "a")).is_none());

    dirty.clear();
    idx.reset(vec![b], &mut dirty);
    assert!(dirty.is_empty(), "a relist that finds the same objects marks nothing");

    idx.delete(&key("ns", "b"), &mut dirty);
    assert!(idx.is_empty());
    assert_eq!(dirty.len(), 1);
}

#[test]
fn endpoint_index_groups_slices_by_service_and_follows_relabels() {
    let mut idx = EndpointIndex::default();
    let mut dirty = Dirty::new();
    let s1 = SliceInfo::from_resource(&slice("ns", "a-1", "a", ("http", 80), &[ready("10.0.0.1")])).unwrap();
    let s2 = SliceInfo::from_resource(&slice("ns", "a-2", "a", ("http", 80), &[ready("10.0.0.2")])).unwrap();
    idx.apply(s1, &mut dirty);
    idx.apply(s2, &mut dirty);
    assert_eq!(idx.for_service(&key("ns", "a")).count(), 2);
    assert_eq!(idx.addresses(), 2);

    // The same slice now labelled for another service: both services are dirty.
    dirty.clear();
    let moved = SliceInfo::from_resource(&slice("ns", "a-2", "b", ("http", 80), &[ready("10.0.0.2")])).unwrap();
    idx.apply(moved, &mut dirty);
    assert!(dirty.contains(&key("ns", "a")) && dirty.contains(&key("ns", "b")));
    assert_eq!(idx.for_service(&key("ns", "a")).count(), 1);
    assert_eq!(idx.for_service(&key("ns", "b")).count(), 1);

    dirty.clear();
    idx.reset(vec![], &mut dirty);
    assert!(idx.is_empty());
    assert_eq!(dirty.len(), 2);
    assert_eq!(idx.for_service(&key("ns", "a")).count(), 0);
}

#[test]
fn route_index_attaches_to_service_parents_only() {
    let mut idx = RouteIndex::default();
    let mut dirty = Dirty::new();
    let gamma = RouteInfo::from_resource(&split("ns", "r", "llm", &[("llm-v1", 80, 90), ("llm-v2", 80, 10)])).unwrap();
    assert_eq!(gamma.parents, [key("ns", "llm")]);
    idx.apply(gamma, &mut dirty);
    assert_eq!(dirty.iter().collect::<Vec<_>>(), [&key("ns", "llm")]);
    assert_eq!(idx.for_parent(&key("ns", "llm")).len(), 1);

    // A Gateway's route, a consumer route in another namespace, and filters.
    let other = RouteInfo::from_resource(&route(
        "ns",
        "g",
        "2026-01-01T00:00:00Z",
        json!({
            "parentRefs": [{"name": "gw"}, {"group": "", "kind": "Service", "name": "x", "namespace": "other"}],
            "rules": [{"filters": [{"type": "RequestHeaderModifier"}], "backendRefs": [{"name": "llm", "port": 80}]}]
        }),
    ))
    .unwrap();
    assert!(other.parents.is_empty());
    assert_eq!(other.notes.len(), 2, "{:?}", other.notes);
    dirty.clear();
    idx.apply(other, &mut dirty);
    assert!(dirty.is_empty());

    // Re-pointing the route moves it: the old and the new parent are dirty.
    let moved = RouteInfo::from_resource(&split("ns", "r", "embed", &[("embed", 80, 1)])).unwrap();
    idx.apply(moved, &mut dirty);
    assert!(dirty.contains(&key("ns", "llm")) && dirty.contains(&key("ns", "embed")));
    assert!(idx.for_parent(&key("ns", "llm")).is_empty());

    dirty.clear();
    idx.delete(&key("ns", "r"), &mut dirty);
    assert!(dirty.contains(&key("ns", "embed")));
    assert_eq!(idx.len(), 1);
}

#[test]
fn routes_are_ordered_oldest_first() {
    let mut idx = RouteIndex::default();
    let mut dirty = Dirty::new();
    let spec = json!({"parentRefs": [{"group": "", "kind": "Service", "name": "llm"}], "rules": []});
    for (name, created) in [("b", "2026-01-02T00:00:00Z"), ("c", "2026-01-01T00:00:00Z"), ("a", "2026-01-02T00:00:00Z")]
    {
        idx.apply(RouteInfo::from_resource(&route("ns", name, created, spec.clone())).unwrap(), &mut dirty);
    }
    let order: Vec<_> = idx.for_parent(&key("ns", "llm")).iter().map(|r| r.key.name.clone()).collect();
    assert_eq!(order, ["c", "a", "b"]);
}

#[test]
fn only_injected_pods_are_kept_and_slices_name_the_pods_behind_their_addresses() {
    assert_eq!(PodInfo::from_resource(&pod("m", "10.0.0.1", Some("llm"), false)), None, "not injected");
    let info = PodInfo::from_resource(&pod("m", "10.0.0.1", Some("llm"), true)).unwrap();
    assert_eq!((info.key.clone(), info.service_account.as_str()), (key("m", "pod-10.0.0.1"), "llm"));
    assert_eq!(PodInfo::from_resource(&pod("m", "10.0.0.2", None, true)).unwrap().service_account, "default");

    let s = SliceInfo::from_resource(&slice("m", "a-1", "a", ("http", 80), &[ready("10.0.0.1"), ready("10.0.0.2")]))
        .unwrap();
    let ip: IpAddr = "10.0.0.1".parse().unwrap();
    assert_eq!(s.pods[&ip], key("m", "pod-10.0.0.1"));

    // A pod change marks the Services whose slices point at it, through the endpoint index.
    let mut endpoints = EndpointIndex::default();
    let mut dirty = Dirty::new();
    endpoints.apply(s, &mut dirty);
    let other = SliceInfo::from_resource(&slice("m", "b-1", "b", ("http", 80), &[ready("10.0.0.1")])).unwrap();
    endpoints.apply(other, &mut dirty);
    let mut services: Vec<_> = endpoints.services_of_pod(&key("m", "pod-10.0.0.1")).cloned().collect();
    services.sort();
    assert_eq!(services, [key("m", "a"), key("m", "b")]);
    endpoints.delete(&key("m", "b-1"), &mut dirty);
    assert_eq!(endpoints.services_of_pod(&key("m", "pod-10.0.0.1")).collect::<Vec<_>>(), [&key("m", "a")]);
    endpoints.delete(&key("m", "a-1"), &mut dirty);
    assert_eq!(endpoints.services_of_pod(&key("m", "pod-10.0.0.2")).count(), 0);

    let mut pods = PodIndex::default();
    dirty.clear();
    pods.apply(info.clone(), &mut dirty);
    pods.apply(info.clone(), &mut dirty);
    assert_eq!(dirty.len(), 1, "an unchanged pod marks nothing the second time");
    dirty.clear();
    pods.reset(vec![], &mut dirty);
    assert_eq!((pods.len(), dirty.len()), (0, 1));
}
