//! [`patch`]: the pure function from a pod, the settings and its namespace's labels to the
//! JSON Patch (RFC 6902) that injects Vane, or the reason to leave the pod alone.

use super::containers::{self, INIT_NAME, PROBE_NAME, PROXY_NAME, Plan, ROOTS_VOLUME, TOKEN_VOLUME};
use super::overrides::{self, INJECTED, InvalidAnnotation, Overrides, Toggle};
use super::settings::InjectSettings;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use std::collections::BTreeMap;

/// What to do with a pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Leave it as it is.
    Skip(Skip),
    /// Apply this patch.
    Patch(Patch),
}

/// Why a pod is left as it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    /// Neither the pod nor its namespace opted in.
    #[error("neither the pod nor its namespace has vane.io/inject: enabled")]
    NotEnabled,
    /// The pod opted out.
    #[error("the pod has vane.io/inject: disabled")]
    Disabled,
    /// The pod already has the proxy (or says it was injected).
    #[error("the pod already has {PROXY_NAME}")]
    AlreadyInjected,
    /// The pod shares the node's network: capture would redirect the node's traffic.
    #[error("the pod uses the host network")]
    HostNetwork,
    /// The pod already has a container or volume by the name the injector would add.
    #[error("the pod already has a container or volume named {0}")]
    NameConflict(&'static str),
    /// An annotation cannot be used.
    #[error(transparent)]
    InvalidAnnotation(#[from] InvalidAnnotation),
    /// The object has no pod spec.
    #[error("the object has no pod spec")]
    NoSpec,
    /// An added object could not be turned into JSON (not expected).
    #[error("cannot serialise the patch: {0}")]
    Serialize(String),
}

// === impl Skip ===

impl Skip {
    /// The `reason` label of `vane_injector_skipped_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Skip::NotEnabled => "not-enabled",
            Skip::Disabled => "disabled",
            Skip::AlreadyInjected => "already-injected",
            Skip::HostNetwork => "host-network",
            Skip::NameConflict(_) => "name-conflict",
            Skip::InvalidAnnotation(_) => "invalid-annotation",
            Skip::NoSpec => "no-spec",
            Skip::Serialize(_) => "internal",
        }
    }
}

/// Decides about `pod` and builds its patch.
///
/// Opt-in: the pod's annotation `vane.io/inject` (`enabled`/`disabled`) wins; without it, the
/// namespace's label `vane.io/inject: enabled`. The patch puts, at the front of the init
/// containers (so that the capture is installed and the proxy is up before any of the pod's own
/// init containers and its app start): `vane-init` (capture), `vane-proxy` (native sidecar),
/// and `vane-gpu-probe` (native sidecar) when the pod asks for a GPU or for the probe; then the
/// identity token volume (and, with the control address, the optional trust roots ConfigMap)
/// and the `vane.io/injected` annotation. Arrays and maps the pod lacks
/// are added whole; into existing ones the patch inserts by index (init containers) or appends
/// with `/-` (volumes). Annotation keys are escaped as RFC 6901 requires (`/` → `~1`).
pub fn patch(pod: &Pod, settings: &InjectSettings, namespace_labels: &BTreeMap<String, String>) -> Decision {
    match build(pod, settings, namespace_labels) {
        Ok(p) => Decision::Patch(p),
        Err(skip) => Decision::Skip(skip),
    }
}

fn build(pod: &Pod, s: &InjectSettings, namespace_labels: &BTreeMap<String, String>) -> Result<Patch, Skip> {
    let empty = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    match overrides::inject_toggle(annotations)? {
        Some(Toggle::Disabled) => return Err(Skip::Disabled),
        Some(Toggle::Enabled) => {}
        // A namespace label that is neither value does not opt in.
        None => match overrides::inject_toggle(namespace_labels) {
            Ok(Some(Toggle::Enabled)) => {}
            _ => return Err(Skip::NotEnabled),
        },
    }
    let spec = pod.spec.as_ref().ok_or(Skip::NoSpec)?;
    let names: Vec<&str> =
        spec.init_containers.iter().flatten().chain(&spec.containers).map(|c| c.name.as_str()).collect();
    if names.contains(&PROXY_NAME) || annotations.contains_key(INJECTED) {
        return Err(Skip::AlreadyInjected);
    }
    if spec.host_network == Some(true) {
        return Err(Skip::HostNetwork);
    }
    if let Some(name) = [INIT_NAME, PROBE_NAME].into_iter().find(|n| names.contains(n)) {
        return Err(Skip::NameConflict(name));
    }
    if let Some(name) =
        [TOKEN_VOLUME, ROOTS_VOLUME].into_iter().find(|n| spec.volumes.iter().flatten().any(|v| v.name == *n))
    {
        return Err(Skip::NameConflict(name));
    }

    let o = Overrides::parse(annotations)?;
    let plan = Plan::of(spec, &o);
    let mut added = vec![json(&containers::init(s, &o, &plan))?, json(&containers::proxy(s, &o, &plan))?];
    if plan.probe {
        added.push(json(&containers::probe(s, &o, &plan))?);
    }

    let mut ops = Vec::new();
    match &spec.init_containers {
        None => ops.push(add(&["spec", "initContainers"], Value::Array(added))),
        Some(_) => {
            for (i, c) in added.into_iter().enumerate() {
                ops.push(add(&["spec", "initContainers", &i.to_string()], c));
            }
        }
    }
    let mut volumes = vec![json(&containers::token_volume(s))?];
    if s.control.is_some() {
        volumes.push(json(&containers::roots_volume())?);
    }
    match &spec.volumes {
        None => ops.push(add(&["spec", "volumes"], Value::Array(volumes))),
        Some(_) => {
            for v in volumes {
                ops.push(add(&["spec", "volumes", "-"], v));
            }
        }
    }
    let version = Value::String(s.version.clone());
    match &pod.metadata.annotations {
        None => ops.push(add(&["metadata", "annotations"], serde_json::json!({ INJECTED: version }))),
        Some(_) => ops.push(add(&["metadata", "annotations", INJECTED], version)),
    }
    Ok(Patch(ops))
}

/// An `add` at the path made of these (unescaped) tokens; `from_tokens` escapes `~` and `/`.
fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path: PointerBuf::from_tokens(tokens.iter().copied()), value })
}

fn json<T: serde::Serialize>(v: &T) -> Result<Value, Skip> {
    serde_json::to_value(v).map_err(|e| Skip::Serialize(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    fn enabled() -> BTreeMap<String, String> {
        [("vane.io/inject".to_string(), "enabled".to_string())].into()
    }

    fn paths(d: &Decision) -> Vec<String> {
        match d {
            Decision::Patch(p) => serde_json::to_value(p)
                .unwrap()
                .as_array()
                .unwrap()
                .iter()
                .map(|op| op["path"].as_str().unwrap().to_string())
                .collect(),
            Decision::Skip(s) => panic!("skipped: {s}"),
        }
    }

    #[test]
    fn a_bare_pod_gets_whole_arrays_and_an_annotation_map() {
        let p = pod(serde_json::json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "app"}]}}));
        let d = patch(&p, &InjectSettings::default(), &enabled());
        assert_eq!(paths(&d), ["/spec/initContainers", "/spec/volumes", "/metadata/annotations"]);
    }

    #[test]
    fn existing_arrays_are_inserted_into_and_keys_escaped() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "a", "annotations": {"x": "y"}},
            "spec": {"containers": [{"name": "app"}], "initContainers": [{"name": "setup"}], "volumes": [{"name": "v", "emptyDir": {}}]}
        }));
        let d = patch(&p, &InjectSettings::default(), &enabled());
        assert_eq!(
            paths(&d),
            [
                "/spec/initContainers/0",
                "/spec/initContainers/1",
                "/spec/volumes/-",
                "/metadata/annotations/vane.io~1injected"
            ]
        );
    }

    #[test]
    fn with_the_control_address_the_trust_roots_volume_is_added_too() {
        let s = InjectSettings { control: Some("vane-control.vane-system.svc:8086".into()), ..Default::default() };
        let bare = pod(serde_json::json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "app"}]}}));
        let Decision::Patch(p) = patch(&bare, &s, &enabled()) else { panic!("not injected") };
        let ops = serde_json::to_value(&p).unwrap();
        let names: Vec<&str> =
            ops[1]["value"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
        assert_eq!(names, [TOKEN_VOLUME, ROOTS_VOLUME]);
        let with_volumes = pod(serde_json::json!({
            "metadata": {"name": "a"},
            "spec": {"containers": [{"name": "app"}], "volumes": [{"name": "v", "emptyDir": {}}]}
        }));
        let d = patch(&with_volumes, &s, &enabled());
        assert_eq!(paths(&d), ["/spec/initContainers", "/spec/volumes/-", "/spec/volumes/-", "/metadata/annotations"]);
    }

    #[test]
    fn pointer_tokens_are_escaped_as_rfc_6901_says() {
        let op = serde_json::to_value(add(&["metadata", "annotations", "a~b/c"], Value::Null)).unwrap();
        assert_eq!(op["path"], "/metadata/annotations/a~0b~1c");
    }

    #[test]
    fn opt_in_and_out() {
        let base = |ann: Option<&str>| {
            let mut meta = serde_json::json!({"name": "a"});
            if let Some(v) = ann {
                meta["annotations"] = serde_json::json!({"vane.io/inject": v});
            }
            pod(serde_json::json!({"metadata": meta, "spec": {"containers": [{"name": "app"}]}}))
        };
        let s = InjectSettings::default();
        let none = BTreeMap::new();
        let skip = |d: Decision| match d {
            Decision::Skip(s) => s.reason(),
            Decision::Patch(_) => "patched",
        };
        assert_eq!(skip(patch(&base(None), &s, &none)), "not-enabled");
        assert_eq!(skip(patch(&base(None), &s, &enabled())), "patched");
        assert_eq!(skip(patch(&base(Some("enabled")), &s, &none)), "patched");
        assert_eq!(skip(patch(&base(Some("disabled")), &s, &enabled())), "disabled");
        assert_eq!(skip(patch(&base(Some("on")), &s, &enabled())), "invalid-annotation");
        let disabled_ns = [("vane.io/inject".to_string(), "disabled".to_string())].into();
        assert_eq!(skip(patch(&base(None), &s, &disabled_ns)), "not-enabled");
    }
}
