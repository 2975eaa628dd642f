//! Console control events stand for signals; resizes are polled while attached (Windows
//! consoles announce them only to a console input reader).

use std::io;
use std::time::Duration;

use tokio::signal::windows::{
    CtrlBreak, CtrlC, CtrlClose, CtrlLogoff, CtrlShutdown, ctrl_break, ctrl_c, ctrl_close,
    ctrl_logoff, ctrl_shutdown,
};

/// How often an attached terminal's size is checked.
const RESIZE_POLL: Duration = Duration::from_millis(250);

/// Waits for a request to shut down.
#[derive(Debug)]
pub struct Shutdown {
    c: CtrlC,
    brk: CtrlBreak,
    close: CtrlClose,
    logoff: CtrlLogoff,
    shutdown: CtrlShutdown,
}

impl Shutdown {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {
            c: ctrl_c()?,
            brk: ctrl_break()?,
            close: ctrl_close()?,
            logoff: ctrl_logoff()?,
            shutdown: ctrl_shutdown()?,
        })
    }

    /// Resolves with the event's name once one asks the process to stop.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.c.recv() => "Ctrl-C",
            _ = self.brk.recv() => "Ctrl-Break",
            _ = self.close.recv() => "console closed",
            _ = self.logoff.recv() => "log-off",
            _ = self.shutdown.recv() => "system shutdown",
        }
    }
}

/// Catches Ctrl-C, Ctrl-Break and console close for passing on.
#[derive(Debug)]
pub struct Forwarded {
    c: CtrlC,
    brk: CtrlBreak,
    close: CtrlClose,
}

impl Forwarded {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {
            c: ctrl_c()?,
            brk: ctrl_break()?,
            close: ctrl_close()?,
        })
    }

    /// Resolves at the next of them.
    pub async fn recv(&mut self) -> crate::signal::Forward {
        use crate::signal::Forward;
        tokio::select! {
            _ = self.c.recv() => Forward::Interrupt,
            _ = self.brk.recv() => Forward::Terminate,
            _ = self.close.recv() => Forward::HangUp,
        }
    }
}

/// Tells when the terminal may have been resized (callers compare the size).
#[derive(Debug)]
pub struct Resizes(tokio::time::Interval);

impl Resizes {
    pub(crate) fn new() -> io::Result<Self> {
        let mut i = tokio::time::interval(RESIZE_POLL);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Ok(Self(i))
    }

    /// Resolves at the next check.
    pub async fn recv(&mut self) {
        self.0.tick().await;
    }
}
