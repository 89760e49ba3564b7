//! The top of the stack: every error from below becomes the documented answer.

use super::kind::{BoxError, Error, ProxyError};
use super::response::is_grpc;
use crate::body::RespBody;
use http::{Request, Response};
use pin_project_lite::pin_project;
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
{
    type Response = Response<RespBody>;
    type Error = Infallible;
    type Future = Answer<S::Future>;

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
            return Answer::Ready { resp: Some(e.into_response(grpc)) };
        }
        Answer::Inner { fut: self.inner.call(req), grpc }
    }
}

pin_project! {
    /// The response future of [`ErrorService`] (a plain enum, not a boxed future: it is on every
    /// request's path).
    #[project = AnswerProj]
    #[derive(Debug)]
    pub enum Answer<F> {
        /// Waiting for the inner service.
        Inner { #[pin] fut: F, grpc: bool },
        /// Answered at once (the inner service failed its readiness check).
        Ready { resp: Option<Response<RespBody>> },
    }
}

impl<F, E> Future for Answer<F>
where
    F: Future<Output = Result<Response<RespBody>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<RespBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AnswerProj::Inner { fut, grpc } => match fut.poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(resp)) => Poll::Ready(Ok(resp)),
                Poll::Ready(Err(e)) => {
                    let e = Error::from_boxed(e.into());
                    tracing::debug!("answering {}: {e}", e.kind().reason());
                    Poll::Ready(Ok(e.into_response(*grpc)))
                }
            },
            AnswerProj::Ready { resp } => Poll::Ready(Ok(resp.take().unwrap_or_else(|| {
                Error::from(ProxyError::Internal("a finished answer was polled again".into())).into_response(false)
            }))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ERROR_HEADER, ProxyError};
    use tower::{Service, ServiceBuilder, ServiceExt};

    /// A service that fails at once with `no-route` (`true`), or never answers (`false`).
    #[derive(Clone)]
    struct Failing(bool);

    impl tower::Service<Request<()>> for Failing {
        type Response = Response<RespBody>;
        type Error = Error;
        type Future = Pin<Box<dyn Future<Output = Result<Response<RespBody>, Error>> + Send>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Request<()>) -> Self::Future {
            let fail = self.0;
            Box::pin(async move {
                match fail {
                    true => Err(Error::from(ProxyError::NoRoute("svc".into()))),
                    false => std::future::pending().await,
                }
            })
        }
    }

    #[tokio::test]
    async fn errors_from_below_and_from_tower_middleware_become_documented_answers() {
        let mut svc = ServiceBuilder::new().layer(ErrorLayer).service(Failing(true));
        let r = svc.ready().await.unwrap().call(Request::new(())).await.unwrap();
        assert_eq!((r.status().as_u16(), r.headers()[ERROR_HEADER].to_str().unwrap()), (404, "no-route"));

        // Off-the-shelf middleware slots in under the error layer: tower's load shedding over a
        // concurrency limit of one refuses a second request while the first is in flight.
        let mut svc = ServiceBuilder::new().layer(ErrorLayer).load_shed().concurrency_limit(1).service(Failing(false));
        let first = svc.ready().await.unwrap().call(Request::new(()));
        let held = tokio::spawn(first);
        let r = svc.ready().await.unwrap().call(Request::new(())).await.unwrap();
        assert_eq!((r.status().as_u16(), r.headers()[ERROR_HEADER].to_str().unwrap()), (503, "overloaded"));
        let mut grpc = Request::new(());
        grpc.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
        let r = svc.ready().await.unwrap().call(grpc).await.unwrap();
        assert_eq!((r.status().as_u16(), r.headers()["grpc-status"].to_str().unwrap()), (200, "14"));
        held.abort();
    }
}
