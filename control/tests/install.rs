//! The install (`kubectl apply -k manifests`) and the examples (`manifests/examples/`) as a
//! cluster receives them, checked for what they must hold, not only for their shape.
//!
//! Rendering: every directory under `manifests/` with a `kustomization.yaml` is rendered with
//! `kubectl kustomize` when kubectl is there (`VANE_KUBECTL`, else `PATH`, else
//! `/usr/bin/kubectl`; `VANE_KUBECTL=none` runs without). Without kubectl the rendering is
//! skipped, with a message, and the same checks run on the files each kustomization lists, read
//! directly: the kustomizations use only `namespace`, `labels`, `images` and `resources` (any
//! other field fails here), every file states its objects' namespace itself and every file of a
//! directory is listed, so those are the objects kubectl would print but for the added label and
//! image tags. With kubectl, the rendering must hold exactly those objects.
//!
//! Schemas: the built-in kinds go through `kubernetes-validate --strict` against Kubernetes 1.29
//! and the tool's latest (`validate/`; skipped with a message when the tool is missing, unless
//! `VANE_REQUIRE_K8S_VALIDATE=1`): kubectl's rendering as printed, or else the files. `HTTPRoute`
//! (Gateway API) and `ScaledObject` (KEDA) are instances of CRDs, for which that tool has no
//! schema, so they are checked here: the keys they may hold at each level (from the CRDs of
//! Gateway API v1.2.1, standard channel, and KEDA 2.x), so that a misspelt or experimental field
//! fails, and the fields that matter. The HTTPRoute is also read by the control service's own code,
//! which must make the 90/10 split of it.

mod validate;

use k8s_openapi::Resource as _;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use vane_control::inject::{self, Decision, InjectSettings};

/// API groups of the CRD instances the manifests hold.
const CRD_GROUPS: [&str; 2] = ["gateway.networking.k8s.io", "keda.sh"];

/// Kinds without a namespace.
const CLUSTER_SCOPED: [&str; 5] =
    ["Namespace", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration", "CustomResourceDefinition"];

/// Distroless's `nonroot`, the control plane's user.
const CONTROL_UID: i64 = 65532;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn manifests() -> PathBuf {
    root().join("manifests")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml_docs(text: &str, what: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).unwrap_or_else(|e| panic!("{what}: {e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// The directories under `manifests/` that have a `kustomization.yaml`, relative to it (`""`
/// is `manifests/` itself, the install).
fn kustomizations() -> Vec<String> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
        if dir.join("kustomization.yaml").is_file() {
            out.push(rel.to_string());
        }
        let mut subdirs: Vec<_> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
        subdirs.sort();
        for sub in subdirs {
            let name = sub.file_name().unwrap().to_str().unwrap().to_string();
            walk(&sub, &if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") }, out);
        }
    }
    let mut out = Vec::new();
    walk(&manifests(), "", &mut out);
    out
}

fn kustomization(dir: &Path) -> Value {
    let path = dir.join("kustomization.yaml");
    serde_saphyr::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The files a kustomization lists, those of the kustomizations it lists included, in order;
/// checks on the way that it uses only the fields this test reads, that it lists every YAML file
/// of its directory, and that every namespaced object in them states its namespace.
fn listed_files(dir: &Path) -> Vec<PathBuf> {
    let k = kustomization(dir);
    let here = dir.display();
    for key in k.as_object().unwrap().keys() {
        assert!(
            ["apiVersion", "kind", "namespace", "labels", "images", "resources"].contains(&key.as_str()),
            "{here}/kustomization.yaml: `{key}` changes objects in ways this test does not follow"
        );
    }
    let mut files = Vec::new();
    let mut listed_here = BTreeSet::new();
    for r in k["resources"].as_array().unwrap_or_else(|| panic!("{here}: no resources")) {
        let path = dir.join(r.as_str().unwrap());
        if path.is_dir() {
            files.extend(listed_files(&path));
        } else {
            assert!(path.is_file(), "{}: listed but missing", path.display());
            listed_here.insert(path.clone());
            files.push(path);
        }
    }
    let on_disk: BTreeSet<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml") && !p.ends_with("kustomization.yaml"))
        .collect();
    assert_eq!(on_disk, listed_here, "{here}: every YAML file is listed in kustomization.yaml, and only those");
    if let Some(ns) = k["namespace"].as_str() {
        for file in &files {
            for doc in yaml_docs(&read(file), &file.display().to_string()) {
                if !CLUSTER_SCOPED.contains(&doc["kind"].as_str().unwrap()) {
                    assert_eq!(doc["metadata"]["namespace"], ns, "{}: {}", file.display(), key(&doc));
                }
            }
        }
    }
    files
}

/// `Kind namespace/name`.
fn key(v: &Value) -> String {
    format!(
        "{} {}/{}",
        v["kind"].as_str().unwrap_or("?"),
        v["metadata"]["namespace"].as_str().unwrap_or(""),
        v["metadata"]["name"].as_str().unwrap_or("?")
    )
}

fn is_crd_instance(v: &Value) -> bool {
    let api = v["apiVersion"].as_str().unwrap_or_default();
    CRD_GROUPS.iter().any(|g| api.starts_with(&format!("{g}/")))
}

/// `VANE_KUBECTL` (a path; one that is no file means no kubectl, to run the checks as a machine
/// without it would), else `kubectl` on `PATH`, else `/usr/bin/kubectl`.
fn kubectl() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VANE_KUBECTL") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("kubectl"))
        .find(|p| p.is_file());
    on_path.or_else(|| Some(PathBuf::from("/usr/bin/kubectl")).filter(|p| p.is_file()))
}

/// `kubectl kustomize manifests/<rel>`, split into documents (each with its text as printed);
/// `None`, with a message, without kubectl.
fn render(rel: &str) -> Option<Vec<(String, Value)>> {
    let dir = manifests().join(rel);
    let Some(kubectl) = kubectl() else {
        eprintln!(
            "SKIPPED: kubectl kustomize {}: kubectl not found (VANE_KUBECTL, PATH, /usr/bin/kubectl); \
             checking the files it lists instead",
            dir.display()
        );
        return None;
    };
    let out = Command::new(&kubectl)
        .arg("kustomize")
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", kubectl.display()));
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut chunks = vec![String::new()];
    for line in text.lines() {
        if line == "---" {
            chunks.push(String::new());
        } else {
            let last = chunks.last_mut().unwrap();
            last.push_str(line);
            last.push('\n');
        }
    }
    Some(
        chunks
            .into_iter()
            .filter(|c| !c.trim().is_empty())
            .map(|c| {
                let v: Value = serde_saphyr::from_str(&c).unwrap_or_else(|e| panic!("kubectl's output: {e}\n{c}"));
                (c, v)
            })
            .collect(),
    )
}

/// What `kubectl apply -k manifests/<rel>` sends: kubectl's rendering, or else the listed files'
/// objects (the same objects, checked so when kubectl is there).
fn objects(rel: &str) -> Vec<Value> {
    let listed: Vec<Value> = listed_files(&manifests().join(rel))
        .iter()
        .flat_map(|f| yaml_docs(&read(f), &f.display().to_string()))
        .collect();
    match render(rel) {
        Some(docs) => {
            let rendered: Vec<Value> = docs.into_iter().map(|(_, v)| v).collect();
            let keys = |vs: &[Value]| vs.iter().map(key).collect::<BTreeSet<_>>();
            assert_eq!(keys(&rendered), keys(&listed), "manifests/{rel}: kubectl's rendering and the listed files");
            assert_eq!(rendered.len(), listed.len(), "manifests/{rel}: an object appears twice");
            rendered
        }
        None => listed,
    }
}

fn all<'a>(objs: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    objs.iter().filter(move |o| o["kind"] == kind)
}

fn one<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<_> = objs.iter().filter(|o| o["kind"] == kind && o["metadata"]["name"] == name).collect();
    assert_eq!(found.len(), 1, "{kind} {name}: {} found", found.len());
    found[0]
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array().map(|a| a.iter().map(|s| s.as_str().unwrap()).collect()).unwrap_or_default()
}

/// Whether a `LabelSelector` (`matchLabels` only; `{}` selects everything) selects `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    assert!(selector.get("matchExpressions").is_none(), "matchExpressions: not read by this test");
    selects_map(&selector["matchLabels"], labels)
}

/// Whether a plain label map (a Service's selector, `matchLabels`) selects `labels`.
fn selects_map(selector: &Value, labels: &Value) -> bool {
    selector.as_object().is_none_or(|m| m.iter().all(|(k, v)| labels[k] == *v))
}

fn pod_labels(deploy: &Value) -> &Value {
    &deploy["spec"]["template"]["metadata"]["labels"]
}

fn pod_spec(deploy: &Value) -> &Value {
    &deploy["spec"]["template"]["spec"]
}

/// `(name, number)` of every container port of a Deployment's pods.
fn container_ports(deploy: &Value) -> Vec<(String, u64)> {
    pod_spec(deploy)["containers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .map(|p| (p["name"].as_str().unwrap_or_default().to_string(), p["containerPort"].as_u64().unwrap()))
        .collect()
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"].as_array()?.iter().find(|e| e["name"] == name)?["value"].as_str()
}

// === schemas ===

#[test]
fn every_kustomization_renders_and_passes_the_kubernetes_schema() {
    let dirs = kustomizations();
    for expected in
        ["", "crds", "control", "injector", "examples/models", "examples/autoscaling/hpa", "examples/autoscaling/keda"]
    {
        assert!(dirs.contains(&expected.to_string()), "manifests/{expected}: no kustomization.yaml ({dirs:?})");
    }
    let tmp = std::env::temp_dir().join(format!("vane-install-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut files = Vec::new();
    let mut resources = 0;
    let mut crd_instances = BTreeSet::new();
    for rel in &dirs {
        match render(rel) {
            Some(docs) => {
                let (crds, builtin): (Vec<_>, Vec<_>) = docs.into_iter().partition(|(_, v)| is_crd_instance(v));
                for (_, v) in &crds {
                    check_crd_instance(v);
                    crd_instances.insert(key(v));
                }
                if builtin.is_empty() {
                    continue;
                }
                let file =
                    tmp.join(format!("{}.yaml", if rel.is_empty() { "install".into() } else { rel.replace('/', "-") }));
                let text: Vec<&str> = builtin.iter().map(|(t, _)| t.as_str()).collect();
                std::fs::write(&file, text.join("---\n")).unwrap();
                resources += builtin.len();
                files.push(file);
            }
            None => {
                for file in listed_files(&manifests().join(rel)) {
                    let docs = yaml_docs(&read(&file), &file.display().to_string());
                    let crds = docs.iter().filter(|v| is_crd_instance(v)).count();
                    assert!(
                        crds == 0 || crds == docs.len(),
                        "{}: keep CRD instances in files of their own",
                        file.display()
                    );
                    if crds > 0 {
                        for v in &docs {
                            check_crd_instance(v);
                            crd_instances.insert(key(v));
                        }
                    } else {
                        resources += docs.len();
                        files.push(file);
                    }
                }
            }
        }
    }
    assert_eq!(
        crd_instances,
        BTreeSet::from(["HTTPRoute models/llm".to_string(), "ScaledObject models/llm-stable".to_string()]),
        "the CRD instances checked here"
    );
    validate::strict_resources(&files, &["1.29", ""], resources);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The keys an object may hold: a map's keys and what each holds, a list of one shape, or a
/// value this check does not look into.
enum Shape {
    Leaf,
    Map(&'static [(&'static str, Shape)]),
    List(&'static Shape),
}

use Shape::{Leaf, List, Map};

fn check_shape(v: &Value, shape: &Shape, path: &str) {
    match shape {
        Leaf => {}
        Map(keys) => {
            let obj = v.as_object().unwrap_or_else(|| panic!("{path}: not a map: {v}"));
            for (k, child) in obj {
                let (_, s) = keys
                    .iter()
                    .find(|(name, _)| name == k)
                    .unwrap_or_else(|| panic!("{path}.{k}: not a field of this kind"));
                check_shape(child, s, &format!("{path}.{k}"));
            }
        }
        List(item) => {
            let items = v.as_array().unwrap_or_else(|| panic!("{path}: not a list: {v}"));
            for (i, child) in items.iter().enumerate() {
                check_shape(child, item, &format!("{path}[{i}]"));
            }
        }
    }
}

const METADATA: Shape = Map(&[("name", Leaf), ("namespace", Leaf), ("labels", Leaf), ("annotations", Leaf)]);

/// `HTTPRoute` of Gateway API v1.2.1, standard channel (`name`, `retry`, `sessionPersistence`
/// of a rule are experimental there).
const HTTPROUTE: Shape = Map(&[
    ("apiVersion", Leaf),
    ("kind", Leaf),
    ("metadata", METADATA),
    (
        "spec",
        Map(&[
            (
                "parentRefs",
                List(&Map(&[
                    ("group", Leaf),
                    ("kind", Leaf),
                    ("namespace", Leaf),
                    ("name", Leaf),
                    ("sectionName", Leaf),
                    ("port", Leaf),
                ])),
            ),
            ("hostnames", Leaf),
            (
                "rules",
                List(&Map(&[
                    (
                        "matches",
                        List(&Map(&[
                            ("path", Map(&[("type", Leaf), ("value", Leaf)])),
                            ("headers", List(&Map(&[("type", Leaf), ("name", Leaf), ("value", Leaf)]))),
                            ("queryParams", List(&Map(&[("type", Leaf), ("name", Leaf), ("value", Leaf)]))),
                            ("method", Leaf),
                        ])),
                    ),
                    ("filters", Leaf),
                    (
                        "backendRefs",
                        List(&Map(&[
                            ("group", Leaf),
                            ("kind", Leaf),
                            ("name", Leaf),
                            ("namespace", Leaf),
                            ("port", Leaf),
                            ("weight", Leaf),
                            ("filters", Leaf),
                        ])),
                    ),
                    ("timeouts", Map(&[("request", Leaf), ("backendRequest", Leaf)])),
                ])),
            ),
        ]),
    ),
]);

/// `ScaledObject` of KEDA 2.x (`keda.sh/v1alpha1`).
const SCALED_OBJECT: Shape = Map(&[
    ("apiVersion", Leaf),
    ("kind", Leaf),
    ("metadata", METADATA),
    (
        "spec",
        Map(&[
            (
                "scaleTargetRef",
                Map(&[("apiVersion", Leaf), ("kind", Leaf), ("name", Leaf), ("envSourceContainerName", Leaf)]),
            ),
            ("pollingInterval", Leaf),
            ("cooldownPeriod", Leaf),
            ("initialCooldownPeriod", Leaf),
            ("idleReplicaCount", Leaf),
            ("minReplicaCount", Leaf),
            ("maxReplicaCount", Leaf),
            ("fallback", Map(&[("failureReplicas", Leaf), ("behavior", Leaf)])),
            (
                "advanced",
                Map(&[
                    ("restoreToOriginalReplicaCount", Leaf),
                    ("horizontalPodAutoscalerConfig", Map(&[("name", Leaf), ("behavior", Leaf)])),
                    ("scalingModifiers", Leaf),
                ]),
            ),
            (
                "triggers",
                List(&Map(&[
                    ("type", Leaf),
                    ("name", Leaf),
                    ("metadata", Leaf),
                    ("authenticationRef", Map(&[("name", Leaf), ("kind", Leaf)])),
                    ("metricType", Leaf),
                    ("useCachedMetrics", Leaf),
                ])),
            ),
        ]),
    ),
]);

/// A CRD instance: its keys, and what its CRD requires.
fn check_crd_instance(v: &Value) {
    let what = key(v);
    match (v["apiVersion"].as_str().unwrap(), v["kind"].as_str().unwrap()) {
        ("gateway.networking.k8s.io/v1", "HTTPRoute") => {
            check_shape(v, &HTTPROUTE, &what);
            for p in v["spec"]["parentRefs"].as_array().unwrap() {
                assert!(p["name"].is_string(), "{what}: parentRefs[].name is required");
            }
            for rule in v["spec"]["rules"].as_array().unwrap() {
                for b in rule["backendRefs"].as_array().unwrap() {
                    assert!(b["name"].is_string(), "{what}: backendRefs[].name is required");
                    assert!(b["port"].is_u64(), "{what}: a Service backend needs its port");
                    assert!(b["weight"].as_u64().is_none_or(|w| w <= 1_000_000), "{what}: weight 0 to 1000000");
                }
            }
        }
        ("keda.sh/v1alpha1", "ScaledObject") => {
            check_shape(v, &SCALED_OBJECT, &what);
            assert!(v["spec"]["scaleTargetRef"]["name"].is_string(), "{what}: scaleTargetRef.name is required");
            for t in v["spec"]["triggers"].as_array().unwrap() {
                assert!(t["type"].is_string(), "{what}: triggers[].type is required");
                for (k, m) in t["metadata"].as_object().unwrap() {
                    assert!(m.is_string(), "{what}: trigger metadata is a map of strings ({k}: {m})");
                }
                assert!(
                    t["metricType"].as_str().is_none_or(|m| ["AverageValue", "Value", "Utilization"].contains(&m)),
                    "{what}: metricType"
                );
            }
        }
        (api, kind) => panic!("{what}: {api} {kind}: no check for this CRD instance"),
    }
}

// === the install ===

#[test]
fn the_install_is_vane_system_alone_and_meets_pod_security_restricted() {
    let objs = objects("");
    for o in &objs {
        let kind = o["kind"].as_str().unwrap();
        if CLUSTER_SCOPED.contains(&kind) {
            assert!(o["metadata"].get("namespace").is_none(), "{}", key(o));
        } else {
            assert_eq!(o["metadata"]["namespace"], "vane-system", "{}", key(o));
        }
    }
    let namespaces: Vec<_> = all(&objs, "Namespace").collect();
    assert_eq!(namespaces.len(), 1);
    let labels = &namespaces[0]["metadata"]["labels"];
    assert_eq!(namespaces[0]["metadata"]["name"], "vane-system");
    for mode in ["enforce", "warn", "audit"] {
        assert_eq!(labels[format!("pod-security.kubernetes.io/{mode}")], "restricted", "{mode}");
        let version = labels[format!("pod-security.kubernetes.io/{mode}-version")].as_str().unwrap();
        assert!(version == "latest" || version.starts_with("v1."), "{mode}-version: {version}");
    }
    assert_eq!(labels["pod-security.kubernetes.io/enforce-version"], "v1.29", "pinned to the oldest supported release");

    // What `restricted` asks of every pod (the checks of its v1.29 policy that these pods touch).
    let deployments: Vec<_> = all(&objs, "Deployment").collect();
    assert_eq!(deployments.len(), 2);
    for d in deployments {
        let name = d["metadata"]["name"].as_str().unwrap();
        let pod = pod_spec(d);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(pod["securityContext"]["runAsUser"], CONTROL_UID, "{name}");
        assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        assert!(pod.get("hostNetwork").is_none() && pod.get("hostPID").is_none(), "{name}");
        for v in pod["volumes"].as_array().into_iter().flatten() {
            let kinds: Vec<&String> = v.as_object().unwrap().keys().filter(|k| *k != "name").collect();
            assert!(
                kinds
                    .iter()
                    .all(|k| ["secret", "configMap", "emptyDir", "projected", "downwardAPI"].contains(&k.as_str())),
                "{name}: volume {kinds:?}"
            );
        }
        let containers =
            pod["containers"].as_array().unwrap().iter().chain(pod["initContainers"].as_array().into_iter().flatten());
        for c in containers {
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{name}");
            assert!(sc["capabilities"].get("add").is_none(), "{name}");
            assert!(sc.get("privileged").is_none_or(|p| p == false), "{name}");
        }
    }
}

#[test]
fn rbac_reads_what_is_watched_and_creates_only_token_reviews() {
    use k8s_openapi::api::authentication::v1::TokenReview;
    use k8s_openapi::api::core::v1::{Namespace, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use vane_control::api::{AuthorizationPolicy, HttpRoute};

    let objs = objects("");
    let read: BTreeSet<&str> = ["get", "list", "watch"].into();
    let route = |r: &str| (<HttpRoute as kube::Resource>::group(&()).to_string(), r.to_string());
    let core = |group: &str, plural: &str| (group.to_string(), plural.to_string());
    let reads = BTreeSet::from([
        core(Service::GROUP, Service::URL_PATH_SEGMENT),
        core(EndpointSlice::GROUP, EndpointSlice::URL_PATH_SEGMENT),
        core(Pod::GROUP, Pod::URL_PATH_SEGMENT),
        core(Namespace::GROUP, Namespace::URL_PATH_SEGMENT),
        route(&<HttpRoute as kube::Resource>::plural(&())),
        (
            <AuthorizationPolicy as kube::Resource>::group(&()).to_string(),
            <AuthorizationPolicy as kube::Resource>::plural(&()).to_string(),
        ),
    ]);
    let token_reviews = core(TokenReview::GROUP, TokenReview::URL_PATH_SEGMENT);
    let expected: BTreeMap<&str, BTreeMap<(String, String), BTreeSet<&str>>> = BTreeMap::from([
        (
            "vane-control",
            reads
                .iter()
                .map(|r| (r.clone(), read.clone()))
                .chain([(token_reviews.clone(), BTreeSet::from(["create"]))])
                .collect(),
        ),
        ("vane-injector", BTreeMap::from([(core(Namespace::GROUP, Namespace::URL_PATH_SEGMENT), read.clone())])),
    ]);

    assert!(all(&objs, "Role").next().is_none() && all(&objs, "RoleBinding").next().is_none());
    let mut granted: BTreeMap<&str, BTreeMap<(String, String), BTreeSet<&str>>> = BTreeMap::new();
    for role in all(&objs, "ClusterRole") {
        let name = role["metadata"]["name"].as_str().unwrap();
        for rule in role["rules"].as_array().unwrap() {
            let keys: BTreeSet<&str> = rule.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                BTreeSet::from(["apiGroups", "resources", "verbs"]),
                "{name}: no resourceNames or nonResourceURLs"
            );
            let verbs: BTreeSet<&str> = strs(&rule["verbs"]).into_iter().collect();
            for group in strs(&rule["apiGroups"]) {
                for resource in strs(&rule["resources"]) {
                    assert!(![group, resource].contains(&"*") && !verbs.contains("*"), "{name}: no wildcards");
                    let r = core(group, resource);
                    if r == token_reviews {
                        assert_eq!(verbs, BTreeSet::from(["create"]), "{name}: tokenreviews");
                    } else {
                        assert!(verbs.is_subset(&read), "{name}: {group}/{resource}: {verbs:?}");
                    }
                    granted.entry(name).or_default().entry(r).or_default().extend(&verbs);
                }
            }
        }
    }
    assert_eq!(granted, expected);

    // Each role is bound to the ServiceAccount of the Deployment of its name, and to nothing else.
    for (name, _) in expected {
        let binding = one(&objs, "ClusterRoleBinding", name);
        assert_eq!(
            binding["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name})
        );
        assert_eq!(binding["subjects"], json!([{"kind": "ServiceAccount", "name": name, "namespace": "vane-system"}]));
        one(&objs, "ServiceAccount", name);
        assert_eq!(pod_spec(one(&objs, "Deployment", name))["serviceAccountName"], name);
    }
}

#[test]
fn each_deployment_has_two_spread_replicas_and_a_budget_that_selects_them() {
    let objs = objects("");
    let deployments: Vec<_> = all(&objs, "Deployment").collect();
    for d in &deployments {
        let name = d["metadata"]["name"].as_str().unwrap();
        let labels = pod_labels(d);
        assert_eq!(d["spec"]["replicas"], 2, "{name}");
        assert!(selects(&d["spec"]["selector"], labels), "{name}: its selector selects its pods");

        let budgets: Vec<_> =
            all(&objs, "PodDisruptionBudget").filter(|p| selects(&p["spec"]["selector"], labels)).collect();
        assert_eq!(budgets.len(), 1, "{name}: one PodDisruptionBudget selects its pods");
        let pdb = &budgets[0]["spec"];
        assert!(pdb["maxUnavailable"] == 1 || pdb["minAvailable"] == 1, "{name}: {pdb}");
        for other in deployments.iter().filter(|o| o["metadata"]["name"] != name) {
            assert!(
                !selects(&pdb["selector"], pod_labels(other)),
                "{name}'s budget selects {} too",
                other["metadata"]["name"]
            );
        }

        let spread = pod_spec(d)["topologySpreadConstraints"].as_array().unwrap_or_else(|| panic!("{name}: no spread"));
        let keys: BTreeSet<&str> = spread.iter().map(|c| c["topologyKey"].as_str().unwrap()).collect();
        assert_eq!(keys, BTreeSet::from(["kubernetes.io/hostname", "topology.kubernetes.io/zone"]), "{name}");
        for c in spread {
            assert!(selects(&c["labelSelector"], labels), "{name}: a spread constraint that counts its own pods");
            assert_eq!(c["maxSkew"], 1);
            // A one-node or one-zone cluster still runs both replicas.
            assert_eq!(c["whenUnsatisfiable"], "ScheduleAnyway", "{name}");
        }
    }
}

/// `(port, from)` of every ingress rule of the policies that select `labels`; `from` is `None`
/// when the rule admits any source.
fn ingress_for(objs: &[Value], labels: &Value) -> Vec<(u64, Option<Value>)> {
    let mut out = Vec::new();
    for p in all(objs, "NetworkPolicy").filter(|p| selects(&p["spec"]["podSelector"], labels)) {
        for rule in p["spec"]["ingress"].as_array().into_iter().flatten() {
            for port in rule["ports"].as_array().unwrap_or_else(|| panic!("{}: a rule without ports", key(p))) {
                assert_eq!(port["protocol"], "TCP", "{}", key(p));
                let number = port["port"].as_u64().unwrap_or_else(|| panic!("{}: ports by number", key(p)));
                out.push((number, rule.get("from").cloned()));
            }
        }
    }
    out
}

#[test]
fn network_policies_open_exactly_the_ports_the_containers_listen_on() {
    let objs = objects("");
    let policies: Vec<_> = all(&objs, "NetworkPolicy").collect();

    let deny: Vec<_> =
        policies.iter().filter(|p| p["spec"].get("ingress").is_none() && p["spec"].get("egress").is_none()).collect();
    assert_eq!(deny.len(), 1, "one default deny");
    assert_eq!(deny[0]["spec"]["podSelector"], json!({}));
    assert_eq!(deny[0]["spec"]["policyTypes"], json!(["Ingress", "Egress"]));

    // Out: DNS and the API server (through the `kubernetes` Service's 443, or its own 6443), for
    // every pod in the namespace.
    let mut egress = BTreeSet::new();
    for p in &policies {
        for rule in p["spec"]["egress"].as_array().into_iter().flatten() {
            assert_eq!(p["spec"]["podSelector"], json!({}), "{}: egress is the namespace's", key(p));
            for port in rule["ports"].as_array().unwrap() {
                egress.insert((port["protocol"].as_str().unwrap().to_string(), port["port"].as_u64().unwrap()));
            }
        }
    }
    let want: BTreeSet<(String, u64)> =
        [("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 6443)].iter().map(|(p, n)| (p.to_string(), *n)).collect();
    assert_eq!(egress, want);

    // In: every port each pod listens on, and no other; each from whom it should be.
    let all_namespaces = json!([{"namespaceSelector": {}}]);
    let monitoring = json!([{"namespaceSelector": {"matchLabels": {"vane.io/monitoring": "enabled"}}}]);
    for d in all(&objs, "Deployment") {
        let name = d["metadata"]["name"].as_str().unwrap();
        let ports = container_ports(d);
        let ingress = ingress_for(&objs, pod_labels(d));
        let open: BTreeSet<u64> = ingress.iter().map(|(p, _)| *p).collect();
        assert_eq!(
            open,
            ports.iter().map(|(_, n)| *n).collect::<BTreeSet<u64>>(),
            "{name}: the ports its policies open"
        );
        let from = |port_name: &str| -> Vec<Option<Value>> {
            let number = ports.iter().find(|(n, _)| n == port_name).unwrap_or_else(|| panic!("{name}: {port_name}")).1;
            ingress.iter().filter(|(p, _)| *p == number).map(|(_, f)| f.clone()).collect()
        };
        assert_eq!(from("admin-http"), [Some(monitoring.clone())], "{name}: admin only from monitoring");
        let args = strs(&pod_spec(d)["containers"][0]["args"]).join(" ");
        match name {
            "vane-control" => {
                let discovery = ports.iter().find(|(n, _)| n == "discovery").unwrap().1;
                assert!(args.contains(&format!("--listen 0.0.0.0:{discovery}")), "{args}");
                assert_eq!(from("discovery"), [Some(all_namespaces.clone())], "proxies in every namespace");
            }
            "vane-injector" => {
                // The API server calls the Service's 443; the policy sees the target port.
                let svc = one(&objs, "Service", name);
                let p443 = svc["spec"]["ports"].as_array().unwrap().iter().find(|p| p["port"] == 443).unwrap();
                assert_eq!(p443["targetPort"], "webhook");
                let webhook = ports.iter().find(|(n, _)| n == "webhook").unwrap().1;
                assert!(args.contains(&format!("--listen=0.0.0.0:{webhook}")), "{args}");
                assert_eq!(from("webhook"), [None], "the API server is no pod: any source");
            }
            other => panic!("{other}: no expectations"),
        }
    }
}

#[test]
fn the_control_service_mounts_the_identity_issuer_and_proxies_are_sent_to_it() {
    let objs = objects("");
    let control = one(&objs, "Deployment", "vane-control");
    let pod = pod_spec(control);
    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "identity-issuer").unwrap();
    assert_eq!(volume["secret"]["secretName"], "vane-identity-issuer");
    assert_eq!(volume["secret"]["optional"], false);
    assert_eq!(volume["secret"]["defaultMode"], 0o440, "owner and group read");
    assert_eq!(pod["securityContext"]["fsGroup"], pod["securityContext"]["runAsGroup"], "the group that reads it");
    let c = &pod["containers"][0];
    assert_eq!(c["name"], "vane-control");
    let mount = c["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == "identity-issuer").unwrap();
    assert_eq!(mount["mountPath"], "/var/run/vane/issuer");
    assert_eq!(mount["readOnly"], true);
    let args = strs(&c["args"]).join(" ");
    assert!(args.contains("--identity-dir /var/run/vane/issuer"), "the identity service reads the mount: {args}");
    assert!(all(&objs, "Secret").next().is_none(), "no key material in the install");

    // The injector gives every proxy the control Service's discovery port.
    let svc = one(&objs, "Service", "vane-control");
    let port = svc["spec"]["ports"].as_array().unwrap().iter().find(|p| p["name"] == "discovery").unwrap();
    assert_eq!(port["targetPort"], "discovery");
    let injector = &pod_spec(one(&objs, "Deployment", "vane-injector"))["containers"][0];
    assert_eq!(
        env(injector, "VANE_INJECTOR_CONTROL"),
        Some(format!("vane-control.vane-system.svc:{}", port["port"]).as_str())
    );
}

#[test]
fn images_are_tagged_with_this_version() {
    let version = env!("CARGO_PKG_VERSION");
    for rel in kustomizations() {
        let k = kustomization(&manifests().join(&rel));
        for image in k["images"].as_array().into_iter().flatten() {
            assert_eq!(image["newTag"], version, "manifests/{rel}: {image}");
        }
    }
    let objs = objects("");
    let defaults = InjectSettings::default();
    for d in all(&objs, "Deployment") {
        let c = &pod_spec(d)["containers"][0];
        let image = c["image"].as_str().unwrap();
        if render("").is_some() {
            assert_eq!(image, format!("vane-control:{version}"));
        }
        if d["metadata"]["name"] == "vane-injector" {
            assert_eq!(env(c, "VANE_INJECTOR_PROXY_IMAGE"), Some(defaults.proxy_image.as_str()));
            assert_eq!(env(c, "VANE_INJECTOR_PROBE_IMAGE"), Some(defaults.probe_image.as_str()));
        }
    }
}

// === the examples ===

#[test]
fn the_example_splits_llm_90_10_between_services_it_defines() {
    let objs = objects("examples/models");
    let ns = one(&objs, "Namespace", "models");
    assert_eq!(ns["metadata"]["labels"]["vane.io/inject"], "enabled");

    let route = one(&objs, "HTTPRoute", "llm");
    assert_eq!(route["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(route["spec"]["parentRefs"], json!([{"group": "", "kind": "Service", "name": "llm", "port": 8000}]));
    let rules = route["spec"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1);
    let weights: BTreeMap<&str, u64> = rules[0]["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["name"].as_str().unwrap(), b["weight"].as_u64().unwrap()))
        .collect();
    assert_eq!(weights, BTreeMap::from([("llm-stable", 90), ("llm-canary", 10)]));

    // Every Service the route names exists, with the port it names, and selects the pods meant.
    let service_port = |svc: &Value, port: &Value| {
        let p = svc["spec"]["ports"].as_array().unwrap().iter().find(|p| p["port"] == *port);
        p.unwrap_or_else(|| panic!("{}: no port {port}", key(svc))).clone()
    };
    let parent = one(&objs, "Service", "llm");
    service_port(parent, &route["spec"]["parentRefs"][0]["port"]);
    let deployments: Vec<_> = all(&objs, "Deployment").collect();
    let selected = |svc: &Value| -> BTreeSet<&str> {
        deployments
            .iter()
            .filter(|d| selects_map(&svc["spec"]["selector"], pod_labels(d)))
            .map(|d| d["metadata"]["name"].as_str().unwrap())
            .collect()
    };
    assert_eq!(selected(parent), BTreeSet::from(["llm-canary", "llm-stable"]));
    for b in rules[0]["backendRefs"].as_array().unwrap() {
        let name = b["name"].as_str().unwrap();
        let svc = one(&objs, "Service", name);
        let port = service_port(svc, &b["port"]);
        assert_eq!(selected(svc), BTreeSet::from([name]), "{name} selects its own Deployment's pods alone");
        let d = one(&objs, "Deployment", name);
        assert!(
            container_ports(d).iter().any(|(n, p)| json!(n) == port["targetPort"] || json!(p) == port["targetPort"])
        );
    }

    // The model servers: vLLM on one GPU, ready once /health answers on the port it serves.
    for d in &deployments {
        let name = d["metadata"]["name"].as_str().unwrap();
        let c = &pod_spec(d)["containers"][0];
        assert_eq!(c["image"], "vllm/vllm-openai:v0.11.0", "{name}");
        assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], 1, "{name}");
        assert!(strs(&c["args"]).contains(&"--model"), "{name}");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/health", "{name}");
        assert_eq!(c["readinessProbe"]["httpGet"]["port"], 8000, "{name}");
        assert_eq!(container_ports(d), [("http".to_string(), 8000)], "{name}");
    }

    // The control service reads it as the 90/10 split.
    use vane_control::index::{Dirty, Index, Indexes, ObjectKey, RouteInfo, ServiceInfo};
    use vane_control::tables::{self, TableSettings};
    let mut idx = Indexes::default();
    let mut dirty = Dirty::new();
    let services: Vec<ServiceInfo> = all(&objs, "Service")
        .map(|s| ServiceInfo::from_resource(&serde_json::from_value(s.clone()).unwrap()).unwrap())
        .collect();
    idx.services.reset(services, &mut dirty);
    let typed: vane_control::api::HttpRoute = serde_json::from_value(route.clone()).unwrap();
    idx.routes.reset(vec![RouteInfo::from_resource(&typed).unwrap()], &mut dirty);
    let settings = TableSettings::default();
    let table = tables::compute(&idx, &ObjectKey::new("models", "llm"), &settings).unwrap();
    assert_eq!(table.error, None);
    assert_eq!(table.routes, [ObjectKey::new("models", "llm")]);
    let config = table.config.unwrap();
    assert_eq!(config.routes.len(), 1);
    let split: Vec<(String, u32)> = config.routes[0].backends.iter().map(|b| (b.backend.clone(), b.weight)).collect();
    assert_eq!(
        split,
        [
            ("llm-stable.models.svc.cluster.local:8000".to_string(), 90),
            ("llm-canary.models.svc.cluster.local:8000".to_string(), 10)
        ]
    );
}

#[test]
fn the_example_pods_are_injected_with_the_probe_and_their_namespace_admits_them() {
    let objs = objects("examples/models");
    let ns = one(&objs, "Namespace", "models");
    let ns_labels: BTreeMap<String, String> = serde_json::from_value(ns["metadata"]["labels"].clone()).unwrap();
    let tmp = std::env::temp_dir().join(format!("vane-install-pods-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut files = Vec::new();
    for d in all(&objs, "Deployment") {
        let name = d["metadata"]["name"].as_str().unwrap();
        let pod_json = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": format!("{name}-0"), "namespace": "models", "labels": pod_labels(d)},
            "spec": pod_spec(d),
        });
        let pod: Pod = serde_json::from_value(pod_json.clone()).unwrap();
        let Decision::Patch(patch) = inject::patch(&pod, &InjectSettings::default(), &ns_labels) else {
            panic!("{name}: not injected");
        };
        let mut patched = pod_json;
        json_patch::patch(&mut patched, &patch).unwrap();
        let init = patched["spec"]["initContainers"].as_array().unwrap();
        let names: Vec<&str> = init.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["vane-init", "vane-proxy", "vane-gpu-probe"], "{name}: the probe, for a GPU pod");
        assert_eq!(env(&init[1], "VANE_INBOUND_FORWARD_TO"), Some("127.0.0.1:8000"), "{name}: the model port");
        assert_eq!(env(&init[2], "VANE_PROBE_METRICS_URL"), Some("http://127.0.0.1:8000/metrics"), "{name}");
        assert_eq!(env(&init[2], "VANE_PROBE_SERVER"), Some("vllm"), "{name}");
        // The capture step needs capabilities that `baseline` and `restricted` refuse.
        assert!(strs(&init[0]["securityContext"]["capabilities"]["add"]).contains(&"NET_ADMIN"));
        assert_eq!(ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "privileged");
        let file = tmp.join(format!("{name}.json"));
        std::fs::write(&file, serde_json::to_string(&patched).unwrap()).unwrap();
        files.push(file);
    }
    assert_eq!(files.len(), 2);
    validate::strict(&files, &["1.29", ""]);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The name under which the GPU probe exports the model server's queue depth, read from its
/// registry (`gpu-probe/src/metrics.rs`): the `register` call of the `queue_depth` gauge. A
/// gauge registered without a unit is exported under exactly that name.
fn probe_queue_depth_metric() -> String {
    let path = root().join("gpu-probe/src/metrics.rs");
    let src = read(&path);
    assert!(src.contains("    queue_depth: FloatGauge,"), "{}: queue_depth is a gauge", path.display());
    let mut found = Vec::new();
    for (at, _) in src.match_indices("registry.register(") {
        let call = &src[at..at + src[at..].find(");").unwrap()];
        if call.contains("m.queue_depth.clone()") {
            let name = call.split('"').nth(1).unwrap();
            found.push(name.to_string());
        }
    }
    assert_eq!(found.len(), 1, "{}: one registration of queue_depth", path.display());
    found.pop().unwrap()
}

#[test]
fn the_autoscalers_scale_llm_stable_on_the_queue_depth_the_probe_exports() {
    let metric = probe_queue_depth_metric();
    assert_eq!(metric, "vane_probe_queue_depth");
    let models = objects("examples/models");
    let target = one(&models, "Deployment", "llm-stable");
    let target_ref = json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": target["metadata"]["name"]});

    let hpa_objs = objects("examples/autoscaling/hpa");
    let hpa = one(&hpa_objs, "HorizontalPodAutoscaler", "llm-stable");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["metadata"]["namespace"], target["metadata"]["namespace"]);
    assert_eq!(hpa["spec"]["scaleTargetRef"], target_ref);
    let metrics = hpa["spec"]["metrics"].as_array().unwrap();
    assert_eq!(metrics.len(), 1);
    let kind = metrics[0]["type"].as_str().unwrap();
    assert!(kind == "Pods" || kind == "External", "{kind}");
    let source = &metrics[0][kind.to_ascii_lowercase()];
    assert_eq!(source["metric"]["name"], metric.as_str());
    assert_eq!(source["target"]["type"], "AverageValue");
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 1, "a model server never scales to zero here");

    let keda_objs = objects("examples/autoscaling/keda");
    let so = one(&keda_objs, "ScaledObject", "llm-stable");
    assert_eq!(so["apiVersion"], "keda.sh/v1alpha1");
    assert_eq!(so["metadata"]["namespace"], target["metadata"]["namespace"]);
    assert_eq!(so["spec"]["scaleTargetRef"], target_ref);
    let triggers = so["spec"]["triggers"].as_array().unwrap();
    assert_eq!(triggers.len(), 1);
    assert_eq!(triggers[0]["type"], "prometheus");
    assert_eq!(triggers[0]["metricType"], "AverageValue");
    let query = triggers[0]["metadata"]["query"].as_str().unwrap();
    assert!(query.contains(&format!("{metric}{{")), "{query}");
    assert!(query.contains(r#"namespace="models""#) && query.contains(r#"pod=~"llm-stable-.*""#), "{query}");
    assert!(triggers[0]["metadata"]["serverAddress"].as_str().unwrap().starts_with("http"));
    let threshold: f64 = triggers[0]["metadata"]["threshold"].as_str().unwrap().parse().unwrap();
    assert_eq!(json!(threshold.to_string()), source["target"]["averageValue"], "both examples scale at the same depth");
    assert_eq!(so["spec"]["minReplicaCount"], hpa["spec"]["minReplicas"]);
    assert_eq!(so["spec"]["maxReplicaCount"], hpa["spec"]["maxReplicas"]);
}

// === images ===

/// `(user, entrypoint binary)` of `docker/<bin>.Dockerfile`'s final stage.
fn dockerfile(bin: &str) -> (String, String) {
    let path = root().join(format!("docker/{bin}.Dockerfile"));
    let text = read(&path);
    let last_stage = &text[text.rfind("\nFROM ").unwrap_or_else(|| panic!("{}: one stage", path.display()))..];
    assert!(text.matches("\nFROM ").count() >= 2, "{}: a builder stage, then the image", path.display());
    assert!(
        text.contains(&format!("cargo build --release --locked -p {bin} --bin {bin}")),
        "{}: builds {bin}",
        path.display()
    );
    let line = |word: &str| -> String {
        let found: Vec<&str> = last_stage.lines().filter_map(|l| l.strip_prefix(word)).collect();
        assert_eq!(found.len(), 1, "{}: one {word}in the image", path.display());
        found[0].trim().to_string()
    };
    (line("USER "), line("ENTRYPOINT "))
}

#[test]
fn images_run_as_the_users_the_injector_and_the_manifests_expect() {
    let proxy_uid = InjectSettings::default().proxy_uid;
    let (user, entry) = dockerfile("vane-proxy");
    assert_eq!(user, format!("{proxy_uid}:{proxy_uid}"), "the UID the capture rules let out");
    assert_eq!(entry, r#"["/usr/local/bin/vane-proxy"]"#);
    let proxy = read(&root().join("docker/vane-proxy.Dockerfile"));
    assert!(proxy.contains("install -y --no-install-recommends iptables"), "vane-proxy init runs iptables-restore");

    let (user, entry) = dockerfile("vane-gpu-probe");
    assert_eq!(user, format!("{proxy_uid}:{proxy_uid}"), "the injector runs the probe as the proxy's UID");
    assert_eq!(entry, r#"["/usr/local/bin/vane-gpu-probe"]"#);

    let (user, entry) = dockerfile("vane-control");
    assert_eq!(user, format!("{CONTROL_UID}:{CONTROL_UID}"));
    assert_eq!(entry, r#"["/usr/local/bin/vane-control"]"#);
    for d in all(&objects(""), "Deployment") {
        assert_eq!(pod_spec(d)["securityContext"]["runAsUser"], CONTROL_UID);
        assert_eq!(pod_spec(d)["securityContext"]["runAsGroup"], CONTROL_UID);
    }

    let ignore = read(&root().join(".dockerignore"));
    for must in ["target", ".git"] {
        assert!(ignore.lines().any(|l| l == must), ".dockerignore: {must}");
    }
}

#[test]
fn the_authorization_policy_crd_is_the_type_the_control_service_watches() {
    use kube::Resource;
    use vane_control::api::{AuthorizationPolicy, AuthorizationPolicySpec, PolicyPrincipal};

    let objs = objects("");
    let crd = one(&objs, "CustomResourceDefinition", "authorizationpolicies.policy.vane.io");
    let spec = &crd["spec"];
    assert_eq!(spec["group"], AuthorizationPolicy::group(&()).as_ref());
    assert_eq!(spec["names"]["plural"], AuthorizationPolicy::plural(&()).as_ref());
    assert_eq!(spec["names"]["kind"], AuthorizationPolicy::kind(&()).as_ref());
    assert_eq!(spec["scope"], "Namespaced");
    let versions = spec["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0]["name"], AuthorizationPolicy::version(&()).as_ref());
    assert_eq!((&versions[0]["served"], &versions[0]["storage"]), (&json!(true), &json!(true)));

    // The schema's fields are the ones serde reads, no more and no fewer.
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<BTreeSet<_>>();
    let schema = &versions[0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let full = AuthorizationPolicySpec {
        path_prefix: Some("/".into()),
        model: Some("m".into()),
        allow: vec![PolicyPrincipal {
            identity: Some("spiffe://td/ns/a/sa/b".into()),
            namespace: Some("a".into()),
            service_account: Some("b".into()),
            unauthenticated: true,
        }],
    };
    let typed = serde_json::to_value(&full).unwrap();
    assert_eq!(keys(&schema["properties"]), keys(&typed));
    assert_eq!(keys(&schema["properties"]["allow"]["items"]["properties"]), keys(&typed["allow"][0]));
    let rules: Vec<&str> = schema["properties"]["allow"]["items"]["x-kubernetes-validations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules.len(), 2, "exactly one kind of principal; a ServiceAccount with its namespace");
}
