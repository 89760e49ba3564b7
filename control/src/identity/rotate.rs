//! Issuer rotation without a restart. The identity directory (`ca.crt`, `tls.crt`, `tls.key`,
//! the mounted `vane-identity-issuer` Secret) is read again every [`Reload::every`]; when its
//! content changes, the new issuer is put into use at once, for every certificate signed from
//! then on and for the control service's own certificate (new connections get one from the new
//! issuer; open discovery streams keep theirs). Certificates already issued stay valid until
//! they expire, so proxies move to the new issuer at their next renewal.
//!
//! A new set is checked before use: it must parse, and a certificate the new issuer signs must
//! chain to the new anchors and be valid now. A set that fails stays refused (logged once,
//! counted) and the issuer in use stays, until the files change again. A file missing for a
//! moment (the kubelet swaps a Secret's files through a symlink) is read again at the next tick.
//!
//! To rotate the trust anchor as well, first publish a bundle with both anchors (in the Secret's
//! `ca.crt` and the proxies' trust-roots ConfigMap), then the new issuer, then drop the old
//! anchor once every certificate of the old issuer has expired.

use super::{ANCHORS_FILE, ISSUER_FILE, IdentityError, IssuerPem, KEY_FILE, ServingCert};
use crate::metrics::Metrics;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use vane_identity::files::{Contents, Watched};
use vane_runtime::CancellationToken;

/// Where the issuer's files are, and how often they are read again.
#[derive(Clone, Debug)]
pub struct Reload {
    /// The identity directory.
    pub dir: PathBuf,
    /// How often it is read.
    pub every: Duration,
}

/// What one read of the files did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing changed (or the files could not be read just now).
    Unchanged,
    /// The new issuer is in use.
    Rotated,
    /// The new set cannot be used; the old issuer stays.
    Refused,
}

/// The files a [`Reload`] watches, in the order [`IssuerPem`] reads them.
pub fn watched(reload: &Reload) -> Watched {
    Watched::new([ANCHORS_FILE, ISSUER_FILE, KEY_FILE].iter().map(|f| reload.dir.join(f)).collect())
}

fn pem_of(c: &Contents) -> Result<IssuerPem, IdentityError> {
    let text = |i: usize| {
        c.text(i).map(str::to_string).map_err(|e| IdentityError::Read {
            path: c.path(i).map(PathBuf::from).unwrap_or_default(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        })
    };
    Ok(IssuerPem { anchors: text(0)?, cert: text(1)?, key: text(2)? })
}

/// Reads the files once: a change from `current` is checked and, if good, put into use by
/// `cert` (and `current` updated).
pub fn check(
    files: &Watched,
    current: &mut IssuerPem,
    trust_domain: &str,
    cert: &ServingCert,
    metrics: &Metrics,
) -> Outcome {
    let contents = match files.changed() {
        Ok(Some(c)) => c,
        Ok(None) => return Outcome::Unchanged,
        Err(e) => {
            tracing::debug!(error = %e, "issuer files not readable now; reading them again later");
            return Outcome::Unchanged;
        }
    };
    let attempt = pem_of(&contents).and_then(|pem| {
        if pem == *current {
            return Ok(None);
        }
        let authority = pem.authority(trust_domain)?;
        cert.rotate(authority)?;
        Ok(Some(pem))
    });
    match attempt {
        Ok(None) => {
            files.accept(contents);
            Outcome::Unchanged
        }
        Ok(Some(pem)) => {
            files.accept(contents);
            *current = pem;
            metrics.issuer_reload("rotated");
            metrics.set_issuer_expiry(&cert.authority());
            tracing::info!("issuer files changed: the new issuer is in use");
            Outcome::Rotated
        }
        Err(e) => {
            files.refuse(contents);
            metrics.issuer_reload("refused");
            tracing::warn!(error = %e, "issuer files changed but cannot be used; the issuer in use stays");
            Outcome::Refused
        }
    }
}

/// Reads the files every `reload.every` until `shutdown`, starting from `started` (the issuer
/// the service started with).
pub async fn keep_issuer_fresh(
    reload: Reload,
    started: IssuerPem,
    trust_domain: String,
    cert: Arc<ServingCert>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let files = watched(&reload);
    let mut current = started;
    let mut tick = tokio::time::interval(reload.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        check(&files, &mut current, &trust_domain, &cert, &metrics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arc_swap::ArcSwap;
    use vane_identity::SpiffeId;

    fn issuer() -> IssuerPem {
        let g = vane_identity::ca::generate("cluster.local", 10, 5).unwrap();
        IssuerPem { anchors: g.anchor_pem, cert: g.issuer_pem, key: g.issuer_key_pem }
    }

    fn write(dir: &std::path::Path, pem: &IssuerPem) {
        std::fs::write(dir.join(ANCHORS_FILE), &pem.anchors).unwrap();
        std::fs::write(dir.join(ISSUER_FILE), &pem.cert).unwrap();
        std::fs::write(dir.join(KEY_FILE), &pem.key).unwrap();
    }

    #[test]
    fn a_new_issuer_is_used_and_a_bad_one_refused_once() {
        let dir = std::env::temp_dir().join(format!("vane-control-rotate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = issuer();
        write(&dir, &first);
        let authority = Arc::new(ArcSwap::from_pointee(first.authority("cluster.local").unwrap()));
        let id = SpiffeId::new("cluster.local", "vane-system", "vane-control").unwrap();
        let cert = ServingCert::new(authority, id, Duration::from_secs(3600)).unwrap();
        let metrics = Metrics::new(&mut prometheus_client::registry::Registry::default());
        let files = watched(&Reload { dir: dir.clone(), every: Duration::from_secs(1) });
        let mut current = first.clone();
        let run = |current: &mut IssuerPem| check(&files, current, "cluster.local", &cert, &metrics);

        assert_eq!(run(&mut current), Outcome::Unchanged, "the files hold what the service started with");
        assert_eq!(run(&mut current), Outcome::Unchanged);

        let second = issuer();
        write(&dir, &second);
        let before = cert.config();
        assert_eq!(run(&mut current), Outcome::Rotated);
        assert_eq!(current, second);
        assert!(!Arc::ptr_eq(&before, &cert.config()), "a new serving certificate");
        assert_eq!(cert.authority().anchors_pem(), second.anchors);

        // An issuer the anchors do not vouch for: refused, once; the second issuer stays.
        let third = issuer();
        write(&dir, &IssuerPem { anchors: first.anchors.clone(), ..third.clone() });
        let before = cert.config();
        assert_eq!(run(&mut current), Outcome::Refused);
        assert_eq!(run(&mut current), Outcome::Unchanged, "the same bad set is not tried again");
        assert!(Arc::ptr_eq(&before, &cert.config()));
        assert_eq!(current, second);

        // Garbage, then a missing file: the issuer in use stays.
        std::fs::write(dir.join(KEY_FILE), "not a key").unwrap();
        assert_eq!(run(&mut current), Outcome::Refused);
        std::fs::remove_file(dir.join(KEY_FILE)).unwrap();
        assert_eq!(run(&mut current), Outcome::Unchanged);

        // The files fixed: used.
        write(&dir, &third);
        assert_eq!(run(&mut current), Outcome::Rotated);
        assert_eq!(cert.authority().anchors_pem(), third.anchors);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
