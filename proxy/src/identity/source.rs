//! Picking the certificate's source from `proxy.identity` (as the command line resolved it) and
//! starting it.

use super::files::{Files, FilesError, Paths};
use super::service::Client;
use super::{Identity, Source};
use crate::metrics::Metrics;
use std::path::PathBuf;
use std::sync::Arc;
use vane_identity::SpiffeId;
use vane_identity::spiffe::IdError;
use vane_route::config::IdentityConfig;

/// The namespace and ServiceAccount of the control service, whose identity the proxy expects
/// of it by default.
pub const CONTROL_NAMESPACE: &str = "vane-system";
/// See [`CONTROL_NAMESPACE`].
pub const CONTROL_SERVICE_ACCOUNT: &str = "vane-control";

/// Why the identity could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An identity in the config is not a SPIFFE ID.
    #[error("proxy.identity.{field}: {source}")]
    Id {
        /// The field.
        field: &'static str,
        /// Why.
        #[source]
        source: IdError,
    },
    /// The certificate files cannot be used.
    #[error("proxy.identity: {0}")]
    Files(#[from] FilesError),
    /// Neither files nor the identity service are given (the config check refuses that too).
    #[error("proxy.identity: give either cert and key (files) or control (the identity service)")]
    NoSource,
}

/// A started identity.
#[derive(Debug)]
pub struct Started {
    /// The holder the listeners, the connector and admin read.
    pub identity: Arc<Identity>,
    /// The identity the control service must present (discovery and certificates), when
    /// identity is enabled.
    pub control_server: Option<SpiffeId>,
    /// The task that keeps the certificate (renewals or file reloads).
    pub task: Option<tokio::task::JoinHandle<()>>,
}

/// The control service's default identity in `trust_domain`.
pub fn default_control_identity(trust_domain: &str) -> Result<SpiffeId, IdError> {
    SpiffeId::new(trust_domain, CONTROL_NAMESPACE, CONTROL_SERVICE_ACCOUNT)
}

/// Starts the source `config` names: files are read now (a bad set fails here); the identity
/// service is asked by a task (the identity stays pending until its first answer). Without a
/// config, [`Identity::disabled`].
pub fn start(config: Option<&IdentityConfig>, metrics: &Arc<Metrics>) -> Result<Started, StartError> {
    let Some(c) = config else {
        return Ok(Started { identity: Identity::disabled(), control_server: None, task: None });
    };
    let id_err = |field| move |source| StartError::Id { field, source };
    let server = match c.control.as_ref().and_then(|s| s.server_identity.as_deref()) {
        Some(s) => SpiffeId::parse(s).map_err(id_err("control.server_identity"))?,
        None => default_control_identity(&c.trust_domain).map_err(id_err("trust_domain"))?,
    };
    let metrics = Arc::clone(metrics);
    match (&c.cert, &c.key, &c.control) {
        (Some(cert), Some(key), None) => {
            let identity = Identity::pending_from(&c.trust_domain, Source::Files);
            let paths = Paths { cert: cert.into(), key: key.into(), roots: c.roots.clone().into() };
            let files = Files::load(paths, Arc::clone(&identity));
            metrics.identity.renewal(files.is_ok());
            let task = tokio::spawn(files?.watch(c.reload.0, metrics));
            Ok(Started { identity, control_server: Some(server), task: Some(task) })
        }
        (None, None, Some(svc)) => {
            let identity = Identity::pending_from(&c.trust_domain, Source::Control);
            let client = Client {
                addr: svc.addr.clone(),
                server: server.clone(),
                id: SpiffeId::parse(&svc.identity).map_err(id_err("control.identity"))?,
                token: PathBuf::from(&svc.token),
                roots: PathBuf::from(&c.roots),
            };
            let task = tokio::spawn(super::renew::run(client, Arc::clone(&identity), metrics));
            Ok(Started { identity, control_server: Some(server), task: Some(task) })
        }
        _ => Err(StartError::NoSource),
    }
}
