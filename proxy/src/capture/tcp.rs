//! Opaque TCP: bytes both ways between a captured connection and its original destination, with
//! no parsing. Databases, Redis, TLS the app speaks itself and every other protocol keep working.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// Why a relay ended early.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The destination did not accept in time.
    #[error("connect to {0} timed out after {1:?}")]
    ConnectTimeout(SocketAddr, Duration),
    /// The destination refused or could not be reached.
    #[error("connect to {0}: {1}")]
    Connect(SocketAddr, #[source] io::Error),
    /// A side failed while bytes were flowing.
    #[error("relay to {0}: {1}")]
    Io(SocketAddr, #[source] io::Error),
}

/// Connects to `to` (within `connect_timeout`) and copies bytes both ways until both sides have
/// finished. A side that ends its half (FIN) has it ended on the other side too, while the other
/// direction keeps flowing. Returns the bytes sent `(to the destination, back to the client)`.
pub async fn relay(mut client: TcpStream, to: SocketAddr, connect_timeout: Duration) -> Result<(u64, u64), RelayError> {
    let mut upstream = match tokio::time::timeout(connect_timeout, TcpStream::connect(to)).await {
        Err(_) => return Err(RelayError::ConnectTimeout(to, connect_timeout)),
        Ok(Err(e)) => return Err(RelayError::Connect(to, e)),
        Ok(Ok(s)) => s,
    };
    let _ = upstream.set_nodelay(true);
    let _ = client.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await.map_err(|e| RelayError::Io(to, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn bytes_pass_both_ways_and_half_close_is_passed_on() {
        // An echo server that answers once the client has finished sending.
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut all = Vec::new();
            s.read_to_end(&mut all).await.unwrap();
            s.write_all(&all).await.unwrap();
        });
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front_addr = front.local_addr().unwrap();
        let relayed = tokio::spawn(async move {
            let (s, _) = front.accept().await.unwrap();
            relay(s, echo_addr, Duration::from_secs(1)).await
        });
        let mut c = TcpStream::connect(front_addr).await.unwrap();
        c.write_all(b"\x00not http\xff").await.unwrap();
        c.shutdown().await.unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"\x00not http\xff");
        assert_eq!(relayed.await.unwrap().unwrap(), (10, 10));
    }

    #[tokio::test]
    async fn a_refused_destination_is_an_error() {
        let gone = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = front.local_addr().unwrap();
        let _c = TcpStream::connect(addr).await.unwrap();
        let (s, _) = front.accept().await.unwrap();
        assert!(matches!(relay(s, gone, Duration::from_secs(1)).await, Err(RelayError::Connect(..))));
    }
}
