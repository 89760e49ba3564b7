//! Request and response bodies. Both stream frame by frame: nothing is buffered except the bounded
//! prefix read to find the model name (which is then replayed first).

use crate::endpoint::InFlightGuard;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Errors a request body can raise while it streams upstream.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The client sent more than `max_body_bytes`.
    #[error("request body is larger than the limit of {0} bytes")]
    TooLarge(u64),
    /// The client's stream failed.
    #[error(transparent)]
    Downstream(#[from] hyper::Error),
}

/// The body sent upstream.
#[derive(Debug)]
pub enum ReqBody {
    /// No body.
    Empty,
    /// A body read whole (small enough to sniff); can be replayed for a retry.
    Full(Option<Bytes>),
    /// A streamed body, with a prefix already read (for the model name) to send first.
    Stream {
        /// Bytes read before forwarding started.
        prefix: Option<Bytes>,
        /// The rest of the client's body.
        rest: Incoming,
        /// Bytes still allowed before the body is too large.
        remaining: u64,
        /// The limit, for the error.
        limit: u64,
    },
}

impl ReqBody {
    /// A copy for a retry, when the body is fully known.
    pub fn try_clone(&self) -> Option<ReqBody> {
        match self {
            ReqBody::Empty => Some(ReqBody::Empty),
            ReqBody::Full(b) => Some(ReqBody::Full(b.clone())),
            ReqBody::Stream { .. } => None,
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ReqBody::Stream { prefix, rest, remaining, limit } => {
                if let Some(p) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(p))));
                }
                match Pin::new(rest).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(d) = frame.data_ref() {
                            let n = d.len() as u64;
                            if n > *remaining {
                                return Poll::Ready(Some(Err(BodyError::TooLarge(*limit))));
                            }
                            *remaining -= n;
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                    Poll::Ready(None) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Full(b) => b.is_none(),
            ReqBody::Stream { prefix, rest, .. } => prefix.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ReqBody::Stream { prefix, rest, .. } => {
                let p = prefix.as_ref().map_or(0, |b| b.len() as u64);
                let h = rest.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(h.lower() + p);
                if let Some(u) = h.upper() {
                    out.set_upper(u + p);
                }
                out
            }
        }
    }
}

/// The body sent back to the client.
#[derive(Debug)]
pub enum RespBody {
    /// Streamed from the endpoint; the guard counts the request in flight until the body ends.
    Upstream {
        /// The endpoint's body.
        body: Incoming,
        /// Dropped (in-flight count decremented) when the response is done.
        guard: Option<InFlightGuard>,
    },
    /// A body made by the proxy (errors, admin).
    Full(Option<Bytes>),
    /// A stream made by the proxy (the load stream), chunk by chunk.
    Channel(tokio::sync::mpsc::Receiver<Bytes>),
}

impl RespBody {
    /// A body of the given bytes.
    pub fn full(b: impl Into<Bytes>) -> RespBody {
        RespBody::Full(Some(b.into()))
    }

    /// No body.
    pub fn empty() -> RespBody {
        RespBody::Full(None)
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RespBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RespBody::Channel(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
            RespBody::Upstream { body, guard } => {
                let p = Pin::new(&mut *body).poll_frame(cx);
                match &p {
                    // A clean end, seen either as the end of the stream or as a last frame.
                    Poll::Ready(None) => {
                        if let Some(g) = guard.take() {
                            g.finish();
                        }
                    }
                    Poll::Ready(Some(Ok(_))) if body.is_end_stream() => {
                        if let Some(g) = guard.take() {
                            g.finish();
                        }
                    }
                    Poll::Ready(Some(Ok(frame))) if frame.is_data() => {
                        if let Some(g) = guard.as_mut() {
                            g.first_byte();
                        }
                    }
                    Poll::Ready(Some(Err(_))) => drop(guard.take()),
                    _ => {}
                }
                p
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Full(b) => b.is_none(),
            RespBody::Channel(_) => false,
            RespBody::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            RespBody::Channel(_) => SizeHint::default(),
            RespBody::Upstream { body, .. } => body.size_hint(),
        }
    }
}
