//! One AdmissionReview in, one out: [`respond`] parses the request with kube's
//! `AdmissionReview<DynamicObject>` (so a review of any object still yields its `uid`), decides
//! with [`super::patch()`], and writes the answer itself.
//!
//! Internal: kube's `AdmissionResponse` holds the patch as `Vec<u8>` and serde writes that as
//! a JSON array of numbers (`"patch":[91,123,...]`). The API server documents a base64 string
//! (Go's `[]byte` in JSON), so the response is serialised here, with `patch` base64-encoded.
//! The test `kube_writes_a_number_array` pins what kube does, so this can go when kube changes.

use super::patch::{Decision, Skip, patch};
use super::settings::InjectSettings;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use serde::Serialize;
use std::collections::BTreeMap;

/// The API version answered (the only one the webhook configuration offers).
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// What became of one review, for the log and the metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The pod was patched with this many operations.
    Injected {
        /// `namespace/name` (or `generateName*`) of the pod.
        pod: String,
        /// Patch operations.
        ops: usize,
    },
    /// The pod (or object) goes through as it is.
    Skipped {
        /// `namespace/name` of the object, when known.
        pod: String,
        /// The `reason` label.
        reason: &'static str,
        /// For the log line.
        detail: String,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'a str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
}

/// Answers one AdmissionReview body. The answer always allows the object; it carries a
/// base64 JSON Patch when the pod is injected. `namespace_labels` returns `None` for a
/// namespace it does not know (yet).
pub fn respond(
    body: &[u8],
    settings: &InjectSettings,
    namespace_labels: &dyn Fn(&str) -> Option<BTreeMap<String, String>>,
) -> (Vec<u8>, Outcome) {
    let skipped = |pod: String, reason, detail: String| Outcome::Skipped { pod, reason, detail };
    let mut request: AdmissionRequest<DynamicObject> =
        match serde_json::from_slice::<AdmissionReview<DynamicObject>>(body)
            .map_err(|e| e.to_string())
            .and_then(|r| r.try_into().map_err(|e: kube::core::admission::ConvertAdmissionReviewError| e.to_string()))
        {
            Ok(r) => r,
            Err(e) => return (answer("", None), skipped(String::new(), "invalid-review", e)),
        };
    let uid = request.uid.as_str();
    let namespace = request.namespace.clone().unwrap_or_default();
    let name = request.object.as_ref().map(|o| pod_name(&o.metadata)).unwrap_or_else(|| request.name.clone());
    let who = format!("{namespace}/{name}");
    if !request.kind.group.is_empty() || request.kind.kind != "Pod" {
        return (answer(uid, None), skipped(who, "not-a-pod", format!("kind {}", request.kind.kind)));
    }
    if request.operation != Operation::Create {
        return (answer(uid, None), skipped(who, "not-create", format!("operation {:?}", request.operation)));
    }
    let pod = match request.object.take().map(|o| o.try_parse::<Pod>()) {
        Some(Ok(pod)) => pod,
        Some(Err(e)) => return (answer(uid, None), skipped(who, "invalid-review", e.to_string())),
        None => return (answer(uid, None), skipped(who, "invalid-review", "no object".to_string())),
    };
    let labels = namespace_labels(&namespace);
    match patch(&pod, settings, labels.as_ref().unwrap_or(&BTreeMap::new())) {
        Decision::Skip(Skip::NotEnabled) if labels.is_none() => {
            (answer(uid, None), skipped(who, "namespace-unknown", format!("namespace {namespace:?} not seen (yet)")))
        }
        Decision::Skip(skip) => (answer(uid, None), skipped(who, skip.reason(), skip.to_string())),
        Decision::Patch(p) => match serde_json::to_vec(&p) {
            Ok(bytes) => (answer(uid, Some(&bytes)), Outcome::Injected { pod: who, ops: p.0.len() }),
            Err(e) => (answer(uid, None), skipped(who, "internal", e.to_string())),
        },
    }
}

/// `namespace/name` for a pod that may have only `generateName` yet.
fn pod_name(meta: &kube::core::ObjectMeta) -> String {
    match (&meta.name, &meta.generate_name) {
        (Some(n), _) if !n.is_empty() => n.clone(),
        (_, Some(g)) => format!("{g}*"),
        _ => String::new(),
    }
}

/// The AdmissionReview answer, allowed, with the patch (JSON bytes) base64-encoded.
pub fn answer(uid: &str, patch: Option<&[u8]>) -> Vec<u8> {
    let out = ReviewOut {
        api_version: API_VERSION,
        kind: "AdmissionReview",
        response: ResponseOut {
            uid,
            allowed: true,
            patch_type: patch.map(|_| "JSONPatch"),
            patch: patch.map(|p| STANDARD.encode(p)),
        },
    };
    // Internal: a struct of strings and a bool always serialises.
    serde_json::to_vec(&out)
        .unwrap_or_else(|_| br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::admission::AdmissionResponse;

    const DOCS_PATCH: &[u8] = br#"[{"op": "add", "path": "/spec/replicas", "value": 3}]"#;

    #[test]
    fn the_patch_goes_out_base64_as_the_api_server_documents() {
        // The example of the Kubernetes "Dynamic Admission Control" page, byte for byte.
        let out = answer("705ab4f5-6393-11e8-b7cc-42010a800002", Some(DOCS_PATCH));
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"705ab4f5-6393-11e8-b7cc-42010a800002","allowed":true,"patchType":"JSONPatch","patch":"W3sib3AiOiAiYWRkIiwgInBhdGgiOiAiL3NwZWMvcmVwbGljYXMiLCAidmFsdWUiOiAzfV0="}}"#
        );
        let plain = answer("u", None);
        assert_eq!(
            std::str::from_utf8(&plain).unwrap(),
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u","allowed":true}}"#
        );
    }

    #[test]
    fn kube_writes_a_number_array() {
        let review: AdmissionReview<DynamicObject> = serde_json::from_value(serde_json::json!({
            "apiVersion": API_VERSION, "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"}, "operation": "CREATE",
                "userInfo": {}, "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {}}}
        }))
        .unwrap();
        let req: AdmissionRequest<DynamicObject> = review.try_into().unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(DOCS_PATCH).unwrap();
        let kube =
            serde_json::to_value(AdmissionResponse::from(&req).with_patch(patch).unwrap().into_review()).unwrap();
        assert!(
            kube["response"]["patch"].is_array(),
            "kube now writes {}; serialise with it again?",
            kube["response"]["patch"]
        );
    }

    #[test]
    fn anything_unusable_is_allowed_as_it_is() {
        let s = InjectSettings::default();
        let none = |_: &str| None;
        let (out, outcome) = respond(b"not json", &s, &none);
        assert!(matches!(outcome, Outcome::Skipped { reason: "invalid-review", .. }), "{outcome:?}");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["response"]["allowed"], true);
        let svc = serde_json::json!({
            "apiVersion": API_VERSION, "kind": "AdmissionReview",
            "request": {"uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Service"},
                "resource": {"group": "", "version": "v1", "resource": "services"}, "operation": "CREATE",
                "namespace": "ml", "userInfo": {}, "object": {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}}
        });
        let (out, outcome) = respond(&serde_json::to_vec(&svc).unwrap(), &s, &none);
        assert!(matches!(outcome, Outcome::Skipped { reason: "not-a-pod", .. }), "{outcome:?}");
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&out).unwrap()["response"]["uid"], "u1");
    }
}
