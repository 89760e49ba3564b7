//! Files mode: the certificate, key and roots from files, laid out as a Kubernetes Secret
//! volume does (`tls.crt` → `..data/tls.crt`, `..data` → a folder swapped whole by a rename).

use super::*;

/// A Secret-volume-like folder: names at the top, `..data` pointing to the current version.
struct SecretVolume {
    dir: PathBuf,
    versions: usize,
}

impl SecretVolume {
    fn new(name: &str) -> SecretVolume {
        let dir = dir(name);
        for f in ["tls.crt", "tls.key", "ca.crt"] {
            std::os::unix::fs::symlink(Path::new("..data").join(f), dir.join(f)).unwrap();
        }
        SecretVolume { dir, versions: 0 }
    }

    /// Writes a new version and swaps `..data` to it at once.
    fn swap(&mut self, cert: &str, key: &str, roots: &str) {
        self.versions += 1;
        let version = format!("..v{}", self.versions);
        let v = self.dir.join(&version);
        std::fs::create_dir_all(&v).unwrap();
        std::fs::write(v.join("tls.crt"), cert).unwrap();
        std::fs::write(v.join("tls.key"), key).unwrap();
        std::fs::write(v.join("ca.crt"), roots).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }

    fn config(&self) -> IdentityConfig {
        let p = |f: &str| self.dir.join(f).display().to_string();
        IdentityConfig {
            trust_domain: "cluster.local".into(),
            roots: p("ca.crt"),
            cert: Some(p("tls.crt")),
            key: Some(p("tls.key")),
            control: None,
            reload: HumanDuration(Duration::from_millis(100)),
        }
    }
}

impl Drop for SecretVolume {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn not_after(admin: SocketAddr) -> u64 {
    report(admin)["not_after"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_set_is_put_into_use_and_a_bad_one_refused_once_keeping_the_old() {
    let ca = Ca::new();
    let mut vol = SecretVolume::new("files-reload");
    let hour = Duration::from_secs(3600);
    let (c1, k1) = ca.certify(CHAT, hour);
    vol.swap(&c1, &k1, &ca.anchors_pem);
    let proxy = start_proxy(vol.config(), None).await.unwrap();
    assert_eq!(ready(proxy.admin).0, 200, "files are read at start: ready at once");
    let r = report(proxy.admin);
    assert_eq!(
        (r["identity"].as_str(), r["source"].as_str(), r["state"].as_str()),
        (Some(CHAT), Some("files"), Some("valid"))
    );
    let first = not_after(proxy.admin);
    assert!(first.abs_diff(unix_now() + 3600) < 60, "{r}");

    let (c2, k2) = ca.certify(CHAT, 2 * hour);
    vol.swap(&c2, &k2, &ca.anchors_pem);
    assert!(wait_until(Duration::from_secs(5), || not_after(proxy.admin) > first + 3000).await, "not reloaded");
    let second = not_after(proxy.admin);
    assert_eq!(renewals(proxy.admin, "ok"), 2.0, "the start and the reload");

    // A certificate with the key of another: refused, once, and the second set stays.
    let (c3, _) = ca.certify(CHAT, 3 * hour);
    vol.swap(&c3, &k2, &ca.anchors_pem);
    assert!(wait_until(Duration::from_secs(5), || renewals(proxy.admin, "error") == 1.0).await, "not refused");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(renewals(proxy.admin, "error"), 1.0, "the same bad set is refused once, not at every read");
    let r = report(proxy.admin);
    assert_eq!((r["not_after"].as_u64(), r["state"].as_str()), (Some(second), Some("valid")), "{r}");
    assert!(r["last_error"].as_str().is_some_and(|e| e.contains("refused")), "{r}");
    assert_eq!(ready(proxy.admin).0, 200);

    vol.swap("not PEM at all", &k2, &ca.anchors_pem);
    assert!(wait_until(Duration::from_secs(5), || renewals(proxy.admin, "error") == 2.0).await, "garbage not refused");
    assert_eq!(not_after(proxy.admin), second);

    let (c4, k4) = ca.certify(CHAT, 4 * hour);
    vol.swap(&c4, &k4, &ca.anchors_pem);
    assert!(wait_until(Duration::from_secs(5), || not_after(proxy.admin) > second + 3000).await, "not reloaded");
    assert!(report(proxy.admin)["last_error"].is_null());
    assert_eq!(renewals(proxy.admin, "ok"), 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_cannot_be_used_fail_the_start_with_the_reason() {
    let ca = Ca::new();
    let mut vol = SecretVolume::new("files-bad");
    let (c, k) = ca.certify(CHAT, Duration::from_secs(3600));
    vol.swap("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", &k, &ca.anchors_pem);
    let e = format!("{:#}", start_proxy(vol.config(), None).await.unwrap_err());
    assert!(e.contains("tls.crt") && e.contains("certificates"), "{e}");

    let other = Ca::in_domain("other.domain");
    let (oc, ok) = other.certify("spiffe://other.domain/ns/apps/sa/chat", Duration::from_secs(3600));
    vol.swap(&oc, &ok, &other.anchors_pem);
    let e = format!("{:#}", start_proxy(vol.config(), None).await.unwrap_err());
    assert!(e.contains("outside trust domain cluster.local"), "{e}");

    vol.swap(&c, &k, &ca.anchors_pem);
    let missing = IdentityConfig { key: Some(vol.dir.join("nowhere.key").display().to_string()), ..vol.config() };
    let e = format!("{:#}", start_proxy(missing, None).await.unwrap_err());
    assert!(e.contains("cannot read") && e.contains("nowhere.key"), "{e}");
    assert!(start_proxy(vol.config(), None).await.is_ok(), "the good set starts");
}
