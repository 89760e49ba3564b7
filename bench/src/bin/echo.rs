//! Vane's benchmark backend: a fixed `200 OK` with a 100-byte body.
//!
//! Serves HTTP/1.1 and h2c (prior knowledge) on one port through
//! `hyper_util::server::conn::auto`. Runs on a `current_thread` runtime unless
//! `THREADS` asks for more worker threads.
//!
//! Usage: `echo [ADDR]` (default `127.0.0.1:18090`).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// The response body: exactly 100 bytes.
const BODY: &[u8; 100] =
    b"vane-echo 01234567890123456789012345678901234567890123456789012345678901234567890123456789012345678\n";

async fn handle(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    Ok(resp)
}

async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    // A backlog of 4096 rather than 128: a proxy opening a connection per concurrent request
    // at the start of a run must not find SYNs dropped here (that measures the echo, not it).
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(4096)?;
    eprintln!("echo: listening on {addr} (HTTP/1.1 + h2c)");
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true);
    builder.http2().max_concurrent_streams(1024);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("echo: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        tokio::spawn(async move {
            let conn = builder.serve_connection(TokioIo::new(stream), service_fn(handle));
            // Clients closing their connections at the end of a run is normal.
            let _ = conn.await;
        });
    }
}

fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18090".to_string()).parse()?;
    let threads: usize = match std::env::var("THREADS") {
        Ok(v) => v.parse()?,
        Err(_) => 1,
    };
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?
    };
    rt.block_on(serve(addr))
}
