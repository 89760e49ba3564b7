//! The `vane-control` binary: kubeconfig from `KUBECONFIG`, readiness, SIGTERM; `identity init`
//! and the identity service from `--identity-dir`.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::fake_api::{FakeApi, endpoint_slice, service};
use support::subscriber::Subscriber;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A kubeconfig for `fake` in `dir`.
fn kubeconfig(dir: &std::path::Path, fake: &FakeApi) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: nobody\n\
             users:\n- name: nobody\n  user: {{}}\ncurrent-context: fake\n",
            fake.addr
        ),
    )
    .unwrap();
    path
}

/// Waits until the child's admin port answers `/ready` with 200.
async fn wait_ready(child: &mut std::process::Child, admin: u16) {
    let admin_addr = format!("127.0.0.1:{admin}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if tokio::net::TcpStream::connect(admin_addr).await.is_ok() && support::get(admin_addr, "/ready").await.0 == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "vane-control never became ready");
        assert!(child.try_wait().unwrap().is_none(), "vane-control exited early");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM, then the exit status within 8 s.
async fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "vane-control did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_from_a_kubeconfig_and_stops_on_sigterm() {
    let fake = FakeApi::start(500).await;
    fake.apply(service("models", "llm", 80, None));
    fake.apply(endpoint_slice("models", "llm-a", "llm", 8000, &[("10.0.0.1", true)]));
    let dir = std::env::temp_dir().join(format!("vane-control-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (listen, admin) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_vane-control"))
        .env("KUBECONFIG", kubeconfig(&dir, &fake))
        .env("VANE_CONTROL_LOG", "warn")
        .args(["--listen", &format!("127.0.0.1:{listen}"), "--admin", &format!("127.0.0.1:{admin}")])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(&mut child, admin).await;
    let mut sub = Subscriber::h2c(format!("127.0.0.1:{listen}").parse().unwrap(), "services=*").await;
    sub.until("snapshot", |s| s.services().len() == 1).await;

    let status = terminate(&mut child).await;
    assert!(status.success(), "{status}");
    assert!(sub.next(Duration::from_secs(1)).await.is_none(), "the stream ended");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_init_makes_an_issuer_the_control_service_serves_with() {
    let bin = env!("CARGO_BIN_EXE_vane-control");
    // Printed for kubectl: a Secret and a ConfigMap per namespace.
    let out = Command::new(bin).args(["identity", "init", "--roots-namespaces", "models,apps"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(std::str::from_utf8(&out.stdout).unwrap()).unwrap();
    let kinds: Vec<(&str, &str)> =
        docs.iter().map(|d| (d["kind"].as_str().unwrap(), d["metadata"]["namespace"].as_str().unwrap())).collect();
    assert_eq!(
        kinds,
        [("Secret", "vane-system"), ("ConfigMap", "vane-system"), ("ConfigMap", "models"), ("ConfigMap", "apps")]
    );

    // Written as files, once.
    let dir = std::env::temp_dir().join(format!("vane-control-identity-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let issuer = dir.join("issuer");
    let init = || Command::new(bin).args(["identity", "init", "--out"]).arg(&issuer).output().unwrap();
    assert!(init().status.success());
    let key = std::fs::read(issuer.join("tls.key")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(issuer.join("tls.key")).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let again = init();
    assert_eq!(again.status.code(), Some(78), "an existing issuer is not overwritten");
    assert_eq!(std::fs::read(issuer.join("tls.key")).unwrap(), key);

    // The control service with that issuer: TLS, its own identity, certificates for tokens.
    let fake = FakeApi::start(500).await;
    fake.apply(service("models", "llm", 80, None));
    fake.token("t", "system:serviceaccount:models:llm", &[vane_identity::protocol::AUDIENCE]);
    let (listen, admin) = (free_port(), free_port());
    let mut child = Command::new(bin)
        .env("KUBECONFIG", kubeconfig(&dir, &fake))
        .env("VANE_CONTROL_LOG", "warn")
        .env("VANE_CONTROL_IDENTITY_DIR", &issuer)
        .args(["--listen", &format!("127.0.0.1:{listen}"), "--admin", &format!("127.0.0.1:{admin}")])
        .args(["--certificate-lifetime", "2h"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(&mut child, admin).await;
    let roots = vane_identity::tls::roots(&std::fs::read_to_string(issuer.join("ca.crt")).unwrap()).unwrap();
    let config = vane_identity::tls::anonymous_client_config(&roots, &[b"h2"]).unwrap();
    let mut conn = support::tls::connect(format!("127.0.0.1:{listen}").parse().unwrap(), config).await.unwrap();
    let control = support::tls::TestCa::control_id();
    assert_eq!(vane_identity::tls::check_peer(Some(&conn.server_chain), &control), Ok(control));
    let id = vane_identity::SpiffeId::parse("spiffe://cluster.local/ns/models/sa/llm").unwrap();
    let (status, answer) = conn.certificate("t", &vane_identity::csr::Request::new(&id).unwrap().der).await;
    assert_eq!(status, 200, "{answer}");
    let not_after = answer["not_after"].as_u64().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!((now + 7100..=now + 7201).contains(&not_after), "--certificate-lifetime 2h");

    let status = terminate(&mut child).await;
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}
