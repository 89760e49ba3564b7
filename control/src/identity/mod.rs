//! The identity service: the certificate authority for workload identities, served on the
//! discovery listener over TLS 1.3 when the control service is given an issuer
//! (`--identity-dir`).
//!
//! ```text
//!  proxy ──TLS (no client certificate yet)──▶ POST /v1/certificate {token, csr}
//!                                              └─▶ TokenReview (API server) ─▶ decide ─▶ Authority::issue
//!  proxy ──mTLS (its workload certificate)──▶ GET /v1/discovery?services=...   (what its namespace may see)
//! ```
//!
//! - [`review`]: the pure decision on a `TokenReview` and the refusals;
//! - [`service`]: the `/v1/certificate` handler;
//! - [`visibility`]: who may subscribe and which Services each proxy is served;
//! - [`init`]: `vane-control identity init`, a trust anchor and issuer for a first install;
//! - [`ServingCert`]: the control service's own certificate
//!   (`spiffe://<td>/ns/<namespace>/sa/<service account>`), made by its own issuer and renewed
//!   at 70 % of its lifetime; new connections get the new one.
//! - [`rotate`]: the issuer's files read again, and a new issuer or new anchors put into use
//!   without a restart.

pub mod init;
pub mod review;
pub mod rotate;
pub mod service;
pub mod visibility;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use vane_identity::ca::{Authority, CaError, IssueError};
use vane_identity::tls::{Credentials, TlsError};
use vane_identity::{SpiffeId, spiffe::IdError};
use vane_runtime::CancellationToken;

/// The trust anchors file in the identity directory (the Secret's key).
pub const ANCHORS_FILE: &str = "ca.crt";
/// The issuer certificate file.
pub const ISSUER_FILE: &str = "tls.crt";
/// The issuer key file.
pub const KEY_FILE: &str = "tls.key";

/// The share of its lifetime after which the control service's own certificate is renewed.
pub const RENEW_AT: f64 = 0.7;

/// How long to wait before trying again after a failed renewal.
pub const RENEW_RETRY: Duration = Duration::from_secs(60);

/// Why the identity service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file of the identity directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The issuer or the anchors cannot be used.
    #[error("the issuer cannot be used: {0}")]
    Authority(#[from] CaError),
    /// The control service's own identity is not a valid SPIFFE ID.
    #[error("the control service's identity: {0}")]
    Id(#[from] IdError),
    /// The control service's own certificate could not be made.
    #[error("cannot make the control service's certificate: {0}")]
    Certify(#[from] IssueError),
    /// That certificate cannot be served.
    #[error("cannot serve the control service's certificate: {0}")]
    Tls(#[from] TlsError),
}

/// The issuer in use, swapped whole when its files change ([`rotate`]).
pub type SharedAuthority = Arc<ArcSwap<Authority>>;

/// The issuer and the anchors, PEM, as the `vane-identity-issuer` Secret holds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerPem {
    /// The trust anchors (`ca.crt`).
    pub anchors: String,
    /// The issuer certificate (`tls.crt`).
    pub cert: String,
    /// The issuer key (`tls.key`).
    pub key: String,
}

impl IssuerPem {
    /// Reads `ca.crt`, `tls.crt` and `tls.key` from `dir` (the mounted Secret).
    pub fn read(dir: &Path) -> Result<IssuerPem, IdentityError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| IdentityError::Read { path, source })
        };
        Ok(IssuerPem { anchors: read(ANCHORS_FILE)?, cert: read(ISSUER_FILE)?, key: read(KEY_FILE)? })
    }

    /// The authority for `trust_domain`.
    pub fn authority(&self, trust_domain: &str) -> Result<Authority, IdentityError> {
        Ok(Authority::from_pem(trust_domain, &self.cert, &self.key, &self.anchors)?)
    }
}

/// Settings of the identity service.
#[derive(Clone, Debug)]
pub struct IdentitySettings {
    /// The issuer and the anchors.
    pub issuer: IssuerPem,
    /// The trust domain of every identity issued.
    pub trust_domain: String,
    /// How long workload certificates (and the control service's own) are valid.
    pub lifetime: Duration,
    /// The control service's own identity: its namespace and ServiceAccount.
    pub namespace: String,
    /// See `namespace`.
    pub service_account: String,
    /// Where the issuer came from, read again to rotate it; `None`: never read again.
    pub reload: Option<rotate::Reload>,
}

impl IdentitySettings {
    /// The control service's own SPIFFE ID.
    pub fn own_id(&self) -> Result<SpiffeId, IdentityError> {
        Ok(SpiffeId::new(&self.trust_domain, &self.namespace, &self.service_account)?)
    }
}

/// The control service's serving certificate, renewed before it expires.
#[derive(Debug)]
pub struct ServingCert {
    authority: SharedAuthority,
    id: SpiffeId,
    lifetime: Duration,
    config: ArcSwap<ServerConfig>,
    not_after: ArcSwap<SystemTime>,
}

impl ServingCert {
    /// Makes the first certificate.
    pub fn new(
        authority: SharedAuthority,
        id: SpiffeId,
        lifetime: Duration,
    ) -> Result<Arc<ServingCert>, IdentityError> {
        let (config, not_after) = make(&authority.load(), &id, lifetime)?;
        Ok(Arc::new(ServingCert {
            authority,
            id,
            lifetime,
            config: ArcSwap::new(config),
            not_after: ArcSwap::from_pointee(not_after),
        }))
    }

    /// The TLS configuration new connections use.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.load_full()
    }

    /// The identity it presents.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// Makes a new certificate now.
    pub fn renew(&self) -> Result<SystemTime, IdentityError> {
        let (config, not_after) = make(&self.authority.load(), &self.id, self.lifetime)?;
        self.config.store(config);
        self.not_after.store(Arc::new(not_after));
        Ok(not_after)
    }

    /// Puts `authority` into use: a certificate of its own is made and checked against its
    /// anchors first, so an issuer the anchors do not vouch for is refused and the old one
    /// stays. The next renewal is then still due at the old certificate's time, which is soon
    /// enough: the new one is valid for a whole lifetime.
    pub fn rotate(&self, authority: Authority) -> Result<SystemTime, IdentityError> {
        let (config, not_after) = make(&authority, &self.id, self.lifetime)?;
        self.authority.store(Arc::new(authority));
        self.config.store(config);
        self.not_after.store(Arc::new(not_after));
        Ok(not_after)
    }

    /// The issuer in use.
    pub fn authority(&self) -> Arc<Authority> {
        self.authority.load_full()
    }

    /// Renews at [`RENEW_AT`] of each certificate's lifetime until `shutdown`; a failed renewal
    /// is logged and tried again after [`RENEW_RETRY`].
    pub async fn keep_renewed(self: Arc<Self>, shutdown: CancellationToken) {
        let mut wait = renew_in(SystemTime::now(), **self.not_after.load());
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = match self.renew() {
                Ok(not_after) => {
                    tracing::info!(identity = %self.id, "serving certificate renewed");
                    renew_in(SystemTime::now(), not_after)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "serving certificate not renewed; trying again");
                    RENEW_RETRY
                }
            };
        }
    }
}

fn make(
    authority: &Authority,
    id: &SpiffeId,
    lifetime: Duration,
) -> Result<(Arc<ServerConfig>, SystemTime), IdentityError> {
    let (issued, key) = authority.certify(id, lifetime)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
    let credentials = Credentials::new(&issued.chain_pem, key, authority.anchors_pem())?;
    credentials.verify()?;
    Ok((credentials.server_config()?, issued.not_after))
}

/// How long from `now` until a certificate valid until `not_after` is renewed: [`RENEW_AT`] of
/// what is left, at least a second.
pub fn renew_in(now: SystemTime, not_after: SystemTime) -> Duration {
    let left = not_after.duration_since(now).unwrap_or_default();
    left.mul_f64(RENEW_AT).max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_at_seventy_percent_of_what_is_left() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(renew_in(now, now + Duration::from_secs(24 * 3600)), Duration::from_secs(60_480));
        assert_eq!(renew_in(now, now + Duration::from_secs(100)), Duration::from_secs(70));
        assert_eq!(renew_in(now, now - Duration::from_secs(5)), Duration::from_secs(1), "expired: at once");
    }

    #[test]
    fn the_serving_certificate_names_the_control_service_and_is_renewed() {
        let g = vane_identity::ca::generate("cluster.local", 10, 5).unwrap();
        let issuer = IssuerPem { anchors: g.anchor_pem, cert: g.issuer_pem, key: g.issuer_key_pem };
        let authority = Arc::new(ArcSwap::from_pointee(issuer.authority("cluster.local").unwrap()));
        let id = SpiffeId::new("cluster.local", "vane-system", "vane-control").unwrap();
        let cert = ServingCert::new(authority, id.clone(), Duration::from_secs(3600)).unwrap();
        let first = cert.config();
        let not_after = cert.renew().unwrap();
        assert!(!Arc::ptr_eq(&first, &cert.config()), "a renewal swaps the configuration");
        let left = not_after.duration_since(SystemTime::now()).unwrap();
        assert!(left > Duration::from_secs(3500) && left <= Duration::from_secs(3600), "{left:?}");
        assert_eq!(cert.id(), &id);
        let other = IssuerPem { cert: "garbage".into(), ..issuer };
        assert!(matches!(other.authority("cluster.local"), Err(IdentityError::Authority(_))));
    }
}
