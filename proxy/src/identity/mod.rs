//! This proxy's workload identity: the certificate it presents on both sides of a meshed hop,
//! held behind one `ArcSwap` so that a renewed certificate reaches every new connection at once
//! while existing connections keep the one they were made with.
//!
//! Where the certificate comes from is set by `proxy.identity`: files (standalone; read again
//! when they change) or the control service's identity service (in a cluster; a key made in
//! memory, a request proved by the pod's ServiceAccount token, renewed before expiry). Both
//! sources [`Identity::set`] what they got; the listeners and the connector only [`Identity::load`].
//!
//! Without `proxy.identity`, [`Identity::disabled`]: nothing is encrypted, every caller is
//! unauthenticated, and endpoints the discovery stream marks as meshed are still called in
//! plaintext (their inbound proxies accept both during a rollout).

use arc_swap::ArcSwapOption;
use rustls::{ClientConfig, ServerConfig};
use std::sync::Arc;
use std::time::SystemTime;
use vane_identity::SpiffeId;
use vane_identity::tls::{self, Credentials, TlsError};

/// One certificate, ready for rustls on both sides.
#[derive(Debug)]
pub struct Loaded {
    /// Whom it names.
    pub id: SpiffeId,
    /// When it expires.
    pub not_after: SystemTime,
    /// The inbound side: TLS 1.3, client certificates asked for and checked when given.
    pub server: Arc<ServerConfig>,
    /// The outbound side to a meshed endpoint (ALPN `h2`: sidecars talk HTTP/2 to each other).
    pub client: Arc<ClientConfig>,
}

/// The current certificate, if any.
#[derive(Debug)]
pub struct Identity {
    enabled: bool,
    trust_domain: String,
    current: ArcSwapOption<Loaded>,
}

impl Identity {
    /// No identity configured: plaintext only.
    pub fn disabled() -> Arc<Identity> {
        Arc::new(Identity { enabled: false, trust_domain: String::new(), current: ArcSwapOption::empty() })
    }

    /// An identity in `trust_domain` that has no certificate yet.
    pub fn pending(trust_domain: &str) -> Arc<Identity> {
        Arc::new(Identity { enabled: true, trust_domain: trust_domain.to_string(), current: ArcSwapOption::empty() })
    }

    /// Whether `proxy.identity` is set (then `/ready` waits for the first certificate).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The current certificate (`None` before the first, or when disabled).
    pub fn load(&self) -> Option<Arc<Loaded>> {
        self.current.load_full()
    }

    /// Makes `creds` the certificate of every new connection.
    pub fn set(&self, creds: &Credentials) -> Result<Arc<Loaded>, TlsError> {
        let loaded = Arc::new(Loaded {
            id: creds.id.clone(),
            not_after: creds.not_after,
            server: creds.server_config()?,
            client: creds.client_config(&tls::ALPN[..1])?,
        });
        self.current.store(Some(Arc::clone(&loaded)));
        tracing::info!(identity = %creds.id, expires_in_s = seconds_left(creds.not_after), "certificate in use");
        Ok(loaded)
    }
}

/// Whole seconds from now until `t` (negative once past).
pub fn seconds_left(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::now()) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}
