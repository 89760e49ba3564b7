//! `vane-control identity init`: a new trust anchor and issuer for a first install, printed as
//! the objects `kubectl apply -f -` takes, or written as files for a control service run
//! outside a cluster.
//!
//! - Secret `vane-identity-issuer` (type Opaque, in the control service's namespace): `ca.crt`
//!   (the trust anchor), `tls.crt` (the issuer certificate, signed by the anchor) and `tls.key`
//!   (the issuer's key). The control service mounts it as its `--identity-dir`.
//! - ConfigMap `vane-identity-trust-roots` (`ca.crt`, the anchor only), in the control
//!   service's namespace and in every namespace named by `--roots-namespaces`. The injector
//!   mounts it (optionally) in every injected pod at `/var/run/vane/roots`, so it must exist in
//!   every meshed namespace; the anchor's key is not kept, so the roots never hold a secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::io::Write;
use std::path::Path;
use vane_identity::ca::Generated;

/// The Secret holding the issuer.
pub const ISSUER_SECRET: &str = "vane-identity-issuer";

/// The ConfigMap holding the trust anchors, in every meshed namespace.
pub const ROOTS_CONFIGMAP: &str = "vane-identity-trust-roots";

/// The ConfigMap's key (and the file name where it is mounted).
pub const ROOTS_KEY: &str = "ca.crt";

/// The namespaces that get the roots ConfigMap: the control service's, then the others once
/// each, in the order given.
pub fn roots_namespaces(namespace: &str, others: &[String]) -> Vec<String> {
    let mut out = vec![namespace.to_string()];
    for ns in others.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        if !out.iter().any(|o| o == ns) {
            out.push(ns.to_string());
        }
    }
    out
}

/// The Secret and the ConfigMaps, as a multi-document YAML stream.
pub fn manifests(g: &Generated, trust_domain: &str, namespace: &str, roots_in: &[String]) -> String {
    let mut out = format!(
        "# Vane identity for trust domain {trust_domain}: the issuer (keep it secret) and the trust roots.\n\
         apiVersion: v1\n\
         kind: Secret\n\
         metadata:\n  name: {ISSUER_SECRET}\n  namespace: {namespace}\n  labels:\n    app.kubernetes.io/name: vane-control\n\
         type: Opaque\n\
         data:\n  ca.crt: {anchor}\n  tls.crt: {issuer}\n  tls.key: {key}\n",
        anchor = STANDARD.encode(&g.anchor_pem),
        issuer = STANDARD.encode(&g.issuer_pem),
        key = STANDARD.encode(&g.issuer_key_pem),
    );
    let block: String = g.anchor_pem.lines().map(|l| format!("    {l}\n")).collect();
    for ns in roots_namespaces(namespace, roots_in) {
        out.push_str(&format!(
            "---\n\
             apiVersion: v1\n\
             kind: ConfigMap\n\
             metadata:\n  name: {ROOTS_CONFIGMAP}\n  namespace: {ns}\n  labels:\n    app.kubernetes.io/name: vane-control\n\
             data:\n  {ROOTS_KEY}: |\n{block}"
        ));
    }
    out
}

/// Writes `ca.crt`, `tls.crt` and `tls.key` (mode 0600) into `dir`, creating it; refuses to
/// overwrite any of them.
pub fn write_files(dir: &Path, g: &Generated) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text, mode) in [
        (super::ANCHORS_FILE, &g.anchor_pem, 0o644),
        (super::ISSUER_FILE, &g.issuer_pem, 0o644),
        (super::KEY_FILE, &g.issuer_key_pem, 0o600),
    ] {
        let path = dir.join(name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        #[cfg(not(unix))]
        let _ = mode;
        let mut file =
            options.open(&path).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        file.write_all(text.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use std::sync::Arc;
    use std::time::Duration;
    use vane_identity::ca::Authority;
    use vane_identity::tls::{self, Credentials};
    use vane_identity::{SpiffeId, csr};

    /// A real TLS 1.3 handshake over an in-memory pipe; the identity the server presented.
    async fn handshake(server: Arc<rustls::ServerConfig>, client: Arc<rustls::ClientConfig>) -> Option<SpiffeId> {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let accept = tokio::spawn(async move { tokio_rustls::TlsAcceptor::from(server).accept(b).await.is_ok() });
        let name = tls::server_name("127.0.0.1:1".parse().unwrap());
        let conn = tokio_rustls::TlsConnector::from(client).connect(name, a).await.ok()?;
        assert!(accept.await.unwrap());
        vane_identity::peer::id_of_chain(conn.get_ref().1.peer_certificates())
    }

    #[tokio::test]
    async fn the_printed_objects_hold_an_issuer_that_chains_to_the_published_roots() {
        let g = vane_identity::ca::generate("cluster.local", 3650, 365).unwrap();
        let yaml =
            manifests(&g, "cluster.local", "vane-system", &["models".into(), " vane-system".into(), "apps".into()]);
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&yaml).unwrap();
        assert_eq!(docs.len(), 4, "{yaml}");
        let secret: Secret = serde_json::from_value(docs[0].clone()).unwrap();
        assert_eq!(secret.metadata.name.as_deref(), Some(ISSUER_SECRET));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("vane-system"));
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        let data = secret.data.unwrap();
        let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
        assert_eq!(text("ca.crt"), g.anchor_pem);
        let maps: Vec<ConfigMap> = docs[1..].iter().map(|d| serde_json::from_value(d.clone()).unwrap()).collect();
        let namespaces: Vec<_> = maps.iter().map(|m| m.metadata.namespace.clone().unwrap()).collect();
        assert_eq!(namespaces, ["vane-system", "models", "apps"]);
        let roots = &maps[1].data.as_ref().unwrap()[ROOTS_KEY];
        assert_eq!(roots, &g.anchor_pem, "the ConfigMap holds the anchor, byte for byte");
        assert!(maps.iter().all(|m| m.metadata.name.as_deref() == Some(ROOTS_CONFIGMAP)));

        // The issuer from the Secret signs a workload certificate that chains to the roots.
        let ca = Authority::from_pem("cluster.local", &text("tls.crt"), &text("tls.key"), &text("ca.crt")).unwrap();
        let id = SpiffeId::new("cluster.local", "models", "llm").unwrap();
        let request = csr::Request::new(&id).unwrap();
        let issued = ca.issue(&request.der, &id, Duration::from_secs(3600)).unwrap();
        let server = Credentials::new(&issued.chain_pem, request.key(), roots).unwrap();
        let client = tls::anonymous_client_config(&tls::roots(roots).unwrap(), &[b"h2"]).unwrap();
        assert_eq!(handshake(server.server_config().unwrap(), client).await, Some(id));

        // A certificate from another anchor does not pass.
        let other = vane_identity::ca::generate("cluster.local", 1, 1).unwrap();
        let stranger = tls::anonymous_client_config(&tls::roots(&other.anchor_pem).unwrap(), &[b"h2"]).unwrap();
        assert_eq!(handshake(server.server_config().unwrap(), stranger).await, None);
    }

    #[test]
    fn files_are_written_once_and_the_key_is_private() {
        let g = vane_identity::ca::generate("cluster.local", 1, 1).unwrap();
        let dir = std::env::temp_dir().join(format!("vane-identity-init-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_files(&dir, &g).unwrap();
        let read = super::super::IssuerPem::read(&dir).unwrap();
        assert_eq!(
            (read.anchors, read.cert, read.key),
            (g.anchor_pem.clone(), g.issuer_pem.clone(), g.issuer_key_pem.clone())
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("tls.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = write_files(&dir, &g).unwrap_err();
        assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists, "{again}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
