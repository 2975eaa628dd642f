//! Signals the daemon and `attach` act on, the same way on every platform: a request to shut
//! down (SIGTERM or SIGINT; Ctrl-C, Ctrl-Break, console close, log-off or shutdown on
//! Windows; a hang-up is ignored), and terminal resizes (SIGWINCH; on Windows, checked a few
//! times a second while attached).

use std::io;

pub use crate::imp::signal::{Resizes, Shutdown};

/// Start listening for shutdown requests.
pub fn shutdown() -> io::Result<Shutdown> {
    Shutdown::new()
}

/// Start listening for terminal resizes.
pub fn resizes() -> io::Result<Resizes> {
    Resizes::new()
}
