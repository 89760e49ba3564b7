//! The collections the fake API server serves, and objects in the shapes the API server serves
//! them.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

/// A response body of the fake.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A watched collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Res {
    Services,
    EndpointSlices,
    HttpRoutes,
    Pods,
    Namespaces,
    AuthorizationPolicies,
}

/// Where token reviews are posted.
pub const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

impl Res {
    /// What the control service watches without the identity service.
    pub const ALL: [Res; 3] = [Res::Services, Res::EndpointSlices, Res::HttpRoutes];
    /// Every collection served.
    pub const SERVED: [Res; 6] =
        [Res::Services, Res::EndpointSlices, Res::HttpRoutes, Res::Pods, Res::Namespaces, Res::AuthorizationPolicies];

    pub fn path(self) -> &'static str {
        match self {
            Res::Pods => "/api/v1/pods",
            Res::Namespaces => "/api/v1/namespaces",
            Res::Services => "/api/v1/services",
            Res::EndpointSlices => "/apis/discovery.k8s.io/v1/endpointslices",
            Res::HttpRoutes => "/apis/gateway.networking.k8s.io/v1/httproutes",
            Res::AuthorizationPolicies => "/apis/policy.vane.io/v1alpha1/authorizationpolicies",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Res::Services => "Service",
            Res::EndpointSlices => "EndpointSlice",
            Res::HttpRoutes => "HTTPRoute",
            Res::Pods => "Pod",
            Res::Namespaces => "Namespace",
            Res::AuthorizationPolicies => "AuthorizationPolicy",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Res::Services | Res::Pods | Res::Namespaces => "v1",
            Res::EndpointSlices => "discovery.k8s.io/v1",
            Res::HttpRoutes => "gateway.networking.k8s.io/v1",
            Res::AuthorizationPolicies => "policy.vane.io/v1alpha1",
        }
    }

    pub fn from_kind(kind: &str) -> Res {
        match kind {
            "Service" => Res::Services,
            "EndpointSlice" => Res::EndpointSlices,
            "HTTPRoute" => Res::HttpRoutes,
            "Pod" => Res::Pods,
            "Namespace" => Res::Namespaces,
            "AuthorizationPolicy" => Res::AuthorizationPolicies,
            other => panic!("the fake API server does not serve {other}"),
        }
    }

    /// Whether objects of the collection live in a namespace (Namespaces do not).
    pub fn namespaced(self) -> bool {
        self != Res::Namespaces
    }
}

/// A Namespace with these annotations.
pub fn namespace(name: &str, annotations: &[(&str, &str)]) -> Value {
    let annotations: serde_json::Map<String, Value> =
        annotations.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "annotations": annotations}})
}

/// A Vane `AuthorizationPolicy` with this spec.
pub fn authorization_policy(ns: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "policy.vane.io/v1alpha1",
        "kind": "AuthorizationPolicy",
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    })
}

/// A Service with one TCP port named `http` (or `appProtocol` set).
/// A cluster IP of its own for each Service, as the API server allocates them.
pub fn cluster_ip(ns: &str, name: &str) -> String {
    let h = format!("{ns}/{name}").bytes().fold(2166136261u32, |h, b| (h ^ u32::from(b)).wrapping_mul(16777619));
    format!("10.96.{}.{}", (h >> 8) & 0xff, (h & 0xfe) | 1)
}

pub fn service(ns: &str, name: &str, port: u16, app_protocol: Option<&str>) -> Value {
    let mut p = json!({"name": "http", "port": port, "protocol": "TCP", "targetPort": 8000});
    if let Some(ap) = app_protocol {
        p["appProtocol"] = json!(ap);
    }
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
           "spec": {"type": "ClusterIP", "clusterIP": cluster_ip(ns, name), "clusterIPs": [cluster_ip(ns, name)],
                    "ports": [p], "selector": {"app": name}, "sessionAffinity": "None",
                    "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"},
           "status": {"loadBalancer": {}}})
}

/// An EndpointSlice for `svc` with port `http` on `port` and `(ip, ready)` endpoints.
pub fn endpoint_slice(ns: &str, name: &str, svc: &str, port: u16, endpoints: &[(&str, bool)]) -> Value {
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|(ip, ready)| {
            json!({"addresses": [ip],
                   "conditions": {"ready": ready, "serving": ready, "terminating": false},
                   "nodeName": "node-1",
                   "targetRef": {"kind": "Pod", "namespace": ns, "name": format!("{svc}-{}", ip.replace('.', "-")), "uid": "p"}})
        })
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": name, "namespace": ns,
                        "labels": {"kubernetes.io/service-name": svc,
                                   "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                        "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": svc, "uid": "s",
                                             "controller": true, "blockOwnerDeletion": true}]},
           "addressType": "IPv4",
           "endpoints": eps,
           "ports": [{"name": "http", "port": port, "protocol": "TCP"}]})
}

/// The Pod behind endpoint `ip` of `svc`'s [`endpoint_slice`], running as `service_account`
/// (unset: the default one), injected by Vane or not.
pub fn pod(ns: &str, svc: &str, ip: &str, service_account: Option<&str>, injected: bool) -> Value {
    let mut meta = json!({"name": format!("{svc}-{}", ip.replace('.', "-")), "namespace": ns, "labels": {"app": svc}});
    if injected {
        meta["annotations"] = json!({"vane.io/injected": "0.1.0"});
    }
    let mut spec = json!({"containers": [{"name": "app", "image": "vllm/vllm-openai:v0.9.0"}], "nodeName": "node-1"});
    if let Some(sa) = service_account {
        spec["serviceAccountName"] = json!(sa);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
           "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

/// A GAMMA HTTPRoute on Service `parent` splitting between `(service, port, weight)` backends.
pub fn split_route(ns: &str, name: &str, parent: &str, backends: &[(&str, u16, i64)]) -> Value {
    let refs: Vec<Value> = backends
        .iter()
        .map(|(s, p, w)| json!({"group": "", "kind": "Service", "name": s, "port": p, "weight": w}))
        .collect();
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": parent}],
                    "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                               "backendRefs": refs}]}})
}

// === answers ===

pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

pub fn event_line(type_: &str, object: Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": type_, "object": object})).unwrap();
    v.push(b'\n');
    Bytes::from(v)
}

pub fn plain(code: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())).map_err(|e| match e {}).boxed());
    *resp.status_mut() = code;
    resp.headers_mut().insert("content-type", "text/plain; charset=utf-8".parse().unwrap());
    resp
}

pub fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    let mut resp =
        Response::new(Full::new(Bytes::from(serde_json::to_vec(v).unwrap())).map_err(|e| match e {}).boxed());
    *resp.status_mut() = code;
    resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
    resp
}
