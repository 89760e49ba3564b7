//! Services: their ports, by number, name and application protocol, and the namespaces whose
//! proxies may see them (`vane.io/visible-to`).

use super::ObjectKey;
use crate::identity::visibility::{VISIBLE_TO, parse_visible_to};
use k8s_openapi::api::core::v1::Service;
use std::collections::BTreeSet;

/// What the tables need of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Namespace and name.
    pub key: ObjectKey,
    /// TCP ports in spec order.
    pub ports: Vec<ServicePort>,
    /// The namespaces of `vane.io/visible-to`, when annotated: only proxies of these and of the
    /// Service's own namespace are served it (with the identity service on).
    pub visible_to: Option<BTreeSet<String>>,
    /// Its cluster IPs (`spec.clusterIPs`, or `clusterIP`); none for a headless Service.
    pub cluster_ips: Vec<std::net::IpAddr>,
}

/// One TCP port of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Port name; EndpointSlice ports carry the same name (empty for a single unnamed port).
    pub name: String,
    /// The Service port number (what HTTPRoute `backendRefs[].port` names).
    pub port: u16,
    /// `appProtocol`, e.g. `kubernetes.io/h2c`.
    pub app_protocol: Option<String>,
}

impl super::by_key::Keyed for ServiceInfo {
    fn key(&self) -> &ObjectKey {
        &self.key
    }
}

impl ServiceInfo {
    /// Reads a Service. `ExternalName` Services have no endpoints to route to, so they give `None`,
    /// like objects without a name.
    pub fn from_resource(svc: &Service) -> Option<ServiceInfo> {
        let key = ObjectKey::of(&svc.metadata);
        if key.name.is_empty() {
            return None;
        }
        let spec = svc.spec.as_ref()?;
        if spec.type_.as_deref() == Some("ExternalName") {
            return None;
        }
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter(|p| matches!(p.protocol.as_deref(), None | Some("TCP")))
            .filter_map(|p| {
                Some(ServicePort {
                    name: p.name.clone().unwrap_or_default(),
                    port: u16::try_from(p.port).ok().filter(|n| *n > 0)?,
                    app_protocol: p.app_protocol.clone(),
                })
            })
            .collect();
        let visible_to = svc.metadata.annotations.as_ref().and_then(|a| a.get(VISIBLE_TO)).map(|v| parse_visible_to(v));
        let listed = spec.cluster_ips.clone().filter(|ips| !ips.is_empty());
        let cluster_ips = listed
            .or_else(|| spec.cluster_ip.clone().map(|ip| vec![ip]))
            .unwrap_or_default()
            .iter()
            .filter_map(|ip| ip.parse().ok())
            .collect();
        Some(ServiceInfo { key, ports, visible_to, cluster_ips })
    }

    /// The port with this number.
    pub fn port(&self, number: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == number)
    }
}

/// Services by key.
pub type ServiceIndex = super::by_key::ByKey<ServiceInfo>;
