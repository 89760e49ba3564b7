//! The webhook's serving certificate: PEM files given by flags, read at start (a bad pair stops
//! the start) and read again every [`RELOAD_EVERY`]; when their content changed and the new pair
//! is good, new handshakes use it. A bad new pair is logged and the old one kept.
//!
//! Reading and comparing the files (by content, not modification time: a Secret volume swaps a
//! symlink) is `vane_identity::files`, which the proxy's own certificate files use too.

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use vane_identity::files::{Contents, ReadError, Watched};
use vane_runtime::CancellationToken;

/// How often the files are read again. A renewed Secret reaches the pod's volume within about a
/// minute (kubelet's sync period), so checking more often buys nothing.
pub const RELOAD_EVERY: Duration = Duration::from_secs(10);

/// Why a certificate and key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM section of the kind needed.
    #[error("{}: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The key does not fit the certificate, or is of a kind that cannot sign.
    #[error("the key cannot be used with the certificate: {0}")]
    Key(#[source] rustls::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// Where the certificate chain and the key are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The current certificate, shared with rustls.
#[derive(Debug)]
pub struct ReloadingCert {
    files: CertFiles,
    current: ArcSwap<CertifiedKey>,
    watched: Watched,
}

// === impl ReloadingCert ===

impl ReloadingCert {
    /// Reads the pair; fails if it cannot be used.
    pub fn load(files: CertFiles) -> Result<Arc<ReloadingCert>, TlsError> {
        let watched = Watched::new(vec![files.cert.clone(), files.key.clone()]);
        let bytes = Contents::read(watched.paths()).map_err(read_error)?;
        let key = certified(&files, &bytes)?;
        watched.accept(bytes);
        Ok(Arc::new(ReloadingCert { files, current: ArcSwap::from_pointee(key), watched }))
    }

    /// Reads the files again; swaps the pair in if it changed and is good. Returns whether it
    /// swapped.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let Some(bytes) = self.watched.changed_since_accepted().map_err(read_error)? else {
            return Ok(false);
        };
        let key = certified(&self.files, &bytes)?;
        self.current.store(Arc::new(key));
        self.watched.accept(bytes);
        Ok(true)
    }

    /// Reloads every `every` until `shutdown`.
    pub async fn watch(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.reload() {
                Ok(true) => tracing::info!(cert = %self.files.cert.display(), "serving certificate reloaded"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "new serving certificate refused; keeping the old one"),
            }
        }
    }

    /// A rustls server configuration that answers with the current pair (TLS 1.2 and 1.3, as
    /// API servers speak both; HTTP/1.1 and h2 by ALPN).
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read_error(e: ReadError) -> TlsError {
    match e {
        ReadError::Read { path, source } => TlsError::Read { path, source },
        // Only asked for by `Contents::text`, which this file does not use.
        ReadError::NotText { path } => TlsError::Read { path, source: std::io::ErrorKind::InvalidData.into() },
    }
}

fn certified(files: &CertFiles, contents: &Contents) -> Result<CertifiedKey, TlsError> {
    let (cert, key) = (contents.bytes(0), contents.bytes(1));
    let pem = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Pem { path, source }
    };
    let chain = CertificateDer::pem_slice_iter(cert).collect::<Result<Vec<_>, _>>().map_err(pem(&files.cert))?;
    if chain.is_empty() {
        return Err(pem(&files.cert)(rustls_pki_types::pem::Error::NoItemsFound));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(pem(&files.key))?;
    CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider()).map_err(TlsError::Key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap().self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_changed_pair_is_swapped_in_and_a_bad_one_refused() {
        let dir = std::env::temp_dir().join(format!("vane-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = CertFiles { cert: dir.join("tls.crt"), key: dir.join("tls.key") };
        let (c1, k1) = pair("one");
        std::fs::write(&files.cert, &c1).unwrap();
        std::fs::write(&files.key, &k1).unwrap();
        let r = ReloadingCert::load(files.clone()).unwrap();
        let first = r.current.load_full().cert[0].clone();
        assert!(!r.reload().unwrap(), "unchanged files are not reloaded");

        let (c2, k2) = pair("two");
        std::fs::write(&files.cert, &c2).unwrap();
        // The key of the first pair with the second certificate: refused, the old pair stays.
        assert!(matches!(r.reload(), Err(TlsError::Key(_))));
        assert_eq!(r.current.load_full().cert[0], first);
        std::fs::write(&files.key, &k2).unwrap();
        assert!(r.reload().unwrap());
        assert_ne!(r.current.load_full().cert[0], first);

        std::fs::write(&files.cert, "garbage").unwrap();
        assert!(matches!(r.reload(), Err(TlsError::Pem { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
