//! The body sent back to the client.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

/// What an upstream response body tells whoever sent the request, as it streams: the balancer
/// times the first byte, the tokens of a stream and the end, and gives the connection back when
/// the body ended cleanly. Dropping it without [`Completion::finish`] means the body broke off.
pub trait Completion: Send + std::fmt::Debug {
    /// A data frame arrived (the first one is the first byte).
    fn data(&mut self, chunk: &Bytes);
    /// The body ended cleanly.
    fn finish(self: Box<Self>);
}

/// Why a response body broke off: the endpoint's body failed, or the shared answer a
/// coalesced request reads broke off upstream (its group's readers all see that).
#[derive(Debug, thiserror::Error)]
pub enum RespError {
    /// The endpoint's body failed.
    #[error(transparent)]
    Upstream(#[from] hyper::Error),
    /// The shared answer broke off upstream.
    #[error("the shared answer broke off upstream")]
    SharedBroke,
}

/// One piece of a shared (coalesced) answer, as its readers receive it.
#[derive(Debug)]
pub enum Piece {
    /// A chunk of the body.
    Data(Bytes),
    /// The trailers that ended it (gRPC's status comes this way).
    Trailers(http::HeaderMap),
    /// It broke off upstream.
    Broken,
}

/// The body sent back to the client.
#[derive(Debug)]
pub enum RespBody {
    /// Streamed from the endpoint; the completion hears of its first byte and its end.
    Upstream {
        /// The endpoint's body.
        body: Incoming,
        /// Told when the body starts and ends; dropped when the response is done.
        done: Option<Box<dyn Completion>>,
    },
    /// A body made by the proxy (errors, admin).
    Full(Option<Bytes>),
    /// A stream made by the proxy (the load stream), chunk by chunk.
    Channel(tokio::sync::mpsc::Receiver<Bytes>),
    /// A shared answer read from its group's buffer (coalescing): its chunks, then its
    /// trailers, or the error it broke off with.
    Shared(tokio::sync::mpsc::Receiver<Piece>),
    /// A body whose first frame was read ahead (by hedging, to see which answer starts first),
    /// then the rest.
    Prefixed {
        /// The frame read ahead, until it is passed on.
        first: Option<Frame<Bytes>>,
        /// The rest of the body.
        rest: Box<RespBody>,
    },
    /// A layer's own body around another one (the observe layer watching a shared answer).
    Boxed(BoxedBody),
}

/// A body of any type, boxed.
pub struct BoxedBody(pub Pin<Box<dyn Body<Data = Bytes, Error = RespError> + Send>>);

impl std::fmt::Debug for BoxedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BoxedBody")
    }
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
    type Error = RespError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, RespError>>> {
        match self.get_mut() {
            RespBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RespBody::Channel(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
            RespBody::Shared(rx) => rx.poll_recv(cx).map(|o| {
                o.map(|p| match p {
                    Piece::Data(b) => Ok(Frame::data(b)),
                    Piece::Trailers(t) => Ok(Frame::trailers(t)),
                    Piece::Broken => Err(RespError::SharedBroke),
                })
            }),
            RespBody::Prefixed { first, rest } => match first.take() {
                Some(f) => Poll::Ready(Some(Ok(f))),
                None => Pin::new(&mut **rest).poll_frame(cx),
            },
            RespBody::Boxed(b) => b.0.as_mut().poll_frame(cx),
            RespBody::Upstream { body, done } => {
                let p = Pin::new(&mut *body).poll_frame(cx).map_err(RespError::from);
                match &p {
                    // A clean end, seen either as the end of the stream or as a last frame.
                    Poll::Ready(None) => {
                        if let Some(d) = done.take() {
                            d.finish();
                        }
                    }
                    Poll::Ready(Some(Ok(frame))) if body.is_end_stream() => {
                        if let Some(mut d) = done.take() {
                            if let Some(chunk) = frame.data_ref() {
                                d.data(chunk);
                            }
                            d.finish();
                        }
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        if let (Some(d), Some(chunk)) = (done.as_mut(), frame.data_ref()) {
                            d.data(chunk);
                        }
                    }
                    Poll::Ready(Some(Err(_))) => drop(done.take()),
                    _ => {}
                }
                p
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Full(b) => b.is_none(),
            RespBody::Channel(_) | RespBody::Shared(_) => false,
            RespBody::Boxed(b) => b.0.is_end_stream(),
            RespBody::Upstream { body, .. } => body.is_end_stream(),
            RespBody::Prefixed { first, rest } => first.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            RespBody::Channel(_) | RespBody::Shared(_) => SizeHint::default(),
            RespBody::Boxed(b) => b.0.size_hint(),
            RespBody::Upstream { body, .. } => body.size_hint(),
            RespBody::Prefixed { first, rest } => {
                let ahead = first.as_ref().and_then(|f| f.data_ref()).map_or(0, |d| d.len() as u64);
                let r = rest.size_hint();
                let mut h = SizeHint::new();
                h.set_lower(r.lower() + ahead);
                if let Some(u) = r.upper() {
                    h.set_upper(u + ahead);
                }
                h
            }
        }
    }
}
