//! The injection patch on real pod specs (`tests/fixtures/inject/`): each case is patched with
//! `inject::patch`, the patch applied with the `json-patch` crate as the API server would, and
//! the resulting pod checked, then validated against the Kubernetes schemas (1.29, the first
//! with native sidecars on by default, and the newest the tool knows).

mod validate;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use vane_control::inject::{self, Decision, InjectSettings};

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inject").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

const OPTED_IN: &[(&str, &str)] = &[("vane.io/inject", "enabled"), ("kubernetes.io/metadata.name", "x")];

/// Patches `pod` and applies the patch; `Err(reason)` when skipped.
fn inject(pod: &Value, ns: &[(&str, &str)]) -> Result<Value, &'static str> {
    inject_with(pod, ns, &InjectSettings::default())
}

/// The same with these settings.
fn inject_with(pod: &Value, ns: &[(&str, &str)], settings: &InjectSettings) -> Result<Value, &'static str> {
    let typed: Pod = serde_json::from_value(pod.clone()).unwrap();
    match inject::patch(&typed, settings, &labels(ns)) {
        Decision::Skip(s) => Err(s.reason()),
        Decision::Patch(p) => {
            let mut out = pod.clone();
            json_patch::patch(&mut out, &p).unwrap_or_else(|e| panic!("the patch does not apply: {e}\n{p:?}"));
            Ok(out)
        }
    }
}

fn pod(v: &Value) -> Pod {
    serde_json::from_value(v.clone()).unwrap()
}

fn init_names(p: &Pod) -> Vec<String> {
    p.spec.as_ref().unwrap().init_containers.iter().flatten().map(|c| c.name.clone()).collect()
}

fn container<'a>(p: &'a Pod, name: &str) -> &'a Container {
    p.spec.as_ref().unwrap().init_containers.iter().flatten().find(|c| c.name == name).unwrap()
}

fn env(c: &Container, name: &str) -> Option<String> {
    c.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.clone())
}

fn quantity(c: &Container, kind: &str, res: &str) -> String {
    let r = c.resources.as_ref().unwrap();
    let m = if kind == "requests" { &r.requests } else { &r.limits };
    m.as_ref().unwrap()[res].0.clone()
}

/// What every injected pod has, whatever it started as.
fn common(before: &Value, after: &Value) {
    let (b, a) = (pod(before), pod(after));
    assert_eq!(b.spec.as_ref().unwrap().containers, a.spec.as_ref().unwrap().containers, "app containers changed");
    let ann = a.metadata.annotations.as_ref().unwrap();
    assert_eq!(ann["vane.io/injected"], env!("CARGO_PKG_VERSION"));
    for (k, v) in b.metadata.annotations.iter().flatten() {
        assert_eq!(&ann[k], v, "annotation {k} lost");
    }
    let names = init_names(&a);
    assert_eq!(names[..2], ["vane-init", "vane-proxy"], "capture, then the proxy, go first");
    let before_inits: Vec<_> = init_names(&b);
    assert_eq!(
        names[names.len() - before_inits.len()..],
        before_inits[..],
        "the pod's own init containers stay, in order"
    );

    let init = container(&a, "vane-init");
    let sc = init.security_context.as_ref().unwrap();
    assert_eq!((sc.run_as_user, sc.run_as_non_root, sc.privileged), (Some(0), Some(false), Some(false)));
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.add.as_deref(), Some(&["NET_ADMIN".to_string(), "NET_RAW".to_string()][..]));
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(init.restart_policy, None, "the capture step runs once");
    assert_eq!(init.args.as_ref().unwrap()[0], "init");

    let proxy = container(&a, "vane-proxy");
    assert_eq!(proxy.restart_policy.as_deref(), Some("Always"), "a native sidecar");
    for c in
        [Some(proxy), a.spec.as_ref().unwrap().init_containers.iter().flatten().find(|c| c.name == "vane-gpu-probe")]
            .into_iter()
            .flatten()
    {
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true), "{}", c.name);
        assert!(sc.run_as_user.is_some_and(|u| u > 0));
        assert_eq!((sc.read_only_root_filesystem, sc.allow_privilege_escalation), (Some(true), Some(false)));
        assert_eq!(sc.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_string()][..]));
    }
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        let g = p.as_ref().unwrap().http_get.as_ref().unwrap();
        (g.path.clone().unwrap(), g.port.clone())
    };
    let admin = k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(4191);
    assert_eq!(probe_path(&proxy.startup_probe), ("/ready".to_string(), admin.clone()));
    assert_eq!(probe_path(&proxy.readiness_probe), ("/ready".to_string(), admin.clone()));
    assert_eq!(probe_path(&proxy.liveness_probe), ("/live".to_string(), admin));
    assert_eq!(env(proxy, "VANE_ADMIN").as_deref(), Some("0.0.0.0:4191"), "kubelet probes it on the pod IP");
    let mount = &proxy.volume_mounts.as_ref().unwrap()[0];
    assert_eq!((mount.name.as_str(), mount.read_only), ("vane-identity-token", Some(true)));

    let volume = a.spec.as_ref().unwrap().volumes.iter().flatten().find(|v| v.name == "vane-identity-token").unwrap();
    let sources = volume.projected.as_ref().unwrap().sources.as_ref().unwrap();
    let token = sources[0].service_account_token.as_ref().unwrap();
    assert_eq!(token.audience.as_deref(), Some("vane-identity"));
    let before_volumes = b.spec.as_ref().unwrap().volumes.iter().flatten().count();
    assert_eq!(a.spec.as_ref().unwrap().volumes.as_ref().unwrap().len(), before_volumes + 1);
}

/// Fills in the name the API server would give a `generateName` pod, for the validator.
fn named(mut v: Value) -> Value {
    if v["metadata"]["name"].is_null() {
        let g = v["metadata"]["generateName"].as_str().unwrap_or("pod-").to_string();
        v["metadata"]["name"] = Value::String(format!("{g}x7k2q"));
    }
    v
}

#[test]
fn patches_real_pods_and_each_result_passes_the_kubernetes_schema() {
    let dir = std::env::temp_dir().join(format!("vane-inject-fixtures-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut patched = Vec::new();
    let mut keep = |name: &str, v: &Value| {
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&named(v.clone())).unwrap()).unwrap();
        patched.push(path);
    };

    // A vLLM Deployment's pod with a GPU, opted in by annotation.
    let before = fixture("vllm-gpu.yaml");
    let after = inject(&before, &[]).expect("vllm");
    common(&before, &after);
    let p = pod(&after);
    assert_eq!(init_names(&p), ["vane-init", "vane-proxy", "vane-gpu-probe"], "GPU pods get the probe");
    let probe = container(&p, "vane-gpu-probe");
    assert_eq!(probe.restart_policy.as_deref(), Some("Always"));
    assert_eq!(env(probe, "VANE_PROBE_SERVER").as_deref(), Some("vllm"), "recognised from the image");
    assert_eq!(env(probe, "VANE_PROBE_METRICS_URL").as_deref(), Some("http://127.0.0.1:8000/metrics"));
    assert!(probe.readiness_probe.is_none() && probe.startup_probe.is_none(), "must not wait for the model");
    let proxy = container(&p, "vane-proxy");
    assert_eq!(env(proxy, "VANE_INBOUND_FORWARD_TO").as_deref(), Some("127.0.0.1:8000"));
    assert_eq!(env(proxy, "VANE_LOAD_FROM").as_deref(), Some("http://127.0.0.1:4192/load"));
    assert_eq!(
        (quantity(proxy, "requests", "cpu"), quantity(proxy, "limits", "memory")),
        ("100m".into(), "256Mi".into())
    );
    let args = container(&p, "vane-init").args.clone().unwrap().join(" ");
    assert!(args.contains("--skip-inbound-ports 4191,4192"), "{args}");
    assert!(!args.contains("--skip-outbound-ports"), "{args}");
    assert_eq!(inject(&after, &[]), Err("already-injected"), "injecting twice changes nothing");
    keep("vllm-gpu", &after);

    // A KServe predictor: its storage-initializer runs after the proxy; S3 on 443 is not captured.
    let before = fixture("kserve-predictor.yaml");
    let after = inject(&before, &[]).expect("kserve");
    common(&before, &after);
    let p = pod(&after);
    assert_eq!(init_names(&p), ["vane-init", "vane-proxy", "vane-gpu-probe", "storage-initializer"]);
    let args = container(&p, "vane-init").args.clone().unwrap().join(" ");
    assert!(args.ends_with("--skip-outbound-ports 443"), "{args}");
    assert_eq!(env(container(&p, "vane-proxy"), "VANE_INBOUND_FORWARD_TO").as_deref(), Some("127.0.0.1:8080"));
    assert_eq!(
        env(container(&p, "vane-gpu-probe"), "VANE_PROBE_METRICS_URL").as_deref(),
        Some("http://127.0.0.1:8080/metrics")
    );
    keep("kserve-predictor", &after);

    // Triton over gRPC in an opted-in namespace, tuned by annotations, probe asked for without a GPU.
    let before = fixture("triton-grpc.yaml");
    assert_eq!(inject(&before, &[]), Err("not-enabled"), "the namespace is what opts it in");
    let after = inject(&before, OPTED_IN).expect("triton");
    common(&before, &after);
    let p = pod(&after);
    let proxy = container(&p, "vane-proxy");
    assert_eq!(env(proxy, "VANE_INBOUND_FORWARD_TO").as_deref(), Some("127.0.0.1:8001"));
    assert_eq!(env(proxy, "VANE_LOG").as_deref(), Some("vane_proxy=debug,info"));
    assert_eq!(quantity(proxy, "requests", "cpu"), "500m");
    assert_eq!(
        (quantity(proxy, "requests", "memory"), quantity(proxy, "limits", "memory")),
        ("256Mi".into(), "256Mi".into())
    );
    let probe = container(&p, "vane-gpu-probe");
    assert_eq!(env(probe, "VANE_PROBE_SERVER").as_deref(), Some("triton"));
    assert_eq!(env(probe, "VANE_PROBE_METRICS_URL").as_deref(), Some("http://127.0.0.1:8002/metrics"));
    let args = container(&p, "vane-init").args.clone().unwrap().join(" ");
    assert!(args.contains("--skip-inbound-ports 4191,4192,8000"), "{args}");
    keep("triton-grpc", &after);

    // A pod with its own init container, native sidecar and classic sidecar: all kept, after ours.
    let before = fixture("own-init-and-sidecars.yaml");
    let after = inject(&before, OPTED_IN).expect("own sidecars");
    common(&before, &after);
    let p = pod(&after);
    assert_eq!(init_names(&p), ["vane-init", "vane-proxy", "warm-cache", "log-shipper"], "no GPU: no probe");
    assert_eq!(container(&p, "log-shipper").restart_policy.as_deref(), Some("Always"));
    assert_eq!(env(container(&p, "vane-proxy"), "VANE_LOAD_FROM"), None);
    keep("own-init-and-sidecars", &after);

    // Namespace opt-in of a pod with no annotations, init containers or volumes at all.
    let before = fixture("plain-client.yaml");
    assert_eq!(inject(&before, &[]), Err("not-enabled"));
    assert_eq!(inject(&before, &[("vane.io/inject", "disabled")]), Err("not-enabled"));
    let after = inject(&before, OPTED_IN).expect("plain");
    common(&before, &after);
    assert_eq!(init_names(&pod(&after)), ["vane-init", "vane-proxy"]);
    assert_eq!(pod(&after).metadata.annotations.unwrap().len(), 1);
    keep("plain-client", &after);

    // Given the control service's address, the proxy also gets the trust roots (an optional
    // ConfigMap volume) and the trust domain; on a pod with volumes of its own and without.
    let with_control = InjectSettings {
        control: Some("vane-control.vane-system.svc:8086".into()),
        trust_domain: "prod.example".into(),
        ..Default::default()
    };
    for name in ["vllm-gpu", "plain-client"] {
        let before = fixture(&format!("{name}.yaml"));
        let after = inject_with(&before, OPTED_IN, &with_control).expect(name);
        let p = pod(&after);
        let proxy = container(&p, "vane-proxy");
        assert_eq!(env(proxy, "VANE_CONTROL").as_deref(), Some("vane-control.vane-system.svc:8086"));
        assert_eq!(env(proxy, "VANE_IDENTITY_ROOTS").as_deref(), Some("/var/run/vane/roots/ca.crt"));
        assert_eq!(env(proxy, "VANE_IDENTITY_TRUST_DOMAIN").as_deref(), Some("prod.example"));
        assert_eq!(env(proxy, "VANE_IDENTITY_TOKEN").as_deref(), Some("/var/run/secrets/vane.io/identity/token"));
        let mounts: Vec<(&str, &str, Option<bool>)> = proxy
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
            .collect();
        assert_eq!(
            mounts,
            [
                ("vane-identity-token", "/var/run/secrets/vane.io/identity", Some(true)),
                ("vane-identity-trust-roots", "/var/run/vane/roots", Some(true)),
            ]
        );
        let volumes = p.spec.as_ref().unwrap().volumes.clone().unwrap();
        let roots = volumes.iter().find(|v| v.name == "vane-identity-trust-roots").unwrap();
        let cm = roots.config_map.as_ref().unwrap();
        assert_eq!((cm.name.as_str(), cm.optional), ("vane-identity-trust-roots", Some(true)), "pods start without it");
        let before_volumes = pod(&before).spec.unwrap().volumes.map_or(0, |v| v.len());
        assert_eq!(volumes.len(), before_volumes + 2);
        keep(&format!("{name}-with-control"), &after);
    }
    let mut clash = fixture("plain-client.yaml");
    clash["spec"]["volumes"] = serde_json::json!([{"name": "vane-identity-trust-roots", "emptyDir": {}}]);
    assert_eq!(inject_with(&clash, OPTED_IN, &with_control), Err("name-conflict"));

    // Opted out in an opted-in namespace, and already injected.
    assert_eq!(inject(&fixture("opted-out.yaml"), OPTED_IN), Err("disabled"));
    assert_eq!(inject(&fixture("already-injected.yaml"), OPTED_IN), Err("already-injected"));

    // The inputs are valid pods too, so a failure below is the patch's.
    let originals: Vec<PathBuf> =
        ["vllm-gpu", "kserve-predictor", "triton-grpc", "own-init-and-sidecars", "plain-client"]
            .iter()
            .map(|n| {
                let path = dir.join(format!("{n}.orig.json"));
                std::fs::write(&path, serde_json::to_vec(&named(fixture(&format!("{n}.yaml")))).unwrap()).unwrap();
                path
            })
            .collect();
    validate::strict(&originals, &["1.29"]);
    validate::strict(&patched, &["1.29", ""]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn host_network_pods_and_bad_annotations_are_left_alone() {
    let mut host = fixture("plain-client.yaml");
    host["spec"]["hostNetwork"] = Value::Bool(true);
    assert_eq!(inject(&host, OPTED_IN), Err("host-network"));
    let mut bad = fixture("plain-client.yaml");
    bad["metadata"]["annotations"] = serde_json::json!({"vane.io/proxy-memory": "a lot"});
    assert_eq!(inject(&bad, OPTED_IN), Err("invalid-annotation"));
    let mut clash = fixture("plain-client.yaml");
    clash["spec"]["initContainers"] = serde_json::json!([{"name": "vane-init", "image": "x"}]);
    assert_eq!(inject(&clash, OPTED_IN), Err("name-conflict"));
}
