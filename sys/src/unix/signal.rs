//! Signals: SIGTERM and SIGINT end the daemon, SIGHUP is ignored (a closed terminal must not
//! take it along), SIGWINCH tells `attach` the terminal was resized.

use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Waits for a request to shut down.
#[derive(Debug)]
pub struct Shutdown {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Shutdown {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Resolves with the signal's name once one asks the process to stop.
    pub async fn recv(&mut self) -> &'static str {
        loop {
            tokio::select! {
                _ = self.term.recv() => return "SIGTERM",
                _ = self.int.recv() => return "SIGINT",
                _ = self.hup.recv() => tracing::info!("SIGHUP ignored"),
            }
        }
    }
}

/// Tells when the terminal was resized.
#[derive(Debug)]
pub struct Resizes(Signal);

impl Resizes {
    pub(crate) fn new() -> io::Result<Self> {
        signal(SignalKind::window_change()).map(Self)
    }

    /// Resolves at the next resize.
    pub async fn recv(&mut self) {
        let _ = self.0.recv().await;
    }
}
