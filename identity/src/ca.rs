//! The trust anchor and the issuer: making them (for a quick start and for tests) and signing
//! workload certificates with the issuer.
//!
//! The chain is Linkerd's: a long-lived trust anchor (the root every proxy trusts), an issuer
//! certificate signed by it (an intermediate CA, the one the identity service holds the key of),
//! and short-lived workload certificates signed by the issuer. A workload certificate carries
//! exactly one URI SAN, its SPIFFE ID, and may be used as both TLS server and TLS client.
//!
//! What a certificate request may ask for is decided by [`check_request`], a pure function: the
//! request's names must be exactly the identity its token proved. Everything else the request
//! holds (key usages, validity, CA flags) is ignored; the issued certificate takes its fields
//! from here and only the public key from the request.

use crate::spiffe::SpiffeId;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateSigningRequestDer;
use std::time::{Duration, SystemTime};

/// How long a workload certificate lives unless configured otherwise (Linkerd's default too).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// How far back a new certificate's validity starts, so that a peer whose clock is a little
/// behind still accepts it.
pub const BACKDATE: Duration = Duration::from_secs(60);

/// Why a trust anchor or issuer cannot be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// rcgen could not make, read or sign a certificate or key.
    #[error("{what}: {source}")]
    Cert {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: rcgen::Error,
    },
    /// The trust domain is not one a SPIFFE ID may name.
    #[error(transparent)]
    Id(#[from] crate::spiffe::IdError),
}

/// Why a certificate request was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// The request is not a DER PKCS#10 request, or its signature does not verify (its
    /// sender does not hold the key it asks a certificate for).
    #[error("unreadable certificate request: {0}")]
    Unreadable(String),
    /// The request names something other than exactly the identity its token proves.
    #[error("the request asks for {asked:?}, the token proves {proven}")]
    WrongIdentity {
        /// The names the request holds.
        asked: Vec<String>,
        /// The identity the token proved.
        proven: String,
    },
    /// The request asks for a CA certificate.
    #[error("a workload may not ask for a CA certificate")]
    AsksForCa,
    /// The identity is in another trust domain than the issuer's.
    #[error("identity {0} is outside trust domain {1}")]
    TrustDomain(String, String),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(String),
}

/// A new trust anchor and issuer, PEM. The anchor's key is not kept: a new issuer needs a new
/// anchor (or the operator's own CA).
#[derive(Clone, Debug)]
pub struct Generated {
    /// The trust anchor (what every proxy trusts).
    pub anchor_pem: String,
    /// The issuer certificate, signed by the anchor.
    pub issuer_pem: String,
    /// The issuer's private key (PKCS#8).
    pub issuer_key_pem: String,
}

fn cert_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> CaError {
    move |source| CaError::Cert { what, source }
}

fn random_serial() -> SerialNumber {
    let mut bytes: Vec<u8> = (0..16).map(|_| fastrand::u8(..)).collect();
    // Positive, and never a leading zero byte that DER would drop.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

fn ca_params(common_name: String, constraints: BasicConstraints, days: u32) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(constraints);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.serial_number = Some(random_serial());
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + Duration::from_secs(u64::from(days) * 86_400)).into();
    params
}

/// Makes an ECDSA P-256 trust anchor valid for `anchor_days` and an issuer signed by it valid for
/// `issuer_days`, for `trust_domain`.
pub fn generate(trust_domain: &str, anchor_days: u32, issuer_days: u32) -> Result<Generated, CaError> {
    // The trust domain is checked the way an identity in it would be.
    SpiffeId::new(trust_domain, "x", "x")?;
    let anchor_key = KeyPair::generate().map_err(cert_err("anchor key"))?;
    let anchor_params =
        ca_params(format!("Vane trust anchor {trust_domain}"), BasicConstraints::Unconstrained, anchor_days);
    let anchor = anchor_params.self_signed(&anchor_key).map_err(cert_err("anchor certificate"))?;
    let anchor_issuer = Issuer::new(anchor_params, anchor_key);
    let issuer_key = KeyPair::generate().map_err(cert_err("issuer key"))?;
    let mut issuer_params =
        ca_params(format!("Vane identity issuer {trust_domain}"), BasicConstraints::Constrained(0), issuer_days);
    issuer_params.use_authority_key_identifier_extension = true;
    let issuer = issuer_params.signed_by(&issuer_key, &anchor_issuer).map_err(cert_err("issuer certificate"))?;
    Ok(Generated { anchor_pem: anchor.pem(), issuer_pem: issuer.pem(), issuer_key_pem: issuer_key.serialize_pem() })
}

/// Whether a request may get a certificate for `proven`: its names are exactly that one URI, and
/// it is not for a CA.
pub fn check_request(request: &CertificateSigningRequestParams, proven: &SpiffeId) -> Result<(), IssueError> {
    let asked: Vec<String> = request
        .params
        .subject_alt_names
        .iter()
        .map(|san| match san {
            SanType::URI(uri) => uri.as_str().to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    if asked != [proven.to_string()] {
        return Err(IssueError::WrongIdentity { asked, proven: proven.to_string() });
    }
    if !matches!(request.params.is_ca, IsCa::NoCa | IsCa::ExplicitNoCa) {
        return Err(IssueError::AsksForCa);
    }
    Ok(())
}

/// A signed workload certificate.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate then the issuer's, PEM (what a TLS peer is sent).
    pub chain_pem: String,
    /// When the certificate stops being valid.
    pub not_after: SystemTime,
}

/// The issuer, ready to sign workload certificates.
pub struct Authority {
    trust_domain: String,
    issuer: Issuer<'static, KeyPair>,
    issuer_pem: String,
    anchors_pem: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("trust_domain", &self.trust_domain).finish_non_exhaustive()
    }
}

impl Authority {
    /// The issuer from its certificate and key, and the anchors proxies trust, all PEM.
    pub fn from_pem(
        trust_domain: &str,
        issuer_pem: &str,
        issuer_key_pem: &str,
        anchors_pem: &str,
    ) -> Result<Authority, CaError> {
        SpiffeId::new(trust_domain, "x", "x")?;
        let key = KeyPair::from_pem(issuer_key_pem).map_err(cert_err("issuer key"))?;
        let issuer = Issuer::from_ca_cert_pem(issuer_pem, key).map_err(cert_err("issuer certificate"))?;
        Ok(Authority {
            trust_domain: trust_domain.to_string(),
            issuer,
            issuer_pem: issuer_pem.trim_end().to_string() + "\n",
            anchors_pem: anchors_pem.to_string(),
        })
    }

    /// The trust domain it issues in.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The trust anchors, PEM (what a proxy trusts).
    pub fn anchors_pem(&self) -> &str {
        &self.anchors_pem
    }

    /// When the issuer's own certificate expires (after which nothing it signed is valid).
    pub fn issuer_not_after(&self) -> Option<SystemTime> {
        let certs = crate::pem::certs(&self.issuer_pem).ok()?;
        crate::peer::not_after(certs.first()?.as_ref())
    }

    /// Signs `csr_der` for `proven` (the identity its token proved), valid from a minute ago for
    /// `lifetime`.
    pub fn issue(&self, csr_der: &[u8], proven: &SpiffeId, lifetime: Duration) -> Result<Issued, IssueError> {
        let request = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
            .map_err(|e| IssueError::Unreadable(e.to_string()))?;
        check_request(&request, proven)?;
        let now = SystemTime::now();
        self.sign(&request.public_key, proven, now - BACKDATE, now + lifetime)
    }

    /// Makes a key and a certificate for `id` at once (the identity service's own, which it
    /// cannot request from itself). Returns the certificate and the key's PKCS#8 DER.
    pub fn certify(&self, id: &SpiffeId, lifetime: Duration) -> Result<(Issued, Vec<u8>), IssueError> {
        let key = KeyPair::generate().map_err(|e| IssueError::Sign(e.to_string()))?;
        let now = SystemTime::now();
        let issued = self.sign(&key, id, now - BACKDATE, now + lifetime)?;
        Ok((issued, key.serialize_der()))
    }

    /// Signs a certificate for `id` valid between two instants (tests make expired and
    /// not-yet-valid ones with this).
    pub fn sign(
        &self,
        key: &impl rcgen::PublicKeyData,
        id: &SpiffeId,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Issued, IssueError> {
        if id.trust_domain() != self.trust_domain {
            return Err(IssueError::TrustDomain(id.to_string(), self.trust_domain.clone()));
        }
        let uri = id.to_string().try_into().map_err(|e: rcgen::Error| IssueError::Sign(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let cert = params.signed_by(key, &self.issuer).map_err(|e| IssueError::Sign(e.to_string()))?;
        Ok(Issued { chain_pem: format!("{}{}", cert.pem(), self.issuer_pem), not_after })
    }
}
