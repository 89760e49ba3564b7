//! Process signals: the first SIGTERM or SIGINT starts a drain, a second one cuts it short.
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! let mut signals = vane_runtime::signal::Signals::new()?;
//! let first = signals.recv().await;
//! tracing::info!("{first}: draining (signal again to exit at once)");
//! // ... start the drain, and race it against:
//! signals.recv().await;
//! # Ok(())
//! # }
//! ```

use std::fmt;

/// Which signal arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM (what Kubernetes sends first).
    Terminate,
    /// SIGINT (Ctrl-C).
    Interrupt,
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Terminate => "SIGTERM",
            Signal::Interrupt => "SIGINT",
        })
    }
}

/// Installed SIGTERM and SIGINT handlers. Once created, the process no longer dies of either
/// signal: each one is delivered to [`Signals::recv`]. Signals that arrive between two calls are
/// not lost (tokio keeps one pending delivery per kind).
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers. Needs a tokio runtime with the I/O driver.
    pub fn new() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Resolves on the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) -> Signal {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => Signal::Terminate,
                _ = self.int.recv() => Signal::Interrupt,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Interrupt
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT. If the handlers cannot be installed, it falls back to
/// Ctrl-C alone (and logs why), so a binary still stops on Ctrl-C. For a second signal, keep a
/// [`Signals`] instead.
pub async fn shutdown() -> Signal {
    match Signals::new() {
        Ok(mut s) => s.recv().await,
        Err(e) => {
            tracing::warn!("cannot install signal handlers ({e}); stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            Signal::Interrupt
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::time::Duration;

    fn send(sig: &str) {
        let status =
            std::process::Command::new("kill").args([sig, &std::process::id().to_string()]).status().expect("run kill");
        assert!(status.success());
    }

    #[tokio::test]
    async fn first_and_second_signal_are_told_apart() {
        let mut signals = Signals::new().unwrap();
        send("-TERM");
        let first = tokio::time::timeout(Duration::from_secs(10), signals.recv()).await.expect("SIGTERM arrives");
        assert_eq!(first, Signal::Terminate);
        send("-INT");
        let second = tokio::time::timeout(Duration::from_secs(10), signals.recv()).await.expect("SIGINT arrives");
        assert_eq!(second, Signal::Interrupt);
        assert_eq!(second.to_string(), "SIGINT");
    }
}
