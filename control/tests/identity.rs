//! The identity service over real sockets and real TLS: the control service against the fake
//! API server (which answers TokenReviews from a table), clients like proxies on tokio-rustls
//! with `vane_identity`'s client configurations.

mod support;

use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use support::fake_api::{FakeApi, Res, authorization_policy, endpoint_slice, namespace, pod, service};
use support::subscriber::Subscriber;
use support::tls::{TestCa, connect};
use support::{Control, metric};
use vane_identity::protocol::{AUDIENCE, CertificateResponse};
use vane_identity::tls::{self, Credentials, check_peer};
use vane_identity::{SpiffeId, csr};
use vane_route::authz::DefaultPolicy;
use vane_route::discovery::Message;

const QUIET: Duration = Duration::from_secs(3600);
const LLM: &str = "llm.models.svc.cluster.local";
const LLM_80: &str = "llm.models.svc.cluster.local:80";
const PRIVATE: &str = "private.models.svc.cluster.local";
const PRIVATE_80: &str = "private.models.svc.cluster.local:80";
const WEB: &str = "web.apps.svc.cluster.local";
const LLM_ID: &str = "spiffe://cluster.local/ns/models/sa/llm";
const POLICY: &str = "vane.io/default-inbound-policy";

fn private_service(visible_to: &str) -> serde_json::Value {
    let mut s = service("models", "private", 80, None);
    s["metadata"]["annotations"] = json!({"vane.io/visible-to": visible_to});
    s
}

/// `llm` (two injected pods of ServiceAccount llm), `private` (visible to team-a; one injected
/// pod of the default ServiceAccount, one not injected) and `web` in apps (not injected). The
/// models namespace asks for `all-authenticated` inbound; apps asks for nothing.
async fn setup() -> (FakeApi, Control, TestCa) {
    let fake = FakeApi::start(50).await;
    fake.apply(service("models", "llm", 80, None));
    fake.apply(endpoint_slice("models", "llm-a", "llm", 8000, &[("10.0.0.1", true), ("10.0.0.2", true)]));
    fake.apply(pod("models", "llm", "10.0.0.1", Some("llm"), true));
    fake.apply(pod("models", "llm", "10.0.0.2", Some("llm"), true));
    fake.apply(private_service("team-a"));
    fake.apply(endpoint_slice("models", "private-a", "private", 8000, &[("10.0.1.1", true), ("10.0.1.2", true)]));
    fake.apply(pod("models", "private", "10.0.1.1", None, true));
    fake.apply(pod("models", "private", "10.0.1.2", None, false));
    fake.apply(service("apps", "web", 80, None));
    fake.apply(endpoint_slice("apps", "web-a", "web", 8080, &[("10.0.2.1", true)]));
    fake.apply(pod("apps", "web", "10.0.2.1", None, false));
    fake.apply(namespace("models", &[(POLICY, "all-authenticated")]));
    fake.apply(namespace("apps", &[("vane.io/inject", "enabled")]));
    fake.token("llm-token", "system:serviceaccount:models:llm", &[AUDIENCE]);
    fake.token("api-token", "system:serviceaccount:models:llm", &["https://kubernetes.default.svc"]);
    fake.token("unaware-token", "system:serviceaccount:models:llm", &[]);
    fake.token("user-token", "alice", &[AUDIENCE]);
    let ca = TestCa::new();
    let control = Control::start_with(&fake, QUIET, Some(ca.settings())).await;
    control.ready().await;
    (fake, control, ca)
}

/// A TLS server with `server` that accepts one connection; the identity the client presented.
async fn serve_once(server: &Credentials) -> (std::net::SocketAddr, tokio::task::JoinHandle<Option<SpiffeId>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server.server_config().unwrap());
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        vane_identity::peer::id_of_chain(tls.get_ref().1.peer_certificates())
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_without_a_certificate_gets_one_for_its_own_identity() {
    let (fake, control, ca) = setup().await;
    // No client certificate: the certificate service still answers, as the control service.
    let mut conn = connect(control.listen(), ca.anonymous()).await.unwrap();
    assert_eq!(check_peer(Some(&conn.server_chain), &TestCa::control_id()), Ok(TestCa::control_id()));

    let id = SpiffeId::parse(LLM_ID).unwrap();
    let request = csr::Request::new(&id).unwrap();
    let (status, answer) = conn.certificate("llm-token", &request.der).await;
    assert_eq!(status, 200, "{answer}");
    let answer: CertificateResponse = serde_json::from_value(answer).unwrap();
    assert_eq!(answer.roots, ca.generated.anchor_pem);
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    assert!((now + 3500..=now + 3601).contains(&answer.not_after), "an hour: {} vs {now}", answer.not_after);

    // The chain, with the key the proxy kept, serves a real handshake that the anchors vouch for.
    let mine = Credentials::new(&answer.chain, request.key(), &answer.roots).unwrap();
    assert_eq!(mine.id, id);
    let (addr, server) = serve_once(&mine).await;
    let client = ca.credentials("spiffe://cluster.local/ns/apps/sa/web");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let config = client.client_config(&[b"h2"]).unwrap();
    let stream = tokio_rustls::TlsConnector::from(config).connect(tls::server_name(addr), tcp).await.unwrap();
    assert_eq!(check_peer(stream.get_ref().1.peer_certificates(), &id), Ok(id.clone()));
    assert_eq!(server.await.unwrap(), Some(client.id.clone()), "mutual: the server saw the client's identity");

    // The token was reviewed for the identity service's audience.
    let reviews = fake.reviews();
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0]["spec"], json!({"token": "llm-token", "audiences": [AUDIENCE]}));

    // With it, the proxy subscribes.
    let config = mine.client_config(&[b"h2"]).unwrap();
    let mut sub = Subscriber::tls(control.listen(), config, &format!("services={LLM}")).await;
    assert_eq!(sub.status, 200);
    sub.until("snapshot", |s| s.is_synced()).await;
    assert_eq!(sub.endpoints(LLM_80).unwrap(), ["10.0.0.1:8000", "10.0.0.2:8000"]);

    let (_, metrics) = control.admin("/metrics").await;
    assert_eq!(metric(&metrics, "vane_control_certificates_issued_total "), Some(1.0), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_prove_nothing_or_another_identity_get_no_certificate() {
    let (fake, control, ca) = setup().await;
    let mut conn = connect(control.listen(), ca.anonymous()).await.unwrap();
    let own = csr::Request::new(&SpiffeId::parse(LLM_ID).unwrap()).unwrap();
    let other = csr::Request::new(&SpiffeId::parse("spiffe://cluster.local/ns/models/sa/admin").unwrap()).unwrap();
    for (token, der, code, reason, says) in [
        ("no-such-token", &own.der, 403, "unauthenticated", "invalid bearer token"),
        ("api-token", &own.der, 403, "unauthenticated", "audiences do not match"),
        ("unaware-token", &own.der, 403, "audience", "not bound to audience vane-identity"),
        ("user-token", &own.der, 403, "not-service-account", "alice"),
        ("llm-token", &other.der, 403, "wrong-identity", "ns/models/sa/admin"),
        ("llm-token", &b"not a request".to_vec(), 400, "unreadable-csr", "unreadable"),
    ] {
        let (status, answer) = conn.certificate(token, der).await;
        assert_eq!(status, code, "{token}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(says), "{token}: {answer}");
        assert!(answer.get("chain").is_none(), "{token}: no certificate");
        let (_, metrics) = control.admin("/metrics").await;
        let line = format!("vane_control_certificate_refusals_total{{reason=\"{reason}\"}}");
        assert!(metric(&metrics, &line).is_some_and(|n| n >= 1.0), "{line}\n{metrics}");
    }

    let path = vane_identity::protocol::PATH;
    let (status, _) = conn.request("POST", path, b"{\"token\": 1}".to_vec()).await;
    assert_eq!(status, 400, "not a certificate request");
    let bad_base64 = json!({"token": "llm-token", "csr": "***"}).to_string().into_bytes();
    assert_eq!(conn.request("POST", path, bad_base64).await.0, 400);
    let huge = json!({"token": "x".repeat(70 * 1024), "csr": ""}).to_string().into_bytes();
    assert_eq!(conn.request("POST", path, huge).await.0, 413);
    assert_eq!(conn.request("GET", path, vec![]).await.0, 405);
    assert_eq!(conn.request("GET", "/nope", vec![]).await.0, 404);

    // The API server cannot be asked: 503, and the same request works once it is back.
    fake.fail_token_reviews(true);
    let (status, answer) = conn.certificate("llm-token", &own.der).await;
    assert_eq!(status, 503, "{answer}");
    fake.fail_token_reviews(false);
    assert_eq!(conn.certificate("llm-token", &own.der).await.0, 200);

    let (_, metrics) = control.admin("/metrics").await;
    assert_eq!(metric(&metrics, "vane_control_certificates_issued_total "), Some(1.0), "{metrics}");
    for reason in ["api-unavailable", "too-large", "bad-request"] {
        let line = format!("vane_control_certificate_refusals_total{{reason=\"{reason}\"}}");
        assert!(metric(&metrics, &line).is_some(), "{line}\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_needs_a_workload_certificate_of_the_trust_domain() {
    let (_fake, control, ca) = setup().await;
    let anonymous = Subscriber::tls(control.listen(), ca.anonymous(), "services=*").await;
    assert_eq!(anonymous.status, 403);
    let mut conn = connect(control.listen(), ca.anonymous()).await.unwrap();
    let (status, body) = conn.request("GET", "/v1/discovery?services=*", vec![]).await;
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 403);
    assert!(body["error"].as_str().unwrap().contains("client certificate"), "{body}");

    // Same anchor, another trust domain: refused.
    let foreign = ca.credentials("spiffe://other.td/ns/models/sa/llm");
    let sub = Subscriber::tls(control.listen(), foreign.client_config(&[b"h2"]).unwrap(), "services=*").await;
    assert_eq!(sub.status, 403);

    // A certificate of another anchor is refused by the server's handshake.
    let (chain, request) = TestCa::new().issue(LLM_ID);
    let stranger = Credentials::new(&chain, request.key(), &ca.generated.anchor_pem).unwrap();
    assert!(refused(control.listen(), stranger.client_config(&[b"h2"]).unwrap()).await);

    // A workload of the trust domain is served; endpoints of injected pods carry their identity.
    let mine = ca.credentials(LLM_ID);
    assert!(!refused(control.listen(), mine.client_config(&[b"h2"]).unwrap()).await);
    let mut sub = Subscriber::tls(control.listen(), mine.client_config(&[b"h2"]).unwrap(), "services=*").await;
    assert_eq!(sub.status, 200);
    sub.until("snapshot", |s| s.services().len() == 3).await;
    let backends = sub.state.backends();
    assert_eq!(backends[LLM_80].identity.as_deref(), Some(LLM_ID), "every endpoint shares one identity");
    assert!(backends[LLM_80].identities.is_empty());
    let private = &backends[PRIVATE_80];
    assert_eq!(private.identity, None, "only one of two endpoints is meshed");
    assert_eq!(
        private.identities.iter().map(|(a, i)| (a.as_str(), i.as_str())).collect::<Vec<_>>(),
        [("10.0.1.1:8000", "spiffe://cluster.local/ns/models/sa/default")]
    );
    let web = &backends["web.apps.svc.cluster.local:80"];
    assert_eq!((web.identity.as_deref(), web.identities.len()), (None, 0), "not injected: plaintext");
    vane_route::Table::from_config(sub.state.to_config(&Default::default())).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_identities_follow_their_pods() {
    let (fake, control, ca) = setup().await;
    let config = ca.credentials(LLM_ID).client_config(&[b"h2"]).unwrap();
    let mut sub = Subscriber::tls(control.listen(), config, &format!("services={LLM}")).await;
    sub.until("snapshot", |s| s.is_synced()).await;
    assert_eq!(sub.state.backends()[LLM_80].identity.as_deref(), Some(LLM_ID));

    // One pod moves to another ServiceAccount: per-endpoint identities.
    fake.apply(pod("models", "llm", "10.0.0.2", Some("llm-canary"), true));
    sub.until("per-endpoint identities", |s| s.backends()[LLM_80].identities.len() == 2).await;
    let b = &sub.state.backends()[LLM_80];
    assert_eq!(b.identity, None);
    assert_eq!(b.identities["10.0.0.2:8000"], "spiffe://cluster.local/ns/models/sa/llm-canary");
    assert_eq!(b.identities["10.0.0.1:8000"], LLM_ID);

    // Its pod is gone (or not injected any more): that endpoint is plaintext.
    fake.delete("Pod", "models", "llm-10-0-0-2");
    sub.until("one meshed endpoint", |s| s.backends()[LLM_80].identities.len() == 1).await;
    assert_eq!(sub.state.backends()[LLM_80].endpoints.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visible_to_service_is_hidden_from_other_namespaces() {
    let (fake, control, ca) = setup().await;
    let as_ns = |ns: &str| {
        ca.credentials(&format!("spiffe://cluster.local/ns/{ns}/sa/client")).client_config(&[b"h2"]).unwrap()
    };
    let names = |s: &Subscriber| s.state.services().keys().cloned().collect::<Vec<_>>();

    let mut team_a = Subscriber::tls(control.listen(), as_ns("team-a"), "services=*").await;
    team_a.until("snapshot", |s| s.is_synced()).await;
    assert_eq!(names(&team_a), [LLM, PRIVATE, WEB], "listed in visible-to");
    let mut models = Subscriber::tls(control.listen(), as_ns("models"), "services=*").await;
    models.until("snapshot", |s| s.is_synced()).await;
    assert_eq!(names(&models), [LLM, PRIVATE, WEB], "the Service's own namespace");
    let mut team_b = Subscriber::tls(control.listen(), as_ns("team-b"), "services=*").await;
    team_b.until("snapshot", |s| s.is_synced()).await;
    assert_eq!(names(&team_b), [LLM, WEB], "hidden");
    assert!(!team_b.state.backends().contains_key(PRIVATE_80), "and so are its endpoints");
    let mut by_name = Subscriber::tls(control.listen(), as_ns("team-b"), &format!("services={PRIVATE}")).await;
    by_name.until("snapshot", |s| s.is_synced()).await;
    assert!(by_name.state.services().is_empty(), "asking by name does not help");

    // The annotation changes: team-b now sees it, team-a no longer does.
    fake.apply(private_service("team-b"));
    team_b.until("private appears", |s| s.services().contains_key(PRIVATE)).await;
    by_name.until("private appears", |s| s.services().contains_key(PRIVATE)).await;
    team_a.until("private is removed", |s| !s.services().contains_key(PRIVATE)).await;
    assert_eq!(team_b.state.backends()[PRIVATE_80].endpoints.len(), 2);
}

/// Whether the server ends the connection of a client with this configuration before a
/// request gets an answer (TLS 1.3: the client may finish its handshake before the server's
/// alert arrives).
async fn refused(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) -> bool {
    let Ok(mut conn) = connect(addr, config).await else { return true };
    let req = hyper::Request::get("https://control/v1/discovery?services=*")
        .body(http_body_util::Full::<bytes::Bytes>::default())
        .unwrap();
    conn.send.send_request(req).await.is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespaces_default_inbound_policy_is_pushed_to_its_proxies() {
    let (fake, control, ca) = setup().await;
    let as_ns = |ns: &str| {
        ca.credentials(&format!("spiffe://cluster.local/ns/{ns}/sa/client")).client_config(&[b"h2"]).unwrap()
    };
    let pushed = |m: &Message| match m {
        Message::Snapshot { authz, .. } | Message::Update { authz, .. } => authz.as_ref().map(|a| a.default),
        _ => None,
    };
    let policy = |s: &vane_route::discovery::DiscoveryState| s.to_config(&Default::default()).proxy.authz.default;

    let mut models = Subscriber::tls(control.listen(), as_ns("models"), "services=*").await;
    models.until("snapshot", |s| s.is_synced()).await;
    assert_eq!(pushed(&models.received[0]), Some(DefaultPolicy::AllAuthenticated), "in the snapshot");
    assert!(models.state.authz().unwrap().rules.is_empty());
    let mut apps = Subscriber::tls(control.listen(), as_ns("apps"), "services=*").await;
    apps.until("snapshot", |s| s.is_synced()).await;
    assert_eq!(apps.state.authz(), None, "a namespace without the annotation: nothing pushed");
    let mut elsewhere = Subscriber::tls(control.listen(), as_ns("team-a"), "services=*").await;
    elsewhere.until("snapshot", |s| s.is_synced()).await;
    assert_eq!(elsewhere.state.authz(), None, "a namespace the API server does not know");

    // The annotation changes: an update.
    fake.apply(namespace("models", &[(POLICY, "deny")]));
    models.until("deny", |s| policy(s) == DefaultPolicy::Deny).await;
    assert!(matches!(models.received.last(), Some(Message::Update { .. })));

    // An unknown value is ignored (not pushed); a known one after it arrives alone.
    fake.apply(namespace("apps", &[(POLICY, "allow-everyone")]));
    fake.apply(namespace("apps", &[(POLICY, "cluster-authenticated")]));
    apps.until("cluster-authenticated", |s| policy(s) == DefaultPolicy::ClusterAuthenticated).await;
    let policies: Vec<_> = apps.received.iter().filter_map(pushed).collect();
    assert_eq!(policies, [DefaultPolicy::ClusterAuthenticated]);

    // The annotation taken back: the default policy again.
    fake.apply(namespace("models", &[]));
    models.until("all-unauthenticated", |s| policy(s) == DefaultPolicy::AllUnauthenticated).await;
    let pushes = models.received.iter().filter(|m| pushed(m).is_some()).count();
    assert_eq!(pushes, 3, "snapshot, deny, the default: {:?}", models.received);
    assert!(elsewhere.next(Duration::from_millis(300)).await.is_none(), "other namespaces hear nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_policies_are_pushed_as_rules_to_their_namespaces_proxies() {
    let (fake, control, ca) = setup().await;
    let as_ns = |ns: &str| {
        ca.credentials(&format!("spiffe://cluster.local/ns/{ns}/sa/client")).client_config(&[b"h2"]).unwrap()
    };
    let rules = |s: &vane_route::discovery::DiscoveryState| {
        let authz = s.to_config(&Default::default()).proxy.authz;
        (authz.default, authz.rules.iter().map(|r| r.name.clone()).collect::<Vec<_>>())
    };
    let mut models = Subscriber::tls(control.listen(), as_ns("models"), "services=*").await;
    models.until("snapshot", |s| s.is_synced()).await;
    let mut apps = Subscriber::tls(control.listen(), as_ns("apps"), "services=*").await;
    apps.until("snapshot", |s| s.is_synced()).await;
    assert_eq!(apps.state.authz(), None);

    let embed = json!({"model": "embed", "allow": [{"namespace": "search"}, {"namespace": "apps", "serviceAccount": "indexer"}]});
    fake.apply(authorization_policy("models", "embed", embed));
    fake.apply(authorization_policy(
        "models",
        "admin",
        json!({"pathPrefix": "/admin", "allow": [{}, {"namespace": "ops"}]}),
    ));
    models
        .until("two rules", |s| rules(s) == (DefaultPolicy::AllAuthenticated, vec!["admin".into(), "embed".into()]))
        .await;
    let authz = models.state.authz().unwrap().clone();
    authz.validate().unwrap();
    let embed = &authz.rules[1];
    assert_eq!((embed.model.as_deref(), embed.path_prefix.as_deref()), (Some("embed"), None));
    assert_eq!(embed.allow[1].service_account.as_deref(), Some("indexer"));
    assert_eq!(authz.rules[0].allow.len(), 1, "the principal that names nobody is dropped");

    // A namespace without the annotation gets Vane's default with its rules.
    fake.apply(authorization_policy("apps", "web", json!({"pathPrefix": "/", "allow": [{"namespace": "apps"}]})));
    apps.until("apps' rule", |s| rules(s) == (DefaultPolicy::AllUnauthenticated, vec!["web".into()])).await;

    // A policy deleted: its rule goes, and with the last one the policy itself.
    fake.delete("AuthorizationPolicy", "models", "admin");
    models.until("one rule", |s| rules(s).1 == ["embed"]).await;
    fake.delete("AuthorizationPolicy", "apps", "web");
    apps.until("nothing", |s| rules(s) == (DefaultPolicy::AllUnauthenticated, vec![])).await;
    assert!(
        models
            .received
            .iter()
            .all(|m| !matches!(m, Message::Update { authz: Some(a), .. } if a.rules.iter().any(|r| r.name == "web")))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_policy_crd_the_control_service_still_gets_ready() {
    let fake = FakeApi::without(50, &[Res::AuthorizationPolicies]).await;
    fake.apply(service("models", "llm", 80, None));
    fake.apply(namespace("models", &[(POLICY, "deny")]));
    let ca = TestCa::new();
    let control = Control::start_with(&fake, QUIET, Some(ca.settings())).await;
    control.ready().await;
    let config = ca.credentials("spiffe://cluster.local/ns/models/sa/x").client_config(&[b"h2"]).unwrap();
    let mut models = Subscriber::tls(control.listen(), config, "services=*").await;
    models.until("snapshot", |s| s.is_synced()).await;
    assert_eq!(models.state.authz().map(|a| a.default), Some(DefaultPolicy::Deny));
}

/// Writes `ca`'s issuer files as the mounted Secret holds them.
fn write_issuer(dir: &std::path::Path, ca: &TestCa) {
    std::fs::write(dir.join("ca.crt"), &ca.generated.anchor_pem).unwrap();
    std::fs::write(dir.join("tls.crt"), &ca.generated.issuer_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &ca.generated.issuer_key_pem).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_issuer_in_the_files_is_used_without_a_restart() {
    let fake = FakeApi::start(50).await;
    fake.apply(service("models", "llm", 80, None));
    fake.token("llm-token", "system:serviceaccount:models:llm", &[AUDIENCE]);
    let dir = std::env::temp_dir().join(format!("vane-control-issuer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (old, new) = (TestCa::new(), TestCa::new());
    write_issuer(&dir, &old);
    let mut settings = old.settings();
    settings.reload =
        Some(vane_control::identity::rotate::Reload { dir: dir.clone(), every: Duration::from_millis(100) });
    let control = Control::start_with(&fake, QUIET, Some(settings)).await;
    control.ready().await;
    let id = SpiffeId::parse(LLM_ID).unwrap();
    let listen = control.listen();
    let issue = |roots: Arc<rustls::ClientConfig>| {
        let id = id.clone();
        async move {
            let mut conn = connect(listen, roots).await?;
            let request = csr::Request::new(&id).unwrap();
            let (status, answer) = conn.certificate("llm-token", &request.der).await;
            assert_eq!(status, 200, "{answer}");
            let answer: CertificateResponse = serde_json::from_value(answer).unwrap();
            std::io::Result::Ok(Credentials::new(&answer.chain, request.key(), &answer.roots).unwrap())
        }
    };
    let before = issue(old.anonymous()).await.unwrap();
    before.verify().unwrap();
    // An old subscriber's stream, opened before the rotation, stays up.
    let old_config = old.credentials("spiffe://cluster.local/ns/models/sa/llm").client_config(&[b"h2"]).unwrap();
    let mut sub = Subscriber::tls(control.listen(), old_config, "services=*").await;
    sub.until("snapshot", |s| s.is_synced()).await;

    write_issuer(&dir, &new);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let after = loop {
        match issue(new.anonymous()).await {
            Ok(c) => break c,
            Err(_) if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("the control service never presented the new issuer's certificate: {e}"),
        }
    };
    assert_eq!(after.id, id);
    after.verify().unwrap();
    let new_issuer = vane_identity::pem::certs(&new.generated.issuer_pem).unwrap();
    assert_eq!(after.chain.get(1), new_issuer.first(), "signed by the new issuer");
    assert!(connect(control.listen(), old.anonymous()).await.is_err(), "the old anchors no longer vouch for it");

    // A bad set is refused and counted; the new issuer stays in use.
    std::fs::write(dir.join("tls.key"), "not a key").unwrap();
    let (_, metrics) = control.admin("/metrics").await;
    let mut refused = metric(&metrics, "vane_control_issuer_reloads_total{outcome=\"refused\"}");
    for _ in 0..100 {
        if refused.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        refused = metric(&control.admin("/metrics").await.1, "vane_control_issuer_reloads_total{outcome=\"refused\"}");
    }
    assert_eq!(refused, Some(1.0));
    issue(new.anonymous()).await.unwrap().verify().unwrap();
    let (_, metrics) = control.admin("/metrics").await;
    assert_eq!(metric(&metrics, "vane_control_issuer_reloads_total{outcome=\"rotated\"}"), Some(1.0), "{metrics}");
    assert!(metric(&metrics, "vane_control_issuer_expiry_timestamp_seconds").unwrap() > 1.7e9);
    // The stream opened under the old issuer still carries changes.
    fake.apply(service("models", "late", 80, None));
    sub.until("the late service", |s| {
        s.to_config(&Default::default()).services.iter().any(|v| v.name.starts_with("late."))
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
