//! The `vane-control` binary: kubeconfig from `KUBECONFIG`, readiness, SIGTERM.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::fake_api::{FakeApi, endpoint_slice, service};
use support::subscriber::Subscriber;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_from_a_kubeconfig_and_stops_on_sigterm() {
    let fake = FakeApi::start(500).await;
    fake.apply(service("models", "llm", 80, None));
    fake.apply(endpoint_slice("models", "llm-a", "llm", 8000, &[("10.0.0.1", true)]));
    let dir = std::env::temp_dir().join(format!("vane-control-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: nobody\n\
             users:\n- name: nobody\n  user: {{}}\ncurrent-context: fake\n",
            fake.addr
        ),
    )
    .unwrap();
    let (listen, admin) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_vane-control"))
        .env("KUBECONFIG", &kubeconfig)
        .env("VANE_CONTROL_LOG", "warn")
        .args(["--listen", &format!("127.0.0.1:{listen}"), "--admin", &format!("127.0.0.1:{admin}")])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let admin_addr = format!("127.0.0.1:{admin}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if tokio::net::TcpStream::connect(admin_addr).await.is_ok() && support::get(admin_addr, "/ready").await.0 == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "vane-control never became ready");
        assert!(child.try_wait().unwrap().is_none(), "vane-control exited early");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut sub = Subscriber::h2c(format!("127.0.0.1:{listen}").parse().unwrap(), "services=*").await;
    sub.until("snapshot", |s| s.services().len() == 1).await;

    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(8);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "vane-control did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
    assert!(sub.next(Duration::from_secs(1)).await.is_none(), "the stream ended");
    let _ = std::fs::remove_dir_all(&dir);
}
