//! The coalescing key: which requests are "the same request". A pure function of the request's
//! service, route and backend, method, path and query, the headers that change the answer, and
//! the body (canonical JSON, else its raw bytes).
//!
//! Internal: the fields are written, each with its length, into one byte string, which is
//! hashed to 128 bits with xxh3. Two different requests share a key only by a hash collision:
//! with 2^128 keys, even billions of requests in flight at once leave that chance below 10^-20,
//! so the full bytes are not kept to compare.

use http::{HeaderMap, HeaderName, Method, Uri};
use serde_json::Value;

/// A request's coalescing key.
pub type Key = u128;

/// Request headers that always take part in the key besides `Authorization`: they choose the
/// form of the answer (its media type, its encoding) or say how the body is to be read.
pub const ANSWER_HEADERS: [HeaderName; 3] =
    [http::header::ACCEPT, http::header::ACCEPT_ENCODING, http::header::CONTENT_TYPE];

/// What the key is made of.
#[derive(Clone, Copy, Debug)]
pub struct KeyInput<'a> {
    /// The service's name.
    pub service: &'a str,
    /// The route's name.
    pub route: &'a str,
    /// The backend the route picked (a canary and its stable version never share).
    pub backend: &'a str,
    /// The request's method.
    pub method: &'a Method,
    /// Its target (path and query are used).
    pub uri: &'a Uri,
    /// Its headers.
    pub headers: &'a HeaderMap,
    /// The route's `vary` headers.
    pub vary: &'a [HeaderName],
    /// Whether `Authorization` is left out (the route's `across_callers`).
    pub across_callers: bool,
    /// The body as parsed, when it is JSON.
    pub json: Option<&'a Value>,
    /// The body's bytes (used when it is not JSON).
    pub body: &'a [u8],
}

/// The key of a request.
pub fn key(k: &KeyInput<'_>) -> Key {
    xxhash_rust::xxh3::xxh3_128(&key_bytes(k))
}

/// The byte string that is hashed (apart for the tests).
fn key_bytes(k: &KeyInput<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + k.body.len());
    for s in [k.service, k.route, k.backend, k.method.as_str()] {
        field(&mut out, s.as_bytes());
    }
    field(&mut out, k.uri.path_and_query().map_or(k.uri.path(), |p| p.as_str()).as_bytes());
    let auth = (!k.across_callers).then_some(&http::header::AUTHORIZATION);
    for name in auth.into_iter().chain(ANSWER_HEADERS.iter()).chain(k.vary.iter()) {
        // A header the request lacks adds nothing (so an absent `vary` header keys as no `vary`).
        let values = k.headers.get_all(name);
        let count = values.iter().count() as u64;
        if count == 0 {
            continue;
        }
        field(&mut out, name.as_str().as_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        for v in values {
            field(&mut out, v.as_bytes());
        }
    }
    match k.json {
        Some(v) => {
            out.push(b'J');
            canonical(v, &mut out);
        }
        None => {
            out.push(b'R');
            out.extend_from_slice(k.body);
        }
    }
    out
}

fn field(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

/// JSON with object keys sorted and no whitespace; numbers as serde_json parsed them (`1` and
/// `1.0` differ, `1.0` and `1e0` do not).
pub fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(k, out);
                out.push(b':');
                canonical(v, out);
            }
            out.push(b'}');
        }
    }
}

fn string(s: &str, out: &mut Vec<u8>) {
    // Writing a string into a Vec cannot fail; the fallback keeps the key total anyway.
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(s.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Req {
        route: &'static str,
        method: Method,
        uri: &'static str,
        headers: Vec<(&'static str, &'static str)>,
        body: &'static str,
        vary: Vec<HeaderName>,
        across: bool,
    }

    fn req(body: &'static str) -> Req {
        Req {
            route: "chat",
            method: Method::POST,
            uri: "/v1/chat/completions",
            headers: vec![("authorization", "Bearer a"), ("content-type", "application/json")],
            body,
            vary: vec![],
            across: false,
        }
    }

    fn key_of(r: &Req) -> Key {
        let uri: Uri = r.uri.parse().unwrap();
        let mut headers = HeaderMap::new();
        for (k, v) in &r.headers {
            headers.append(HeaderName::from_static(k), v.parse().unwrap());
        }
        let json: Option<Value> = serde_json::from_str(r.body).ok();
        key(&KeyInput {
            service: "llm",
            route: r.route,
            backend: "v1",
            method: &r.method,
            uri: &uri,
            headers: &headers,
            vary: &r.vary,
            across_callers: r.across,
            json: json.as_ref(),
            body: r.body.as_bytes(),
        })
    }

    const BASE: &str = r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#;

    #[test]
    fn key_table() {
        let base = key_of(&req(BASE));
        let with = |f: &dyn Fn(&mut Req)| {
            let mut r = req(BASE);
            f(&mut r);
            key_of(&r)
        };
        // (what changed, whether the key must stay the same)
        let cases: Vec<(&str, Key, bool)> = vec![
            ("nothing", key_of(&req(BASE)), true),
            (
                "key order",
                key_of(&req(r#"{"messages":[{"content":"hi","role":"user"}],"temperature":0,"model":"m"}"#)),
                true,
            ),
            (
                "whitespace",
                key_of(&req(
                    "{ \"model\" : \"m\",\n \"temperature\": 0, \"messages\": [ {\"role\":\"user\", \"content\":\"hi\"} ] }",
                )),
                true,
            ),
            (
                "temperature",
                key_of(&req(r#"{"model":"m","temperature":0.5,"messages":[{"role":"user","content":"hi"}]}"#)),
                false,
            ),
            (
                "seed",
                key_of(&req(r#"{"model":"m","temperature":0,"seed":7,"messages":[{"role":"user","content":"hi"}]}"#)),
                false,
            ),
            (
                "number as parsed",
                key_of(&req(r#"{"model":"m","temperature":0.0,"messages":[{"role":"user","content":"hi"}]}"#)),
                false,
            ),
            (
                "array order",
                key_of(&req(r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"},{}]}"#)),
                false,
            ),
            ("authorization", with(&|r| r.headers[0] = ("authorization", "Bearer b")), false),
            (
                "no authorization",
                with(&|r| {
                    r.headers.remove(0);
                }),
                false,
            ),
            ("accept", with(&|r| r.headers.push(("accept", "text/event-stream"))), false),
            ("content type", with(&|r| r.headers[1] = ("content-type", "text/plain")), false),
            ("an unlisted header", with(&|r| r.headers.push(("x-request-id", "42"))), true),
            ("a vary header absent", with(&|r| r.vary = vec![HeaderName::from_static("x-tenant")]), true),
            (
                "a vary header",
                with(&|r| {
                    r.vary = vec![HeaderName::from_static("x-tenant")];
                    r.headers.push(("x-tenant", "t1"));
                }),
                false,
            ),
            ("query", with(&|r| r.uri = "/v1/chat/completions?x=1"), false),
            ("path", with(&|r| r.uri = "/v1/completions"), false),
            ("method", with(&|r| r.method = Method::PUT), false),
            ("route", with(&|r| r.route = "other"), false),
        ];
        for (what, k, same) in cases {
            assert_eq!(k == base, same, "{what}");
        }
    }

    #[test]
    fn callers_share_only_across_callers() {
        let mut a = req(BASE);
        let mut b = req(BASE);
        b.headers[0] = ("authorization", "Bearer b");
        assert_ne!(key_of(&a), key_of(&b));
        a.across = true;
        b.across = true;
        assert_eq!(key_of(&a), key_of(&b));
    }

    #[test]
    fn non_json_bodies_are_their_bytes() {
        assert_eq!(key_of(&req("not json {")), key_of(&req("not json {")));
        assert_ne!(key_of(&req("not json {")), key_of(&req("not json  {")));
        // A body that is JSON and one that is the same bytes read raw cannot be confused.
        assert_ne!(key_of(&req("1")), key_of(&req(" 1x")));
        assert_eq!(key_of(&req("")), key_of(&req("")));
    }

    #[test]
    fn canonical_form() {
        let v: Value = serde_json::from_str(r#"{ "b": [1, 2.5, "x\"y"], "a": {"d": null, "c": true} }"#).unwrap();
        let mut out = Vec::new();
        canonical(&v, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"a":{"c":true,"d":null},"b":[1,2.5,"x\"y"]}"#);
    }
}
