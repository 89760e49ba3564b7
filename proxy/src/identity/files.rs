//! The certificate from files (standalone: `proxy.identity: {roots, cert, key, reload}`).
//!
//! The three files are read at start; a set that cannot be used fails the start with the
//! reason. They are read again every `reload`: when their content changed and the new set is
//! good, it is put into use; a bad new set is logged and counted once (until the files change
//! again) and the old one kept. Reading and comparing is `vane_identity::files`, which the
//! control service's webhook certificate uses too.

use super::Identity;
use crate::metrics::Metrics;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use vane_identity::files::{Contents, ReadError, Watched};
use vane_identity::tls::{Credentials, TlsError};

/// Why a set of files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A file could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The PEM texts, the key or the chain cannot be used.
    #[error("{cert}: {source}")]
    Tls {
        /// The certificate file.
        cert: String,
        /// Why.
        #[source]
        source: TlsError,
    },
    /// The certificate's identity is in another trust domain than the configured one.
    #[error("{cert} names {id}, outside trust domain {trust_domain}")]
    TrustDomain {
        /// The certificate file.
        cert: String,
        /// Whom it names.
        id: String,
        /// The configured trust domain.
        trust_domain: String,
    },
}

/// Where the files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// The PEM chain, leaf first.
    pub cert: PathBuf,
    /// The PEM private key.
    pub key: PathBuf,
    /// The PEM trust anchors.
    pub roots: PathBuf,
}

/// The files, watched.
#[derive(Debug)]
pub struct Files {
    watched: Watched,
    identity: Arc<Identity>,
}

impl Files {
    /// Reads the files and puts their certificate into use; fails when they cannot be used.
    pub fn load(paths: Paths, identity: Arc<Identity>) -> Result<Files, FilesError> {
        let files = Files { watched: Watched::new(vec![paths.cert, paths.key, paths.roots]), identity };
        let contents = Contents::read(files.watched.paths())?;
        files.put(&contents)?;
        files.watched.accept(contents);
        Ok(files)
    }

    fn put(&self, c: &Contents) -> Result<(), FilesError> {
        let cert = c.path(0).map(|p| p.display().to_string()).unwrap_or_default();
        let tls = |source| FilesError::Tls { cert: cert.clone(), source };
        let creds = Credentials::from_pem(c.text(0)?, c.text(1)?, c.text(2)?).map_err(tls)?;
        let td = self.identity.trust_domain();
        if creds.id.trust_domain() != td {
            let (id, trust_domain) = (creds.id.to_string(), td.to_string());
            return Err(FilesError::TrustDomain { cert, id, trust_domain });
        }
        self.identity.set(&creds).map_err(tls)?;
        Ok(())
    }

    /// Reads the files again: `Ok(true)` when a changed, good set was put into use, `Ok(false)`
    /// when nothing changed (or the change was refused before), the reason when a new set was
    /// refused (the old one stays).
    pub fn reload(&self) -> Result<bool, FilesError> {
        let Some(contents) = self.watched.changed()? else { return Ok(false) };
        match self.put(&contents) {
            Ok(()) => {
                self.watched.accept(contents);
                Ok(true)
            }
            Err(e) => {
                self.watched.refuse(contents);
                Err(e)
            }
        }
    }

    /// Reloads every `every`, for as long as the process runs.
    pub async fn watch(self, every: Duration, metrics: Arc<Metrics>) {
        loop {
            tokio::time::sleep(every).await;
            match self.reload() {
                Ok(false) => {}
                Ok(true) => metrics.identity.renewal(true),
                // A file that cannot be read is tried again at the next read, and not counted:
                // no new set was read.
                Err(FilesError::Read(e)) => {
                    tracing::warn!("certificate files: {e}; keeping the current certificate");
                    self.identity.failed(e.to_string());
                }
                Err(e) => {
                    metrics.identity.renewal(false);
                    tracing::warn!("new certificate files refused: {e}; keeping the current certificate");
                    self.identity.failed(format!("new certificate files refused: {e}"));
                }
            }
        }
    }
}
