//! What transparent listeners ask the config: the active snapshot's services by address and by
//! name, and the inbound model server's port.

use crate::capture::Destinations;
use crate::config::Store;
use std::net::SocketAddr;
use std::sync::Arc;

/// [`Destinations`] over the config store (each question loads the active snapshot).
#[derive(Debug)]
pub struct StoreDestinations(pub Arc<Store>);

impl Destinations for StoreDestinations {
    fn service_at(&self, dst: SocketAddr) -> Option<Arc<str>> {
        let snap = self.0.load();
        snap.table.service_at(dst).and_then(|i| snap.table.services.get(i)).map(|s| Arc::clone(&s.name))
    }

    fn service_named(&self, host: &str) -> Option<Arc<str>> {
        self.0.load().table.service(host).map(|s| Arc::clone(&s.name))
    }

    fn inbound_port(&self) -> Option<u16> {
        self.0.load().table.inbound.as_ref().map(|i| i.forward_to.port())
    }
}
