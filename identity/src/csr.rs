//! A workload's side of getting a certificate: a new key, made in memory and never written
//! anywhere, and a PKCS#10 request for exactly its identity.

use crate::spiffe::SpiffeId;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A key and the request for a certificate of it.
pub struct Request {
    key: KeyPair,
    /// The DER request, to send to the identity service.
    pub der: Vec<u8>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request").field("der_bytes", &self.der.len()).finish_non_exhaustive()
    }
}

impl Request {
    /// Makes an ECDSA P-256 key and a request, signed with it, for `id`.
    pub fn new(id: &SpiffeId) -> Result<Request, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(id.to_string().try_into()?)];
        let der = params.serialize_request(&key)?.der().to_vec();
        Ok(Request { key, der })
    }

    /// The key pair (its public half is what a certificate is signed for).
    pub fn key_pair(&self) -> &KeyPair {
        &self.key
    }

    /// The private key, for rustls (held in memory only).
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}
