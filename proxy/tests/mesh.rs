//! A meshed hop between two proxies in this process, over real sockets and real TLS: the
//! outbound proxy calls the inbound one over mTLS, the app behind the inbound one sees the
//! caller's identity, and what must be refused is (another identity, no certificate under
//! `all-authenticated`, a claimed identity header).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use vane_identity::ca::{self, Authority};
use vane_identity::{Credentials, SpiffeId};
use vane_proxy::app::{Options, Running, start};
use vane_proxy::config::Source;

const TD: &str = "cluster.local";

/// An app that answers with the `vane-client-id` header it was given (or `-`).
async fn app() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let id = req.headers().get("vane-client-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(id.to_string()))))
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
    addr
}

fn creds(ca: &Authority, id: &SpiffeId) -> Credentials {
    let req = vane_identity::csr::Request::new(id).unwrap();
    let issued = ca.issue(&req.der, id, Duration::from_secs(3600)).unwrap();
    Credentials::new(&issued.chain_pem, req.key(), ca.anchors_pem()).unwrap()
}

/// The PEM files of an identity, in a directory of their own (kept for the test's life).
fn files(ca: &Authority, id: &SpiffeId) -> (tempdir::Dir, vane_route::config::IdentityConfig) {
    let req = vane_identity::csr::Request::new(id).unwrap();
    let issued = ca.issue(&req.der, id, Duration::from_secs(3600)).unwrap();
    let dir = tempdir::Dir::new();
    let key = match req.key() {
        rustls_pki_types::PrivateKeyDer::Pkcs8(k) => k,
        _ => unreachable!("rcgen keys are PKCS#8"),
    };
    std::fs::write(dir.path("cert.pem"), &issued.chain_pem).unwrap();
    std::fs::write(dir.path("key.pem"), pem_text("PRIVATE KEY", key.secret_pkcs8_der())).unwrap();
    std::fs::write(dir.path("roots.pem"), ca.anchors_pem()).unwrap();
    let cfg = vane_route::config::IdentityConfig {
        trust_domain: TD.into(),
        roots: dir.path("roots.pem").display().to_string(),
        cert: Some(dir.path("cert.pem").display().to_string()),
        key: Some(dir.path("key.pem").display().to_string()),
        control: None,
        reload: Duration::from_secs(3600).into(),
    };
    (dir, cfg)
}

/// PEM text of one DER section.
fn pem_text(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

mod tempdir {
    /// A directory removed when dropped.
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("vane-mesh-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub fn path(&self, name: &str) -> std::path::PathBuf {
            self.0.join(name)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A proxy with `yaml` and an identity read from files (`id`'s, signed by `ca`) when given.
async fn proxy(yaml: &str, identity: Option<(&Authority, &SpiffeId)>) -> (Running, Option<tempdir::Dir>) {
    let table = vane_route::Table::from_yaml(yaml).unwrap();
    let (dir, identity) = match identity {
        Some((ca, id)) => {
            let (d, c) = files(ca, id);
            (Some(d), Some(c))
        }
        None => (None, None),
    };
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let opts = Options {
        source: Source::Embedded,
        outbound: any,
        inbound: any,
        admin: any,
        reload_interval: Duration::from_secs(3600),
        control: None,
        transparent: false,
        identity,
    };
    let running = start(opts, table).await.unwrap();
    // The first certificate is read before the listeners serve.
    assert!(dir.is_none() || running.store.identity().load().is_some());
    (running, dir)
}

fn server_yaml(app: SocketAddr, default: &str) -> String {
    format!("proxy:\n  authz:\n    default: {default}\ninbound:\n  forward_to: \"{app}\"\n")
}

fn client_yaml(server: SocketAddr, expected: &str) -> String {
    format!(
        "services:\n  - name: llm\n    routes:\n      - name: all\n        backends: [{{backend: llm}}]\nbackends:\n  - name: llm\n    endpoints: [\"{server}\"]\n    identity: {expected}\n"
    )
}

async fn get(addr: SocketAddr, host: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.unwrap();
    tokio::spawn(conn);
    let mut b = http::Request::builder().uri("/v1/models").header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = tx.send_request(b.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let err = resp.headers().get("vane-proxy-error").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, err, String::from_utf8_lossy(&body).into_owned())
}

fn authority() -> Arc<Authority> {
    let g = ca::generate(TD, 30, 10).unwrap();
    Arc::new(Authority::from_pem(TD, &g.issuer_pem, &g.issuer_key_pem, &g.anchor_pem).unwrap())
}

#[tokio::test]
async fn a_meshed_call_carries_the_callers_identity_to_the_app() {
    let ca = authority();
    let (llm, chat) = (SpiffeId::new(TD, "models", "llm").unwrap(), SpiffeId::new(TD, "apps", "chat").unwrap());
    let (server, _d1) = proxy(&server_yaml(app().await, "all-authenticated"), Some((&ca, &llm))).await;
    let (client, _d2) = proxy(&client_yaml(server.inbound, &llm.to_string()), Some((&ca, &chat))).await;

    let (status, _, body) =
        get(client.outbound, "llm", &[("vane-client-id", "spiffe://cluster.local/ns/x/sa/forged")]).await;
    assert_eq!((status, body.as_str()), (200, "spiffe://cluster.local/ns/apps/sa/chat"));
    let m = server.metrics.render(std::iter::empty());
    assert!(m.contains("vane_inbound_tls_connections_total 1"), "{m}");
    assert!(
        m.contains("vane_authz_decisions_total{decision=\"allow\",rule=\"default\",authenticated=\"true\"} 1"),
        "{m}"
    );

    // Plaintext straight to the inbound listener: no identity, so all-authenticated denies it,
    // and a header claiming one changes nothing.
    let (status, err, _) = get(server.inbound, "llm", &[("vane-client-id", chat.to_string().as_str())]).await;
    assert_eq!((status, err.as_str()), (403, "unauthorized"));
    let m = server.metrics.render(std::iter::empty());
    assert!(
        m.contains("vane_authz_decisions_total{decision=\"deny\",rule=\"default\",authenticated=\"false\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn a_server_with_another_identity_is_refused_even_when_the_ca_signed_it() {
    let ca = authority();
    let impostor = SpiffeId::new(TD, "models", "impostor").unwrap();
    let chat = SpiffeId::new(TD, "apps", "chat").unwrap();
    let (server, _d1) = proxy(&server_yaml(app().await, "all-unauthenticated"), Some((&ca, &impostor))).await;
    let (client, _d2) =
        proxy(&client_yaml(server.inbound, "spiffe://cluster.local/ns/models/sa/llm"), Some((&ca, &chat))).await;
    let (status, err, _) = get(client.outbound, "llm", &[]).await;
    assert_eq!((status, err.as_str()), (502, "connect-failed"));
}

#[tokio::test]
async fn plaintext_callers_are_served_under_the_default_policy() {
    let ca = authority();
    let llm = SpiffeId::new(TD, "models", "llm").unwrap();
    let (server, _d1) = proxy(&server_yaml(app().await, "all-unauthenticated"), Some((&ca, &llm))).await;
    let (status, _, body) =
        get(server.inbound, "llm", &[("vane-client-id", "spiffe://cluster.local/ns/x/sa/forged")]).await;
    assert_eq!((status, body.as_str()), (200, "-"), "served, and the claimed identity removed");
}

#[tokio::test]
async fn certificates_rotated_under_load_lose_no_request() {
    let ca = authority();
    let (llm, chat) = (SpiffeId::new(TD, "models", "llm").unwrap(), SpiffeId::new(TD, "apps", "chat").unwrap());
    let (server, _d1) = proxy(&server_yaml(app().await, "all-authenticated"), Some((&ca, &llm))).await;
    let (client, _d2) = proxy(&client_yaml(server.inbound, &llm.to_string()), Some((&ca, &chat))).await;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let (addr, stop, done) = (client.outbound, Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    answers.push(get(addr, "llm", &[]).await);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                answers
            })
        })
        .collect();
    // New certificates on both sides, while requests flow; each side's next connection uses
    // them, and connections made before keep theirs. Each rotation waits for a few answers
    // made after it, however slow the machine, so every certificate carries traffic.
    for _ in 0..10 {
        let seen = done.load(Ordering::Relaxed);
        let flowed = async {
            while done.load(Ordering::Relaxed) < seen + 5 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), flowed).await.expect("requests flow between rotations");
        server.store.identity().set(&creds(&ca, &llm)).unwrap();
        client.store.identity().set(&creds(&ca, &chat)).unwrap();
        // A new connection after each rotation: the pool's one is closed by the server side.
        for e in &client.store.load().backends[0].endpoints {
            e.pool.close_h2();
        }
    }
    let seen = done.load(Ordering::Relaxed);
    while done.load(Ordering::Relaxed) < seen + 5 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for t in load {
        for (status, err, body) in t.await.unwrap() {
            assert_eq!((status, err.as_str(), body.as_str()), (200, "", "spiffe://cluster.local/ns/apps/sa/chat"));
            total += 1;
        }
    }
    assert!(total >= 55, "every answer counted: {total}");
    let m = server.metrics.render(std::iter::empty());
    let conns = m
        .lines()
        .find_map(|l| l.strip_prefix("vane_inbound_tls_connections_total "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(conns >= 5, "the client made new connections with the new certificates: {conns}");
}

#[tokio::test]
async fn a_tls_1_2_caller_is_refused_at_the_handshake() {
    let ca = authority();
    let llm = SpiffeId::new(TD, "models", "llm").unwrap();
    let (server, _d1) = proxy(&server_yaml(app().await, "all-unauthenticated"), Some((&ca, &llm))).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(vane_identity::pem::certs(ca.anchors_pem()).unwrap());
    let tls12 = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(server.inbound).await.unwrap();
    let name = vane_identity::tls::mesh_server_name(&llm, server.inbound);
    let r = tokio_rustls::TlsConnector::from(Arc::new(tls12)).connect(name, tcp).await;
    assert!(r.is_err(), "TLS 1.2 is refused");
    let failures =
        || server.metrics.render(std::iter::empty()).lines().any(|l| l == "vane_inbound_tls_failures_total 1");
    assert!(
        tokio::time::timeout(Duration::from_secs(2), async {
            while !failures() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .is_ok()
    );
}
