//! Shared support for the black-box tests and the benchmark.

#![allow(dead_code)]

pub mod fake_api;
pub mod objects;
pub mod subscriber;
pub mod tls;
pub mod tokens;

use std::net::SocketAddr;
use std::time::Duration;
use vane_control::tables::TableSettings;
use vane_runtime::CancellationToken;

/// A control service running in-process against a fake API server.
#[derive(Debug)]
pub struct Control {
    pub running: vane_control::Running,
    /// Cancel to shut the control service down.
    pub trigger: CancellationToken,
}

impl Control {
    /// Starts the control service on `127.0.0.1:0` ports against `fake`.
    pub async fn start(fake: &fake_api::FakeApi, heartbeat: Duration) -> Control {
        Control::start_with(fake, heartbeat, None).await
    }

    /// The same, with the identity service on when `identity` is given.
    pub async fn start_with(
        fake: &fake_api::FakeApi,
        heartbeat: Duration,
        identity: Option<vane_control::identity::IdentitySettings>,
    ) -> Control {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let trigger = CancellationToken::new();
        let settings = vane_control::Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            tables: TableSettings::default(),
            heartbeat,
            identity,
        };
        let running = vane_control::start(fake.client(), settings, trigger.clone()).await.unwrap();
        Control { running, trigger }
    }

    pub fn listen(&self) -> SocketAddr {
        self.running.listen
    }

    /// GET on the admin port: (status, body).
    pub async fn admin(&self, path: &str) -> (u16, String) {
        get(self.running.admin, path).await
    }

    /// Waits until `/ready` answers 200.
    pub async fn ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.admin("/ready").await.0 != 200 {
            assert!(tokio::time::Instant::now() < deadline, "control service never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A plain HTTP/1.1 GET: (status, body).
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    use http_body_util::BodyExt;
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", addr.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The value of a metric line that starts with `prefix` (name and labels), if present.
pub fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}
