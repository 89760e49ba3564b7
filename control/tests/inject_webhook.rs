//! The webhook as the API server meets it: a TLS listener on loopback with a certificate from a
//! fresh CA, an AdmissionReview POSTed over HTTP/1.1 and over h2 (chosen by ALPN), and the
//! answer read byte for byte: base64 patch, applied to the pod, gives the injected pod.

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use vane_control::inject::server::{self, Injector, InjectorMetrics, SkipLabels};
use vane_control::inject::tls::{CertFiles, ReloadingCert};
use vane_control::inject::{InjectSettings, cert};
use vane_runtime::CancellationToken;

const UID: &str = "705ab4f5-6393-11e8-b7cc-42010a800002";

struct Webhook {
    addr: SocketAddr,
    ca: String,
    metrics: InjectorMetrics,
    shutdown: CancellationToken,
    dir: std::path::PathBuf,
}

async fn start(test: &str) -> Webhook {
    let certs = cert::generate(&["localhost".to_string()], 1).unwrap();
    let dir = std::env::temp_dir().join(format!("vane-webhook-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = CertFiles { cert: dir.join("tls.crt"), key: dir.join("tls.key") };
    std::fs::write(&files.cert, &certs.cert).unwrap();
    std::fs::write(&files.key, &certs.key).unwrap();
    let tls = Arc::new(ReloadingCert::load(files).unwrap().server_config().unwrap());
    let listener = vane_runtime::serve::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let namespaces: server::NamespaceLabels = Arc::new(|ns: &str| match ns {
        "models" => Some(BTreeMap::new()),
        "apps" => Some([("vane.io/inject".to_string(), "enabled".to_string())].into()),
        _ => None,
    });
    let metrics = InjectorMetrics::default();
    let injector = Injector::new(InjectSettings::default(), namespaces, metrics.clone());
    let shutdown = CancellationToken::new();
    tokio::spawn(server::serve(listener, tls, injector, Default::default(), shutdown.clone()));
    Webhook { addr, ca: certs.ca, metrics, shutdown, dir }
}

fn review(namespace: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": UID,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "groups": ["system:serviceaccounts", "system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    }))
    .unwrap()
}

fn vllm_pod() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/inject/vllm-gpu.yaml");
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// POSTs `body` to `/inject` over TLS, offering only `alpn`; returns status, content type, body.
async fn post(w: &Webhook, alpn: &[u8], body: Vec<u8>) -> (u16, String, Bytes) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(w.ca.as_bytes()).unwrap()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(w.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the CA's certificate for localhost is trusted");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn), "ALPN");
    let req = http::Request::post("/inject")
        .header("host", "vane-injector.vane-system.svc:443")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let io = TokioIo::new(tls);
    let resp = if alpn == b"h2" {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    };
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, ct, resp.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn a_review_over_tls_gets_a_base64_patch_that_injects_the_pod() {
    let w = start("patch").await;
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let pod = vllm_pod();
        let (status, ct, body) = post(&w, alpn, review("models", pod.clone())).await;
        assert_eq!((status, ct.as_str()), (200, "application/json"));
        // The exact bytes the API server reads: the patch is a base64 string, not a number array.
        let text = std::str::from_utf8(&body).unwrap();
        let head = format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{{"uid":"{UID}","allowed":true,"patchType":"JSONPatch","patch":""#
        );
        assert!(text.starts_with(&head), "{text}");
        assert!(text.ends_with(r#""}}"#), "{text}");
        let b64 = &text[head.len()..text.len() - 3];
        let patch_bytes = base64::engine::general_purpose::STANDARD.decode(b64).expect("standard base64");
        let patch: json_patch::Patch = serde_json::from_slice(&patch_bytes).unwrap();
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &patch).unwrap();
        let names: Vec<&str> =
            patched["spec"]["initContainers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["vane-init", "vane-proxy", "vane-gpu-probe"]);
        assert_eq!(patched["metadata"]["annotations"]["vane.io/injected"], env!("CARGO_PKG_VERSION"));
        assert_eq!(patched["spec"]["containers"], pod["spec"]["containers"]);
    }
    assert_eq!(w.metrics.injected.get(), 2);
    w.shutdown.cancel();
    let _ = std::fs::remove_dir_all(&w.dir);
}

#[tokio::test]
async fn pods_that_are_not_injected_are_allowed_unpatched_and_counted() {
    let w = start("skip").await;
    let plain = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0"},
                       "spec": {"containers": [{"name": "web", "image": "registry.example/web:1"}]}});
    let mut out_opt = plain.clone();
    out_opt["metadata"]["annotations"] = json!({"vane.io/inject": "disabled"});
    let cases = [
        ("models", plain.clone(), "not-enabled"),
        ("apps", out_opt, "disabled"),
        ("unheard-of", plain.clone(), "namespace-unknown"),
    ];
    for (ns, pod, reason) in cases {
        let (status, _, body) = post(&w, b"http/1.1", review(ns, pod)).await;
        assert_eq!(status, 200);
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            format!(
                r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{{"uid":"{UID}","allowed":true}}}}"#
            ),
            "{reason}"
        );
        assert_eq!(w.metrics.skipped.get_or_create(&SkipLabels { reason }).get(), 1, "{reason}");
    }
    // The namespace label alone opts a pod in.
    let (_, _, body) = post(&w, b"h2", review("apps", plain)).await;
    assert!(std::str::from_utf8(&body).unwrap().contains(r#""patchType":"JSONPatch""#));
    let (_, _, body) = post(&w, b"h2", b"{not a review".to_vec()).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["response"]["allowed"], true, "never blocks, even on garbage");
    assert_eq!(w.metrics.skipped.get_or_create(&SkipLabels { reason: "invalid-review" }).get(), 1);
    w.shutdown.cancel();
    let _ = std::fs::remove_dir_all(&w.dir);
}
