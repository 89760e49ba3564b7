//! Support for Vane's black-box tests: test backends on real sockets, clients, and the proxy
//! started as a real process with a config file.
#![allow(missing_docs, missing_debug_implementations)]

pub mod identity;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

// === bodies ===

/// A response body streamed from a channel of frames (data and trailers).
pub struct ChannelBody(pub mpsc::Receiver<Frame<Bytes>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(Ok))
    }
}

pub type TestBody = http_body_util::Either<Full<Bytes>, ChannelBody>;

pub fn full(b: impl Into<Bytes>) -> TestBody {
    http_body_util::Either::Left(Full::new(b.into()))
}

// === backends ===

/// Serves `handler` over HTTP/1.1 and h2c (prior knowledge) on a fresh loopback port.
pub async fn serve<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    serve_counted(handler, Arc::new(AtomicUsize::new(0))).await
}

/// Like [`serve`], counting accepted connections in `conns`.
pub async fn serve_counted<F, Fut>(handler: F, conns: Arc<AtomicUsize>) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind backend");
    let addr = listener.local_addr().expect("backend addr");
    tokio::spawn(async move {
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        while let Ok((stream, _)) = listener.accept().await {
            conns.fetch_add(1, Ordering::Relaxed);
            // As real servers do: without it, a body written after its headers waits for a delayed ACK.
            let _ = stream.set_nodelay(true);
            let h = handler.clone();
            let svc = hyper::service::service_fn(move |req| {
                let h = h.clone();
                async move { Ok::<_, Infallible>(h(req).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
            tokio::spawn(conn);
        }
    });
    addr
}

/// A named backend that answers every request with its name, after an adjustable delay.
#[derive(Clone)]
pub struct Backend {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub delay_ms: Arc<AtomicU64>,
    pub conns: Arc<AtomicUsize>,
}

impl Backend {
    pub async fn start(name: &'static str) -> Backend {
        let hits = Arc::new(AtomicUsize::new(0));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (h, d) = (Arc::clone(&hits), Arc::clone(&delay_ms));
        let conns = Arc::new(AtomicUsize::new(0));
        let addr = serve_counted(
            move |req: Request<Incoming>| {
                let (h, d) = (Arc::clone(&h), Arc::clone(&d));
                async move {
                    h.fetch_add(1, Ordering::Relaxed);
                    let delay = d.load(Ordering::Relaxed);
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    // HTTP/1.1 carries the authority in Host, HTTP/2 in :authority (the URI).
                    let host = match req.headers().get("host").and_then(|v| v.to_str().ok()) {
                        Some(h) => h.to_string(),
                        None => req.uri().authority().map(|a| a.to_string()).unwrap_or_default(),
                    };
                    let path = req.uri().path().to_string();
                    let version = format!("{:?}", req.version());
                    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let echo = serde_json::json!({
                        "name": name, "host": host, "path": path, "version": version,
                        "body": String::from_utf8_lossy(&body),
                    });
                    let mut r = Response::new(full(echo.to_string()));
                    r.headers_mut().insert("x-served-by", http::HeaderValue::from_static(name));
                    r
                }
            },
            Arc::clone(&conns),
        )
        .await;
        Backend { name, addr, hits, delay_ms, conns }
    }

    /// Connections the backend accepted.
    pub fn conns(&self) -> usize {
        self.conns.load(Ordering::Relaxed)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::Relaxed);
    }
}

/// A loopback address where nothing listens (connections are refused).
pub fn refused_addr() -> SocketAddr {
    let l = StdListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}

// === clients ===

/// Connects every request to one address (the proxy), whatever its URI authority says, so
/// requests carry the service name as authority as an application's would.
#[derive(Clone)]
pub struct FixedConnector(pub SocketAddr);

impl tower_service::Service<http::Uri> for FixedConnector {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: http::Uri) -> Self::Future {
        let addr = self.0;
        Box::pin(async move {
            let s = tokio::net::TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Ok(TokioIo::new(s))
        })
    }
}

pub type TestClient = Client<FixedConnector, Full<Bytes>>;

/// An HTTP/1.1 client whose connections all go to `addr`.
pub fn h1_client(addr: SocketAddr) -> TestClient {
    Client::builder(TokioExecutor::new()).build(FixedConnector(addr))
}

/// An h2c (prior knowledge) client whose connections all go to `addr`.
pub fn h2_client(addr: SocketAddr) -> TestClient {
    Client::builder(TokioExecutor::new()).http2_only(true).build(FixedConnector(addr))
}

/// A response read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
    pub trailers: Option<HeaderMap>,
}

impl Answer {
    pub fn served_by(&self) -> &str {
        self.headers.get("x-served-by").and_then(|v| v.to_str().ok()).unwrap_or("")
    }
    pub fn proxy_error(&self) -> &str {
        self.headers.get("vane-proxy-error").and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

/// Sends a request with `host` as its authority and reads the whole answer.
pub async fn send(
    client: &TestClient,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Answer, String> {
    let mut b = Request::builder().method(method).uri(format!("http://{host}{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(body.into())).map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.map_err(|e| e.to_string())?;
    let trailers = collected.trailers().cloned();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        trailers,
    })
}

pub async fn get(client: &TestClient, host: &str, path: &str, headers: &[(&str, &str)]) -> Result<Answer, String> {
    send(client, "GET", host, path, headers, Bytes::new()).await
}

/// A blocking HTTP/1.1 GET with `Connection: close` (for admin endpoints); returns status and body.
pub fn admin_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// Sends raw bytes on a new connection and returns what comes back (until close or 2 s).
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(bytes)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A response read off a raw socket: status, header lines in wire order, and body.
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawAnswer {
    /// Parses `HTTP/1.x NNN reason\r\nname: value\r\n...\r\n\r\nbody`; `None` if it is not that.
    pub fn parse(text: &str) -> Option<RawAnswer> {
        let (head, body) = text.split_once("\r\n\r\n")?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next()?;
        if !status_line.starts_with("HTTP/1.") {
            return None;
        }
        let status = status_line.get(9..12)?.parse().ok()?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Some(RawAnswer { status, headers, body: body.to_string() })
    }

    /// Every value of header `name` (case-insensitive), in wire order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().filter(|(k, _)| *k == name).map(|(_, v)| v.as_str()).collect()
    }

    /// The single value of header `name`, or "" when it is absent.
    pub fn header(&self, name: &str) -> &str {
        self.header_values(name).first().copied().unwrap_or("")
    }
}

/// Polls `cond` every 10 ms until it holds (true) or `within` has passed (false).
pub async fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Like [`wait_until`], for a condition that must itself await (a request, say).
pub async fn wait_until_async<F, Fut>(within: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of a metric line (first whose text contains every `needle`).
pub fn metric(text: &str, name: &str, needles: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && needles.iter().all(|n| l.contains(n)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

// === the proxy process ===

fn free_port() -> SocketAddr {
    let l = StdListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// The proxy binary built by this package (`target/<profile>/vane-proxy-test`).
pub fn proxy_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CARGO_BIN_EXE_vane-proxy-test") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/vane-proxy-test
    exe.parent().and_then(|d| d.parent()).expect("target dir").join("vane-proxy-test")
}

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// `vane-proxy` running as a child process.
pub struct Proxy {
    pub child: Child,
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    dir: PathBuf,
}

impl Proxy {
    /// Starts the proxy with `yaml` as its config file and waits until it is ready.
    pub fn start(yaml: &str) -> Proxy {
        Proxy::try_start(yaml).expect("proxy did not become ready")
    }

    pub fn try_start(yaml: &str) -> Result<Proxy, String> {
        Proxy::try_start_with(yaml, "50ms")
    }

    /// Starts with extra command-line arguments and waits until it is ready.
    pub fn start_with_args(yaml: &str, args: &[&str]) -> Result<Proxy, String> {
        Proxy::spawn(yaml, "50ms", args, true)
    }

    /// Starts with extra arguments and waits only until the admin listener answers (ready or not).
    pub fn try_start_with_args_unready(yaml: &str, args: &[&str]) -> Proxy {
        Proxy::spawn(yaml, "50ms", args, false).expect("proxy did not start")
    }

    /// Starts with a given config poll interval (a long one leaves SIGHUP as the only trigger).
    pub fn try_start_with(yaml: &str, reload_interval: &str) -> Result<Proxy, String> {
        Proxy::spawn(yaml, reload_interval, &[], true)
    }

    fn spawn(yaml: &str, reload_interval: &str, extra: &[&str], wait_ready: bool) -> Result<Proxy, String> {
        // The ports are free when picked but may be taken before the proxy binds them (another
        // test's listener on port 0 can get the same one): a proxy that exits with 1 (runtime
        // failure, such as a port in use) is started again on other ports.
        for attempt in 0..3 {
            // A fresh directory each time: a failed attempt's drop removes its own.
            let dir = std::env::temp_dir().join(format!(
                "vane-test-{}-{}",
                std::process::id(),
                DIRS.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let config_path = dir.join("vane.yaml");
            std::fs::write(&config_path, yaml).map_err(|e| e.to_string())?;
            let (outbound, inbound, admin) = (free_port(), free_port(), free_port());
            let child = Command::new(proxy_bin())
                .arg("--config")
                .arg(&config_path)
                .args([
                    "--outbound",
                    &outbound.to_string(),
                    "--inbound",
                    &inbound.to_string(),
                    "--admin",
                    &admin.to_string(),
                ])
                .args(["--reload-interval", reload_interval, "--log", "warn"])
                .args(extra)
                .stdin(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?;
            let mut p = Proxy { child, outbound, inbound, admin, config_path, dir };
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                match admin_get(admin, "/ready") {
                    Ok((200, _)) => return Ok(p),
                    Ok(_) if !wait_ready => return Ok(p),
                    _ => {}
                }
                if let Ok(Some(status)) = p.child.try_wait() {
                    if status.code() == Some(1) && attempt < 2 {
                        break;
                    }
                    return Err(format!("proxy exited early: {status}"));
                }
                if Instant::now() > deadline {
                    return Err("proxy not ready after 15 s".into());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Err("proxy could not start on free ports in 3 tries".into())
    }

    /// Replaces the config file atomically (write + rename), as a config management tool would.
    pub fn write_config(&self, yaml: &str) {
        let tmp = self.dir.join("vane.yaml.tmp");
        std::fs::write(&tmp, yaml).expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("rename config");
    }

    /// The config version the proxy serves (from `/ready`).
    pub fn version(&self) -> u64 {
        for _ in 0..50 {
            let v = admin_get(self.admin, "/ready").ok().and_then(|(_, b)| {
                let rest = b.split("version ").nth(1)?;
                rest[..rest.find(|c: char| !c.is_ascii_digit())?].parse().ok()
            });
            if let Some(v) = v {
                return v;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        0
    }

    /// Waits until the served config version is at least `v`.
    pub fn wait_version(&self, v: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.version() < v {
            assert!(Instant::now() < deadline, "config version {v} not applied in 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn metrics(&self) -> String {
        admin_get(self.admin, "/metrics").map(|(_, b)| b).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status();
    }

    /// Waits for the process to exit (up to `within`) and returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A config with one service `svc` whose single route splits over backends by weight.
pub fn split_config(backends: &[(&str, &[SocketAddr], u32)], extra_route: &str) -> String {
    let mut y = String::from("backends:\n");
    for (name, eps, _) in backends {
        let eps: Vec<String> = eps.iter().map(|e| format!("\"{e}\"")).collect();
        y.push_str(&format!("  - {{ name: {name}, endpoints: [{}] }}\n", eps.join(", ")));
    }
    y.push_str("services:\n  - name: svc\n    routes:\n      - name: main\n");
    y.push_str(extra_route);
    y.push_str("        backends:\n");
    for (name, _, w) in backends {
        y.push_str(&format!("          - {{ backend: {name}, weight: {w} }}\n"));
    }
    y
}
