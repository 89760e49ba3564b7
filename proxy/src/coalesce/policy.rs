//! Which requests may share an answer: a pure check of the method, path and body.
//!
//! With `when: deterministic` a request qualifies when its answer does not depend on sampling:
//!
//! | path | condition, on the JSON body's top-level fields |
//! |---|---|
//! | `/v1/completions`, `/v1/chat/completions` (OpenAI) | `temperature` is the number 0, or `seed` is an integer; and `n`, when given, is 1 (or null) |
//! | `/v1/embeddings`, `/v1/classify`, `/v1/score`, `/v1/rerank` | none: deterministic by nature |
//! | `/v2/models/{name}[/versions/{v}]/infer` (KServe v2) | none: an inference pass |
//! | `/inference.GRPCInferenceService/ModelInfer` (KServe v2 over gRPC, Triton) | none: an inference pass |
//!
//! Only `POST` qualifies; `stream: true` changes nothing (a greedy stream is as repeatable as a
//! greedy answer). A missing `temperature` is the API's default of 1, so it does not qualify
//! without a `seed`. With `when: always`, every `GET` and `POST` qualifies, gRPC calls
//! included (a shared answer carries its trailers, so its `grpc-status`, to every reader). In
//! both cases a request whose body is not known in full does not (see the module's
//! documentation; a gRPC call is known in full when its stream ends with its first message).

use http::{HeaderMap, Method};
use serde_json::Value;
use std::sync::Arc;
use vane_route::config::CoalesceWhen;
use vane_route::table::Coalesce;

/// Request extension left by the route layer on requests of a route with `coalesce:`: the
/// policy and the names the key is made of. Without it a request passes straight through.
#[derive(Clone, Debug)]
pub struct Coalescing {
    /// The route's policy.
    pub policy: Arc<Coalesce>,
    /// The service's name.
    pub service: Arc<str>,
    /// The route's name.
    pub route: Arc<str>,
    /// The backend the route picked.
    pub backend: Arc<str>,
}

/// Paths whose answers are deterministic by nature (embeddings, classification, scoring, reranking).
pub const DETERMINISTIC_PATHS: [&str; 4] = ["/v1/embeddings", "/v1/classify", "/v1/score", "/v1/rerank"];

/// KServe v2's inference call over gRPC.
pub const KSERVE_GRPC_INFER: &str = "/inference.GRPCInferenceService/ModelInfer";

/// Whether a request with a body known in full may share an answer under `when`.
pub fn eligible(when: CoalesceWhen, method: &Method, headers: &HeaderMap, path: &str, json: Option<&Value>) -> bool {
    if crate::error::is_grpc(headers) {
        return method == Method::POST && (when == CoalesceWhen::Always || path == KSERVE_GRPC_INFER);
    }
    match when {
        CoalesceWhen::Always => method == Method::GET || method == Method::POST,
        CoalesceWhen::Deterministic => method == Method::POST && deterministic(path, json),
    }
}

/// Whether the answer to a POST of `json` to `path` does not depend on sampling (the table above).
pub fn deterministic(path: &str, json: Option<&Value>) -> bool {
    if DETERMINISTIC_PATHS.contains(&path) || kserve_infer(path) {
        return true;
    }
    if path != "/v1/completions" && path != "/v1/chat/completions" {
        return false;
    }
    let Some(Value::Object(body)) = json else {
        return false;
    };
    let one_choice = match body.get("n") {
        None | Some(Value::Null) => true,
        Some(n) => n.as_u64() == Some(1),
    };
    let greedy = body.get("temperature").and_then(Value::as_f64) == Some(0.0);
    let seeded = body.get("seed").is_some_and(|s| s.is_i64() || s.is_u64());
    one_choice && (greedy || seeded)
}

/// `/v2/models/{name}/infer` or `/v2/models/{name}/versions/{v}/infer`.
fn kserve_infer(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/v2/models/") else {
        return false;
    };
    let segs: Vec<&str> = rest.split('/').collect();
    match segs.as_slice() {
        [name, "infer"] => !name.is_empty(),
        [name, "versions", v, "infer"] => !name.is_empty() && !v.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_table() {
        let chat = "/v1/chat/completions";
        let cases = [
            (chat, r#"{"temperature":0}"#, true),
            (chat, r#"{"temperature":0.0,"stream":true}"#, true),
            (chat, r#"{"temperature":0.7}"#, false),
            (chat, r#"{"temperature":0.7,"seed":42}"#, true),
            (chat, r#"{"seed":42}"#, true),
            (chat, r#"{"seed":null}"#, false),
            (chat, r#"{"seed":"42"}"#, false),
            (chat, r#"{}"#, false),
            (chat, r#"{"temperature":"0"}"#, false),
            (chat, r#"{"temperature":0,"n":2}"#, false),
            (chat, r#"{"temperature":0,"n":1}"#, true),
            (chat, r#"{"seed":1,"n":3}"#, false),
            (chat, r#"[{"temperature":0}]"#, false),
            (chat, "not json", false),
            ("/v1/completions", r#"{"prompt":"a","temperature":0}"#, true),
            ("/v1/completions", r#"{"prompt":"a","temperature":0.8}"#, false),
            ("/v1/embeddings", r#"{"input":"a"}"#, true),
            ("/v1/embeddings", "", true),
            ("/v1/rerank", r#"{"query":"a"}"#, true),
            ("/v1/classify", r#"{"input":"a"}"#, true),
            ("/v1/score", r#"{"text_1":"a"}"#, true),
            ("/v2/models/resnet/infer", "{}", true),
            ("/v2/models/resnet/versions/3/infer", "{}", true),
            ("/v2/models//infer", "{}", false),
            ("/v2/models/resnet/ready", "", false),
            ("/v2/models/resnet/versions/3/infer/x", "{}", false),
            ("/v1/models", "", false),
            ("/v1/chat/completions/x", r#"{"temperature":0}"#, false),
        ];
        for (path, body, want) in cases {
            let json: Option<Value> = serde_json::from_str(body).ok();
            assert_eq!(deterministic(path, json.as_ref()), want, "{path} {body}");
        }
    }

    #[test]
    fn methods_and_grpc() {
        let h = HeaderMap::new();
        let json: Value = serde_json::from_str(r#"{"temperature":0}"#).unwrap();
        let chat = "/v1/chat/completions";
        let det = CoalesceWhen::Deterministic;
        assert!(eligible(det, &Method::POST, &h, chat, Some(&json)));
        assert!(!eligible(det, &Method::GET, &h, chat, Some(&json)));
        assert!(!eligible(det, &Method::PUT, &h, "/v1/embeddings", None));
        assert!(eligible(CoalesceWhen::Always, &Method::GET, &h, "/v1/models", None));
        assert!(eligible(CoalesceWhen::Always, &Method::POST, &h, "/anything", None));
        assert!(!eligible(CoalesceWhen::Always, &Method::DELETE, &h, "/anything", None));
        let mut grpc = HeaderMap::new();
        grpc.insert("content-type", "application/grpc".parse().unwrap());
        assert!(eligible(CoalesceWhen::Always, &Method::POST, &grpc, "/pkg.Svc/Call", None));
        assert!(!eligible(det, &Method::POST, &grpc, "/pkg.Svc/Call", None), "a gRPC call may sample");
        assert!(eligible(det, &Method::POST, &grpc, KSERVE_GRPC_INFER, None), "an inference pass");
        assert!(!eligible(det, &Method::POST, &grpc, "/inference.GRPCInferenceService/ModelReady", None));
    }
}
