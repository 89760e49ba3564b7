//! The discovery protocol between the control service and the proxies.
//!
//! A proxy opens one long-lived request to the control service, over HTTP/2 with prior knowledge
//! (h2c) or HTTP/1.1:
//!
//! ```text
//! GET /v1/discovery?services=llm.models.svc.cluster.local,embed.models.svc.cluster.local
//! GET /v1/discovery?services=*
//! ```
//!
//! The response (`200`, `content-type: application/x-ndjson`) never ends on its own: it is a stream
//! of JSON objects, one per line (NDJSON), each a [`Message`]:
//!
//! ```text
//! {"type":"snapshot","version":7,"services":[...],"backends":[...],"authz":{"default":"all-authenticated"}}
//! {"type":"update","version":9,"services":[...],"backends":[...]}
//! {"type":"remove","version":12,"services":["old.models.svc.cluster.local"]}
//! {"type":"ping"}
//! ```
//!
//! - `snapshot` comes first, exactly once, and holds every subscribed service that exists and every
//!   backend those services use. It replaces whatever the proxy had from an earlier connection.
//! - `update` holds the services whose configuration changed (each in full) and the backends whose
//!   endpoints or protocol changed, among those the subscribed services use. A backend that no
//!   subscribed service uses any more is simply no longer mentioned: [`DiscoveryState`] drops it.
//! - `snapshot` and `update` may carry `authz`, the proxy's inbound policy (an [`AuthzConfig`],
//!   as `proxy.authz` in the file). In a `snapshot`, no `authz` means that none is pushed; in an
//!   `update`, it means no change (a policy taken back is pushed as `{}`, the default policy).
//!   [`DiscoveryState::to_config`] applies it only to a proxy whose file sets no policy of its
//!   own: the file wins. Proxies that predate the field ignore it.
//! - `remove` names subscribed services that no longer exist.
//! - `ping` is a heartbeat sent every [`HEARTBEAT`] so that a proxy can tell a quiet stream from a
//!   dead one (reconnect after about three missed heartbeats).
//!
//! Services and backends use exactly the types of the proxy's configuration file
//! ([`ServiceConfig`], [`BackendConfig`]), so a proxy turns its [`DiscoveryState`] into a whole
//! [`Config`] with [`DiscoveryState::to_config`] after each message and swaps it in like a reloaded
//! file. Versions only order the messages of one connection: replicas of the control service count
//! independently, and a new connection always starts with a full snapshot.
//!
//! The stream is meant to grow: a proxy ignores what it does not know, so that a newer control
//! service can be rolled out before its proxies. A message `type` it does not know is read as
//! [`Message::Unknown`], and fields it does not know are ignored at every level, in the message
//! and in every object of its services and backends, although a configuration *file* with the
//! same unknown field is refused (a typo there must not pass unseen). Values it cannot read (a
//! wrong type, an enum variant it lacks) are still errors.
//!
//! ```
//! use vane_route::authz::DefaultPolicy;
//! use vane_route::discovery::{DiscoveryState, Message};
//! use vane_route::Config;
//!
//! let mut state = DiscoveryState::default();
//! let stream = concat!(
//!     r#"{"type":"snapshot","version":1,"services":[{"name":"llm.models.svc.cluster.local","routes":[{"name":"default","backends":[{"backend":"llm.models.svc.cluster.local:8000"}]}]}],"backends":[{"name":"llm.models.svc.cluster.local:8000","endpoints":["10.0.0.1:8000"]}]}"#,
//!     "\n{\"type\":\"ping\"}\n",
//!     r#"{"type":"update","version":2,"authz":{"default":"all-authenticated"}}"#,
//! );
//! for line in stream.lines() {
//!     state.apply(Message::from_line(line.as_bytes()).unwrap()).unwrap();
//! }
//! let config = state.to_config(&Config::default());
//! assert_eq!(config.proxy.authz.default, DefaultPolicy::AllAuthenticated);
//! assert!(vane_route::Table::from_config(config).is_ok());
//! ```

use crate::authz::AuthzConfig;
use crate::config::{BackendConfig, Config, ServiceConfig};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

mod lenient;

/// Path of the discovery stream.
pub const PATH: &str = "/v1/discovery";

/// Content type of the discovery stream.
pub const CONTENT_TYPE: &str = "application/x-ndjson";

/// How often the control service sends `{"type":"ping"}` on an otherwise quiet stream.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// Longest line a reader of the stream accepts (a snapshot of thousands of services fits easily).
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// One line of the discovery stream.
///
/// Services and backends are read leniently (fields unknown to this version are ignored at any
/// depth) through a deserializer that hands each struct only the fields it declares, so that the
/// configuration types stay strict for files and are not duplicated for the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Message {
    /// The full state of the subscription; always the first message of a stream.
    Snapshot {
        /// Version of the control service's tables this reflects.
        version: u64,
        /// Every subscribed service that exists.
        #[serde(default, deserialize_with = "lenient::deserialize")]
        services: Vec<ServiceConfig>,
        /// Every backend those services use.
        #[serde(default, deserialize_with = "lenient::deserialize")]
        backends: Vec<BackendConfig>,
        /// The proxy's inbound policy, when the control service pushes one (absent: none).
        #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient::deserialize")]
        authz: Option<AuthzConfig>,
    },
    /// Changed services (in full) and changed backends.
    Update {
        /// Version of the control service's tables this reflects.
        version: u64,
        /// Services whose configuration changed, each in full.
        #[serde(default, deserialize_with = "lenient::deserialize")]
        services: Vec<ServiceConfig>,
        /// Backends whose content changed, or that a changed service started to use.
        #[serde(default, deserialize_with = "lenient::deserialize")]
        backends: Vec<BackendConfig>,
        /// A new inbound policy (absent: unchanged).
        #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient::deserialize")]
        authz: Option<AuthzConfig>,
    },
    /// Subscribed services that no longer exist.
    Remove {
        /// Version of the control service's tables this reflects.
        #[serde(default)]
        version: u64,
        /// Service names.
        services: Vec<String>,
    },
    /// Heartbeat.
    Ping,
    /// A message type this version does not know; ignored, so that the protocol can grow.
    #[serde(other)]
    Unknown,
}

impl Message {
    /// Parses one line (without or with its trailing newline).
    pub fn from_line(line: &[u8]) -> Result<Message, DiscoveryError> {
        serde_json::from_slice(line).map_err(|e| DiscoveryError::Parse(e.to_string()))
    }

    /// Serializes as one line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).expect("discovery messages always serialize");
        out.push(b'\n');
        out
    }
}

/// What a proxy asks for: `services=*` or a comma-separated list of service names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subscription {
    /// Every service.
    All,
    /// These services (by their `name`, e.g. `llm.models.svc.cluster.local`).
    Names(BTreeSet<String>),
}

impl Subscription {
    /// Parses a request's query string (`services=a,b` or `services=*`; other parameters are ignored).
    pub fn from_query(query: Option<&str>) -> Result<Subscription, DiscoveryError> {
        let value = query
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("services="))
            .ok_or_else(|| DiscoveryError::Query("missing `services=` (a list of names or *)".into()))?;
        let value = value.replace("%2C", ",").replace("%2c", ",");
        if value == "*" || value == "%2A" {
            return Ok(Subscription::All);
        }
        let mut names = BTreeSet::new();
        for name in value.split(',').filter(|n| !n.is_empty()) {
            if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
                return Err(DiscoveryError::Query(format!("{name:?} is not a service name")));
            }
            names.insert(name.to_ascii_lowercase());
        }
        if names.is_empty() {
            return Err(DiscoveryError::Query("`services=` names no service".into()));
        }
        Ok(Subscription::Names(names))
    }

    /// The query string that [`Subscription::from_query`] reads back.
    pub fn to_query(&self) -> String {
        match self {
            Subscription::All => "services=*".into(),
            Subscription::Names(n) => {
                format!("services={}", n.iter().cloned().collect::<Vec<_>>().join(","))
            }
        }
    }

    /// Whether a service is subscribed.
    pub fn contains(&self, name: &str) -> bool {
        match self {
            Subscription::All => true,
            Subscription::Names(n) => n.contains(name),
        }
    }
}

/// Protocol errors.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// A line is not a valid message.
    #[error("invalid discovery message: {0}")]
    Parse(String),
    /// An `update` or `remove` came before the `snapshot`.
    #[error("discovery {0} message before the snapshot")]
    BeforeSnapshot(&'static str),
    /// A request's query string is not a valid subscription.
    #[error("invalid discovery query: {0}")]
    Query(String),
}

/// Whether a message changed the state (a proxy rebuilds its config only when it did).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Services, backends or the inbound policy changed.
    Changed,
    /// Nothing changed (a heartbeat, an unknown message type, or an update equal to what was held).
    Unchanged,
}

/// What a proxy holds from its discovery stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DiscoveryState {
    version: u64,
    synced: bool,
    services: BTreeMap<String, ServiceConfig>,
    backends: BTreeMap<String, BackendConfig>,
    authz: Option<AuthzConfig>,
}

impl DiscoveryState {
    /// Applies one message.
    pub fn apply(&mut self, msg: Message) -> Result<Applied, DiscoveryError> {
        let before_snapshot = |what| {
            if self.synced { Ok(()) } else { Err(DiscoveryError::BeforeSnapshot(what)) }
        };
        let changed = match msg {
            Message::Snapshot { version, services, backends, authz } => {
                let services: BTreeMap<_, _> = services.into_iter().map(|s| (s.name.clone(), s)).collect();
                let backends: BTreeMap<_, _> = backends.into_iter().map(|b| (b.name.clone(), b)).collect();
                let changed =
                    !self.synced || services != self.services || backends != self.backends || authz != self.authz;
                self.version = version;
                self.synced = true;
                self.services = services;
                self.backends = backends;
                self.authz = authz;
                changed
            }
            Message::Update { version, services, backends, authz } => {
                before_snapshot("update")?;
                self.version = self.version.max(version);
                let mut changed = false;
                if let Some(authz) = authz
                    && self.authz.as_ref() != Some(&authz)
                {
                    changed = true;
                    self.authz = Some(authz);
                }
                for s in services {
                    if self.services.get(&s.name) != Some(&s) {
                        changed = true;
                        self.services.insert(s.name.clone(), s);
                    }
                }
                for b in backends {
                    if self.backends.get(&b.name) != Some(&b) {
                        changed = true;
                        self.backends.insert(b.name.clone(), b);
                    }
                }
                changed
            }
            Message::Remove { version, services } => {
                before_snapshot("remove")?;
                self.version = self.version.max(version);
                let mut changed = false;
                for name in services {
                    changed |= self.services.remove(&name).is_some();
                }
                changed
            }
            Message::Ping | Message::Unknown => false,
        };
        if changed {
            self.prune_backends();
        }
        Ok(if changed { Applied::Changed } else { Applied::Unchanged })
    }

    /// Whether the snapshot has arrived.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Version of the last snapshot, update or remove.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Services held, by name.
    pub fn services(&self) -> &BTreeMap<String, ServiceConfig> {
        &self.services
    }

    /// Backends held, by name.
    pub fn backends(&self) -> &BTreeMap<String, BackendConfig> {
        &self.backends
    }

    /// The inbound policy the control service pushed, if any.
    pub fn authz(&self) -> Option<&AuthzConfig> {
        self.authz.as_ref()
    }

    /// A whole proxy config: `proxy:` and `inbound:` from `base`, then `base`'s own services and
    /// backends (they win over discovered ones with the same name), then the discovered ones.
    ///
    /// The pushed inbound policy becomes `proxy.authz` only when `base` has none of its own
    /// (`proxy.authz` is [`AuthzConfig::default()`]): a policy written in the proxy's own file
    /// wins over the control service's, whole (the two are not merged).
    pub fn to_config(&self, base: &Config) -> Config {
        let mut config = base.clone();
        if let Some(authz) = &self.authz
            && config.proxy.authz == AuthzConfig::default()
        {
            config.proxy.authz = authz.clone();
        }
        let have_services: HashSet<String> = config.services.iter().map(|s| s.name.clone()).collect();
        let have_backends: HashSet<String> = config.backends.iter().map(|b| b.name.clone()).collect();
        config.services.extend(self.services.values().filter(|s| !have_services.contains(&s.name)).cloned());
        config.backends.extend(self.backends.values().filter(|b| !have_backends.contains(&b.name)).cloned());
        config
    }

    // Internal: backends that no held service refers to are dropped, so that the config a proxy
    // builds holds nothing it cannot route to and memory does not grow with churn.
    fn prune_backends(&mut self) {
        let used: HashSet<&str> = self
            .services
            .values()
            .flat_map(|s| s.routes.iter())
            .flat_map(|r| r.backends.iter())
            .map(|wb| wb.backend.as_str())
            .collect();
        self.backends.retain(|name, _| used.contains(name.as_str()));
    }
}

#[cfg(test)]
mod tests;
