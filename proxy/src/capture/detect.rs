//! Protocol detection on a captured inbound connection, from its first bytes (peeked, so that
//! whoever serves the connection reads them again).

use std::time::Duration;
use tokio::net::TcpStream;

/// What a connection's first bytes say it speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    /// An HTTP/1 request line (a method token and a space) or the HTTP/2 preface (`PRI * ...`,
    /// which has the same shape).
    Http,
    /// A TLS record of a handshake (`0x16 0x03`): a ClientHello.
    Tls,
    /// Anything else, a connection closed before its first byte, or one silent for too long.
    Opaque,
}

/// The longest method token taken for HTTP (`PROPPATCH` is 9; extension methods stay short).
const MAX_METHOD: usize = 16;

/// What `prefix` says, or `None` while more bytes are needed to tell.
pub fn detect(prefix: &[u8]) -> Option<Detected> {
    match prefix {
        [] => None,
        [0x16] => None,
        [0x16, 0x03, ..] => Some(Detected::Tls),
        _ => {
            for (i, b) in prefix.iter().enumerate() {
                match b {
                    b' ' if i > 0 => return Some(Detected::Http),
                    b'A'..=b'Z' | b'-' | b'_' if i < MAX_METHOD => {}
                    _ => return Some(Detected::Opaque),
                }
            }
            None
        }
    }
}

/// Peeks at `stream` until its first bytes say what it speaks, for at most `timeout` (a client
/// that waits for the server to speak first, as MySQL's do, is opaque once it has passed).
pub async fn peek(stream: &TcpStream, timeout: Duration) -> Detected {
    let mut buf = [0u8; MAX_METHOD + 1];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Detected::Opaque,
            Ok(Ok(n)) => n,
        };
        if let Some(d) = detect(&buf[..n]) {
            return d;
        }
        // Internal: a peek returns at once while any byte is buffered, so the next bytes are
        // waited for by a short sleep; a request line comes whole in its first segment nearly
        // always, so this loop rarely turns.
        if tokio::time::Instant::now() + PEEK_PAUSE > deadline {
            return Detected::Opaque;
        }
        tokio::time::sleep(PEEK_PAUSE).await;
    }
}

/// The pause between two peeks at a connection that sent part of its first token.
const PEEK_PAUSE: Duration = Duration::from_millis(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_tell_the_protocol() {
        for (bytes, want) in [
            (&b"GET / HTTP/1.1\r\n"[..], Some(Detected::Http)),
            (b"POST /v1/chat/completions HTTP/1.1", Some(Detected::Http)),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Some(Detected::Http)),
            (b"M-SEARCH * HTTP/1.1", Some(Detected::Http)),
            (b"\x16\x03\x01\x02\x00", Some(Detected::Tls)),
            (b"\x16", None),
            (b"", None),
            (b"GE", None),
            (b"*1\r\n$4\r\nPING\r\n", Some(Detected::Opaque)),
            (b"get / HTTP/1.1", Some(Detected::Opaque)),
            (b" GET", Some(Detected::Opaque)),
            (b"\x00\x00\x00\x08\x04\xd2\x16\x2f", Some(Detected::Opaque)),
            (b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", Some(Detected::Opaque)),
        ] {
            assert_eq!(detect(bytes), want, "{:?}", String::from_utf8_lossy(bytes));
        }
    }
}
