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
//!
//! The sources: [`files`] (standalone) and [`service`] (the identity service, renewed by
//! [`renew`]); [`source::start`] picks one from the config. [`connect`] opens the TLS
//! connections of the proxy's own clients (the identity service, the discovery stream).
//! [`Identity::report`] is what admin `/identity` shows.

pub mod connect;
pub mod files;
pub mod renew;
pub mod service;
pub mod source;

use arc_swap::ArcSwapOption;
use rustls::{ClientConfig, ServerConfig};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
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

/// Where the certificate comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// PEM files, read again when they change (standalone).
    Files,
    /// The control service's identity service.
    Control,
}

impl Source {
    /// `files` or `control`, as `/identity` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Files => "files",
            Source::Control => "control",
        }
    }
}

/// What admin `/identity` shows.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// The SPIFFE ID of the certificate in use.
    pub identity: Option<String>,
    /// When it expires, seconds since the Unix epoch.
    pub not_after: Option<u64>,
    /// Seconds until then (negative once past).
    pub expires_in_seconds: Option<i64>,
    /// `files` or `control`.
    pub source: Option<&'static str>,
    /// `disabled`, `waiting` (for the first certificate), `valid` or `expired`.
    pub state: &'static str,
    /// Why the last attempt at a new certificate failed, until one succeeds.
    pub last_error: Option<String>,
}

/// The current certificate, if any.
#[derive(Debug)]
pub struct Identity {
    enabled: bool,
    trust_domain: String,
    source: Option<Source>,
    current: ArcSwapOption<Loaded>,
    last_error: Mutex<Option<String>>,
    changed: Notify,
}

impl Identity {
    fn new(enabled: bool, trust_domain: &str, source: Option<Source>) -> Arc<Identity> {
        Arc::new(Identity {
            enabled,
            trust_domain: trust_domain.to_string(),
            source,
            current: ArcSwapOption::empty(),
            last_error: Mutex::new(None),
            changed: Notify::new(),
        })
    }

    /// No identity configured: plaintext only.
    pub fn disabled() -> Arc<Identity> {
        Identity::new(false, "", None)
    }

    /// An identity in `trust_domain` that has no certificate yet.
    pub fn pending(trust_domain: &str) -> Arc<Identity> {
        Identity::new(true, trust_domain, None)
    }

    /// An identity in `trust_domain` that has no certificate yet and will get it from `source`.
    pub fn pending_from(trust_domain: &str, source: Source) -> Arc<Identity> {
        Identity::new(true, trust_domain, Some(source))
    }

    /// Where the certificate comes from (`None` when disabled or not said).
    pub fn source(&self) -> Option<Source> {
        self.source
    }

    /// Waits for the first certificate (returns at once once there is one). Never returns
    /// when disabled.
    pub async fn loaded(&self) -> Arc<Loaded> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the check, so that a `set` between the two is not missed.
            notified.as_mut().enable();
            if let Some(l) = self.load() {
                return l;
            }
            notified.await;
        }
    }

    /// Records why an attempt at a new certificate failed (the current one stays in use).
    pub fn failed(&self, why: String) {
        *crate::lock(&self.last_error) = Some(why);
    }

    /// Why `/ready` must wait: no certificate yet, or the one in use expired.
    pub fn not_ready(&self) -> Option<String> {
        if !self.enabled {
            return None;
        }
        match self.load() {
            None => Some("waiting for the first certificate".into()),
            Some(l) if seconds_left(l.not_after) < 0 => Some(format!("the certificate of {} expired", l.id)),
            Some(_) => None,
        }
    }

    /// What admin `/identity` shows.
    pub fn report(&self) -> Report {
        let loaded = self.load();
        let state = match (&loaded, self.enabled) {
            (_, false) => "disabled",
            (None, true) => "waiting",
            (Some(l), true) if seconds_left(l.not_after) < 0 => "expired",
            (Some(_), true) => "valid",
        };
        Report {
            identity: loaded.as_ref().map(|l| l.id.to_string()),
            not_after: loaded.as_ref().and_then(|l| l.not_after.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs()),
            expires_in_seconds: loaded.as_ref().map(|l| seconds_left(l.not_after)),
            source: self.source.map(Source::as_str),
            state,
            last_error: crate::lock(&self.last_error).clone(),
        }
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
        *crate::lock(&self.last_error) = None;
        self.changed.notify_waiters();
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

impl crate::client::mesh::ClientCertificate for Identity {
    fn client_config(&self) -> Option<Arc<ClientConfig>> {
        self.load().map(|l| Arc::clone(&l.client))
    }
}
