//! `manifests/control` and `manifests/injector` against the Kubernetes schemas, the webhook
//! configuration's choices pinned, and the objects `vane-control webhook-cert` and
//! `vane-control identity init` print checked too.

mod validate;

use serde_json::Value;
use std::path::{Path, PathBuf};

fn manifests(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml") && !p.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    files
}

fn yaml(path: &Path) -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn find(files: &[PathBuf], kind: &str) -> Value {
    files.iter().map(|p| yaml(p)).find(|v| v["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn the_webhook_never_blocks_and_calls_the_injector_where_it_listens() {
    let files = manifests("injector");
    let mwc = find(&files, "MutatingWebhookConfiguration");
    let hook = &mwc["webhooks"][0];
    assert_eq!(hook["failurePolicy"], "Ignore");
    assert_eq!(hook["sideEffects"], "None");
    assert_eq!(hook["reinvocationPolicy"], "Never");
    assert_eq!(hook["admissionReviewVersions"], serde_json::json!(["v1"]));
    assert_eq!(hook["clientConfig"]["service"]["path"], "/inject");
    assert_eq!(hook["rules"][0]["operations"], serde_json::json!(["CREATE"]));
    let excluded = &hook["namespaceSelector"]["matchExpressions"][1]["values"];
    assert!(excluded.as_array().unwrap().contains(&Value::from("vane-system")), "the injector's own pods are not sent");

    let service = find(&files, "Service");
    assert_eq!(hook["clientConfig"]["service"]["name"], service["metadata"]["name"]);
    let port = service["spec"]["ports"].as_array().unwrap().iter().find(|p| p["port"] == 443).unwrap();
    let deploy = find(&files, "Deployment");
    let pod = &deploy["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let webhook_port = c["ports"].as_array().unwrap().iter().find(|p| p["name"] == port["targetPort"]).unwrap();
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args[0], "inject");
    assert!(args.contains(&format!("--listen=0.0.0.0:{}", webhook_port["containerPort"]).as_str()), "{args:?}");
    let mount = c["volumeMounts"][0]["mountPath"].as_str().unwrap();
    assert!(
        args.contains(&format!("--tls-cert={mount}/tls.crt").as_str())
            && args.contains(&format!("--tls-key={mount}/tls.key").as_str())
    );
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "vane-injector-tls", "what webhook-cert names it");
}

#[test]
fn manifests_and_the_generated_secret_pass_the_kubernetes_schema() {
    use vane_control::inject::cert;
    let names = cert::service_names("vane-injector", "vane-system", "cluster.local");
    let secret = cert::secret_yaml("vane-injector-tls", "vane-system", &cert::generate(&names, 30).unwrap());
    let dir = std::env::temp_dir().join(format!("vane-manifests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret_file = dir.join("secret.yaml");
    std::fs::write(&secret_file, &secret).unwrap();
    // `identity init`: the issuer Secret and the trust roots ConfigMaps, one file each.
    let g = vane_identity::ca::generate("cluster.local", 30, 10).unwrap();
    let objects = vane_control::identity::init::manifests(&g, "cluster.local", "vane-system", &["models".into()]);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&objects).unwrap();
    assert_eq!(docs.len(), 3);
    let mut identity_files = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let path = dir.join(format!("identity-{i}.json"));
        std::fs::write(&path, serde_json::to_vec(doc).unwrap()).unwrap();
        identity_files.push(path);
    }
    let mut files = manifests("control");
    files.extend(identity_files);
    files.extend(manifests("injector"));
    files.push(secret_file);
    validate::strict(&files, &["1.29", ""]);
    let _ = std::fs::remove_dir_all(&dir);
}
