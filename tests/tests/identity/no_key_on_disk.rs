//! The private key never reaches the filesystem.

use super::*;
use std::process::{Command, Stdio};

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// Every file under `d`, recursively.
fn files_under(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(d) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            }
            out.push(p);
        }
    }
    out
}

/// What each open file descriptor of process `pid` points to (`/proc/<pid>/fd/*` links).
fn open_files(pid: u32) -> Vec<String> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("the proxy's /proc fd folder");
    fds.flatten().filter_map(|fd| std::fs::read_link(fd.path()).ok()).map(|t| t.display().to_string()).collect()
}

/// The real proxy binary runs as a process in identity-service mode, configured by the
/// environment alone as the injector does it (no config file), with a fresh empty working
/// directory `W` and a fresh empty `TMPDIR` and `HOME` `T`; its certificate lives 3 s, so by the
/// time of the check it has made at least two keys (the first and a renewal's). The key's bytes
/// exist only inside the process, so the test cannot search files for them; instead it checks
/// that the proxy holds no file it could be writing them to and left none where it could write:
///
/// - every open file descriptor (`/proc/<pid>/fd/*`) is a socket, a pipe, an anonymous inode
///   (epoll, eventfd) or a `/dev` node, or else one of the files it was given (the roots and the
///   token, kept in a third folder it only reads);
/// - `W` and `T` are still empty afterwards: it created no file in them.
///
/// It does not watch writes elsewhere on the machine (a path the proxy was not given).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_private_key_never_reaches_the_filesystem() {
    let ca = Ca::new();
    let svc = FakeIdentity::start(&ca, CONTROL).await;
    svc.lifetime_ms.store(3_000, Ordering::Relaxed);
    let (given, work, tmp) = (dir("nokey-given"), dir("nokey-work"), dir("nokey-tmp"));
    let (roots, token) = (given.join("roots.pem"), given.join("token"));
    std::fs::write(&roots, &ca.anchors_pem).unwrap();
    std::fs::write(&token, "good").unwrap();
    let admin = free_port();
    let mut child = Command::new(proxy_bin())
        .current_dir(&work)
        .env("TMPDIR", &tmp)
        .env("HOME", &tmp)
        .env("VANE_CONTROL", svc.addr.to_string())
        .env("VANE_IDENTITY_ROOTS", &roots)
        .env("VANE_IDENTITY_TOKEN", &token)
        .env("VANE_POD_NAMESPACE", "apps")
        .env("VANE_SERVICE_ACCOUNT", "chat")
        .env("VANE_OUTBOUND", free_port().to_string())
        .env("VANE_INBOUND", free_port().to_string())
        .env("VANE_ADMIN", admin.to_string())
        .env("VANE_LOG", "warn")
        .env_remove("VANE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the proxy starts");
    let got_two = || svc.issued.load(Ordering::Relaxed) >= 2 && admin_get(admin, "/ready").is_ok_and(|(c, _)| c == 200);
    let ok = wait_until(Duration::from_secs(20), got_two).await;
    let fds = open_files(child.id());
    let left: Vec<PathBuf> = files_under(&work).into_iter().chain(files_under(&tmp)).collect();
    let r = admin_get(admin, "/identity");
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "no certificate and renewal: {r:?}");
    assert!(r.as_ref().is_ok_and(|(_, b)| b.contains(CHAT)), "{r:?}");

    let given_files = [roots.display().to_string(), token.display().to_string()];
    let unexpected: Vec<&String> = fds
        .iter()
        .filter(|t| {
            let special = ["socket:", "pipe:", "anon_inode:", "/dev/"].iter().any(|p| t.starts_with(p));
            !special && !given_files.contains(t)
        })
        .collect();
    assert!(fds.iter().any(|t| t.starts_with("socket:")), "the fd list was read: {fds:?}");
    assert!(unexpected.is_empty(), "files open in the proxy: {unexpected:?}");
    assert!(left.is_empty(), "files the proxy created: {left:?}");
    for d in [given, work, tmp] {
        let _ = std::fs::remove_dir_all(d);
    }
}
