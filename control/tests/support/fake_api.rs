//! An in-process fake Kubernetes API server that speaks the real wire protocol, for the kinds
//! the control service watches (Services, EndpointSlices, HTTPRoutes, Pods and Namespaces), and the
//! `TokenReview` API the identity service asks.
//!
//! - `GET <collection>?limit=N[&continue=T]`: paginated list, a consistent snapshot at one
//!   `resourceVersion`; items without `apiVersion`/`kind`, as the API server serves them. An
//!   expired continue token answers `410 Gone` (a `Status` object), like an etcd compaction.
//! - `GET <collection>?watch=true&resourceVersion=N[&allowWatchBookmarks=true][&timeoutSeconds=S]`:
//!   a chunked stream of `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":...}` lines,
//!   replaying what happened after N, then live. N older than the compaction floor gets an
//!   `ERROR` event with a `410 Expired` Status, as the API server does.
//! - Test controls: [`FakeApi::apply`], [`FakeApi::delete`], [`FakeApi::compact`] (ends every watch
//!   with a 410 and forgets history), [`FakeApi::drop_watches`] (breaks every watch mid-stream),
//!   [`FakeApi::bookmark`], [`FakeApi::expire_continue_tokens`].
//! - A collection can be left out ([`FakeApi::without`]): it answers `404 page not found`, like a
//!   cluster without the Gateway API CRDs.
//! - `POST /apis/authentication.k8s.io/v1/tokenreviews`: answered from a table of tokens
//!   ([`FakeApi::token`]: username and the audiences the token is bound to) the way the API
//!   server answers: `status.audiences` is the intersection of the asked and the token's
//!   audiences, and a token is authenticated only if that is not empty (or none was asked for).
//!   Unknown tokens are not authenticated. [`FakeApi::fail_token_reviews`] makes it answer 500.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};

#[allow(unused_imports)]
pub use super::objects::{
    Res, TOKEN_REVIEWS, authorization_policy, endpoint_slice, namespace, pod, service, split_route,
};
use super::objects::{event_line, json_response, plain, status};
use super::tokens::Tokens;

use super::objects::Body;

/// What watch streams are told.
#[derive(Clone, Debug)]
enum Live {
    Event { res: Res, rv: u64, line: Bytes },
    Bookmark { rv: u64 },
    Gone,
    Drop,
}

#[derive(Debug, Default)]
struct State {
    rv: u64,
    objects: HashMap<Res, BTreeMap<(String, String), Value>>,
    /// Every event since the compaction floor: (rv, resource, line).
    history: Vec<(u64, Res, Bytes)>,
    floor: u64,
    continues: HashMap<String, (u64, Vec<Value>)>,
    next_token: u64,
    expire_continue: bool,
    requests: Vec<String>,
    open_watches: usize,
    tokens: Tokens,
}

/// The fake API server.
#[derive(Clone, Debug)]
pub struct FakeApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    live: broadcast::Sender<Live>,
    page: usize,
    missing: Arc<HashSet<Res>>,
}

impl FakeApi {
    /// Serves every collection; lists are paged by at most `page` items (whatever the client's limit).
    pub async fn start(page: usize) -> FakeApi {
        FakeApi::without(page, &[]).await
    }

    /// Like [`FakeApi::start`], with some collections not served (404).
    pub async fn without(page: usize, missing: &[Res]) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (live, _) = broadcast::channel(65536);
        let fake = FakeApi {
            addr: listener.local_addr().unwrap(),
            state: Arc::new(Mutex::new(State { rv: 100, ..State::default() })),
            live,
            page: page.max(1),
            missing: Arc::new(missing.iter().copied().collect()),
        };
        let server = fake.clone();
        tokio::spawn(async move {
            loop {
                let Ok((io, _)) = listener.accept().await else { continue };
                let server = server.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.handle(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(io), svc)
                        .await;
                });
            }
        });
        fake
    }

    /// A kubeconfig-free client for it.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// Creates or replaces an object (by `kind`, namespace and name). Returns the instant the
    /// change entered the watch streams.
    pub fn apply(&self, mut obj: Value) -> Instant {
        let res = Res::from_kind(obj["kind"].as_str().expect("object has a kind"));
        let mut st = self.lock();
        st.rv += 1;
        let rv = st.rv;
        let ns = if res.namespaced() { obj["metadata"]["namespace"].as_str().unwrap_or("default") } else { "" };
        let ns = ns.to_string();
        let name = obj["metadata"]["name"].as_str().expect("object has a name").to_string();
        let coll = st.objects.entry(res).or_default();
        let old = coll.get(&(ns.clone(), name.clone()));
        let created = old
            .and_then(|o| o["metadata"]["creationTimestamp"].as_str().map(String::from))
            .unwrap_or_else(|| format!("2026-01-01T00:{:02}:{:02}Z", (rv / 60) % 60, rv % 60));
        let uid =
            old.and_then(|o| o["metadata"]["uid"].as_str().map(String::from)).unwrap_or_else(|| format!("uid-{rv}"));
        let type_ = if old.is_some() { "MODIFIED" } else { "ADDED" };
        let meta = &mut obj["metadata"];
        if res.namespaced() {
            meta["namespace"] = json!(ns);
        }
        meta["resourceVersion"] = json!(rv.to_string());
        meta["uid"] = json!(uid);
        if meta.get("creationTimestamp").is_none() {
            meta["creationTimestamp"] = json!(created);
        }
        obj["apiVersion"] = json!(res.api_version());
        coll.insert((ns, name), obj.clone());
        self.publish(&mut st, res, rv, type_, obj)
    }

    /// Deletes an object; returns the instant the change entered the watch streams.
    pub fn delete(&self, kind: &str, ns: &str, name: &str) -> Instant {
        let res = Res::from_kind(kind);
        let mut st = self.lock();
        let Some(mut obj) = st.objects.entry(res).or_default().remove(&(ns.to_string(), name.to_string())) else {
            return Instant::now();
        };
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.publish(&mut st, res, rv, "DELETED", obj)
    }

    fn publish(&self, st: &mut State, res: Res, rv: u64, type_: &str, obj: Value) -> Instant {
        let mut line = serde_json::to_vec(&json!({"type": type_, "object": obj})).unwrap();
        line.push(b'\n');
        let line = Bytes::from(line);
        st.history.push((rv, res, line.clone()));
        let at = Instant::now();
        let _ = self.live.send(Live::Event { res, rv, line });
        at
    }

    /// Compaction: history is forgotten and every open watch ends with a `410 Expired` ERROR
    /// event, so that watchers must list again.
    pub fn compact(&self) {
        let mut st = self.lock();
        st.floor = st.rv;
        st.history.clear();
        let _ = self.live.send(Live::Gone);
    }

    /// Breaks every open watch mid-stream (the connection is cut without ending the body).
    pub fn drop_watches(&self) {
        let _ = self.live.send(Live::Drop);
    }

    /// Sends a BOOKMARK at the current resourceVersion to watches that asked for bookmarks.
    pub fn bookmark(&self) {
        let rv = self.lock().rv;
        let _ = self.live.send(Live::Bookmark { rv });
    }

    /// The next continue token presented answers `410 Gone`.
    pub fn expire_continue_tokens(&self) {
        self.lock().expire_continue = true;
    }

    /// A valid token of `username` (`system:serviceaccount:<ns>:<sa>`) bound to `audiences`
    /// (none: answered as by an authenticator that ignores audiences).
    pub fn token(&self, token: &str, username: &str, audiences: &[&str]) {
        self.lock().tokens.add(token, username, audiences);
    }

    /// Token reviews answer 500 while `fail` holds.
    pub fn fail_token_reviews(&self, fail: bool) {
        self.lock().tokens.fail = fail;
    }

    /// The bodies of the token reviews received so far.
    pub fn reviews(&self) -> Vec<Value> {
        self.lock().tokens.reviews.clone()
    }

    /// Requests received so far (path and query).
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// How many list requests (pages included) a collection got.
    pub fn lists(&self, res: Res) -> usize {
        self.requests().iter().filter(|r| r.starts_with(res.path()) && !r.contains("watch=true")).count()
    }

    /// How many watch streams are open.
    pub fn open_watches(&self) -> usize {
        self.lock().open_watches
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        if path == TOKEN_REVIEWS && req.method() == hyper::Method::POST {
            self.lock().requests.push(path);
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            return self.review(&body);
        }
        let query: HashMap<String, String> = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.lock().requests.push(req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default());
        let Some(res) = Res::SERVED.into_iter().find(|r| r.path() == path) else {
            return plain(StatusCode::NOT_FOUND, "404 page not found\n");
        };
        if self.missing.contains(&res) || req.method() != hyper::Method::GET {
            return plain(StatusCode::NOT_FOUND, "404 page not found\n");
        }
        if query.get("watch").map(String::as_str) == Some("true") {
            self.watch(res, &query)
        } else {
            self.list(res, &query)
        }
    }

    fn review(&self, body: &[u8]) -> Response<Body> {
        let (code, answer) = self.lock().tokens.answer(body);
        json_response(code, &answer)
    }

    fn list(&self, res: Res, query: &HashMap<String, String>) -> Response<Body> {
        let limit = query.get("limit").and_then(|l| l.parse().ok()).unwrap_or(usize::MAX).min(self.page);
        let mut st = self.lock();
        let (rv, mut items) = match query.get("continue") {
            Some(token) => {
                if std::mem::take(&mut st.expire_continue) {
                    st.continues.remove(token);
                }
                match st.continues.remove(token) {
                    Some(rest) => rest,
                    None => {
                        return json_response(
                            StatusCode::GONE,
                            &status(
                                410,
                                "Expired",
                                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                            ),
                        );
                    }
                }
            }
            None => {
                let items: Vec<Value> = st.objects.get(&res).map(|c| c.values().cloned().collect()).unwrap_or_default();
                (st.rv, items)
            }
        };
        let rest = if items.len() > limit { items.split_off(limit) } else { vec![] };
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if !rest.is_empty() {
            st.next_token += 1;
            let token = format!("tok{}", st.next_token);
            metadata["continue"] = json!(token);
            metadata["remainingItemCount"] = json!(rest.len());
            st.continues.insert(token, (rv, rest));
        }
        for item in &mut items {
            // Items of a list carry no apiVersion/kind; the list does.
            if let Some(o) = item.as_object_mut() {
                o.remove("apiVersion");
                o.remove("kind");
            }
        }
        json_response(
            StatusCode::OK,
            &json!({"kind": format!("{}List", res.kind()), "apiVersion": res.api_version(),
                    "metadata": metadata, "items": items}),
        )
    }

    fn watch(&self, res: Res, query: &HashMap<String, String>) -> Response<Body> {
        let from: u64 = query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
        let bookmarks = query.get("allowWatchBookmarks").map(String::as_str) == Some("true");
        let timeout = query
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(1800));
        let (tx, mut rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(256);
        let mut st = self.lock();
        if from < st.floor {
            let line = event_line(
                "ERROR",
                status(410, "Expired", &format!("too old resource version: {from} ({})", st.floor)),
            );
            let _ = tx.try_send(Ok(Frame::data(line)));
        } else {
            let mut live = self.live.subscribe();
            let backlog: Vec<Bytes> =
                st.history.iter().filter(|(rv, r, _)| *rv > from && *r == res).map(|(_, _, l)| l.clone()).collect();
            st.open_watches += 1;
            let floor = st.floor;
            let state = self.state.clone();
            tokio::spawn(async move {
                let deadline = tokio::time::sleep(timeout);
                tokio::pin!(deadline);
                let mut last = from;
                let mut ok = true;
                for line in backlog {
                    ok &= tx.send(Ok(Frame::data(line))).await.is_ok();
                }
                while ok {
                    let msg = tokio::select! {
                        _ = &mut deadline => break,
                        _ = tx.closed() => break,
                        m = live.recv() => m,
                    };
                    match msg {
                        Ok(Live::Event { res: r, rv, line }) if r == res && rv > last => {
                            last = rv;
                            ok = tx.send(Ok(Frame::data(line))).await.is_ok();
                        }
                        Ok(Live::Event { .. }) => {}
                        Ok(Live::Bookmark { rv }) if bookmarks => {
                            let obj = json!({"kind": res.kind(), "apiVersion": res.api_version(),
                                             "metadata": {"resourceVersion": rv.to_string()}});
                            ok = tx.send(Ok(Frame::data(event_line("BOOKMARK", obj)))).await.is_ok();
                        }
                        Ok(Live::Bookmark { .. }) => {}
                        Ok(Live::Gone) => {
                            let obj = status(410, "Expired", &format!("too old resource version: {last} ({floor})"));
                            let _ = tx.send(Ok(Frame::data(event_line("ERROR", obj)))).await;
                            break;
                        }
                        Ok(Live::Drop) | Err(_) => {
                            let _ = tx.send(Err(std::io::Error::other("connection reset"))).await;
                            break;
                        }
                    }
                }
                state.lock().unwrap().open_watches -= 1;
            });
        }
        drop(st);
        let body = StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        let mut resp = Response::new(BodyExt::boxed(body));
        resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
        resp
    }
}
