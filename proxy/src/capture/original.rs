//! The original destination of a redirected connection (`SO_ORIGINAL_DST`).
//!
//! Internal: socket2 (with its `all` feature) reads the option safely, so no `unsafe`
//! getsockopt is needed here.

use std::net::SocketAddr;
use tokio::net::TcpStream;

/// The destination the client asked for, when the nat table redirected the connection here;
/// `None` when it was not redirected (it came to the listener's own address, or the kernel has
/// no nat entry for it) or on a system without `SO_ORIGINAL_DST`.
pub fn redirected(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    let original = original_dst(stream, local)?;
    (original != local).then_some(original)
}

#[cfg(target_os = "linux")]
fn original_dst(stream: &TcpStream, local: SocketAddr) -> Option<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let addr = if local.is_ipv4() { sock.original_dst_v4() } else { sock.original_dst_v6() };
    addr.ok()?.as_socket()
}

#[cfg(not(target_os = "linux"))]
fn original_dst(_: &TcpStream, _: SocketAddr) -> Option<SocketAddr> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_that_was_not_redirected_has_no_original_destination() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert_eq!(redirected(&server), None);
    }
}
