//! What went wrong: the error kinds, and the error that carries one up the stack.

/// Why the proxy could not forward a request.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request has no usable authority or is otherwise malformed. (400)
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    /// No service has this authority (not in the file, or not known to the control service). (503)
    #[error("no service for authority {0:?}")]
    UnknownService(String),
    /// The service has no route matching the request. (404)
    #[error("no route of service {0:?} matches the request")]
    NoRoute(String),
    /// The request body is over `max_body_bytes` (by its `Content-Length`, or while it streamed). (413)
    #[error("request body is larger than {0} bytes")]
    BodyTooLarge(u64),
    /// Reading the request body from the client failed. (400)
    #[error("reading the request body failed: {0}")]
    BodyRead(#[source] hyper::Error),
    /// The client's request body broke off while it was being sent upstream. (400)
    #[error("the client's request body failed while it was sent to {0}")]
    BodyAborted(std::net::SocketAddr),
    /// The backend has no endpoint that is configured and not ejected. (503)
    #[error("backend {0:?} has no endpoint ready")]
    NoEndpoint(String),
    /// No connection could be made to the endpoint. (502)
    #[error("connecting to {0} failed: {1}")]
    ConnectFailed(std::net::SocketAddr, #[source] crate::client::SendError),
    /// The endpoint failed while answering (reset, protocol error). (502)
    #[error("upstream {0} failed: {1}")]
    Upstream(std::net::SocketAddr, #[source] crate::client::SendError),
    /// No response headers within the timeout. (504)
    #[error("no response from {0} within {1:?}")]
    Timeout(std::net::SocketAddr, std::time::Duration),
    /// The proxy shed the request: a concurrency limit in the stack was full. (503)
    #[error("the proxy is at its concurrency limit")]
    Overloaded,
    /// Every endpoint of the backend is saturated and the request's priority is shed: answered
    /// at once with `Retry-After`. (429)
    #[error("backend {0:?} is saturated; retry after {1:?}")]
    Shed(String, std::time::Duration),
    /// No endpoint of the backend can answer within the request's deadline, by their measured
    /// answering times: refused at once rather than timed out later. (504)
    #[error("backend {0:?} answers in {1:?} at best, over the deadline {2:?}")]
    DeadlineUnmeetable(String, std::time::Duration, std::time::Duration),
    /// The caller may not make this request (inbound authorization: the default policy or the
    /// rule named). (403)
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The proxy is shutting down. (503)
    #[error("proxy is shutting down")]
    ShuttingDown,
    /// A failure inside the proxy (a middleware error of an unknown kind). (500)
    #[error("internal error: {0}")]
    Internal(#[source] BoxError),
}

/// The error type of off-the-shelf middleware.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error on its way to the top of the stack, with what later layers need to know of it.
#[derive(Debug)]
pub struct Error {
    kind: ProxyError,
    extensions: http::Extensions,
}

impl Error {
    /// What went wrong.
    pub fn kind(&self) -> &ProxyError {
        &self.kind
    }

    /// Values carried to the response this error becomes (as response extensions).
    pub fn extensions_mut(&mut self) -> &mut http::Extensions {
        &mut self.extensions
    }

    /// An error carrying `extensions` (those of the request it answers, say).
    pub fn with_extensions(kind: ProxyError, extensions: http::Extensions) -> Error {
        Error { kind, extensions }
    }

    /// The kind and the extensions, apart.
    pub fn into_parts(self) -> (ProxyError, http::Extensions) {
        (self.kind, self.extensions)
    }

    /// The values carried so far.
    pub fn extensions(&self) -> &http::Extensions {
        &self.extensions
    }

    /// Recovers a proxy error from a middleware's boxed error: the proxy's own, or tower's
    /// load-shed refusal; anything else is internal.
    pub fn from_boxed(e: BoxError) -> Error {
        if e.is::<tower::load_shed::error::Overloaded>() {
            return Error::from(ProxyError::Overloaded);
        }
        match e.downcast::<Error>() {
            Ok(e) => *e,
            Err(e) => match e.downcast::<ProxyError>() {
                Ok(k) => Error::from(*k),
                Err(e) => Error::from(ProxyError::Internal(e)),
            },
        }
    }
}

impl From<ProxyError> for Error {
    fn from(kind: ProxyError) -> Error {
        Error { kind, extensions: http::Extensions::new() }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.kind.fmt(f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.kind)
    }
}
