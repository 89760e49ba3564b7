//! What becomes of a connection a listener accepted in transparent mode: a pure decision over
//! its original destination and what the config knows.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// What the proxy's config knows about destinations (implemented over the config store; a
/// trait so that the listener does not depend on the config and the decision can be tested).
pub trait Destinations: Send + Sync + fmt::Debug {
    /// The service a destination belongs to: one of a service's addresses (ClusterIP:port), or
    /// an endpoint of a backend one of its routes sends to.
    fn service_at(&self, dst: SocketAddr) -> Option<Arc<str>>;
    /// The service a request's host names (its name or one of its hosts).
    fn service_named(&self, host: &str) -> Option<Arc<str>>;
    /// The port of the local model server the inbound side serves HTTP for, when configured.
    fn inbound_port(&self) -> Option<u16>;
}

/// How one connection is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dispatch {
    /// As HTTP, the way the listener serves connections made to it directly (explicit mode).
    Proxy,
    /// Outbound, as HTTP to a known service: each request is routed to `service`, whatever its
    /// authority says (an app calling `http://10.96.0.10/` sends an IP as its Host).
    Service(Arc<str>),
    /// Inbound, on the model server's port: HTTP if the first bytes say so, else opaque TCP to
    /// the original destination.
    Detect(SocketAddr),
    /// Opaque TCP to the original destination.
    Tcp(SocketAddr),
}

/// The outbound decision: `redirected` is the original destination of a captured connection
/// (`None`: it was made to the listener itself).
pub fn outbound(redirected: Option<SocketAddr>, d: &dyn Destinations) -> Dispatch {
    match redirected {
        None => Dispatch::Proxy,
        Some(dst) => match d.service_at(dst) {
            Some(service) => Dispatch::Service(service),
            None => Dispatch::Tcp(dst),
        },
    }
}

/// The inbound decision: only the model server's port is looked at for HTTP; the pod's other
/// ports pass as opaque TCP at once (no wait for a first byte that a server-first protocol
/// would never send).
pub fn inbound(redirected: Option<SocketAddr>, d: &dyn Destinations) -> Dispatch {
    match redirected {
        None => Dispatch::Proxy,
        Some(dst) if d.inbound_port() == Some(dst.port()) => Dispatch::Detect(dst),
        Some(dst) => Dispatch::Tcp(dst),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Known;

    impl Destinations for Known {
        fn service_at(&self, dst: SocketAddr) -> Option<Arc<str>> {
            (dst == "10.96.0.10:80".parse().unwrap()).then(|| "llm".into())
        }
        fn service_named(&self, host: &str) -> Option<Arc<str>> {
            (host == "llm").then(|| "llm".into())
        }
        fn inbound_port(&self) -> Option<u16> {
            Some(8000)
        }
    }

    #[test]
    fn outbound_destinations_pick_http_or_tcp() {
        let a = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        assert_eq!(outbound(None, &Known), Dispatch::Proxy);
        assert_eq!(outbound(a("10.96.0.10:80"), &Known), Dispatch::Service("llm".into()));
        assert_eq!(outbound(a("10.96.0.10:5432"), &Known), Dispatch::Tcp("10.96.0.10:5432".parse().unwrap()));
        assert_eq!(outbound(a("93.184.216.34:443"), &Known), Dispatch::Tcp("93.184.216.34:443".parse().unwrap()));
    }

    #[test]
    fn inbound_detects_on_the_model_port_only() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(inbound(None, &Known), Dispatch::Proxy);
        assert_eq!(inbound(Some(a("10.0.0.5:8000")), &Known), Dispatch::Detect(a("10.0.0.5:8000")));
        assert_eq!(inbound(Some(a("10.0.0.5:6379")), &Known), Dispatch::Tcp(a("10.0.0.5:6379")));
    }
}
