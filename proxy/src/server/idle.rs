//! The idle timeout: a connection with no byte read or written for a while is shut down.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Resolves once no byte has been read or written for at least `idle` (at most 1.5 × `idle`).
pub(super) async fn idle_for(ops: &AtomicU64, idle: Duration) {
    // Internal: counting I/O operations and sampling the count on a coarse tick costs one
    // relaxed increment per read or write, where a timestamp per operation would read the clock.
    let tick = idle / 2;
    let mut seen = ops.load(Ordering::Relaxed);
    let mut quiet_ticks = 0;
    loop {
        tokio::time::sleep(tick).await;
        let now = ops.load(Ordering::Relaxed);
        if now == seen {
            quiet_ticks += 1;
            if quiet_ticks >= 2 {
                return;
            }
        } else {
            seen = now;
            quiet_ticks = 0;
        }
    }
}

/// A socket that counts its completed reads and writes (for the idle timeout), and notes whether
/// its first bytes are the HTTP/2 preface.
pub(super) struct IdleIo<T> {
    pub(super) inner: T,
    pub(super) ops: Arc<AtomicU64>,
    /// Set when the first read starts with the HTTP/2 connection preface; taken after that read.
    pub(super) h2: Option<Arc<AtomicBool>>,
}

/// The start of the HTTP/2 connection preface (`PRI * HTTP/2.0`); four bytes tell it from every
/// HTTP/1 method (`PROPFIND` shares three).
const PREFACE_START: &[u8] = b"PRI ";

impl<T> IdleIo<T> {
    fn touch<R>(&self, p: &Poll<std::io::Result<R>>) {
        if let Poll::Ready(Ok(_)) = p {
            self.ops.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let p = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.touch(&p);
        if matches!(p, Poll::Ready(Ok(())))
            && buf.filled().len() > before
            && let Some(flag) = self.h2.take()
        {
            flag.store(buf.filled()[before..].starts_with(PREFACE_START), Ordering::Relaxed);
        }
        p
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.touch(&p);
        p
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.touch(&p);
        p
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
