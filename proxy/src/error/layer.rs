//! The top of the stack: every error from below becomes the documented answer.

use super::kind::{BoxError, Error};
use super::response::is_grpc;
use crate::body::RespBody;
use http::{Request, Response};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Layer for [`ErrorService`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorLayer;

impl<S> tower::Layer<S> for ErrorLayer {
    type Service = ErrorService<S>;
    fn layer(&self, inner: S) -> ErrorService<S> {
        ErrorService { inner, not_ready: None }
    }
}

/// Turns the inner service's errors (the proxy's own [`Error`], or any middleware's boxed error)
/// into responses: the error's status and `vane-proxy-error`, or a gRPC status for gRPC callers.
#[derive(Debug)]
pub struct ErrorService<S> {
    inner: S,
    /// An error the inner service raised when asked whether it was ready: the next request gets it.
    not_ready: Option<Error>,
}

impl<S: Clone> Clone for ErrorService<S> {
    fn clone(&self) -> Self {
        ErrorService { inner: self.inner.clone(), not_ready: None }
    }
}

impl<S, B> tower::Service<Request<B>> for ErrorService<S>
where
    S: tower::Service<Request<B>, Response = Response<RespBody>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<RespBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RespBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.not_ready.is_some() {
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Err(e)) => {
                self.not_ready = Some(Error::from_boxed(e.into()));
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let grpc = is_grpc(req.headers());
        if let Some(e) = self.not_ready.take() {
            return Box::pin(std::future::ready(Ok(e.into_response(grpc))));
        }
        let fut = self.inner.call(req);
        Box::pin(async move {
            match fut.await {
                Ok(resp) => Ok(resp),
                Err(e) => {
                    let e = Error::from_boxed(e.into());
                    tracing::debug!("answering {}: {e}", e.kind().reason());
                    Ok(e.into_response(grpc))
                }
            }
        })
    }
}
