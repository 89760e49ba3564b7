//! A discovery subscriber like a proxy's: one h2c (or HTTP/1.1) connection, the NDJSON stream
//! framed by `vane_runtime::ndjson` and parsed with `vane_route::discovery`.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use vane_route::discovery::{DiscoveryState, MAX_LINE_BYTES, Message};

/// Open a stream and keep what arrives.
#[derive(Debug)]
pub struct Subscriber {
    pub status: u16,
    pub state: DiscoveryState,
    pub received: Vec<Message>,
    rx: mpsc::UnboundedReceiver<Message>,
}

impl Subscriber {
    /// `GET /v1/discovery?<query>` over HTTP/2 with prior knowledge.
    pub async fn h2c(addr: SocketAddr, query: &str) -> Subscriber {
        let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(conn);
        let req =
            hyper::Request::get(format!("http://{addr}/v1/discovery?{query}")).body(Empty::<Bytes>::new()).unwrap();
        let resp = send.send_request(req).await.unwrap();
        Subscriber::read(resp).await
    }

    /// The same over HTTP/1.1.
    pub async fn http1(addr: SocketAddr, query: &str) -> Subscriber {
        let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::get(format!("/v1/discovery?{query}"))
            .header("host", addr.to_string())
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        Subscriber::read(resp).await
    }

    /// The same over TLS (HTTP/2 by ALPN) with this client configuration.
    pub async fn tls(addr: SocketAddr, config: std::sync::Arc<rustls::ClientConfig>, query: &str) -> Subscriber {
        let mut conn = super::tls::connect(addr, config).await.unwrap();
        let req = hyper::Request::get(format!("https://control/v1/discovery?{query}"))
            .body(http_body_util::Full::<Bytes>::default())
            .unwrap();
        let resp = conn.send.send_request(req).await.unwrap();
        Subscriber::read(resp).await
    }

    async fn read(resp: hyper::Response<hyper::body::Incoming>) -> Subscriber {
        let status = resp.status().as_u16();
        let (tx, rx) = mpsc::unbounded_channel();
        let mut lines = vane_runtime::ndjson::lines(resp.into_body(), MAX_LINE_BYTES);
        // A refusal's body is not a stream of messages.
        let ok = status == 200;
        tokio::spawn(async move {
            if !ok {
                return;
            }
            // The stream ends (or breaks, when the control service stops) with the body.
            while let Some(Ok(line)) = lines.next_line().await {
                let msg = Message::from_line(line.as_bytes()).expect("every line is a valid message");
                if tx.send(msg).is_err() {
                    return;
                }
            }
        });
        Subscriber { status, state: DiscoveryState::default(), received: Vec::new(), rx }
    }

    /// The next message (applied to `state`), or `None` when the stream ended or nothing came in time.
    pub async fn next(&mut self, within: Duration) -> Option<Message> {
        let msg = tokio::time::timeout(within, self.rx.recv()).await.ok()??;
        self.state.apply(msg.clone()).expect("messages apply in order");
        self.received.push(msg.clone());
        Some(msg)
    }

    /// Reads messages until `pred` holds on the state; panics with `what` after 10 s.
    pub async fn until(&mut self, what: &str, pred: impl Fn(&DiscoveryState) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !pred(&self.state) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if self.next(left).await.is_none() {
                panic!("timed out waiting for: {what}; state: {:#?}; got: {:#?}", self.state, self.received);
            }
        }
    }

    /// Endpoints of a backend, if held.
    pub fn endpoints(&self, backend: &str) -> Option<Vec<String>> {
        self.state.backends().get(backend).map(|b| b.endpoints.clone())
    }

    /// `(backend, weight)` of a service's first route.
    pub fn weights(&self, service: &str) -> Vec<(String, u32)> {
        self.state
            .services()
            .get(service)
            .map_or_else(Vec::new, |s| s.routes[0].backends.iter().map(|b| (b.backend.clone(), b.weight)).collect())
    }

    /// Route names of a service.
    pub fn routes(&self, service: &str) -> Vec<String> {
        self.state.services().get(service).map_or_else(Vec::new, |s| s.routes.iter().map(|r| r.name.clone()).collect())
    }
}
