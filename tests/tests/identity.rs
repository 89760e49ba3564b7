//! The proxy's workload identity: a certificate from the identity service (a small one here,
//! `vane_tests::identity`, over real TLS) or from files, `/ready` and admin `/identity`, renewal
//! before expiry, the discovery stream over mTLS, and the key kept off the filesystem.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vane_proxy::app::{ControlTarget, Options, Running};
use vane_route::config::{BackendConfig, IdentityConfig, IdentityServiceConfig, RouteConfig, ServiceConfig};
use vane_route::discovery::{Message, Subscription};
use vane_route::duration::HumanDuration;
use vane_route::{Config, Table};
use vane_tests::identity::{CHAT, CONTROL, Ca, FakeIdentity};
use vane_tests::*;

const ANY_PORT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// A fresh, empty directory for one test.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vane-identity-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("test dir");
    d
}

/// Roots and a token in `d`; the identity-service config that names them.
fn service_mode(svc: &FakeIdentity, ca: &Ca, d: &Path, token: &str) -> IdentityConfig {
    std::fs::write(d.join("roots.pem"), &ca.anchors_pem).unwrap();
    std::fs::write(d.join("token"), token).unwrap();
    IdentityConfig {
        trust_domain: "cluster.local".into(),
        roots: d.join("roots.pem").display().to_string(),
        cert: None,
        key: None,
        control: Some(IdentityServiceConfig {
            addr: svc.addr.to_string(),
            server_identity: None,
            identity: CHAT.into(),
            token: d.join("token").display().to_string(),
        }),
        reload: HumanDuration(Duration::from_secs(10)),
    }
}

async fn start_proxy(identity: IdentityConfig, control: Option<SocketAddr>) -> anyhow::Result<Running> {
    let opts = Options {
        source: vane_proxy::config::Source::Embedded,
        outbound: ANY_PORT,
        inbound: ANY_PORT,
        admin: ANY_PORT,
        reload_interval: Duration::from_secs(1),
        control: control.map(|a| ControlTarget { addr: a.to_string(), subscription: Subscription::All }),
        transparent: false,
        identity: Some(identity),
    };
    vane_proxy::app::start(opts, Table::from_config(Config::default()).unwrap()).await
}

/// Admin `/identity`.
fn report(admin: SocketAddr) -> serde_json::Value {
    let (code, body) = admin_get(admin, "/identity").expect("admin answers");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

fn ready(admin: SocketAddr) -> (u16, String) {
    admin_get(admin, "/ready").expect("admin answers")
}

fn metrics(admin: SocketAddr) -> String {
    admin_get(admin, "/metrics").map(|(_, b)| b).unwrap_or_default()
}

fn renewals(admin: SocketAddr, outcome: &str) -> f64 {
    metric(&metrics(admin), "vane_identity_renewals_total", &[&format!("outcome=\"{outcome}\"")]).unwrap_or(0.0)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_certificate_makes_the_proxy_ready_and_is_shown() {
    let ca = Ca::new();
    let svc = FakeIdentity::start(&ca, CONTROL).await;
    svc.hold.send_replace(true);
    let d = dir("first");
    let proxy = start_proxy(service_mode(&svc, &ca, &d, "good"), None).await.unwrap();
    let (code, body) = ready(proxy.admin);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("waiting for the first certificate"), "{body}");
    let r = report(proxy.admin);
    assert_eq!(
        (r["state"].as_str(), r["source"].as_str(), r["identity"].as_str()),
        (Some("waiting"), Some("control"), None)
    );
    assert!(
        metric(&metrics(proxy.admin), "vane_identity_cert_expiry_seconds", &[]).is_none(),
        "no certificate, no gauge"
    );

    svc.hold.send_replace(false);
    assert!(wait_until(Duration::from_secs(10), || ready(proxy.admin).0 == 200).await, "{:?}", report(proxy.admin));
    let r = report(proxy.admin);
    assert_eq!((r["state"].as_str(), r["identity"].as_str()), (Some("valid"), Some(CHAT)), "{r}");
    let not_after = r["not_after"].as_u64().unwrap();
    assert!(not_after.abs_diff(unix_now() + 3600) < 60, "{r}");
    let left = r["expires_in_seconds"].as_i64().unwrap();
    assert!((3500..=3600).contains(&left), "{r}");
    assert!(r["last_error"].is_null(), "{r}");
    assert_eq!(proxy.identity.load().map(|l| l.id.to_string()).as_deref(), Some(CHAT));
    let m = metrics(proxy.admin);
    let expiry = metric(&m, "vane_identity_cert_expiry_seconds", &[]).unwrap();
    assert!((3500.0..=3600.0).contains(&expiry), "{m}");
    assert_eq!(renewals(proxy.admin, "ok"), 1.0);
    assert_eq!((svc.issued.load(Ordering::Relaxed), svc.refused.load(Ordering::Relaxed)), (1, 0));
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_leaves_the_proxy_unready_and_is_asked_again() {
    let ca = Ca::new();
    let svc = FakeIdentity::start(&ca, CONTROL).await;
    let d = dir("refused");
    let proxy = start_proxy(service_mode(&svc, &ca, &d, "bad"), None).await.unwrap();
    // Counted by the proxy once it has the answer, so after the service counted its refusal.
    assert!(wait_until(Duration::from_secs(10), || renewals(proxy.admin, "error") >= 3.0).await, "not asked again");
    assert!(svc.refused.load(Ordering::Relaxed) >= 3);
    let (code, body) = ready(proxy.admin);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("waiting for the first certificate"), "{body}");
    let r = report(proxy.admin);
    assert_eq!(r["state"].as_str(), Some("waiting"));
    let why = r["last_error"].as_str().unwrap_or_default();
    assert!(why.contains("403") && why.contains("token"), "{r}");
    assert_eq!(renewals(proxy.admin, "ok"), 0.0);

    // The token file is read again for each request (projected tokens are rotated).
    std::fs::write(d.join("token"), "good\n").unwrap();
    assert!(wait_until(Duration::from_secs(20), || ready(proxy.admin).0 == 200).await, "{:?}", report(proxy.admin));
    let r = report(proxy.admin);
    assert_eq!((r["state"].as_str(), r["identity"].as_str()), (Some("valid"), Some(CHAT)), "{r}");
    assert!(r["last_error"].is_null(), "{r}");
    let _ = std::fs::remove_dir_all(&d);
}

/// A snapshot that routes `llm.models` to `backend`.
fn snapshot(backend: SocketAddr) -> Message {
    let services = vec![ServiceConfig {
        name: "llm.models.svc.cluster.local".into(),
        hosts: vec!["llm.models".into()],
        routes: vec![RouteConfig {
            name: "default".into(),
            matches: Default::default(),
            backends: vec![vane_route::config::WeightedBackend { backend: "llm".into(), weight: 1 }],
            sticky: None,
            timeout: None,
            retries: None,
            coalesce: None,
            hedge: None,
        }],
    }];
    let backends = vec![BackendConfig {
        name: "llm".into(),
        protocol: Default::default(),
        endpoints: vec![backend.to_string()],
        balancer: None,
        identity: None,
        identities: Default::default(),
    }];
    Message::Snapshot { version: 1, services, backends, authz: None }
}

/// A 3 s certificate is renewed before it expires, each time with a new key; the proxy stays
/// ready throughout; the discovery stream goes over TLS with the proxy's certificate, and the
/// one connection made with the first certificate stays up across the renewals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_certificate_is_renewed_before_it_expires() {
    let ca = Ca::new();
    let svc = FakeIdentity::start(&ca, CONTROL).await;
    svc.lifetime_ms.store(3_000, Ordering::Relaxed);
    let backend = Backend::start("llm").await;
    *svc.snapshot.lock().unwrap() = snapshot(backend.addr);
    let d = dir("renew");
    let proxy = start_proxy(service_mode(&svc, &ca, &d, "good"), Some(svc.addr)).await.unwrap();
    assert!(wait_until(Duration::from_secs(10), || ready(proxy.admin).0 == 200).await, "{:?}", ready(proxy.admin));

    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(7);
    while std::time::Instant::now() < deadline {
        let r = report(proxy.admin);
        assert_eq!(r["state"].as_str(), Some("valid"), "{r}");
        let (code, body) = ready(proxy.admin);
        assert_eq!(code, 200, "unready during renewals: {body}");
        seen.insert(r["not_after"].as_u64().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.len() >= 3, "not_after did not advance twice in 7 s: {seen:?}");
    assert!(renewals(proxy.admin, "ok") >= 3.0);
    assert_eq!(renewals(proxy.admin, "error"), 0.0);
    let keys = svc.keys.lock().unwrap().clone();
    let distinct: std::collections::BTreeSet<_> = keys.iter().collect();
    assert_eq!(distinct.len(), keys.len(), "a key was used twice");

    let peers = svc.discovery_peers.lock().unwrap().clone();
    assert_eq!(peers, [Some(CHAT.to_string())], "one discovery connection, made with the proxy's certificate");
    let r = get(&h1_client(proxy.outbound), "llm.models", "/", &[]).await.unwrap();
    assert_eq!(r.served_by(), "llm", "the snapshot came over the TLS stream");
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_service_with_another_identity_is_asked_nothing() {
    let ca = Ca::new();
    let svc = FakeIdentity::start(&ca, "spiffe://cluster.local/ns/evil/sa/mallory").await;
    let d = dir("impostor");
    let proxy = start_proxy(service_mode(&svc, &ca, &d, "good"), None).await.unwrap();
    let refused = || report(proxy.admin)["last_error"].as_str().is_some_and(|e| e.contains(CONTROL));
    assert!(wait_until(Duration::from_secs(10), refused).await, "{:?}", report(proxy.admin));
    let why = report(proxy.admin)["last_error"].as_str().unwrap_or_default().to_string();
    assert!(why.contains("spiffe://cluster.local/ns/evil/sa/mallory"), "{why}");
    assert_eq!(ready(proxy.admin).0, 503);
    assert_eq!(svc.issued.load(Ordering::Relaxed) + svc.refused.load(Ordering::Relaxed), 0, "a request was sent");
    let _ = std::fs::remove_dir_all(&d);
}

#[path = "identity/files.rs"]
mod files;
#[path = "identity/no_key_on_disk.rs"]
mod no_key_on_disk;
