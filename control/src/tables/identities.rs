//! The identities of a backend's endpoints: the SPIFFE ID of each injected Pod's
//! ServiceAccount, as one `identity` when they all share it, else per endpoint.

use super::TableSettings;
use crate::index::{Indexes, ObjectKey};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The SPIFFE ID of the proxy beside an endpoint's Pod, if the Pod was injected and the
/// identity service is on.
pub(super) fn of_endpoint(idx: &Indexes, pod: Option<&ObjectKey>, settings: &TableSettings) -> Option<String> {
    let td = settings.trust_domain.as_deref()?;
    let pod = idx.pods.get(pod?)?;
    vane_identity::SpiffeId::new(td, &pod.key.namespace, &pod.service_account).ok().map(|id| id.to_string())
}

/// `identity` when every endpoint has the same one, else `identities` of the meshed endpoints.
pub(super) fn of_backend(
    endpoints: &BTreeMap<SocketAddr, Option<String>>,
) -> (Option<String>, BTreeMap<String, String>) {
    let mut ids = endpoints.values();
    if let Some(Some(first)) = ids.next()
        && ids.all(|id| id.as_ref() == Some(first))
    {
        return (Some(first.clone()), BTreeMap::new());
    }
    let each = endpoints.iter().filter_map(|(addr, id)| Some((addr.to_string(), id.clone()?))).collect();
    (None, each)
}
