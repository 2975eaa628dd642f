//! Signals the daemon and `attach` act on, the same way on every platform: a request to shut
//! down (SIGTERM or SIGINT; Ctrl-C, Ctrl-Break, console close, log-off or shutdown on
//! Windows; a hang-up is ignored), and terminal resizes (SIGWINCH; on Windows, checked a few
//! times a second while attached).

use std::io;

pub use crate::imp::signal::{Forwarded, Resizes, Shutdown};

/// A signal a client passes on to the remote program it runs (`loopsy exec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (Ctrl-Break on Windows).
    Terminate,
    /// SIGHUP (the console closed on Windows).
    HangUp,
}

impl Forward {
    /// The POSIX signal number, as the remote side reports deaths by it.
    pub fn number(self) -> i32 {
        match self {
            Forward::Interrupt => 2,
            Forward::Terminate => 15,
            Forward::HangUp => 1,
        }
    }
}

/// Start catching the signals a client forwards (they no longer end this process).
pub fn forwarded() -> io::Result<Forwarded> {
    Forwarded::new()
}

/// Start listening for shutdown requests.
pub fn shutdown() -> io::Result<Shutdown> {
    Shutdown::new()
}

/// Start listening for terminal resizes.
pub fn resizes() -> io::Result<Resizes> {
    Resizes::new()
}
