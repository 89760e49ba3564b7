//! The fake API server's `TokenReview` API: a table of tokens answered the way the API server
//! answers (see `fake_api`).

#![allow(dead_code)]

use super::objects::status;
use hyper::StatusCode;
use serde_json::{Value, json};
use std::collections::HashMap;

/// Known tokens and what was asked.
#[derive(Debug, Default)]
pub struct Tokens {
    /// token → (username, audiences it is bound to).
    known: HashMap<String, (String, Vec<String>)>,
    /// Bodies of the reviews received.
    pub reviews: Vec<Value>,
    /// Answer 500 while set.
    pub fail: bool,
}

impl Tokens {
    /// A valid token of `username` bound to `audiences` (none: the review ignores audiences and
    /// answers without any, as an audience-unaware authenticator does).
    pub fn add(&mut self, token: &str, username: &str, audiences: &[&str]) {
        let auds = audiences.iter().map(|a| a.to_string()).collect();
        self.known.insert(token.to_string(), (username.to_string(), auds));
    }

    /// The answer to a posted TokenReview.
    pub fn answer(&mut self, body: &[u8]) -> (StatusCode, Value) {
        let Ok(review) = serde_json::from_slice::<Value>(body) else {
            return (StatusCode::BAD_REQUEST, status(400, "BadRequest", "not JSON"));
        };
        self.reviews.push(review.clone());
        if self.fail {
            return (StatusCode::INTERNAL_SERVER_ERROR, status(500, "InternalError", "etcd is down"));
        }
        let token = review["spec"]["token"].as_str().unwrap_or_default();
        let asked: Vec<String> = review["spec"]["audiences"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default();
        let answer = match self.known.get(token) {
            // An authenticator that knows nothing of audiences: valid, and says none.
            Some((user, auds)) if auds.is_empty() => {
                json!({"authenticated": true, "user": {"username": user, "uid": "u-1"}})
            }
            Some((user, auds)) => {
                let both: Vec<&String> = auds.iter().filter(|a| asked.is_empty() || asked.contains(a)).collect();
                if both.is_empty() {
                    json!({"authenticated": false, "error": "token audiences do not match", "user": {}})
                } else {
                    json!({"authenticated": true, "audiences": both,
                           "user": {"username": user, "uid": "u-1", "groups": ["system:serviceaccounts"]}})
                }
            }
            None => json!({"authenticated": false, "error": "invalid bearer token", "user": {}}),
        };
        let out = json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                         "metadata": {"creationTimestamp": null}, "spec": review["spec"], "status": answer});
        (StatusCode::CREATED, out)
    }
}
