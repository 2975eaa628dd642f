//! Signals: SIGTERM and SIGINT end the daemon, SIGHUP is ignored (a closed terminal must not
//! take it along), SIGWINCH tells `attach` the terminal was resized.

use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Waits for a request to shut down.
#[derive(Debug)]
pub struct Shutdown(Forwarded);

impl Shutdown {
    pub(crate) fn new() -> io::Result<Self> {
        Forwarded::new().map(Self)
    }

    /// Resolves with the signal's name once one asks the process to stop.
    pub async fn recv(&mut self) -> &'static str {
        use crate::signal::Forward;
        loop {
            match self.0.recv().await {
                Forward::Terminate => return "SIGTERM",
                Forward::Interrupt => return "SIGINT",
                Forward::HangUp => tracing::info!("SIGHUP ignored"),
            }
        }
    }
}

/// Catches SIGINT, SIGTERM and SIGHUP for passing on.
#[derive(Debug)]
pub struct Forwarded {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Forwarded {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Resolves at the next of them.
    pub async fn recv(&mut self) -> crate::signal::Forward {
        use crate::signal::Forward;
        tokio::select! {
            _ = self.int.recv() => Forward::Interrupt,
            _ = self.term.recv() => Forward::Terminate,
            _ = self.hup.recv() => Forward::HangUp,
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

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::{Signal, raise};

    /// Signals are process-wide: one test raises at a time, or one test's SIGTERM ends
    /// another's wait.
    static RAISING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    #[tokio::test]
    async fn a_hang_up_is_ignored_and_an_interrupt_asks_to_stop() -> io::Result<()> {
        let _one = RAISING.lock().await;
        let mut s = Shutdown::new()?;
        raise(Signal::SIGHUP).map_err(io::Error::from)?;
        // A negative check needs a bound: the hang-up must not end the wait within it.
        let hup = tokio::time::timeout(std::time::Duration::from_millis(300), s.recv()).await;
        assert_eq!(hup.ok(), None, "a hang-up asked the process to stop");
        raise(Signal::SIGINT).map_err(io::Error::from)?;
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), s.recv()).await;
        assert_eq!(got.ok(), Some("SIGINT"));
        Ok(())
    }

    #[tokio::test]
    async fn forwarded_signals_are_told_apart() -> io::Result<()> {
        use crate::signal::Forward;
        let _one = RAISING.lock().await;
        let mut f = Forwarded::new()?;
        for (sig, want) in [
            (Signal::SIGTERM, Forward::Terminate),
            (Signal::SIGHUP, Forward::HangUp),
        ] {
            raise(sig).map_err(io::Error::from)?;
            let got = tokio::time::timeout(std::time::Duration::from_secs(10), f.recv()).await;
            assert_eq!(got.ok(), Some(want));
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_window_change_is_seen() -> io::Result<()> {
        let _one = RAISING.lock().await;
        let mut r = Resizes::new()?;
        raise(Signal::SIGWINCH).map_err(io::Error::from)?;
        let seen = tokio::time::timeout(std::time::Duration::from_secs(10), r.recv()).await;
        assert!(seen.is_ok());
        Ok(())
    }
}
