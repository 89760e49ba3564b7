//! Signals: SIGTERM or SIGINT starts a drain, a second one exits at once.

use super::start::Running;
use vane_runtime::signal::Signals;

/// Serves until SIGTERM or SIGINT, then drains; a second signal exits at once (130).
pub async fn serve_until_signal(running: Running) -> i32 {
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vane-proxy: cannot install signal handlers: {e}");
            return 1;
        }
    };
    let first = signals.recv().await;
    let grace = running.drain_grace();
    tracing::info!("{first}: draining in-flight requests for up to {grace:?} (signal again to exit at once)");
    tokio::select! {
        clean = running.drain(grace) => {
            if clean { tracing::info!("drained"); } else { tracing::warn!("drain grace period over; exiting"); }
            0
        }
        second = signals.recv() => {
            tracing::warn!("second signal ({second}): exiting now");
            130
        }
    }
}
