//! Route matching: which route of a service a request takes. Routes are tried in order and the
//! first whose conditions all hold wins (as in Gateway API, where users order rules by intent).

use crate::table::{Route, Service};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// Path condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatcher {
    /// Path equals this.
    Exact(String),
    /// Path starts with this at a segment boundary (stored without trailing `/`; empty = everything).
    Prefix(String),
}

impl PathMatcher {
    /// Whether `path` (no query) satisfies the condition.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Exact(e) => path == e,
            PathMatcher::Prefix(p) => {
                path.starts_with(p.as_str()) && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
            }
        }
    }
}

/// A route's conditions; all given ones must hold.
#[derive(Clone, Debug, Default)]
pub struct Matcher {
    /// Path condition.
    pub path: Option<PathMatcher>,
    /// Method condition.
    pub method: Option<Method>,
    /// Header conditions: present, and equal to the value when one is given.
    pub headers: Vec<(HeaderName, Option<HeaderValue>)>,
    /// Model name condition.
    pub model: Option<String>,
}

/// What routing looks at in a request.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    /// Method.
    pub method: &'a Method,
    /// Path without query.
    pub path: &'a str,
    /// Headers.
    pub headers: &'a HeaderMap,
    /// Model name, from the body or a KServe v2 path, when the service needs it.
    pub model: Option<&'a str>,
}

impl Matcher {
    /// Whether the request satisfies every condition.
    pub fn matches(&self, req: &RequestFacts<'_>) -> bool {
        if self.method.as_ref().is_some_and(|m| m != req.method) {
            return false;
        }
        if self.path.as_ref().is_some_and(|p| !p.matches(req.path)) {
            return false;
        }
        for (name, value) in &self.headers {
            let ok = match value {
                None => req.headers.contains_key(name),
                Some(v) => req.headers.get_all(name).iter().any(|have| have == v),
            };
            if !ok {
                return false;
            }
        }
        if self.model.as_ref().is_some_and(|model| req.model != Some(model.as_str())) {
            return false;
        }
        true
    }
}

impl Service {
    /// The first route whose conditions hold, if any.
    pub fn select(&self, req: &RequestFacts<'_>) -> Option<&Route> {
        self.select_index(req).map(|i| &self.routes[i])
    }

    /// Index into `routes` of the first route whose conditions hold.
    pub fn select_index(&self, req: &RequestFacts<'_>) -> Option<usize> {
        self.routes.iter().position(|r| r.matcher.matches(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Table;

    const CONFIG: &str = r#"
backends:
  - { name: a, endpoints: ["127.0.0.1:1"] }
  - { name: b, endpoints: ["127.0.0.1:2"] }
services:
  - name: llm
    routes:
      - name: gold
        match: { headers: [{ name: x-tier, value: gold }] }
        backends: [{ backend: b }]
      - name: big-model
        match: { model: llama-70b, method: POST }
        backends: [{ backend: b }]
      - name: exact
        match: { path: { exact: /healthz } }
        backends: [{ backend: b }]
      - name: v1
        match: { path: { prefix: /v1/ } }
        backends: [{ backend: a }]
      - name: any-debug
        match: { headers: [{ name: x-debug }] }
        backends: [{ backend: a }]
"#;

    fn pick(t: &Table, method: &str, path: &str, headers: &[(&str, &str)], model: Option<&str>) -> Option<String> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let facts = RequestFacts { method: &m, path, headers: &h, model };
        t.service("llm").unwrap().select(&facts).map(|r| r.name.to_string())
    }

    /// Method, path, headers, model, and the route expected (`None`: no route).
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], Option<&'a str>, Option<&'a str>);

    #[test]
    fn routes_in_order() {
        let t = Table::from_yaml(CONFIG).unwrap();
        let cases: &[Case] = &[
            ("GET", "/v1/models", &[], None, Some("v1")),
            ("GET", "/v1", &[], None, Some("v1")),
            ("GET", "/v10", &[], None, None),
            ("GET", "/v1/models", &[("x-tier", "gold")], None, Some("gold")),
            ("GET", "/v1/models", &[("x-tier", "silver")], None, Some("v1")),
            ("POST", "/v1/chat/completions", &[], Some("llama-70b"), Some("big-model")),
            ("GET", "/v1/chat/completions", &[], Some("llama-70b"), Some("v1")),
            ("POST", "/v1/chat/completions", &[], Some("llama-8b"), Some("v1")),
            ("GET", "/healthz", &[], None, Some("exact")),
            ("GET", "/healthz/x", &[], None, None),
            ("GET", "/other", &[("x-debug", "1")], None, Some("any-debug")),
            ("GET", "/other", &[], None, None),
        ];
        for (method, path, headers, model, want) in cases {
            assert_eq!(
                pick(&t, method, path, headers, *model).as_deref(),
                *want,
                "{method} {path} {headers:?} {model:?}"
            );
        }
    }

    #[test]
    fn host_lookup_is_case_insensitive() {
        let t = Table::from_yaml(CONFIG).unwrap();
        assert!(t.service("LLM").is_some());
        assert!(t.service("other").is_none());
    }

    #[test]
    fn prefix_root_matches_everything() {
        let p = PathMatcher::Prefix(String::new());
        assert!(p.matches("/"));
        assert!(p.matches("/anything"));
    }
}
