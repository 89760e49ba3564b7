//! PEM text to rustls' DER types, on rustls-pki-types' own reader.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why PEM text could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The text holds no section of the kind needed, or a broken one.
    #[error("{what}: {source}")]
    Pem {
        /// What was read (`certificates`, `private key`).
        what: &'static str,
        /// Why.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// No certificate at all.
    #[error("no certificate in the PEM text")]
    Empty,
}

/// Every certificate in `pem`, in order; at least one.
pub fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| PemError::Pem { what: "certificates", source })?;
    if certs.is_empty() {
        return Err(PemError::Empty);
    }
    Ok(certs)
}

/// The first private key in `pem` (PKCS#8, PKCS#1 or SEC1).
pub fn key(pem: &str) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|source| PemError::Pem { what: "private key", source })
}
