//! Reading a bounded prefix of a request body (to find the model name, or to hold a small body
//! whole so that it can be sent again).

use crate::body::ReqBody;
use crate::error::ProxyError;
use bytes::{Bytes, BytesMut};
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
