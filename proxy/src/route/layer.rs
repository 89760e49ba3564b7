//! The route layer itself: one routing decision per request, the route's tag on what comes back.

use super::{inbound, outbound};
use crate::body::{ReqBody, RespBody};
use crate::config::Store;
use crate::error::{Error, is_grpc};
use crate::metrics::Direction;
use http::{Request, Response};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Layer for [`RouteService`].
#[derive(Clone, Debug)]
pub struct RouteLayer {
    store: Arc<Store>,
    direction: Direction,
}

impl RouteLayer {
    /// Routes outbound requests by the table, or inbound ones to the local server.
    pub fn new(store: Arc<Store>, direction: Direction) -> RouteLayer {
        RouteLayer { store, direction }
    }
}

impl<S> tower::Layer<S> for RouteLayer {
    type Service = RouteService<S>;
    fn layer(&self, inner: S) -> RouteService<S> {
        RouteService { inner, store: Arc::clone(&self.store), direction: self.direction }
    }
}

/// Makes the routing decision and passes `Request<ReqBody>` with a `Target` on.
#[derive(Clone, Debug)]
pub struct RouteService<S> {
    inner: S,
    store: Arc<Store>,
    direction: Direction,
}

impl<S> tower::Service<Request<Incoming>> for RouteService<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<RespBody>, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<RespBody>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RespBody>, Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let snap = self.store.load();
        // The inner service was made ready for this call; a fresh clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let direction = self.direction;
        Box::pin(async move {
            let grpc = is_grpc(req.headers());
            let routed = match direction {
                Direction::Outbound => outbound::route(&snap, req, grpc).await,
                Direction::Inbound => inbound::route(&snap, req, grpc),
            };
            drop(snap);
            let req = match routed {
                Ok(r) => r,
                Err((e, tag)) => {
                    tracing::debug!("not routed: {e}");
                    let mut e = Error::from(e);
                    if let Some(tag) = tag {
                        e.extensions_mut().insert(tag);
                    }
                    return Err(e);
                }
            };
            // The request's extensions (its target and tag) come back on the response or error.
            inner.call(req).await
        })
    }
}
