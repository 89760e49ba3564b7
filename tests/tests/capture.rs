//! Transparent capture end to end, in two Linux network namespaces joined by a veth pair: a
//! "client pod" (10.77.0.1) whose app calls a Service's ClusterIP (10.96.0.10:80) with a plain
//! URL, and a "server pod" (10.77.0.2) with two model servers and a TCP echo server. Each pod
//! has its capture rules (`vane-proxy init`) and its proxy in transparent mode, run as the proxy
//! UID so that the rules let its own connections out.
//!
//! ```text
//! client app ──captured──▶ client proxy (outbound) ──▶ 10.77.0.2:8000 ──captured──▶ server proxy (inbound, HTTP) ──▶ 127.0.0.1:8000 (v1)
//!                          routes `llm` 90/10       └─▶ 10.77.0.2:8001 ──captured──▶ server proxy (inbound, TCP)  ──▶ 10.77.0.2:8001 (v2)
//! client echo ─captured──▶ client proxy (opaque TCP) ─▶ 10.77.0.2:7000 ──captured──▶ server proxy (opaque TCP) ──▶ echo
//! ```
//!
//! Both proxies have a workload identity (certificate files), and the client proxy's `llama-v1`
//! endpoint is meshed: that hop is mutual TLS, terminated by the server proxy on the captured
//! model port because its ClientHello names a Vane identity, and the model server sees the
//! client's SPIFFE ID in `vane-client-id`. `llama-v2`'s endpoint is not meshed (plaintext,
//! passed through as opaque TCP).
//!
//! Needs root, `ip`, `iptables` and `setpriv`; without them it prints SKIPPED, unless
//! `VANE_REQUIRE_NETNS=1` (set by `.ci/run`), which makes that a failure. The code that runs
//! inside the namespaces is this test binary itself, started again through `ip netns exec` with
//! `VANE_CAPTURE_HELPER` set (see [`netns_helper`]).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every namespace this test makes starts with this; stale ones are deleted at start.
const PREFIX: &str = "vane-cap-";
const PROXY_UID: &str = "2102";
const SERVICE_IP: &str = "10.96.0.10:80";
const REQUESTS: usize = 200;

/// The client pod's workload identity, which the model server behind the server pod sees.
const CLIENT_ID: &str = "spiffe://cluster.local/ns/apps/sa/chat";
/// The server pod's.
const SERVER_ID: &str = "spiffe://cluster.local/ns/models/sa/llm";

const CLIENT_CONFIG: &str = r#"
backends:
  - { name: llama-v1, endpoints: ["10.77.0.2:8000"], identity: "spiffe://cluster.local/ns/models/sa/llm" }
  - { name: llama-v2, endpoints: ["10.77.0.2:8001"] }
services:
  - name: llm
    hosts: [llm.models.svc.cluster.local, "10.96.0.10:80"]
    routes:
      - name: canary
        backends: [{ backend: llama-v1, weight: 90 }, { backend: llama-v2, weight: 10 }]
"#;

// === outside the namespaces ===

fn run(cmd: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().map_err(|e| format!("{}: {e}", cmd.join(" ")))?;
    if !out.status.success() {
        return Err(format!("{} failed: {}", cmd.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn in_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// Why this machine cannot run the test, if it cannot.
fn missing() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().nth(1));
    if uid != Some("0") {
        return Some("not running as root".into());
    }
    let tools: Vec<&str> = ["ip", "iptables", "iptables-save", "iptables-restore", "setpriv"]
        .into_iter()
        .filter(|t| !in_path(t))
        .collect();
    (!tools.is_empty()).then(|| format!("missing {}", tools.join(", ")))
}

/// The pods: namespaces, processes and files, all removed on drop (also when the test fails).
struct Pods {
    id: String,
    children: Vec<(String, Child)>,
    dir: PathBuf,
}

impl Pods {
    fn ns(&self, pod: &str) -> String {
        format!("{PREFIX}{}-{pod}", self.id)
    }

    fn spawn(&mut self, name: &str, cmd: &mut Command) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().map_err(|e| format!("{name}: {e}"))?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    /// The logs of every process, for a failure message.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (name, _) in &self.children {
            let text = std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            out += &format!("--- {name} ---\n{}\n", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        out
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for pod in ["client", "server"] {
            let _ = run(&["ip", "netns", "del", &self.ns(pod)]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Deletes namespaces a killed earlier run left, after ending the processes still in them.
fn delete_stale() {
    let list = run(&["ip", "netns", "list"]).unwrap_or_default();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()).filter(|n| n.starts_with(PREFIX)) {
        for pid in run(&["ip", "netns", "pids", name]).unwrap_or_default().split_whitespace() {
            let _ = run(&["kill", "-9", pid]);
        }
        let _ = run(&["ip", "netns", "del", name]);
    }
}

fn helper(ns: &str, role: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns])
        .arg(std::env::current_exe().expect("test binary"))
        .args(["--exact", "netns_helper", "--nocapture", "--test-threads=1"])
        .env("VANE_CAPTURE_HELPER", role);
    c
}

fn proxy(ns: &str, config: Option<&Path>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, "setpriv", "--reuid", PROXY_UID, "--regid", PROXY_UID, "--clear-groups", "--"])
        .arg(vane_tests::proxy_bin())
        .env_remove("VANE_CONFIG")
        .envs([
            ("VANE_OUTBOUND", "127.0.0.1:4140"),
            ("VANE_INBOUND", "0.0.0.0:4143"),
            ("VANE_ADMIN", "127.0.0.1:4191"),
            ("VANE_TRANSPARENT", "1"),
            ("VANE_LOG", "info,vane_proxy=debug"),
        ]);
    if let Some(path) = config {
        c.arg("--config").arg(path);
    }
    c
}

fn setup(pods: &mut Pods) -> Result<(), String> {
    let (c, s) = (pods.ns("client"), pods.ns("server"));
    for ns in [&c, &s] {
        run(&["ip", "netns", "add", ns])?;
        run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
    }
    run(&["ip", "-n", &c, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &s])?;
    for (ns, addr) in [(&c, "10.77.0.1/24"), (&s, "10.77.0.2/24")] {
        run(&["ip", "-n", ns, "addr", "add", addr, "dev", "eth0"])?;
        run(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
    }
    // The ClusterIP is on no interface: the client pod routes everything out of its veth, as a
    // pod's default route does, and its capture rules take the connection before it leaves.
    run(&["ip", "-n", &c, "route", "add", "default", "dev", "eth0"])?;
    let bin = vane_tests::proxy_bin();
    let bin = bin.to_str().ok_or("binary path")?;
    for ns in [&c, &s] {
        let init = [
            "ip",
            "netns",
            "exec",
            ns,
            bin,
            "init",
            "--proxy-uid",
            PROXY_UID,
            "--inbound-port",
            "4143",
            "--outbound-port",
            "4140",
            "--skip-inbound-ports",
            "4191",
        ];
        let printed = run(&init)?;
        assert!(printed.contains("-A VANE_OUTPUT -m owner --uid-owner 2102 -j RETURN"), "{printed}");
    }
    pods.spawn("server-apps", &mut helper(&s, "server"))?;
    let ca = vane_tests::identity::Ca::new();
    let config = pods.dir.join("client.yaml");
    let client_identity = identity_files(&pods.dir, "client", &ca, CLIENT_ID)?;
    std::fs::write(&config, format!("proxy:\n{client_identity}{CLIENT_CONFIG}")).map_err(|e| e.to_string())?;
    // The server pod's proxy: its identity and the model server it forwards to.
    let server_config = pods.dir.join("server.yaml");
    let server_identity = identity_files(&pods.dir, "server", &ca, SERVER_ID)?;
    let inbound = "inbound:\n  forward_to: \"127.0.0.1:8000\"\n";
    std::fs::write(&server_config, format!("proxy:\n{server_identity}{inbound}")).map_err(|e| e.to_string())?;
    pods.spawn("server-proxy", &mut proxy(&s, Some(&server_config)))?;
    pods.spawn("client-proxy", &mut proxy(&c, Some(&config)))?;
    Ok(())
}

/// Writes a certificate for `id`, its key and the trust anchor under `dir`, readable by the
/// proxy's UID; returns the `identity:` section (indented under `proxy:`) that names them.
fn identity_files(dir: &Path, who: &str, ca: &vane_tests::identity::Ca, id: &str) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let (chain, key) = ca.certify(id, Duration::from_secs(3600));
    let mut paths = Vec::new();
    for (name, text) in [("cert", chain.as_str()), ("key", key.as_str()), ("roots", ca.anchors_pem.as_str())] {
        let path = dir.join(format!("{who}-{name}.pem"));
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        // Test keys only: the proxy runs as another UID than the test.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).map_err(|e| e.to_string())?;
        paths.push(path.display().to_string());
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    Ok(format!("  identity:\n    cert: {}\n    key: {}\n    roots: {}\n", paths[0], paths[1], paths[2]))
}

/// Runs the client app in the client pod; returns what it printed after `RESULT ` (libtest may
/// have written the test's name before it on the same line).
fn client(pods: &Pods) -> Result<serde_json::Value, String> {
    let mut child = helper(&pods.ns("client"), "client")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(25);
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .ok_or_else(|| format!("the client printed no result: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)))?;
    serde_json::from_str(line).map_err(|e| e.to_string())
}

#[test]
fn an_unmodified_client_reaches_the_model_through_both_sidecars() {
    if let Some(why) = missing() {
        assert!(std::env::var("VANE_REQUIRE_NETNS").as_deref() != Ok("1"), "VANE_REQUIRE_NETNS=1 but {why}");
        println!("SKIPPED: transparent capture end to end needs root, ip, iptables and setpriv ({why})");
        return;
    }
    delete_stale();
    let id = std::process::id().to_string();
    let dir = std::env::temp_dir().join(format!("{PREFIX}{id}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut pods = Pods { id, children: Vec::new(), dir };
    if let Err(e) = setup(&mut pods) {
        panic!("setup: {e}\n{}", pods.logs());
    }
    let r = match client(&pods) {
        Ok(r) => r,
        Err(e) => panic!("{e}\n{}", pods.logs()),
    };
    let served = |name: &str| r["served"][name].as_u64().unwrap_or(0);
    let (v1, v2) = (served("llama-v1"), served("llama-v2"));
    assert_eq!(v1 + v2, REQUESTS as u64, "every answer from a model server: {r}\n{}", pods.logs());
    // 90/10 of 200: 20 expected for the canary; 5..=45 is far outside chance.
    assert!((5..=45).contains(&v2), "the canary took {v2} of {REQUESTS}: {r}");
    let explicit = r["explicit"].as_str().unwrap_or("");
    assert!(matches!(explicit, "200 llama-v1" | "200 llama-v2"), "the app calling the outbound listener directly: {r}");
    assert_eq!(r["echo"], "ok", "opaque TCP through both sidecars: {r}\n{}", pods.logs());
    // v1's hop was mutual TLS: its model server saw the client pod's identity on every request
    // (and none came to it without one); v2's was plaintext, so its server saw none.
    let ids = &r["client_ids"];
    assert_eq!(ids["llama-v1"][CLIENT_ID].as_u64(), Some(v1), "{r}\n{}", pods.logs());
    assert_eq!(ids["llama-v1"].as_object().map(|o| o.len()), Some(1), "{r}");
    assert_eq!(ids["llama-v2"]["-"].as_u64(), Some(v2), "{r}");
}

// === inside the namespaces ===

/// Runs a role inside a namespace when `VANE_CAPTURE_HELPER` says so (otherwise it does
/// nothing): `server` serves the two model servers and the echo server until killed; `client`
/// makes the calls and prints `RESULT <json>`.
#[test]
fn netns_helper() {
    let Ok(role) = std::env::var("VANE_CAPTURE_HELPER") else { return };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    match role.as_str() {
        "server" => rt.block_on(server_pod()),
        "client" => {
            let result = rt.block_on(client_pod());
            println!("RESULT {result}");
        }
        other => panic!("unknown helper role {other}"),
    }
    std::process::exit(0);
}

async fn model_server(name: &'static str, addr: &str) {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("model server bind");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| async move {
                let mut resp = http::Response::new(Full::new(Bytes::from(format!("{{\"served_by\":\"{name}\"}}"))));
                resp.headers_mut().insert("x-served-by", http::HeaderValue::from_static(name));
                let id = req.headers().get("vane-client-id").cloned().unwrap_or(http::HeaderValue::from_static("-"));
                resp.headers_mut().insert("x-client-id", id);
                Ok::<_, std::convert::Infallible>(resp)
            });
            tokio::spawn(
                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .into_owned(),
            );
        }
    });
}

async fn server_pod() {
    // v1 listens on loopback only: it is reached through the inbound proxy's HTTP path.
    model_server("llama-v1", "127.0.0.1:8000").await;
    // v2 listens on the pod's addresses: the inbound proxy passes its port on as opaque TCP.
    model_server("llama-v2", "0.0.0.0:8001").await;
    let echo = tokio::net::TcpListener::bind("0.0.0.0:7000").await.expect("echo bind");
    loop {
        let Ok((mut s, _)) = echo.accept().await else { continue };
        tokio::spawn(async move {
            // Answers only after the client's half-close: the FIN must come through.
            let mut all = Vec::new();
            if s.read_to_end(&mut all).await.is_ok() {
                let _ = s.write_all(&all).await;
            }
        });
    }
}

async fn client_pod() -> serde_json::Value {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let get = |uri: String, host: Option<&str>| {
        let mut b = http::Request::get(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        client.request(b.body(Empty::new()).expect("request"))
    };
    let served_by = |r: &http::Response<hyper::body::Incoming>| {
        r.headers().get("x-served-by").and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
    };
    // Until both proxies are up.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let last = match get(format!("http://{SERVICE_IP}/v1/models"), None).await {
            Ok(r) if r.status() == 200 && !served_by(&r).is_empty() => break,
            Ok(r) => format!("{} {:?}", r.status(), r.headers().get("vane-proxy-error")),
            Err(e) => format!("{e:?}"),
        };
        if Instant::now() > deadline {
            return serde_json::json!({ "error": format!("no answer through the sidecars: {last}") });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    let mut client_ids: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for _ in 0..REQUESTS {
        let who = match get(format!("http://{SERVICE_IP}/v1/models"), None).await {
            Ok(r) => {
                let who = served_by(&r);
                let id = r.headers().get("x-client-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let _ = r.into_body().collect().await;
                let who = if who.is_empty() { "(no model server)".to_string() } else { who };
                *client_ids.entry(who.clone()).or_default().entry(id).or_default() += 1;
                who
            }
            Err(_) => "(failed)".to_string(),
        };
        *served.entry(who).or_default() += 1;
    }
    let explicit = match get("http://127.0.0.1:4140/v1/models".to_string(), Some("llm")).await {
        Ok(r) => format!("{} {}", r.status().as_u16(), served_by(&r)),
        Err(e) => format!("failed: {e}"),
    };
    serde_json::json!({ "served": served, "client_ids": client_ids, "explicit": explicit, "echo": echo().await })
}

/// Sends bytes that are no HTTP to the echo server, half-closes, and checks they come back.
async fn echo() -> String {
    const HEAD: &[u8] = b"\x00\x01\x02 not http \xff";
    let payload: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let run = async {
        let mut s = tokio::net::TcpStream::connect("10.77.0.2:7000").await?;
        s.write_all(HEAD).await?;
        s.write_all(&payload).await?;
        s.shutdown().await?;
        let mut back = Vec::new();
        s.read_to_end(&mut back).await?;
        Ok::<_, std::io::Error>(back)
    };
    match tokio::time::timeout(Duration::from_secs(5), run).await {
        Ok(Ok(back)) if back.starts_with(HEAD) && back[HEAD.len()..] == payload[..] => "ok".into(),
        Ok(Ok(back)) => format!("{} bytes came back, {} sent", back.len(), payload.len() + HEAD.len()),
        Ok(Err(e)) => format!("failed: {e}"),
        Err(_) => "timed out".into(),
    }
}
