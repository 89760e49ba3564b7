//! Reading a bounded prefix of a request body (to find the model name, or to hold a small body
//! whole so that it can be sent again).

use crate::body::ReqBody;
use crate::error::ProxyError;
use bytes::{Bytes, BytesMut};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// Reads up to `limit` bytes of the body. A body that ends within the limit comes back whole
/// (replayable); a longer one comes back as the prefix plus the rest, streamed.
pub(super) async fn read_prefix(mut body: Incoming, limit: usize, max_body: u64) -> Result<ReqBody, ProxyError> {
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    loop {
        let have = first.as_ref().map_or(buf.len(), Bytes::len);
        if have >= limit {
            let prefix = first.unwrap_or_else(|| buf.freeze());
            let remaining = max_body.saturating_sub(prefix.len() as u64);
            return Ok(ReqBody::stream(Some(prefix), body, remaining, max_body));
        }
        match body.frame().await {
            None => {
                let b = first.unwrap_or_else(|| buf.freeze());
                return Ok(if b.is_empty() { ReqBody::Empty } else { ReqBody::Full(Some(b)) });
            }
            Some(Err(e)) => return Err(ProxyError::BodyRead(e)),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if (have + data.len()) as u64 > max_body {
                    return Err(ProxyError::BodyTooLarge(max_body));
                }
                match first.take() {
                    None if buf.is_empty() => first = Some(data),
                    None => buf.extend_from_slice(&data),
                    Some(f) => {
                        buf.extend_from_slice(&f);
                        buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// Whether `buf` holds at least one whole gRPC message (a 5-byte prefix, then its length).
pub(crate) fn holds_grpc_message(buf: &[u8]) -> bool {
    match buf.get(1..5) {
        Some(len) => {
            let n = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            buf.len() >= 5 + n
        }
        None => false,
    }
}

/// How long a gRPC call that holds one whole message is given for its stream's end, when that
/// came in a frame of its own (some clients send an empty last frame).
const UNARY_END_WAIT: std::time::Duration = std::time::Duration::from_millis(5);

/// Reads a gRPC request body until it holds one whole message, at most `limit` bytes: a unary
/// call then comes back whole (its stream ended with that message, or within
/// [`UNARY_END_WAIT`] after it), any other as the prefix plus the rest, streamed. It never
/// waits for a second message, so a bidirectional call whose client waits for an answer after
/// its first message is held up by `UNARY_END_WAIT` at most.
pub(super) async fn read_grpc_unary(mut body: Incoming, limit: usize, max_body: u64) -> Result<ReqBody, ProxyError> {
    let mut buf = BytesMut::new();
    loop {
        let whole = holds_grpc_message(&buf);
        if buf.len() >= limit || whole {
            if body.is_end_stream() {
                return Ok(ReqBody::Full(Some(buf.freeze())));
            }
            if whole {
                match tokio::time::timeout(UNARY_END_WAIT, body.frame()).await {
                    Ok(None) => return Ok(ReqBody::Full(Some(buf.freeze()))),
                    Ok(Some(Err(e))) => return Err(ProxyError::BodyRead(e)),
                    Ok(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            buf.extend_from_slice(&data);
                        }
                        if body.is_end_stream() {
                            return Ok(ReqBody::Full(Some(buf.freeze())));
                        }
                    }
                    Err(_) => {}
                }
            }
            if buf.len() as u64 > max_body {
                return Err(ProxyError::BodyTooLarge(max_body));
            }
            let prefix = buf.freeze();
            let remaining = max_body.saturating_sub(prefix.len() as u64);
            return Ok(ReqBody::stream(Some(prefix), body, remaining, max_body));
        }
        match body.frame().await {
            None => return Ok(if buf.is_empty() { ReqBody::Empty } else { ReqBody::Full(Some(buf.freeze())) }),
            Some(Err(e)) => return Err(ProxyError::BodyRead(e)),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else { continue };
                if (buf.len() + data.len()) as u64 > max_body {
                    return Err(ProxyError::BodyTooLarge(max_body));
                }
                buf.extend_from_slice(&data);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::holds_grpc_message;

    #[test]
    fn a_whole_grpc_message_is_its_prefix_and_its_length() {
        let msg = |n: u32, have: usize| {
            let mut v = vec![0u8];
            v.extend_from_slice(&n.to_be_bytes());
            v.extend(std::iter::repeat_n(7u8, have));
            v
        };
        assert!(!holds_grpc_message(&[]));
        assert!(!holds_grpc_message(&[0, 0, 0]));
        assert!(holds_grpc_message(&msg(0, 0)), "an empty message");
        assert!(!holds_grpc_message(&msg(3, 2)));
        assert!(holds_grpc_message(&msg(3, 3)));
        assert!(holds_grpc_message(&msg(3, 9)), "and the start of another");
        assert!(!holds_grpc_message(&msg(u32::MAX, 10)), "a length no buffer holds");
    }
}
