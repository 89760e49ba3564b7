//! Signals: SIGTERM or SIGINT starts a drain, a second one exits at once.

use super::Running;

/// Serves until SIGTERM or SIGINT, then drains; a second signal exits at once.
pub async fn serve_until_signal(running: Running) -> i32 {
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vane-proxy: cannot install signal handlers: {e}");
            return 1;
        }
    };
    signals.next().await;
    let grace = running.drain_grace();
    tracing::info!("shutting down: draining in-flight requests for up to {grace:?} (signal again to exit at once)");
    tokio::select! {
        clean = running.drain(grace) => {
            if clean { tracing::info!("drained"); } else { tracing::warn!("drain grace period over; exiting"); }
            0
        }
        _ = signals.next() => {
            tracing::warn!("second signal: exiting now");
            130
        }
    }
}

struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
