//! The body sent upstream.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

/// Errors a request body can raise while it streams upstream. Both are the client's fault.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The client sent more than `max_body_bytes`.
    #[error("request body is larger than the limit of {0} bytes")]
    TooLarge(u64),
    /// The client's stream failed (reset, closed mid-body, malformed chunking).
    #[error(transparent)]
    Downstream(#[from] hyper::Error),
}

/// What became of a streamed request body, shared between the body (which writes it when it
/// fails) and the sender (which reads it when the exchange fails): once the body is handed to the
/// HTTP client its own error is wrapped, or over HTTP/2 replaced by a stream reset, so this is the
/// one reliable way to tell that the client, not the endpoint, broke the exchange.
#[derive(Debug, Default)]
pub struct BodyFailure(AtomicU8);

const TOO_LARGE: u8 = 1;
const DOWNSTREAM: u8 = 2;

impl BodyFailure {
    fn set(&self, e: &BodyError) {
        let v = match e {
            BodyError::TooLarge(_) => TOO_LARGE,
            BodyError::Downstream(_) => DOWNSTREAM,
        };
        self.0.store(v, Ordering::Relaxed);
    }

    /// Whether the body went over the limit (`Some(true)`), failed on the client's side
    /// (`Some(false)`), or neither (`None`).
    pub fn get(&self) -> Option<bool> {
        match self.0.load(Ordering::Relaxed) {
            TOO_LARGE => Some(true),
            DOWNSTREAM => Some(false),
            _ => None,
        }
    }
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
        /// Set when the body fails.
        failure: Arc<BodyFailure>,
    },
}

impl ReqBody {
    /// A streamed body of at most `limit` bytes, `prefix` (already counted in `remaining`) first.
    pub fn stream(prefix: Option<Bytes>, rest: Incoming, remaining: u64, limit: u64) -> ReqBody {
        ReqBody::Stream { prefix, rest, remaining, limit, failure: Arc::default() }
    }

    /// A copy for a retry, when the body is fully known.
    pub fn try_clone(&self) -> Option<ReqBody> {
        match self {
            ReqBody::Empty => Some(ReqBody::Empty),
            ReqBody::Full(b) => Some(ReqBody::Full(b.clone())),
            ReqBody::Stream { .. } => None,
        }
    }

    /// Where a streamed body records its failure (`None` for bodies known in full, which cannot fail).
    pub fn failure(&self) -> Option<Arc<BodyFailure>> {
        match self {
            ReqBody::Stream { failure, .. } => Some(Arc::clone(failure)),
            _ => None,
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
            ReqBody::Stream { prefix, rest, remaining, limit, failure } => {
                if let Some(p) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(p))));
                }
                let e = match Pin::new(rest).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => match frame.data_ref() {
                        Some(d) if d.len() as u64 > *remaining => BodyError::TooLarge(*limit),
                        d => {
                            *remaining -= d.map_or(0, |d| d.len() as u64);
                            return Poll::Ready(Some(Ok(frame)));
                        }
                    },
                    Poll::Ready(Some(Err(e))) => BodyError::Downstream(e),
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                };
                failure.set(&e);
                Poll::Ready(Some(Err(e)))
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
