//! `tls-handshakes`: opens TLS connections to a meshed listener in a loop, as a Vane proxy opens
//! them to a peer, for the mTLS benchmark's handshake test (bench/mtls). Each connection: TCP
//! connect, a TLS 1.3 handshake with the client certificate (Vane's own client configuration,
//! `vane_identity::Credentials::client_config`, ALPN `h2`, the mesh server name), the server's
//! SPIFFE ID checked, the HTTP/2 preface and an empty SETTINGS sent, and the server's first bytes
//! read (its TLS 1.3 session tickets come before them, so they have been taken by then); then
//! the connection is dropped. `--resume` keeps the tickets and offers one on the next connection;
//! without it every handshake is a full one. Prints one JSON line: connections, how many were
//! resumed, failures, and the rate.
//!
//! ```sh
//! tls-handshakes 127.0.0.1:19714 --certs DIR --expect spiffe://cluster.local/ns/bench/sa/server -c 8 -d 5 --resume
//! ```

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vane_identity::{Credentials, SpiffeId};

#[derive(Debug, Parser)]
#[command(name = "tls-handshakes", about = "TLS 1.3 handshakes in a loop against a meshed listener")]
struct Args {
    /// The listener (loopback only).
    addr: SocketAddr,
    /// Directory with ca.pem (trust anchor), a.crt (chain) and a.key (as mtls-certs writes them).
    #[arg(long)]
    certs: std::path::PathBuf,
    /// The SPIFFE ID the server must present.
    #[arg(long)]
    expect: String,
    /// Connections in flight at once.
    #[arg(short = 'c', long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds to run (at most 20).
    #[arg(short = 'd', long, default_value_t = 5.0)]
    duration: f64,
    /// Offer the session tickets the server sent (TLS 1.3 resumption, PSK with ECDHE).
    #[arg(long)]
    resume: bool,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[derive(Default)]
struct Counts {
    connections: AtomicU64,
    resumed: AtomicU64,
    failed: AtomicU64,
}

async fn one(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    name: &rustls::pki_types::ServerName<'static>,
    expected: &SpiffeId,
) -> Result<bool> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls = connector.connect(name.clone(), tcp).await?;
    let (_, conn) = tls.get_ref();
    vane_identity::tls::check_peer(conn.peer_certificates(), expected)?;
    if conn.alpn_protocol() != Some(b"h2") {
        bail!("ALPN h2 not agreed");
    }
    let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    tls.write_all(H2_PREFACE).await?;
    tls.flush().await?;
    let mut buf = [0u8; 1024];
    if tls.read(&mut buf).await? == 0 {
        bail!("closed before its first bytes");
    }
    Ok(resumed)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !args.addr.ip().is_loopback() {
        bail!("only loopback targets");
    }
    if !(args.duration > 0.0 && args.duration <= 20.0) {
        bail!("--duration must be in (0, 20] s");
    }
    let read = |f: &str| {
        std::fs::read_to_string(args.certs.join(f)).with_context(|| format!("{f} in {}", args.certs.display()))
    };
    let creds = Credentials::from_pem(&read("a.crt")?, &read("a.key")?, &read("ca.pem")?)?;
    let mut config = (*creds.client_config(&[b"h2"])?).clone();
    if !args.resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let expected = SpiffeId::parse(&args.expect)?;
    let name = vane_identity::tls::mesh_server_name(&expected, args.addr);
    let counts = Arc::new(Counts::default());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.duration);
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..args.concurrency.max(1) {
            let (connector, name, expected, counts) =
                (connector.clone(), name.clone(), expected.clone(), Arc::clone(&counts));
            let addr = args.addr;
            tasks.push(tokio::spawn(async move {
                while Instant::now() < end {
                    match tokio::time::timeout(Duration::from_secs(5), one(&connector, addr, &name, &expected)).await {
                        Ok(Ok(resumed)) => {
                            counts.connections.fetch_add(1, Ordering::Relaxed);
                            counts.resumed.fetch_add(u64::from(resumed), Ordering::Relaxed);
                        }
                        Ok(Err(e)) => {
                            if counts.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                                eprintln!("tls-handshakes: {e:#}");
                            }
                        }
                        Err(_) => {
                            counts.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let n = counts.connections.load(Ordering::Relaxed);
    println!(
        "{{\"connections\":{n},\"resumed\":{},\"failed\":{},\"secs\":{secs:.3},\"per_s\":{:.1}}}",
        counts.resumed.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
        n as f64 / secs
    );
    Ok(())
}
