//! Transparent mode of a listener: what becomes of a connection the capture rules redirected
//! to it (the decision is [`crate::capture::dispatch`]'s), and the opaque TCP path.

use crate::capture::{Destinations, Dispatch, authority, dispatch, original, tcp};
use crate::metrics::ListenerStats;
use http::Request;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

/// Which side a transparent listener is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Connections the pod's app opens: known services as HTTP, the rest as opaque TCP.
    Outbound,
    /// Connections to the pod: HTTP on the model server's port, the rest as opaque TCP.
    Inbound,
}

/// A listener's transparent mode.
#[derive(Clone)]
pub enum Transparent {
    /// Every connection is served as HTTP (the app calls the listener directly).
    Off,
    /// A redirected connection is served by its original destination; one made to the
    /// listener itself is served as HTTP as when off.
    On {
        /// Outbound or inbound.
        side: Side,
        /// What the config knows about destinations.
        destinations: Arc<dyn Destinations>,
        /// Opaque TCP connections (their `open` gauge).
        tcp: ListenerStats,
    },
}

impl fmt::Debug for Transparent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transparent::Off => f.write_str("Off"),
            Transparent::On { side, .. } => write!(f, "On({side:?})"),
        }
    }
}

impl Transparent {
    /// How to serve `stream`.
    pub(super) fn dispatch(&self, stream: &TcpStream) -> Dispatch {
        match self {
            Transparent::Off => Dispatch::Proxy,
            Transparent::On { side, destinations, .. } => {
                let dst = original::redirected(stream);
                match side {
                    Side::Outbound => dispatch::outbound(dst, destinations.as_ref()),
                    Side::Inbound => dispatch::inbound(dst, destinations.as_ref()),
                }
            }
        }
    }

    /// The request rewrite for a connection dispatched to `service`.
    pub(super) fn rewrite(&self, service: Option<Arc<str>>) -> Option<(Arc<str>, Arc<dyn Destinations>)> {
        match (self, service) {
            (Transparent::On { destinations, .. }, Some(s)) => Some((s, Arc::clone(destinations))),
            _ => None,
        }
    }

    /// Relays `stream` to `to` as opaque TCP, counted while open.
    pub(super) async fn relay(&self, stream: TcpStream, to: std::net::SocketAddr, connect_timeout: Duration) {
        let Transparent::On { tcp: stats, .. } = self else { return };
        stats.open.inc();
        match tcp::relay(stream, to, connect_timeout).await {
            Ok((sent, received)) => tracing::debug!(%to, sent, received, "opaque TCP connection closed"),
            Err(e) => tracing::info!("opaque TCP: {e}"),
        }
        stats.open.dec();
    }
}

/// Points each request of a captured connection at the service its original destination
/// picked, unless its authority already names that service.
#[derive(Clone)]
pub(super) struct Rewrite<S> {
    pub(super) inner: S,
    pub(super) to: Option<(Arc<str>, Arc<dyn Destinations>)>,
}

impl<S: tower::Service<Request<B>>, B> tower::Service<Request<B>> for Rewrite<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        if let Some((service, destinations)) = &self.to {
            let named = match crate::route::facts::destination(&req) {
                Ok(Some(host)) => destinations.service_named(host),
                _ => None,
            };
            if named.as_deref() != Some(&**service) {
                authority::set_authority(&mut req, service);
            }
        }
        self.inner.call(req)
    }
}
