//! The two sides of a group: the task that drives the leader's upstream call and feeds the
//! buffer, and the follower that waits for its head.

use super::flight::{Ending, Flight, Flights, Head, Sub};
use super::key::Key;
use crate::body::{Piece, ReqBody, RespBody};
use crate::error::{Error, Fault, ProxyError};
use crate::metrics::CoalesceStats;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tower::ServiceExt;

/// The response header on every follower's answer.
pub const COALESCED_HEADER: &str = "vane-coalesced";

/// Chunks waiting for one subscriber's connection, beyond what the shared buffer holds: a few,
/// so that a subscriber's writes overlap with the next chunk's arrival without holding much.
const CHANNEL_CHUNKS: usize = 8;

/// What the driver tells the leader.
#[derive(Debug)]
pub(super) enum Lead {
    /// The answer is shared: its head (with the leader's extensions); the body comes from the buffer.
    Shared(http::response::Parts),
    /// The leader's own outcome, not shared (an error, or a 429/503 its followers do not take).
    Own(Result<Response<RespBody>, Error>),
}

/// Drives the leader's upstream call, then its body into the group's buffer, to the end or until
/// every subscriber has gone: the leader's client leaving does not end it while followers read.
pub(super) async fn drive<F>(fut: F, flight: Arc<Flight>, key: Key, flights: Arc<Flights>, tx: oneshot::Sender<Lead>)
where
    F: Future<Output = Result<Response<RespBody>, Error>>,
{
    let _settle = Settle { flight: Arc::clone(&flight), key, flights: Arc::clone(&flights) };
    let result = tokio::select! {
        r = fut => r,
        () = flight.abandoned() => return,
    };
    let resp = match result {
        Err(e) => {
            flight.set_head(match shared_error(e.kind()) {
                Some(k) => Head::Failed(Arc::new(k)),
                None => Head::Alone,
            });
            let _ = tx.send(Lead::Own(Err(e)));
            return;
        }
        Ok(r) if followers_go_alone(r.status()) => {
            flight.set_head(Head::Alone);
            let _ = tx.send(Lead::Own(Ok(r)));
            return;
        }
        Ok(r) => r,
    };
    let (parts, mut body) = resp.into_parts();
    flight.set_head(Head::Ready(Arc::new((parts.status, parts.headers.clone()))));
    // The leader may be gone already; its followers are not.
    let _ = tx.send(Lead::Shared(parts));
    let mut trailers = None;
    while flight.room().await {
        let frame = tokio::select! {
            f = body.frame() => f,
            () = flight.abandoned() => return,
        };
        match frame {
            None => {
                flight.finish(Ending::Clean(trailers.map(Arc::new)));
                return;
            }
            Some(Err(e)) => {
                // Every reader's body fails too, as its own upstream body would have.
                tracing::debug!("a coalesced answer broke off: {e}");
                flight.finish(Ending::Broken);
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if !data.is_empty() && flight.push(data) {
                        // Past the cap: the next identical request starts a group of its own.
                        flights.remove(key, &flight);
                    }
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        trailers = Some(t);
                    }
                }
            },
        }
    }
}

/// Whatever way the driver ends (the answer done, abandoned, even a panic), the group is
/// settled: followers still waiting for a head go upstream on their own, readers end after the
/// last chunk, and the key is free for a new group.
struct Settle {
    flight: Arc<Flight>,
    key: Key,
    flights: Arc<Flights>,
}

impl Drop for Settle {
    fn drop(&mut self) {
        self.flight.settle();
        self.flights.remove(self.key, &self.flight);
    }
}

/// The leader's side: the answer from the driver, its body read from the buffer when shared.
pub(super) async fn lead(rx: oneshot::Receiver<Lead>, sub: Sub) -> Result<Response<RespBody>, Error> {
    match rx.await {
        Ok(Lead::Shared(parts)) => Ok(Response::from_parts(parts, body(sub, None))),
        Ok(Lead::Own(result)) => result,
        Err(_) => Err(Error::from(ProxyError::Internal("a coalesced upstream call ended without an answer".into()))),
    }
}

/// A follower's side: the leader's answer, the leader's error, or its own upstream call.
pub(super) async fn follow<S>(
    sub: Sub,
    req: Request<ReqBody>,
    inner: S,
    stats: CoalesceStats,
) -> Result<Response<RespBody>, Error>
where
    S: tower::Service<Request<ReqBody>, Response = Response<RespBody>, Error = Error>,
{
    match sub.head().await {
        Head::Ready(head) => {
            stats.followers.inc();
            let (parts, _) = req.into_parts();
            let mut resp = Response::new(body(sub, Some(stats.saved_bytes)));
            *resp.status_mut() = head.0;
            *resp.headers_mut() = head.1.clone();
            resp.headers_mut().insert(COALESCED_HEADER, HeaderValue::from_static("true"));
            // The follower's own route tag, for the metrics.
            *resp.extensions_mut() = parts.extensions;
            Ok(resp)
        }
        Head::Failed(e) => {
            stats.followers.inc();
            let kind = shared_error(&e).unwrap_or_else(|| ProxyError::Internal(e.to_string().into()));
            Err(Error::with_extensions(kind, req.into_parts().0.extensions))
        }
        Head::Alone | Head::Pending => {
            drop(sub);
            inner.oneshot(req).await
        }
    }
}

/// A subscriber's body: the buffer's chunks in order, then the answer's trailers or its
/// break, through a small channel to its connection.
fn body(mut sub: Sub, saved: Option<Counter>) -> RespBody {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    tokio::spawn(async move {
        loop {
            let piece = tokio::select! {
                p = sub.next() => p,
                () = tx.closed() => None,
            };
            let Some(piece) = piece else { break };
            let n = match &piece {
                Piece::Data(chunk) => chunk.len() as u64,
                _ => 0,
            };
            if tx.send(piece).await.is_err() {
                break;
            }
            if let Some(s) = &saved {
                s.inc_by(n);
            }
        }
    });
    RespBody::Shared(rx)
}

/// Answers whose followers go upstream on their own rather than share them: the endpoint
/// refused the request unprocessed (429) or is unavailable (503), and another may answer.
pub fn followers_go_alone(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
}

/// The copy of a leader's error that its followers get, when they get it: not for an error
/// that says another try might succeed (`retryable`), nor one that is the leader's client's
/// fault; then followers go upstream on their own (`None`).
pub fn shared_error(e: &ProxyError) -> Option<ProxyError> {
    if e.retryable().is_some() || e.fault() == Fault::Downstream {
        return None;
    }
    match e {
        ProxyError::Timeout(addr, after) => Some(ProxyError::Timeout(*addr, *after)),
        ProxyError::NoEndpoint(b) => Some(ProxyError::NoEndpoint(b.clone())),
        ProxyError::ShuttingDown => Some(ProxyError::ShuttingDown),
        ProxyError::Internal(e) => Some(ProxyError::Internal(e.to_string().into())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_leader_failures_followers_share() {
        let addr = "127.0.0.1:1".parse().unwrap();
        let refused = || crate::client::SendError::Connect(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let timeout = ProxyError::Timeout(addr, std::time::Duration::from_secs(1));
        let cases = [
            (timeout, Some("response-timeout")),
            (ProxyError::NoEndpoint("b".into()), Some("no-endpoint-ready")),
            (ProxyError::Internal("x".into()), Some("internal-error")),
            (ProxyError::ConnectFailed(addr, refused()), None),
            (ProxyError::Upstream(addr, refused()), None),
            (ProxyError::Overloaded, None),
            (ProxyError::BodyAborted(addr), None),
            (ProxyError::BodyTooLarge(1), None),
        ];
        for (e, want) in cases {
            assert_eq!(shared_error(&e).map(|k| k.reason()), want, "{e}");
        }
        assert!(followers_go_alone(StatusCode::TOO_MANY_REQUESTS));
        assert!(followers_go_alone(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!followers_go_alone(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(!followers_go_alone(StatusCode::OK));
    }
}
