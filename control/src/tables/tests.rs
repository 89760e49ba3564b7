use super::*;
use crate::fixtures::{indexes, pod, ready, route, service, slice, split, visible_to, with_pods};
use serde_json::json;

fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(ns, name)
}

fn settings() -> TableSettings {
    TableSettings::default()
}

fn route_names(t: &ServiceTable) -> Vec<String> {
    t.config.as_ref().unwrap().routes.iter().map(|r| r.name.clone()).collect()
}

#[test]
fn service_without_route_gets_a_default_route_to_itself() {
    let idx = indexes(
        &[service("models", "llm", &[("http", 80, None), ("metrics", 9090, None)])],
        &[
            slice("models", "llm-1", "llm", ("http", 8000), &[ready("10.0.0.2"), ready("10.0.0.1")]),
            // The same endpoint in two slices (during a slice rebalance) counts once.
            slice(
                "models",
                "llm-2",
                "llm",
                ("http", 8000),
                &[ready("10.0.0.1"), ("10.0.0.3", Some(false), None, None)],
            ),
        ],
        &[],
    );
    let t = compute(&idx, &key("models", "llm"), &settings()).unwrap();
    let c = t.config.as_ref().unwrap();
    assert_eq!(c.name, "llm.models.svc.cluster.local");
    let ip = crate::fixtures::cluster_ip("models", "llm");
    assert_eq!(
        c.hosts,
        ["llm.models".to_string(), "llm.models.svc".into(), format!("{ip}:80")],
        "names, and the address a captured app calls"
    );
    assert_eq!(route_names(&t), ["default"]);
    assert_eq!(c.routes[0].backends[0].backend, "llm.models.svc.cluster.local:80");
    assert_eq!(t.backends.len(), 1);
    assert_eq!(t.backends[0].endpoints, ["10.0.0.1:8000", "10.0.0.2:8000"]);
    assert_eq!(t.backends[0].protocol, Protocol::Http1);
    assert_eq!(t.error, None);
    assert_eq!(t.deps.iter().collect::<Vec<_>>(), [&key("models", "llm")]);
    assert!(compute(&idx, &key("models", "nope"), &settings()).is_none());
}

#[test]
fn app_protocol_picks_http2_and_ports_map_by_name() {
    let idx = indexes(
        &[
            service("m", "triton", &[("grpc", 9000, Some("grpc"))]),
            service("m", "vllm", &[("h2c", 8000, Some("kubernetes.io/h2c"))]),
            service("m", "web", &[("", 80, Some("http"))]),
        ],
        &[
            slice("m", "triton-1", "triton", ("grpc", 8001), &[ready("10.0.0.1")]),
            slice("m", "vllm-1", "vllm", ("h2c", 8000), &[ready("fd00::1")]),
            slice("m", "web-1", "web", ("", 8080), &[ready("10.0.0.3")]),
        ],
        &[],
    );
    let b = |svc: &str| compute(&idx, &key("m", svc), &settings()).unwrap().backends[0].clone();
    assert_eq!(b("triton").protocol, Protocol::Http2);
    assert_eq!(b("triton").endpoints, ["10.0.0.1:8001"]);
    assert_eq!(b("vllm").protocol, Protocol::Http2);
    assert_eq!(b("vllm").endpoints, ["[fd00::1]:8000"]);
    assert_eq!(b("web").protocol, Protocol::Http1);
    assert_eq!(b("web").endpoints, ["10.0.0.3:8080"]);
}

#[test]
fn httproute_split_becomes_weighted_backends() {
    let idx = indexes(
        &[
            service("m", "llm", &[("http", 80, None)]),
            service("m", "llm-v1", &[("http", 80, None)]),
            service("m", "llm-v2", &[("http", 80, Some("kubernetes.io/h2c"))]),
        ],
        &[
            slice("m", "v1", "llm-v1", ("http", 8000), &[ready("10.0.1.1")]),
            slice("m", "v2", "llm-v2", ("http", 8000), &[ready("10.0.2.1")]),
        ],
        &[split("m", "canary", "llm", &[("llm-v1", 80, 90), ("llm-v2", 80, 10)])],
    );
    let t = compute(&idx, &key("m", "llm"), &settings()).unwrap();
    assert_eq!(t.error, None);
    assert_eq!(t.routes, [key("m", "canary")]);
    let r = &t.config.as_ref().unwrap().routes[0];
    assert_eq!(r.name, "canary/0");
    assert_eq!(r.matches.path.as_ref().unwrap().prefix.as_deref(), Some("/"));
    let w: Vec<_> = r.backends.iter().map(|b| (b.backend.as_str(), b.weight)).collect();
    assert_eq!(w, [("llm-v1.m.svc.cluster.local:80", 90), ("llm-v2.m.svc.cluster.local:80", 10)]);
    assert_eq!(t.backends.len(), 2);
    assert_eq!(t.backends[1].protocol, Protocol::Http2);
    assert_eq!(t.deps.len(), 3, "itself and both backends' services");
}

#[test]
fn matches_follow_gateway_api_precedence() {
    let spec = json!({
        "parentRefs": [{"group": "", "kind": "Service", "name": "llm"}],
        "rules": [
            {"backendRefs": [{"name": "llm", "port": 80}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}},
                         {"path": {"type": "PathPrefix", "value": "/v1"}, "method": "POST"}],
             "backendRefs": [{"name": "llm", "port": 80}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/v1/chat"},
                          "headers": [{"name": "x-tier", "value": "gold"}]}],
             "backendRefs": [{"name": "llm", "port": 80}]},
            {"matches": [{"path": {"type": "Exact", "value": "/healthz"}}],
             "backendRefs": [{"name": "llm", "port": 80}]}
        ]
    });
    let older = json!({
        "parentRefs": [{"group": "", "kind": "Service", "name": "llm"}],
        "rules": [{"matches": [{"path": {"value": "/v1"}}], "backendRefs": [{"name": "llm", "port": 80}]}]
    });
    let idx = indexes(
        &[service("m", "llm", &[("http", 80, None)])],
        &[],
        &[route("m", "main", "2026-02-01T00:00:00Z", spec), route("m", "old", "2026-01-01T00:00:00Z", older)],
    );
    let t = compute(&idx, &key("m", "llm"), &settings()).unwrap();
    assert_eq!(t.error, None, "{:?}", t.error);
    assert_eq!(route_names(&t), ["main/3", "main/2", "main/1/1", "old/0", "main/1/0", "main/0"]);
    let c = t.config.unwrap();
    assert_eq!(c.routes[1].matches.headers[0].value.as_deref(), Some("gold"));
    assert_eq!(c.routes[2].matches.method.as_deref(), Some("POST"));
}

#[test]
fn an_invalid_route_falls_back_to_the_default_route_with_a_reason() {
    let cases = [
        (
            json!({"parentRefs": [{"group": "", "kind": "Service", "name": "llm"}],
                   "rules": [{"backendRefs": [{"name": "llm", "port": 80, "weight": 0}]}]}),
            "HTTPRoute m/bad rules[0] (route \"bad/0\") backends: all backend weights are 0",
        ),
        (
            json!({"parentRefs": [{"group": "", "kind": "Service", "name": "llm"}],
                   "rules": [{"matches": [{"path": {"type": "RegularExpression", "value": "/v[0-9]+"}}],
                              "backendRefs": [{"name": "llm", "port": 80}]}]}),
            "HTTPRoute m/bad: rules[0].matches[0].path.type: RegularExpression is not supported",
        ),
        (
            json!({"parentRefs": [{"group": "", "kind": "Service", "name": "llm"}],
                   "rules": [{"backendRefs": [{"name": "llm"}]}]}),
            "rules[0].backendRefs[0].port: a Service backend needs a port",
        ),
        (
            json!({"parentRefs": [{"group": "", "kind": "Service", "name": "llm"}],
                   "rules": [{"backendRefs": [{"name": "llm", "port": 80, "namespace": "other"}]}]}),
            "needs a ReferenceGrant",
        ),
        (
            json!({"parentRefs": [{"group": "", "kind": "Service", "name": "llm"}],
                   "rules": [{"backendRefs": [{"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "p"}]}]}),
            "only Service backends are supported, not inference.networking.k8s.io/InferencePool",
        ),
        (
            json!({"parentRefs": [{"group": "", "kind": "Service", "name": "llm"}],
                   "rules": [{"matches": [{"path": {"type": "Exact", "value": "v1"}}],
                              "backendRefs": [{"name": "llm", "port": 80}]}]}),
            "match.path: a path must start with `/`",
        ),
        (
            json!({"parentRefs": [{"group": "", "kind": "Service", "name": "llm"}],
                   "rules": [{"matches": [{"queryParams": [{"name": "a", "value": "b"}]}],
                              "backendRefs": [{"name": "llm", "port": 80}]}]}),
            "query parameter matches are not supported",
        ),
        (
            json!({"parentRefs": [{"group": "", "kind": "Service", "name": "llm"}], "rules": [{}]}),
            "a route needs at least one backend",
        ),
    ];
    for (spec, want) in cases {
        let idx = indexes(
            &[service("m", "llm", &[("http", 80, None)])],
            &[slice("m", "llm-1", "llm", ("http", 8000), &[ready("10.0.0.1")])],
            &[route("m", "bad", "2026-01-01T00:00:00Z", spec)],
        );
        let t = compute(&idx, &key("m", "llm"), &settings()).unwrap();
        let err = t.error.clone().unwrap_or_default();
        assert!(err.contains(want), "want {want:?} in {err:?}");
        assert_eq!(route_names(&t), ["default"], "{want}");
        assert_eq!(t.backends[0].endpoints, ["10.0.0.1:8000"]);
        assert!(t.routes.is_empty());
    }
}

#[test]
fn backends_of_missing_services_are_empty_but_valid() {
    let idx = indexes(
        &[service("m", "llm", &[("http", 80, None)])],
        &[],
        &[split("m", "r", "llm", &[("llm", 80, 1), ("ghost", 80, 1)])],
    );
    let t = compute(&idx, &key("m", "llm"), &settings()).unwrap();
    assert_eq!(t.error, None);
    assert_eq!(t.backends.len(), 2);
    assert!(t.backends.iter().all(|b| b.endpoints.is_empty()));
    assert!(t.deps.contains(&key("m", "ghost")));
}

#[test]
fn notes_are_carried_and_cluster_domain_applies() {
    let spec = json!({"parentRefs": [{"group": "", "kind": "Service", "name": "llm", "port": 80}],
                      "rules": [{"filters": [{"type": "URLRewrite"}], "timeouts": {"request": "10s"},
                                 "backendRefs": [{"name": "llm", "port": 80}]}]});
    let idx =
        indexes(&[service("m", "llm", &[("http", 80, None)])], &[], &[route("m", "r", "2026-01-01T00:00:00Z", spec)]);
    let s = TableSettings { cluster_domain: "corp.example".into(), ..TableSettings::default() };
    let t = compute(&idx, &key("m", "llm"), &s).unwrap();
    assert_eq!(t.config.as_ref().unwrap().name, "llm.m.svc.corp.example");
    assert_eq!(t.notes.len(), 3, "{:?}", t.notes);
    assert!(t.notes[0].starts_with("HTTPRoute m/r: "));
}

#[test]
fn a_service_without_ports_or_routes_has_no_table() {
    let idx = indexes(&[service("m", "headless", &[])], &[], &[]);
    let t = compute(&idx, &key("m", "headless"), &settings()).unwrap();
    assert!(t.config.is_none());
    assert!(t.backends.is_empty());
}

#[test]
fn endpoints_of_injected_pods_carry_their_service_accounts_identity() {
    let idx = |pods: &[k8s_openapi::api::core::v1::Pod]| {
        with_pods(
            indexes(
                &[service("models", "llm", &[("http", 80, None)])],
                &[
                    slice("models", "llm-1", "llm", ("http", 8000), &[ready("10.0.0.1"), ready("10.0.0.2")]),
                    // The same endpoint in a second slice (a rebalance) keeps its identity.
                    slice("models", "llm-2", "llm", ("http", 8000), &[ready("10.0.0.2")]),
                ],
                &[],
            ),
            pods,
        )
    };
    let meshed = TableSettings { trust_domain: Some("cluster.local".into()), ..TableSettings::default() };
    let off = settings();
    let llm = "spiffe://cluster.local/ns/models/sa/llm";
    let one = |ip: &str, id: &str| BTreeMap::from([(format!("{ip}:8000"), id.to_string())]);
    let both_llm = [pod("models", "10.0.0.1", Some("llm"), true), pod("models", "10.0.0.2", Some("llm"), true)];
    type Case<'a> =
        (&'a str, Vec<k8s_openapi::api::core::v1::Pod>, &'a TableSettings, Option<&'a str>, BTreeMap<String, String>);
    let cases: Vec<Case<'_>> = vec![
        ("identity off", both_llm.to_vec(), &off, None, BTreeMap::new()),
        ("one identity for all", both_llm.to_vec(), &meshed, Some(llm), BTreeMap::new()),
        ("no pods known", vec![], &meshed, None, BTreeMap::new()),
        (
            "one injected, one not",
            vec![pod("models", "10.0.0.1", Some("llm"), true), pod("models", "10.0.0.2", Some("llm"), false)],
            &meshed,
            None,
            one("10.0.0.1", llm),
        ),
        (
            "the default service account",
            vec![pod("models", "10.0.0.1", None, true)],
            &meshed,
            None,
            one("10.0.0.1", "spiffe://cluster.local/ns/models/sa/default"),
        ),
        (
            "two service accounts",
            vec![pod("models", "10.0.0.1", Some("llm"), true), pod("models", "10.0.0.2", Some("canary"), true)],
            &meshed,
            None,
            BTreeMap::from([
                ("10.0.0.1:8000".to_string(), llm.to_string()),
                ("10.0.0.2:8000".to_string(), "spiffe://cluster.local/ns/models/sa/canary".to_string()),
            ]),
        ),
    ];
    for (what, pods, s, identity, identities) in cases {
        let t = compute(&idx(&pods), &key("models", "llm"), s).unwrap();
        let b = &t.backends[0];
        assert_eq!(t.error, None, "{what}");
        assert_eq!(b.endpoints, ["10.0.0.1:8000", "10.0.0.2:8000"], "{what}");
        assert_eq!((b.identity.as_deref(), &b.identities), (identity, &identities), "{what}");
    }
}

#[test]
fn the_visible_to_annotation_is_carried_to_the_table() {
    let idx = indexes(
        &[visible_to(service("m", "a", &[("http", 80, None)]), "x, y"), service("m", "b", &[("http", 80, None)])],
        &[],
        &[],
    );
    let a = compute(&idx, &key("m", "a"), &settings()).unwrap();
    assert_eq!(a.visible_to, Some(["x".to_string(), "y".to_string()].into()));
    assert_eq!(compute(&idx, &key("m", "b"), &settings()).unwrap().visible_to, None);
}
