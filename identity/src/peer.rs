//! What a peer's certificate says: its SPIFFE ID and its validity, read with x509-parser.
//!
//! A workload certificate holds exactly one URI SAN; a certificate with none, with several, or
//! with one that is not a workload identity names nobody. Nothing here panics on any input.

use crate::spiffe::SpiffeId;
use std::time::{Duration, SystemTime};
use x509_parser::extensions::GeneralName;

/// The SPIFFE ID of a DER certificate, if it names exactly one workload.
pub fn id_of(der: &[u8]) -> Option<SpiffeId> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(uri) => Some(*uri),
        _ => None,
    });
    let (first, second) = (uris.next()?, uris.next());
    if second.is_some() {
        return None;
    }
    SpiffeId::parse(first).ok()
}

/// The identity of a TLS peer: the SPIFFE ID of the first certificate it presented.
pub fn id_of_chain(chain: Option<&[rustls_pki_types::CertificateDer<'_>]>) -> Option<SpiffeId> {
    chain.and_then(|c| c.first()).and_then(|leaf| id_of(leaf.as_ref()))
}

/// When a DER certificate stops being valid.
pub fn not_after(der: &[u8]) -> Option<SystemTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let secs = cert.validity().not_after.timestamp();
    let secs = u64::try_from(secs).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Property: arbitrary and truncated certificates never panic.
    #[test]
    fn garbage_and_truncated_certificates_name_nobody() {
        let g = crate::ca::generate("cluster.local", 1, 1).unwrap();
        let ca =
            crate::ca::Authority::from_pem("cluster.local", &g.issuer_pem, &g.issuer_key_pem, &g.anchor_pem).unwrap();
        let id = SpiffeId::parse("spiffe://cluster.local/ns/a/sa/b").unwrap();
        let (issued, _) = ca.certify(&id, Duration::from_secs(60)).unwrap();
        let leaf = crate::pem::certs(&issued.chain_pem).unwrap().remove(0);
        assert_eq!(id_of(leaf.as_ref()), Some(id));
        assert!(not_after(leaf.as_ref()).unwrap() > SystemTime::now());
        let mut rng = fastrand::Rng::with_seed(3);
        for cut in 0..leaf.len() {
            assert_eq!(id_of(&leaf[..cut]), None);
        }
        for _ in 0..5_000 {
            let mut bytes = leaf.to_vec();
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(0..bytes.len());
                bytes[at] = rng.u8(..);
            }
            let _ = id_of(&bytes);
            let _ = not_after(&bytes);
        }
    }
}
